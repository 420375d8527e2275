// Durable SQLite job queue: migrations, JobStore, job state machine.
