-- The audit trail: one row per state-changing call, accepted or refused, newest last. `at` is
-- milliseconds since the epoch from the store's clock. `actor` is the name a caller authenticated
-- as (a token's name); `actor_detail` is JSON for what an identity provider adds (issuer,
-- subject, the rule that matched), NULL for tokens.
CREATE TABLE audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    actor_detail TEXT,
    action       TEXT    NOT NULL,
    service      TEXT,
    environment  TEXT,
    repository   TEXT,
    branch       TEXT,
    request_id   TEXT,
    result       TEXT    NOT NULL,
    code         TEXT,
    message      TEXT    NOT NULL
);

CREATE INDEX audit_by_at ON audit (at);
CREATE INDEX audit_by_actor ON audit (actor, id);
CREATE INDEX audit_by_service ON audit (service, environment, id);
