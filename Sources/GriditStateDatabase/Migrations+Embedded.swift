// swift-format-ignore-file
// (tools/format.sh leaves this file as it is: the SQL below is pasted verbatim.)
//
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
        SchemaMigration(identifier: "0002_create_model_store", sql: sql0002),
        SchemaMigration(identifier: "0003_job_ids_never_reused", sql: sql0003),
        SchemaMigration(identifier: "0004_job_work_estimate", sql: sql0004),
        SchemaMigration(identifier: "0005_job_output_name", sql: sql0005),
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

// migrations/0002_create_model_store.sql
private let sql0002 = #"""
-- 0002_create_model_store: versions, names and tags of the content-addressed model store.
-- Shipped migrations are frozen: never edit this file, add 0003_... instead.
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC). Digests are 'sha256:' followed
-- by 64 lower-case hex digits. The blob files live in <stateDir>/blobs/sha256/<hex>; these tables
-- say which pipeline versions exist, what they reference and which names point at them.

-- One pipeline version, identified by the digest of its manifest blob.
CREATE TABLE model_manifest (
  digest      TEXT PRIMARY KEY
              CHECK (length(digest) = 71 AND substr(digest, 1, 7) = 'sha256:'
                     AND substr(digest, 8) NOT GLOB '*[^0-9a-f]*'),
  size        INTEGER NOT NULL CHECK (size > 0),
  created_at  INTEGER NOT NULL,
  -- Where it was imported from (informative).
  source      TEXT NOT NULL
) STRICT;

-- The blobs a manifest references, by role (a copy of the manifest's list, for gc and listing).
CREATE TABLE model_manifest_blob (
  manifest    TEXT NOT NULL REFERENCES model_manifest (digest) ON DELETE CASCADE,
  role        TEXT NOT NULL CHECK (length(role) BETWEEN 1 AND 64),
  digest      TEXT NOT NULL
              CHECK (length(digest) = 71 AND substr(digest, 1, 7) = 'sha256:'
                     AND substr(digest, 8) NOT GLOB '*[^0-9a-f]*'),
  size        INTEGER NOT NULL CHECK (size >= 0),
  media_type  TEXT NOT NULL,
  PRIMARY KEY (manifest, role)
) STRICT;

CREATE INDEX model_manifest_blob_digest ON model_manifest_blob (digest);

-- NAME:TAG -> manifest. Tags move; every change is appended to model_tag_event. A tagged
-- manifest cannot be deleted (the foreign key has no ON DELETE action).
CREATE TABLE model_tag (
  name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
  tag         TEXT NOT NULL CHECK (length(tag) BETWEEN 1 AND 128),
  manifest    TEXT NOT NULL REFERENCES model_manifest (digest),
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (name, tag)
) STRICT;

CREATE INDEX model_tag_manifest ON model_tag (manifest);

-- Append-only history of every tag: what it pointed to, when, and what changed it. No foreign
-- keys: the history outlives the manifests that gc removes.
CREATE TABLE model_tag_event (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL,
  tag         TEXT NOT NULL,
  action      TEXT NOT NULL CHECK (action IN ('import', 'tag', 'rm')),
  -- What the tag points to after the event (NULL: the tag was removed).
  manifest    TEXT,
  -- What it pointed to before (NULL: it did not exist).
  previous    TEXT,
  at          INTEGER NOT NULL,
  CHECK ((action = 'rm') = (manifest IS NULL))
) STRICT;

CREATE INDEX model_tag_event_tag ON model_tag_event (name, tag, id);

-- The cheap integrity check: the stat of a blob file when its content last hashed to `digest`.
-- A load whose stat differs (any write changes ctime) re-hashes the file.
CREATE TABLE model_blob_check (
  path        TEXT PRIMARY KEY,
  digest      TEXT NOT NULL,
  size        INTEGER NOT NULL,
  device      INTEGER NOT NULL,
  inode       INTEGER NOT NULL,
  mtime_ns    INTEGER NOT NULL,
  ctime_ns    INTEGER NOT NULL,
  checked_at  INTEGER NOT NULL
) STRICT;

-- gc and `models list` ask which versions live jobs pin.
CREATE INDEX job_live_pipeline ON job (pipeline_digest) WHERE state IN ('queued', 'running', 'retryable');

"""#

// migrations/0003_job_ids_never_reused.sql
private let sql0003 = #"""
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

"""#

// migrations/0004_job_work_estimate.sql
private let sql0004 = #"""
-- 0004_job_work_estimate: each job's estimated compute, for the per-user work limit.
-- Shipped migrations are frozen: never edit this file, add 0005_... instead.
-- Seconds at the nominal rate of `griditd run --dry-run` (100 GFLOP/s), as estimated at submit
-- from the job's plan; 0 for jobs submitted before this migration.

ALTER TABLE job ADD COLUMN work_seconds REAL NOT NULL DEFAULT 0 CHECK (work_seconds >= 0);

-- The per-user limits sum a user's live jobs.
CREATE INDEX job_owner_live ON job (owner_uid) WHERE state IN ('queued', 'running', 'retryable');

"""#

// migrations/0005_job_output_name.sql
private let sql0005 = #"""
-- 0005_job_output_name: the output folder a job was submitted with, so that a submit (or a retry)
-- checks in its own transaction that no live job of the same user writes to that folder, or to
-- one inside or around it (before, only the submitting griditd's own check stood guard).
-- Shipped migrations are frozen: never edit this file, add 0006_... instead.
-- NULL: the automatic job-<id> folder. Jobs from before this migration get the name their
-- params hold.

ALTER TABLE job ADD COLUMN output_name TEXT CHECK (output_name IS NULL OR length(output_name) > 0);

UPDATE job SET output_name = json_extract(params, '$.output')
 WHERE json_type(params, '$.output') = 'text' AND length(json_extract(params, '$.output')) > 0;

"""#
