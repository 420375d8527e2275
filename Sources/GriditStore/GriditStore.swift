// GriditStore: the durable SQLite job queue behind griditd.
//
// - `JobStore`: the storage contract (submit, claim with lease + fencing token, heartbeat,
//   progress, complete, fail, cancel, retry, crash recovery, pause, list, prune).
// - `StateDatabase`: the state directory's one SQLite file (WAL, synchronous FULL, BEGIN IMMEDIATE
//   writes, migrations), shared by the job queue and the model store.
// - `SQLiteJobStore`: the GRDB implementation of `JobStore` over it.
// - `JobStateMachine`: the pure transition rules every store applies; no I/O, injected clock.
// - `SchemaMigration`: the embedded copies of `migrations/NNNN_name.sql`.
// - `StateDirectoryLock`: the single-writer `flock` on `<stateDir>/griditd.lock`.
// - `StoreError`: the one error type this module throws.
