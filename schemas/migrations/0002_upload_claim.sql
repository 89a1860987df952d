-- Exactly once: an upload (tenant, remote name, upload time, content) is
-- applied at most once, whatever crashes or replicas do. The apply
-- transaction writes the applied row; a second application of the same
-- upload violates this index and rolls back. Local files (roster run
-- --file) have no upload identity and are governed by the duplicate rule.
ALTER TABLE run_files ADD COLUMN upload_key text;
CREATE UNIQUE INDEX run_files_upload_applied ON run_files (tenant_id, upload_key)
    WHERE status = 'applied' AND upload_key IS NOT NULL;
