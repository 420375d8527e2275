// Embedded copies of the SQL files in the top-level `migrations/` folder.
//
// SwiftPM resources cannot reach outside a target folder, so the binary carries the SQL as
// string literals. `MigrationTests` fails if any literal differs by one byte from its file, or
// if a shipped file no longer matches its pinned SHA-256. To add a migration: create
// `migrations/NNNN_name.sql`, paste it below verbatim (closing delimiter at column 0), append
// it to `all`, and pin its hash in `MigrationTests`.

extension SchemaMigration {
    /// Every migration this binary knows, in the order it applies them.
    public static let all: [SchemaMigration] = [
        SchemaMigration(identifier: "0001_create_job", sql: sql0001),
    ]
}

// migrations/0001_create_job.sql
private let sql0001 = #"""
-- 0001_create_job: the durable job queue.
-- Shipped migrations are frozen: never edit this file, add 0002_... instead.
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC).

CREATE TABLE job (
  id               INTEGER PRIMARY KEY,
  owner_uid        INTEGER NOT NULL CHECK (owner_uid >= 0),
  idempotency_key  TEXT CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 200),
  state            TEXT NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued','running','retryable','succeeded','failed','canceled','dead')),
  priority         INTEGER NOT NULL DEFAULT 0,
  params           TEXT NOT NULL CHECK (json_valid(params)),
  pipeline_digest  TEXT,
  length           INTEGER NOT NULL CHECK (length > 0),
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  started_at       INTEGER,
  finished_at      INTEGER,
  attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
  max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
  crash_count      INTEGER NOT NULL DEFAULT 0 CHECK (crash_count >= 0),
  cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
  lease_owner      TEXT,
  lease_token      INTEGER,
  lease_expires_at INTEGER,
  not_before       INTEGER NOT NULL,
  progress         TEXT NOT NULL DEFAULT '{"stage":"grid","grids_done":0,"frames_done":0}'
                   CHECK (json_valid(progress)),
  error_class      TEXT,
  error_message    TEXT,
  output_dir       TEXT,
  -- A lease exists exactly while the job is running.
  CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
) STRICT;

-- Claim order: highest priority first, FIFO (id) within a priority, over claimable rows only.
CREATE INDEX job_claim ON job (priority DESC, id) WHERE state IN ('queued', 'retryable');

-- Lease expiry scan.
CREATE INDEX job_running_lease ON job (lease_expires_at) WHERE state = 'running';

-- Listing and retention.
CREATE INDEX job_state ON job (state, finished_at);
CREATE INDEX job_owner ON job (owner_uid, id);

-- One job per (owner, idempotency key), for as long as the job row exists.
CREATE UNIQUE INDEX job_idempotency ON job (owner_uid, idempotency_key)
  WHERE idempotency_key IS NOT NULL;

-- Every attempt's error (failures and crashes), oldest first.
CREATE TABLE job_error (
  job_id   INTEGER NOT NULL REFERENCES job (id) ON DELETE CASCADE,
  attempt  INTEGER NOT NULL,
  at       INTEGER NOT NULL,
  class    TEXT NOT NULL,
  message  TEXT NOT NULL
) STRICT;

CREATE INDEX job_error_job ON job_error (job_id, at);

-- Queue-wide switches; exactly one row.
CREATE TABLE queue_state (
  id     INTEGER PRIMARY KEY CHECK (id = 1),
  paused INTEGER NOT NULL CHECK (paused IN (0, 1))
) STRICT;

INSERT INTO queue_state (id, paused) VALUES (1, 0);

"""#
