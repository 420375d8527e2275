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
