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
