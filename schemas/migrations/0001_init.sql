-- roster's first schema: tenants, the directory snapshot, its history, and
-- the run ledger. Every directory row carries tenant_id.

CREATE TABLE tenants (
    id                    text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    seats                 integer CHECK (seats IS NULL OR seats >= 0),
    date_format           text NOT NULL DEFAULT 'MM/DD/YYYY' CHECK (date_format IN ('MM/DD/YYYY', 'DD/MM/YYYY')),
    timezone              text NOT NULL DEFAULT 'America/New_York',
    contact_email         text NOT NULL DEFAULT '',
    omitted               text NOT NULL DEFAULT 'keep' CHECK (omitted IN ('keep', 'deactivate')),
    mass_deactivation_pct numeric NOT NULL DEFAULT 20 CHECK (mass_deactivation_pct BETWEEN 0 AND 100),
    delimiter             text NOT NULL DEFAULT 'comma' CHECK (delimiter IN ('comma', 'auto')),
    require_encryption    boolean NOT NULL DEFAULT false,
    max_file_bytes        bigint NOT NULL DEFAULT 1073741824,
    custom_fields         text[] NOT NULL DEFAULT '{}',
    nightly_at            text NOT NULL DEFAULT '02:00',
    export_enabled        boolean NOT NULL DEFAULT true,
    sftp_password_hash    text NOT NULL DEFAULT '',
    sftp_public_keys      text[] NOT NULL DEFAULT '{}',
    pgp_public_key        text NOT NULL DEFAULT '',
    pgp_private_key       bytea,
    pgp_key_id            text NOT NULL DEFAULT '',
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE departments (
    id         bigserial PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants(id),
    name       text NOT NULL,
    -- names match case-insensitively; the first spelling seen is kept in name.
    name_key   text NOT NULL,
    parent_id  bigint REFERENCES departments(id),
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name_key)
);

CREATE TABLE runs (
    id             bigserial PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants(id),
    trigger        text NOT NULL CHECK (trigger IN ('scheduled', 'manual', 'backfill')),
    logical_date   date NOT NULL,
    status         text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'partial', 'failed')),
    dry_run        boolean NOT NULL DEFAULT false,
    -- failure_class says whose move it is: 'data' (the customer fixes the
    -- file) or 'system' (retryable, the operator's problem).
    failure_class  text CHECK (failure_class IN ('data', 'system')),
    failure_reason text NOT NULL DEFAULT '',
    host           text NOT NULL DEFAULT '',
    pid            integer NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE INDEX runs_tenant_started ON runs (tenant_id, started_at DESC);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

CREATE TABLE run_files (
    id           bigserial PRIMARY KEY,
    run_id       bigint NOT NULL REFERENCES runs(id),
    tenant_id    text NOT NULL REFERENCES tenants(id),
    name         text NOT NULL,
    sha256       text NOT NULL,
    size         bigint NOT NULL DEFAULT 0,
    kind         text NOT NULL DEFAULT '' CHECK (kind IN ('', 'users', 'departments')),
    status       text NOT NULL DEFAULT 'processing' CHECK (status IN ('processing', 'applied', 'rejected', 'duplicate', 'planned', 'failed')),
    rows         integer NOT NULL DEFAULT 0,
    created      integer NOT NULL DEFAULT 0,
    updated      integer NOT NULL DEFAULT 0,
    deactivated  integer NOT NULL DEFAULT 0,
    reactivated  integer NOT NULL DEFAULT 0,
    scheduled    integer NOT NULL DEFAULT 0,
    unchanged    integer NOT NULL DEFAULT 0,
    errors       integer NOT NULL DEFAULT 0,
    warnings     integer NOT NULL DEFAULT 0,
    error_code   text NOT NULL DEFAULT '',
    error        text NOT NULL DEFAULT '',
    applied_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_files_run ON run_files (run_id);
-- The duplicate rule asks for "the last applied file of this kind".
CREATE INDEX run_files_last_applied ON run_files (tenant_id, kind, applied_at DESC) WHERE status = 'applied';

CREATE TABLE run_stages (
    id          bigserial PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES runs(id),
    file_id     bigint REFERENCES run_files(id),
    stage       text NOT NULL,
    status      text NOT NULL DEFAULT 'ok',
    rows_in     bigint NOT NULL DEFAULT 0,
    rows_out    bigint NOT NULL DEFAULT 0,
    duration_ms double precision NOT NULL DEFAULT 0,
    error       text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_stages_run ON run_stages (run_id);

CREATE TABLE issues (
    id        bigserial PRIMARY KEY,
    run_id    bigint NOT NULL REFERENCES runs(id),
    file_id   bigint REFERENCES run_files(id),
    row       integer,
    "column"  text NOT NULL DEFAULT '',
    code      text NOT NULL,
    severity  text NOT NULL CHECK (severity IN ('error', 'warning', 'info')),
    message   text NOT NULL,
    value     text NOT NULL DEFAULT ''
);
CREATE INDEX issues_run ON issues (run_id, file_id);

CREATE TABLE users (
    id                bigserial PRIMARY KEY,
    tenant_id         text NOT NULL REFERENCES tenants(id),
    employee_id       text,
    email             text NOT NULL,
    first_name        text NOT NULL DEFAULT '',
    last_name         text NOT NULL DEFAULT '',
    manager_id        bigint REFERENCES users(id),
    department_id     bigint REFERENCES departments(id),
    title             text NOT NULL DEFAULT '',
    location          text NOT NULL DEFAULT '',
    start_date        date,
    deactivation_date date,
    custom            jsonb NOT NULL DEFAULT '{}',
    active            boolean NOT NULL DEFAULT true,
    last_run_id       bigint, -- the run that last changed the row (no key: hot path)
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Deferred so that a file may swap two users' ids or emails: the rule is
    -- judged on the state after the whole file, at commit.
    CONSTRAINT users_employee_id_key UNIQUE (tenant_id, employee_id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT users_active_email_key EXCLUDE USING btree (tenant_id WITH =, email WITH =) WHERE (active) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX users_tenant ON users (tenant_id);
CREATE INDEX users_manager ON users (manager_id);
CREATE INDEX users_scheduled ON users (tenant_id, deactivation_date) WHERE active AND deactivation_date IS NOT NULL;

-- One row per user and run that changed it. changes maps each changed field
-- to {"old": …, "new": …}; user_field_history below unnests it to one row per
-- field for people who query history by field.
-- No foreign keys here on purpose: history is append-only and written only
-- by the apply transaction, beside the users it describes; four key checks
-- per row doubled the cost of a first load.
CREATE TABLE user_history (
    id             bigserial PRIMARY KEY,
    tenant_id      text NOT NULL,
    run_id         bigint NOT NULL,
    file_id        bigint,
    user_id        bigint NOT NULL,
    action         text NOT NULL,
    effective_date date NOT NULL,
    changes        jsonb NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_history_user ON user_history (user_id, id);
CREATE INDEX user_history_tenant_date ON user_history (tenant_id, effective_date);

CREATE VIEW user_field_history AS
SELECT h.id, h.tenant_id, h.run_id, h.file_id, h.user_id, h.action, c.key AS field,
       c.value ->> 'old' AS old_value, c.value ->> 'new' AS new_value, h.effective_date, h.recorded_at
FROM user_history h, jsonb_each(h.changes) c;

CREATE TABLE department_history (
    id             bigserial PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants(id),
    run_id         bigint NOT NULL REFERENCES runs(id),
    department_id  bigint NOT NULL REFERENCES departments(id),
    action         text NOT NULL,
    effective_date date NOT NULL,
    changes        jsonb NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
