-- 0003_job_ids_never_reused: a job id is never handed out twice.
-- Shipped migrations are frozen: never edit this file, add 0004_... instead.
-- 0001's `id INTEGER PRIMARY KEY` gives a new row max(id) + 1, so after the newest jobs were
-- pruned the next submit got one of their ids (and met their leftover folders). AUTOINCREMENT
-- keeps the largest id ever used in sqlite_sequence. SQLite cannot add it to an existing table,
-- so the table is rebuilt (sqlite.org/lang_altertable.html, "other kinds of table schema
-- changes"): the migrator runs this with foreign keys off and checks them before it commits.

CREATE TABLE job_new (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
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

INSERT INTO job_new (id, owner_uid, idempotency_key, state, priority, params, pipeline_digest, length,
                     created_at, updated_at, started_at, finished_at, attempt, max_attempts, crash_count,
                     cancel_requested, lease_owner, lease_token, lease_expires_at, not_before, progress,
                     error_class, error_message, output_dir)
  SELECT id, owner_uid, idempotency_key, state, priority, params, pipeline_digest, length,
         created_at, updated_at, started_at, finished_at, attempt, max_attempts, crash_count,
         cancel_requested, lease_owner, lease_token, lease_expires_at, not_before, progress,
         error_class, error_message, output_dir
    FROM job;
-- (The copy set sqlite_sequence to the largest id; the rename below carries it over.)

DROP TABLE job;
ALTER TABLE job_new RENAME TO job;

-- The indexes of 0001 and 0002, dropped with the old table.
CREATE INDEX job_claim ON job (priority DESC, id) WHERE state IN ('queued', 'retryable');
CREATE INDEX job_running_lease ON job (lease_expires_at) WHERE state = 'running';
CREATE INDEX job_state ON job (state, finished_at);
CREATE INDEX job_owner ON job (owner_uid, id);
CREATE UNIQUE INDEX job_idempotency ON job (owner_uid, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX job_live_pipeline ON job (pipeline_digest) WHERE state IN ('queued', 'running', 'retryable');
