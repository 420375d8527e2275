// GriditJobQueue: the durable job queue behind griditd.
//
// - `JobStore`: the storage contract (submit, claim with lease + fencing token, heartbeat,
//   progress, complete, fail, cancel, retry, crash recovery, pause, list, prune, the versions
//   live jobs pin), written against no database: GriditJobStorePostgres runs `JobStoreConformance` too.
// - `JobStateMachine`: the pure transition rules every store applies; no I/O, injected clock.
// - `TransitionStore`: the single-job writes (worker and user) as one locked read, the state
//   machine, one write; `StoreRules.swift`: the checks both backends make outside it.
// - `SQLiteJobStore`: the GRDB implementation of `JobStore` on the `StateDatabase`
//   (GriditStateDatabase owns the file, its schema and its lock).
// - Errors are GriditStateDatabase's `StateError`.
