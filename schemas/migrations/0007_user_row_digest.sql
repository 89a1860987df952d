-- row_digest lets diff skip, without reading them, the users a file
-- leaves as they are (an unchanged nightly file of a large tenant, mostly).
--
-- It is a digest of the file row that last set the user's state, written
-- by apply with that state, and only for a row applied without any issue
-- from diff. It vouches for nothing else: any other change to the user (the
-- deactivation sweep, an operator's UPDATE, a later file) clears it unless
-- that same statement writes a new digest, so a user whose state the
-- digest does not describe never has one. diff still checks, for every row
-- it skips, what the digest cannot know: that the user is active, that its
-- department and manager are still the ones the row names, that no date
-- has come due (see stages/diff/digest.go).
ALTER TABLE users ADD COLUMN row_digest bytea;

CREATE FUNCTION users_forget_row_digest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.row_digest := NULL;
    RETURN NEW;
END
$$;

-- The WHEN clause keeps the function off apply's updates that write a new
-- digest (or NULL). An update that writes back the digest the user already
-- has (a row diff still had to decide: its date came due, its department
-- or manager changed) loses it too; that only costs the user a full diff
-- next time, which stores the digest again.
CREATE TRIGGER users_forget_row_digest BEFORE UPDATE ON users FOR EACH ROW
    WHEN (OLD.row_digest IS NOT NULL AND NEW.row_digest IS NOT DISTINCT FROM OLD.row_digest)
    EXECUTE FUNCTION users_forget_row_digest();
