-- The durable job queue: jobs, their tasks (one per repository branch), progress events and the
-- per-branch writer leases.
--
-- Portable by design: the PostgreSQL schema is this one with BIGINT for the INTEGER columns,
-- `BIGINT GENERATED ALWAYS AS IDENTITY` for tasks.id and JSON (not JSONB, which reorders keys)
-- for the JSON documents. Times are milliseconds since the Unix epoch (UTC), written from the
-- store's clock, never from the database's.

CREATE TABLE jobs (
    id              TEXT    NOT NULL PRIMARY KEY, -- UUIDv7: sorts by creation time
    idempotency_key TEXT,
    kind            TEXT    NOT NULL,
    requested_by    TEXT    NOT NULL,
    -- Derived from the tasks' states in the transaction that changes a task.
    state           TEXT    NOT NULL
        CHECK (state IN ('queued', 'running', 'pending', 'succeeded', 'failed')),
    request         TEXT    NOT NULL, -- JSON, as the API received it
    -- Last `events.seq` handed out: bumping it row-locks the job, which keeps `seq` dense even
    -- with concurrent writers (PostgreSQL).
    last_event_seq  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- NULLs never collide in a unique index (SQLite and PostgreSQL alike): jobs without a key are free.
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (idempotency_key);
CREATE INDEX jobs_by_creation ON jobs (created_at, id);
CREATE INDEX jobs_by_state ON jobs (state, created_at, id);

CREATE TABLE tasks (
    -- Insertion order is the order tasks of a branch run in; AUTOINCREMENT never reuses an id.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    repository  TEXT    NOT NULL,
    branch      TEXT    NOT NULL,
    state       TEXT    NOT NULL
        CHECK (state IN ('queued', 'running', 'pending', 'succeeded', 'failed')),
    payload     TEXT    NOT NULL, -- JSON
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  TEXT,
    result      TEXT,             -- JSON, once finished
    not_before  INTEGER,          -- pending: earliest time of the next attempt
    claimed_by  TEXT,             -- lease owner that claimed it last
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    CHECK (state <> 'pending' OR not_before IS NOT NULL),
    CHECK (state <> 'running' OR claimed_by IS NOT NULL),
    UNIQUE (job_id, repository, branch),
    -- Target of the events foreign key: an event names a task of its own job.
    UNIQUE (job_id, id)
);

-- Claims, runnable branches and queue depths only look at unfinished tasks: the index stays as
-- small as the queue, however long the history grows.
CREATE INDEX tasks_unfinished_by_branch ON tasks (repository, branch, id)
    WHERE state IN ('queued', 'running', 'pending');
CREATE INDEX tasks_by_repository ON tasks (repository, job_id);

CREATE TABLE events (
    job_id   TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL CHECK (seq > 0),
    at       INTEGER NOT NULL,
    level    TEXT    NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    task_id  INTEGER,
    message  TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq),
    FOREIGN KEY (job_id, task_id) REFERENCES tasks (job_id, id) ON DELETE CASCADE
) WITHOUT ROWID;

-- One writer per branch across processes and replicas. A lease is live while now < expires_at.
CREATE TABLE branch_leases (
    repository TEXT    NOT NULL,
    branch     TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (repository, branch)
) WITHOUT ROWID;
