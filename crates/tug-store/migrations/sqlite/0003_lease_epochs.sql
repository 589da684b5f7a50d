-- Fencing for branch leases. Every time a lease changes hands (a new owner, or the same owner
-- again after it expired or was given up) its epoch grows; a task remembers the epoch it was
-- claimed under, and a writer may record a task's outcome only while the lease still has that
-- owner AND that epoch. A writer that lost its lease, even to a later life of itself, can never
-- record again. Giving a lease up expires it instead of deleting the row, so epochs never restart.
ALTER TABLE branch_leases ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN claim_epoch INTEGER;

-- Which notifications of a finished job were sent, per channel (the job's own notifications,
-- the release announcements): the first replica to insert the row sends them, so replicas that
-- all learn of the job's end notify once between them.
CREATE TABLE notifications_sent (
    job_id  TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    channel TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (job_id, channel)
) WITHOUT ROWID;
