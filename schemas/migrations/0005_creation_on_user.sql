-- A user's creation is recorded on the user row (created_run_id,
-- created_file_id), no longer as a user_history row per new user.
--
-- Why: a first load of a million users wrote a million ~400-byte jsonb
-- history rows beside the users themselves, more than half of the apply
-- (13-16 s of ~30 s on the 2-core reference machine, make bench). Those
-- rows held nothing that is not known otherwise: every later change records
-- the field's "old" value, so a user's state at creation is, field by
-- field, the old value of the field's first recorded change, or the current
-- value when the field never changed. roster_user_initial() below computes
-- it; the export and the user_field_history view use it.
--
-- user_history keeps one row per user and run that changed an existing
-- user.

-- The view is made again below, over the new columns.
DROP VIEW user_field_history;

-- The unique indexes' text keys compare bytes ("C" collation) instead of
-- calling the locale's strcoll ~20 times per insert and index: COPY of 1M
-- new users 7.5 s → 6.1 s (without those two indexes it is 3.5 s).
-- Equality is the same under every deterministic collation; only an ORDER
-- BY on these columns sorts by code point, which C.UTF-8 does anyway.
ALTER TABLE users
    ALTER COLUMN tenant_id TYPE text COLLATE "C",
    ALTER COLUMN employee_id TYPE text COLLATE "C",
    ALTER COLUMN email TYPE text COLLATE "C",
    ADD COLUMN created_run_id  bigint, -- the run that created the user (no key: hot path, like last_run_id)
    ADD COLUMN created_file_id bigint;

UPDATE users u SET created_run_id = h.run_id, created_file_id = h.file_id
FROM user_history h WHERE h.user_id = u.id AND h.action = 'create';
DELETE FROM user_history WHERE action = 'create';

-- roster_merge concatenates jsonb objects in the aggregate's order: the
-- last object to hold a key wins.
CREATE AGGREGATE roster_merge(jsonb) (SFUNC = jsonb_concat, STYPE = jsonb, INITCOND = '{}');

-- roster_user_fields is a user's current value of every field history
-- records, under the names history uses (department by name), JSON null
-- where there is none.
CREATE FUNCTION roster_user_fields(u users, department text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'employee_id', u.employee_id, 'email', u.email, 'first_name', u.first_name,
        'last_name', u.last_name, 'manager_id', u.manager_id, 'department', department,
        'title', u.title, 'location', u.location, 'start_date', u.start_date,
        'deactivation_date', u.deactivation_date, 'custom', u.custom, 'active', u.active)
$$;

-- roster_history_olds maps a change's fields to their old values (JSON
-- null where the field had none: history leaves such an "old" out).
CREATE FUNCTION roster_history_olds(changes jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(c.key, coalesce(c.value -> 'old', 'null'::jsonb)), '{}')
    FROM jsonb_each(changes) c
$$;

-- roster_state turns field values into the shape of a history row's
-- changes, {"field": {"new": value}}, leaving out fields without a value:
-- what a create would have recorded.
CREATE FUNCTION roster_state(fields jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(f.key, jsonb_build_object('new', f.value)), '{}')
    FROM jsonb_each(jsonb_strip_nulls(fields)) f
$$;

-- roster_user_initial is the user's state when created, as roster_state
-- gives it: the current fields, each replaced by the old value of its
-- first recorded change (olds merged newest first, so the first wins).
CREATE FUNCTION roster_user_initial(uid bigint) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT roster_state(roster_user_fields(u, d.name) || coalesce(
        (SELECT roster_merge(roster_history_olds(h.changes) ORDER BY h.id DESC) FROM user_history h WHERE h.user_id = u.id), '{}'))
    FROM users u LEFT JOIN departments d ON d.id = u.department_id
    WHERE u.id = uid
$$;

-- The view keeps its rows for creations: one per field the user was
-- created with (old_value null), with the creating run's logical date as
-- effective date and a null id (no user_history row holds it).
CREATE VIEW user_field_history AS
SELECT h.id, h.tenant_id, h.run_id, h.file_id, h.user_id, h.action, c.key AS field,
       c.value ->> 'old' AS old_value, c.value ->> 'new' AS new_value, h.effective_date, h.recorded_at
FROM user_history h, jsonb_each(h.changes) c
UNION ALL
SELECT NULL::bigint, u.tenant_id, u.created_run_id, u.created_file_id, u.id, 'create', c.key,
       NULL::text, c.value ->> 'new', r.logical_date, u.created_at
FROM users u JOIN runs r ON r.id = u.created_run_id, jsonb_each(roster_user_initial(u.id)) c;
