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
