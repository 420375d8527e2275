// GriditJobQueue: the durable job queue behind griditd.
//
// - `JobStore`: the storage contract (submit, claim with lease + fencing token, heartbeat,
//   progress, complete, fail, cancel, retry, crash recovery, pause, list, prune, the versions
//   live jobs pin), written against no database: a second backend runs `JobStoreConformance`.
// - `JobStateMachine`: the pure transition rules every store applies; no I/O, injected clock.
// - `SQLiteJobStore`: the GRDB implementation of `JobStore` on the `StateDatabase`
//   (GriditStateDatabase owns the file, its schema and its lock).
// - Errors are GriditStateDatabase's `StateError`.
