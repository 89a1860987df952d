-- Scheduled jobs (the nightly sweep and export) claim each (job, tenant,
-- logical date) with a row this key protects, so replicas run each once,
-- and a replica starting after downtime sees what was due and not done.
CREATE TABLE job_runs (
    job          text NOT NULL,
    tenant_id    text NOT NULL REFERENCES tenants(id),
    logical_date date NOT NULL,
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    error        text NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (job, tenant_id, logical_date)
);
