-- users_employee_id_key leads with the employee id, not the tenant, as the
-- e-mail indexes do since 0009; a tenant's scans in users_default get an
-- index of their own.
--
-- Why: a bulk load (0010) builds the key by sorting the tenant's rows.
-- With the tenant first, PostgreSQL's abbreviated sort keys hold only the
-- tenant's id, equal in every row, so each comparison falls through to
-- both columns: building the key over a million users took 0.66-1.08 s,
-- employee id first 0.30-0.33 s (psql, alternating, 2-core reference
-- machine). Inserts one at a time gain as the e-mail indexes did (each
-- step of the descent decided by the first column).
--
-- Every lookup by employee id names the tenant too (stages/diff,
-- reachSQL), which either order serves. Scans of a whole tenant
-- (snapshot, digests, export, counts) used this key for its leading
-- tenant: in users_default they now use users_default_tenant; a tenant
-- with a partition of its own is that partition, read whole.
--
-- On an existing directory the key is built again on every partition, and
-- users_default_tenant once, while every read and write of users waits
-- (dropping the key locks users and its partitions whole): about two
-- seconds per million users.
ALTER TABLE users DROP CONSTRAINT users_employee_id_key;
ALTER TABLE users ADD CONSTRAINT users_employee_id_key UNIQUE (employee_id, tenant_id) DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX users_default_tenant ON users_default (tenant_id);
