// swift-format-ignore-file
// (tools/format.sh leaves this file as it is: the SQL below is pasted verbatim.)
//
// Embedded copies of the SQL files in `migrations/postgres/`, the PostgreSQL store's own
// migrations (the SQLite state database's are in `migrations/`, GriditStateDatabase).
//
// SwiftPM resources cannot reach outside a target folder, so the binary carries the SQL as
// string literals. `PostgresMigrationTests` fails if any literal differs by one byte from its
// file, or if a shipped file no longer matches its pinned SHA-256. To add a migration: create
// `migrations/postgres/NNNN_name.sql` (additive only), paste it below verbatim (closing
// delimiter at column 0), append it to `all`, and pin its hash in `PostgresMigrationTests`.

import GriditStateDatabase

/// The PostgreSQL store's migrations (`migrations/postgres/`), frozen and additive.
public enum PostgresMigrations {
    /// Every migration this binary knows, in the order it applies them.
    public static let all: [SchemaMigration] = [
        SchemaMigration(identifier: "0001_create_job", sql: sql0001),
        SchemaMigration(identifier: "0002_create_node", sql: sql0002),
        SchemaMigration(identifier: "0003_create_cluster_fact", sql: sql0003),
        SchemaMigration(identifier: "0004_job_output_name", sql: sql0004),
    ]
}

// migrations/postgres/0001_create_job.sql
private let sql0001 = #"""
-- 0001_create_job (PostgreSQL): the job queue that many griditd hosts share.
-- Shipped migrations are frozen: never edit this file, add 0002_... instead. They are additive
-- only (new tables, new columns with a default, new indexes; never a drop, a rename or a type
-- change), so that two griditd versions can share the database during a rolling upgrade.
-- The migrator runs them under an advisory lock with search_path set to griditd's schema, one
-- statement at a time: end every statement with ';' at the end of a line.
-- The same columns and rules as the SQLite store's `job` table (migrations/0001, 0003, 0004);
-- times are timestamptz, so both the database clock (now()) and an injected one compare.

CREATE TABLE job (
  -- An identity column's sequence never hands out an id twice, not even a pruned job's.
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  owner_uid        bigint NOT NULL CHECK (owner_uid >= 0),
  idempotency_key  text CHECK (idempotency_key IS NULL OR octet_length(idempotency_key) BETWEEN 1 AND 200),
  state            text NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued','running','retryable','succeeded','failed','canceled','dead')),
  priority         bigint NOT NULL DEFAULT 0,
  -- JSON kept as the client wrote it (json, not jsonb, would also do; text keeps the bytes).
  params           text NOT NULL CHECK (params::json IS NOT NULL),
  pipeline_digest  text,
  length           bigint NOT NULL CHECK (length > 0),
  created_at       timestamptz NOT NULL,
  updated_at       timestamptz NOT NULL,
  started_at       timestamptz,
  finished_at      timestamptz,
  attempt          bigint NOT NULL DEFAULT 0 CHECK (attempt >= 0),
  max_attempts     bigint NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
  crash_count      bigint NOT NULL DEFAULT 0 CHECK (crash_count >= 0),
  cancel_requested boolean NOT NULL DEFAULT false,
  lease_owner      text,
  lease_token      bigint,
  lease_expires_at timestamptz,
  not_before       timestamptz NOT NULL,
  progress         text NOT NULL DEFAULT '{"stage":"grid","grids_done":0,"frames_done":0}'
                   CHECK (progress::json IS NOT NULL),
  error_class      text,
  error_message    text,
  output_dir       text,
  work_seconds     double precision NOT NULL DEFAULT 0 CHECK (work_seconds >= 0),
  -- A lease exists exactly while the job is running.
  CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- Claim order: highest priority first, FIFO (id) within a priority, over claimable rows only.
CREATE INDEX job_claim ON job (priority DESC, id) WHERE state IN ('queued', 'retryable');

-- Lease expiry scan.
CREATE INDEX job_running_lease ON job (lease_expires_at) WHERE state = 'running';

-- A COMMIT whose outcome is unknown is resolved by looking its lease token up.
CREATE INDEX job_lease_token ON job (lease_token) WHERE lease_token IS NOT NULL;

-- Listing and retention.
CREATE INDEX job_state ON job (state, finished_at);
CREATE INDEX job_owner ON job (owner_uid, id);

-- One job per (owner, idempotency key), for as long as the job row exists.
CREATE UNIQUE INDEX job_idempotency ON job (owner_uid, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The versions live jobs pin, and the per-user limits over live jobs.
CREATE INDEX job_live_pipeline ON job (pipeline_digest) WHERE state IN ('queued', 'running', 'retryable');
CREATE INDEX job_owner_live ON job (owner_uid) WHERE state IN ('queued', 'running', 'retryable');

-- Every attempt's error (failures and crashes), oldest first.
CREATE TABLE job_error (
  id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id   bigint NOT NULL REFERENCES job (id) ON DELETE CASCADE,
  attempt  bigint NOT NULL,
  at       timestamptz NOT NULL,
  class    text NOT NULL,
  message  text NOT NULL
);

CREATE INDEX job_error_job ON job_error (job_id, at);

-- Queue-wide switches; exactly one row.
CREATE TABLE queue_state (
  id     integer PRIMARY KEY CHECK (id = 1),
  paused boolean NOT NULL
);

INSERT INTO queue_state (id, paused) VALUES (1, false);

"""#

// migrations/postgres/0002_create_node.sql
private let sql0002 = #"""
-- 0002_create_node (PostgreSQL): the griditd hosts that share the queue, and the host of each job.
-- Shipped migrations are frozen: never edit this file, add 0003_... instead (additive only).

-- One row per griditd host, keyed by the node id it keeps in its state directory (not its
-- hostname). Written at start and by its heartbeat; a drained node claims nothing new.
CREATE TABLE node (
  id           uuid PRIMARY KEY,
  hostname     text NOT NULL,
  version      text NOT NULL,
  started_at   timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL,
  draining     boolean NOT NULL DEFAULT false
);

-- The node whose worker holds the job's lease (set by each claim, kept afterwards as the host
-- that ran it last). Null for jobs claimed by a griditd older than this migration. No foreign
-- key: a claim must never wait on the node table, and nodes are never deleted today.
ALTER TABLE job ADD COLUMN node_id uuid;

-- A starting host recovers its own running jobs; `nodes list` counts each host's.
CREATE INDEX job_running_node ON job (node_id) WHERE state = 'running';

"""#

// migrations/postgres/0003_create_cluster_fact.sql
private let sql0003 = #"""
-- 0003_create_cluster_fact (PostgreSQL): facts about the whole cluster, one row each.
-- Shipped migrations are frozen: never edit this file, add 0004_... instead (additive only).

-- `shared_root_mark`: the token in <shared-root>/.gridit-cluster, taken from the first host that
-- started with this database. A host whose shared root holds no token, or another one, sees an
-- empty mount point or another cluster's share: it does not start, and a running one claims
-- nothing until the share is back.
CREATE TABLE cluster_fact (
  name       text PRIMARY KEY,
  value      text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

"""#

// migrations/postgres/0004_job_output_name.sql
private let sql0004 = #"""
-- 0004_job_output_name (PostgreSQL): the output folder a job was submitted with, so that a submit
-- (or a retry) checks under the submit lock that no live job of the same user, on any host,
-- writes to that folder, or to one inside or around it.
-- Shipped migrations are frozen: never edit this file, add 0005_... instead (additive only).
-- NULL: the automatic job-<id> folder. Jobs from before this migration get the name their
-- params hold; a griditd of an older version inserts NULL (its own check still applies).

ALTER TABLE job ADD COLUMN output_name text CHECK (output_name IS NULL OR length(output_name) > 0);

UPDATE job SET output_name = params::jsonb ->> 'output'
 WHERE jsonb_typeof(params::jsonb -> 'output') = 'string' AND length(params::jsonb ->> 'output') > 0;

"""#
