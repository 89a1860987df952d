-- users is partitioned by tenant (LIST on tenant_id). Every tenant's users
-- live in one partition, users_default, except those of a tenant whose
-- first users file was large: apply loads those into a table of their own,
-- builds its indexes once the rows are in, and attaches it as the tenant's
-- partition, in the file's transaction (stages/apply/bulk.go).
--
-- Why: a btree built from sorted rows costs a fraction of the same index
-- grown one insert at a time. A million new users (psql, binary COPY, 2-core
-- reference machine):
--
--   COPY into users as it was (an index insert per row and index):  4.1-4.4 s
--   COPY into a bare table, then its indexes built:                  3.0-3.1 s
--   the same COPY into users holding another tenant's million:       6.5 s
--
-- A large tenant's indexes are then its own, so its first load does not
-- slow down as the other tenants' users grow, nor theirs because of it.
-- Small tenants stay together: a partition per tenant would be thousands of
-- tables and five times as many indexes, and any statement not naming one
-- tenant would lock them all.
--
-- What a partitioned users cannot have is a primary key on id alone (a
-- partitioned table's unique keys must hold the partition key). Each
-- partition has its own instead, made with it, and ids stay unique across
-- partitions because they all come from users_id_seq. A lookup by id alone
-- probes every partition's key, so statements name the tenant where they
-- know it.
--
-- On an existing directory this is catalog work only: the table becomes
-- the default partition, and its indexes become the partitioned indexes'
-- (they match, so none is built again). The grants on users and on
-- user_field_history are given again to the new objects.

-- The view and the function over users' row type are made again below,
-- over the partitioned table. Grants do not follow a name: those of users
-- stay on the table, users_default, and the view's are kept here; both are
-- given again at the end.
CREATE TEMP TABLE roster_0010_view_acl ON COMMIT DROP AS
SELECT a.grantee, a.privilege_type, a.is_grantable
FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = 'user_field_history'::regclass AND a.grantee <> c.relowner;
DROP VIEW user_field_history;
DROP FUNCTION roster_user_initial(bigint);
DROP FUNCTION roster_user_fields(users, text);

ALTER TABLE users RENAME TO users_default;
ALTER TABLE users_default RENAME CONSTRAINT users_pkey TO users_default_pkey;
ALTER TABLE users_default RENAME CONSTRAINT users_employee_id_key TO users_default_employee_id_key;
ALTER INDEX users_active_email RENAME TO users_default_active_email;
ALTER INDEX users_inactive_email RENAME TO users_default_inactive_email;
ALTER INDEX users_scheduled RENAME TO users_default_scheduled;
DROP TRIGGER users_forget_row_digest ON users_default;

CREATE TABLE users (LIKE users_default INCLUDING DEFAULTS) PARTITION BY LIST (tenant_id);
-- The partitioned indexes; apply.bulk builds their like on a new partition
-- from these definitions (pg_get_indexdef), so a later migration that
-- changes one needs nothing else.
ALTER TABLE users ADD CONSTRAINT users_employee_id_key UNIQUE (tenant_id, employee_id) DEFERRABLE INITIALLY DEFERRED;
CREATE UNIQUE INDEX users_active_email ON users (email, tenant_id) WHERE active;
CREATE INDEX users_inactive_email ON users (email, tenant_id) WHERE NOT active;
CREATE INDEX users_scheduled ON users (tenant_id, deactivation_date) WHERE active AND deactivation_date IS NOT NULL;
ALTER TABLE users ATTACH PARTITION users_default DEFAULT;
ALTER SEQUENCE users_id_seq OWNED BY users.id;

-- Cloned onto every partition, present and future.
CREATE TRIGGER users_forget_row_digest BEFORE UPDATE ON users FOR EACH ROW
    WHEN (OLD.row_digest IS NOT NULL AND NEW.row_digest IS NOT DISTINCT FROM OLD.row_digest)
    EXECUTE FUNCTION users_forget_row_digest();

-- As migration 0005 made them.
CREATE FUNCTION roster_user_fields(u users, department text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'employee_id', u.employee_id, 'email', u.email, 'first_name', u.first_name,
        'last_name', u.last_name, 'manager_id', u.manager_id, 'department', department,
        'title', u.title, 'location', u.location, 'start_date', u.start_date,
        'deactivation_date', u.deactivation_date, 'custom', u.custom, 'active', u.active)
$$;

-- A user's state when created, from its row: the view calls it for every
-- user, and a lookup by id alone would probe every partition's key.
CREATE FUNCTION roster_user_created(u users) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT roster_state(roster_user_fields(u, (SELECT d.name FROM departments d WHERE d.id = u.department_id)) || coalesce(
        (SELECT roster_merge(roster_history_olds(h.changes) ORDER BY h.id DESC) FROM user_history h WHERE h.user_id = u.id), '{}'))
$$;

CREATE FUNCTION roster_user_initial(uid bigint) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT roster_user_created(u) FROM users u WHERE u.id = uid
$$;

CREATE VIEW user_field_history AS
SELECT h.id, h.tenant_id, h.run_id, h.file_id, h.user_id, h.action, c.key AS field,
       c.value ->> 'old' AS old_value, c.value ->> 'new' AS new_value, h.effective_date, h.recorded_at
FROM user_history h, jsonb_each(h.changes) c
UNION ALL
SELECT NULL::bigint, u.tenant_id, u.created_run_id, u.created_file_id, u.id, 'create', c.key,
       NULL::text, c.value ->> 'new', r.logical_date, u.created_at
FROM users u JOIN runs r ON r.id = u.created_run_id, jsonb_each(roster_user_created(u)) c;

DO $$
DECLARE g record;
BEGIN
    FOR g IN
        SELECT 'users' AS obj, a.grantee, a.privilege_type, a.is_grantable
        FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = 'users_default'::regclass AND a.grantee <> c.relowner
        UNION ALL
        SELECT 'user_field_history', v.grantee, v.privilege_type, v.is_grantable FROM roster_0010_view_acl v
    LOOP
        EXECUTE format('GRANT %s ON %I TO %s%s', g.privilege_type, g.obj,
            CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
            CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;
