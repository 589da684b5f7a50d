-- Fencing for branch leases. Every time a lease changes hands (a new owner, or the same owner
-- again after it expired or was given up) its epoch grows; a task remembers the epoch it was
-- claimed under, and a writer may record a task's outcome only while the lease still has that
-- owner AND that epoch. A writer that lost its lease, even to a later life of itself, can never
-- record again. Giving a lease up expires it instead of deleting the row, so epochs never restart.
ALTER TABLE branch_leases ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN claim_epoch INTEGER;

-- The notifications of a finished job are sent once: the first replica to mark the job sends
-- them (a job whose tasks were finished by two replicas at once would otherwise notify twice).
ALTER TABLE jobs ADD COLUMN notified_at INTEGER;
