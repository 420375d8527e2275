// GriditStore: the durable SQLite job queue behind griditd.
//
// - `JobStore`: the storage contract (submit, claim with lease + fencing token, heartbeat,
//   progress, complete, fail, cancel, retry, crash recovery, pause, list, prune).
// - `SQLiteJobStore`: the GRDB implementation (WAL, synchronous FULL, BEGIN IMMEDIATE writes).
// - `JobStateMachine`: the pure transition rules every store applies; no I/O, injected clock.
// - `SchemaMigration`: the embedded copies of `migrations/NNNN_name.sql`.
// - `StateDirectoryLock`: the single-writer `flock` on `<stateDir>/griditd.lock`.
// - `StoreError`: the one error type this module throws.
