-- tug's schema on PostgreSQL: the tables of the SQLite migrations (0001 job queue, 0002
-- releases, 0003 lease epochs) in one step, with BIGINT for integers and identity columns for
-- the insertion-ordered ids. JSON documents are kept as TEXT, byte for byte as the API received
-- them (`json` would too, but `jsonb` reorders keys); cast with `::json` to query them.
-- Times are milliseconds since the Unix epoch (UTC), written from the store's clock, never from
-- the database's, so every replica and both backends agree.

CREATE TABLE jobs (
    id              TEXT    NOT NULL PRIMARY KEY, -- UUIDv7: sorts by creation time
    idempotency_key TEXT,
    kind            TEXT    NOT NULL,
    requested_by    TEXT    NOT NULL,
    state           TEXT    NOT NULL
        CHECK (state IN ('queued', 'running', 'pending', 'succeeded', 'failed')),
    request         TEXT    NOT NULL,
    -- Last `events.seq` handed out: bumping it row-locks the job, which keeps `seq` dense with
    -- concurrent writers.
    last_event_seq  BIGINT  NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);

CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (idempotency_key);
CREATE INDEX jobs_by_creation ON jobs (created_at, id);
CREATE INDEX jobs_by_state ON jobs (state, created_at, id);

CREATE TABLE tasks (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    repository  TEXT    NOT NULL,
    branch      TEXT    NOT NULL,
    state       TEXT    NOT NULL
        CHECK (state IN ('queued', 'running', 'pending', 'succeeded', 'failed')),
    payload     TEXT    NOT NULL,
    attempts    BIGINT  NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  TEXT,
    result      TEXT,
    not_before  BIGINT,
    claimed_by  TEXT,
    claim_epoch BIGINT,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    CHECK (state <> 'pending' OR not_before IS NOT NULL),
    CHECK (state <> 'running' OR claimed_by IS NOT NULL),
    UNIQUE (job_id, repository, branch),
    UNIQUE (job_id, id)
);

CREATE INDEX tasks_unfinished_by_branch ON tasks (repository, branch, id)
    WHERE state IN ('queued', 'running', 'pending');
CREATE INDEX tasks_by_repository ON tasks (repository, job_id);
CREATE INDEX tasks_by_job ON tasks (job_id, id);

CREATE TABLE events (
    job_id   TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq      BIGINT  NOT NULL CHECK (seq > 0),
    at       BIGINT  NOT NULL,
    level    TEXT    NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    task_id  BIGINT,
    message  TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq),
    FOREIGN KEY (job_id, task_id) REFERENCES tasks (job_id, id) ON DELETE CASCADE
);

-- Which notifications of a finished job were sent, per channel: the replica that inserts the
-- row sends them.
CREATE TABLE notifications_sent (
    job_id  TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    channel TEXT    NOT NULL,
    at      BIGINT  NOT NULL,
    PRIMARY KEY (job_id, channel)
);

-- One writer per branch across replicas. Live while now < expires_at; `epoch` grows each time
-- the lease changes hands (see the SQLite migration 0003).
CREATE TABLE branch_leases (
    repository TEXT    NOT NULL,
    branch     TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    expires_at BIGINT  NOT NULL,
    epoch      BIGINT  NOT NULL DEFAULT 1,
    PRIMARY KEY (repository, branch)
);

CREATE TABLE artifacts (
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service    TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    branch     TEXT    NOT NULL,
    branch_key TEXT    NOT NULL,
    artifact   TEXT    NOT NULL,
    bundle     TEXT,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL,
    UNIQUE (service, id)
);

CREATE INDEX artifacts_by_branch ON artifacts (service, branch_key, created_at, seq);

CREATE TABLE releases (
    seq               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository        TEXT    NOT NULL,
    branch            TEXT    NOT NULL,
    commit_sha        TEXT    NOT NULL,
    service           TEXT    NOT NULL,
    environment       TEXT    NOT NULL,
    artifact_id       TEXT    NOT NULL,
    intent            TEXT    NOT NULL,
    released_by_name  TEXT    NOT NULL,
    released_by_email TEXT    NOT NULL,
    request           TEXT,
    released_at       BIGINT  NOT NULL,
    UNIQUE (repository, branch, commit_sha, service, environment)
);

CREATE INDEX releases_by_service ON releases (service, environment, seq);

CREATE TABLE release_unpins (
    seq         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository  TEXT    NOT NULL,
    branch      TEXT    NOT NULL,
    commit_sha  TEXT    NOT NULL,
    service     TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    by_name     TEXT    NOT NULL,
    by_email    TEXT    NOT NULL,
    at          BIGINT  NOT NULL,
    UNIQUE (repository, branch, commit_sha, service, environment)
);

CREATE INDEX release_unpins_by_service ON release_unpins (service, environment);

CREATE TABLE release_index_heads (
    repository TEXT    NOT NULL,
    branch     TEXT    NOT NULL,
    commit_sha TEXT    NOT NULL,
    indexed_at BIGINT  NOT NULL,
    PRIMARY KEY (repository, branch)
);

CREATE TABLE rollout_states (
    service     TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    revision    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    at          BIGINT  NOT NULL,
    PRIMARY KEY (service, environment)
);
