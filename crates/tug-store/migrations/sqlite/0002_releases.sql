-- Releases: the artifacts CI registers, the derived index of release commits (rebuildable from
-- git at any time), unpins and rollout states. Same portability rules as 0001.

CREATE TABLE artifacts (
    -- Insertion order breaks ties between artifacts registered in the same millisecond.
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    service    TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    branch     TEXT    NOT NULL,
    -- The branch with '_' written as '/': CI pipelines write `feature/x` both ways.
    branch_key TEXT    NOT NULL,
    artifact   TEXT    NOT NULL, -- artifact.json as registered
    -- Rendered manifests per environment for services released by copying: JSON object of
    -- "<env>/<file>" to content.
    bundle     TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (service, id)
);

CREATE INDEX artifacts_by_branch ON artifacts (service, branch_key, created_at, seq);

-- One row per release commit found on an environment's branch. Rows of one branch are inserted
-- oldest first, so `seq` is history order within a branch even when commit times tie.
CREATE TABLE releases (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    repository        TEXT    NOT NULL,
    branch            TEXT    NOT NULL,
    commit_sha        TEXT    NOT NULL,
    service           TEXT    NOT NULL,
    environment       TEXT    NOT NULL,
    artifact_id       TEXT    NOT NULL,
    intent            TEXT    NOT NULL, -- JSON, tug_release::Intent
    released_by_name  TEXT    NOT NULL,
    released_by_email TEXT    NOT NULL,
    request           TEXT,
    released_at       INTEGER NOT NULL,
    UNIQUE (repository, branch, commit_sha, service, environment)
);

CREATE INDEX releases_by_service ON releases (service, environment, seq);

-- Explicit lifts of rollback pins; recorded in git too (an empty commit), so also rebuildable.
CREATE TABLE release_unpins (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    repository  TEXT    NOT NULL,
    branch      TEXT    NOT NULL,
    commit_sha  TEXT    NOT NULL,
    service     TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    by_name     TEXT    NOT NULL,
    by_email    TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    UNIQUE (repository, branch, commit_sha, service, environment)
);

CREATE INDEX release_unpins_by_service ON release_unpins (service, environment);

-- How far the index has read each branch: the tip it last indexed.
CREATE TABLE release_index_heads (
    repository TEXT    NOT NULL,
    branch     TEXT    NOT NULL,
    commit_sha TEXT    NOT NULL,
    indexed_at INTEGER NOT NULL,
    PRIMARY KEY (repository, branch)
) WITHOUT ROWID;

-- The last rollout state a cluster reported for a service in an environment.
CREATE TABLE rollout_states (
    service     TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    revision    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (service, environment)
) WITHOUT ROWID;
