-- 0004_job_work_estimate: each job's estimated compute, for the per-user work limit.
-- Shipped migrations are frozen: never edit this file, add 0005_... instead.
-- Seconds at the nominal rate of `griditd run --dry-run` (100 GFLOP/s), as estimated at submit
-- from the job's plan; 0 for jobs submitted before this migration.

ALTER TABLE job ADD COLUMN work_seconds REAL NOT NULL DEFAULT 0 CHECK (work_seconds >= 0);

-- The per-user limits sum a user's live jobs.
CREATE INDEX job_owner_live ON job (owner_uid) WHERE state IN ('queued', 'running', 'retryable');
