// GriditJobStorePostgres: the job queue on PostgreSQL, the queue many griditd hosts share.
//
// - `PostgresJobStore`: `JobStore` through a PostgresNIO connection pool. Claims are one
//   statement (`FOR UPDATE SKIP LOCKED` in a materialised CTE); every other write reads its row
//   `FOR UPDATE`, applies `JobStateMachine` and writes the row back in one short transaction.
// - `PostgresLocation`: the `postgres://` URL, with the password from a file or `PGPASSWORD`.
// - `PostgresMigrations`, `PostgresMigrator`: the store's own frozen, additive SQL
//   (`migrations/postgres/`), applied under an advisory lock.
// Errors are GriditStateDatabase's `StateError`, as for the SQLite store.

import Foundation
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import Logging
import PostgresNIO

/// `JobStore` on a PostgreSQL database (15 or later), for griditd on several hosts.
///
/// The pool only serves while `run()` runs (or inside `withRunningPool`); call `migrate()` once
/// before anything else. Transactions are READ COMMITTED: the claim locks the one row it takes
/// and skips rows other claimers hold, and every other write locks its row before the state
/// machine reads it, so no write works from a stale copy (a heartbeat never undoes a cancel).
public final class PostgresJobStore: TransitionStore {
    /// Whose clock decides leases, backoffs and timestamps.
    public enum Clock: Hashable, Sendable {
        /// The database's `now()`: one clock for every host, whatever their own say. The `now`
        /// arguments of `JobStore` are ignored.
        case database
        /// The `now` each call passes: tests, with fixed instants.
        case caller
    }

    public let location: PostgresLocation
    public let machine: JobStateMachine
    public let clock: Clock
    /// The griditd host this store claims for: recorded on each job it claims (`job.node_id`),
    /// and the host whose running jobs `recoverOrphanedJobs` takes back. Nil (tools, tests):
    /// claims record no host and recovery takes every running job (one griditd per database).
    public let node: UUID?
    /// The shared root that output folders are stored relative to (`outputs/job-12`), so that
    /// each host reads them under its own mount of it; nil: stored as given. Rows hold the
    /// relative names; the jobs this store returns carry absolute paths.
    public let outputRoot: String?
    let client: PostgresClient
    /// The longest wait for one statement, or for a pooled connection: past it, the statement's
    /// connection is closed and the work counts as rolled back (`ConnectionUnusable`), so no
    /// caller waits on the database forever.
    let timeout: Duration
    /// Whether writes send NOTIFY and `followChanges` listens (false: poll only, for a
    /// transaction pooler, where LISTEN cannot work).
    let notifies: Bool
    let logger: Logger
    /// Broken COMMITs to act out (tests of the unknown-outcome paths; empty otherwise).
    let commitFaults: CommitFaults
    /// Tries of a transaction that hit a serialization failure, a deadlock or a lost connection.
    static let maximumTries = 5

    /// - Parameter maximumConnections: each is a server process; a worker needs one at a time.
    public init(
        location: PostgresLocation, policy: RetryPolicy = RetryPolicy(), clock: Clock = .database,
        node: UUID? = nil, maximumConnections: Int = 4, timeout: Duration = .seconds(30),
        logger: Logger = Logger(label: "gridit.postgres"), notifications: Bool = true
    ) {
        self.location = location
        self.timeout = timeout
        self.notifies = notifications
        self.machine = JobStateMachine(policy: policy)
        self.clock = clock
        self.node = node
        self.outputRoot = nil
        self.logger = logger
        self.commitFaults = CommitFaults()
        self.client = PostgresClient(
            configuration: location.clientConfiguration(maximumConnections: maximumConnections, deadline: timeout),
            backgroundLogger: logger)
    }

    /// This store's pool and settings, acting for `node` and storing output folders relative to
    /// `outputRoot`: what griditd uses once it has read its node id (the pool already runs,
    /// `migrate` ran).
    public func acting(for node: UUID, outputRoot: String? = nil) -> PostgresJobStore {
        PostgresJobStore(sharing: self, node: node, outputRoot: outputRoot)
    }

    private init(sharing other: PostgresJobStore, node: UUID, outputRoot: String?) {
        self.location = other.location
        self.machine = other.machine
        self.clock = other.clock
        self.node = node
        self.outputRoot = outputRoot
        self.logger = other.logger
        self.client = other.client
        self.timeout = other.timeout
        self.notifies = other.notifies
        self.commitFaults = other.commitFaults
    }

    /// Runs the connection pool until the task is cancelled.
    public func run() async {
        await client.run()
    }

    /// Runs `body` while the pool runs, then stops the pool, waiting for it to close for
    /// `closing` at most: PostgresNIO's pool was seen never to finish closing after PostgreSQL
    /// restarts (every connection and timer gone, its `run()` still waiting), which kept griditd
    /// from exiting after SIGTERM (cluster_chaos.py, twice in 20 runs). Past that, the pool is
    /// left to the process's exit, with a warning.
    public func withRunningPool<T: Sendable>(
        closing: Duration = .seconds(10), _ body: () async throws -> T
    ) async throws -> T {
        let pool = Task { await self.client.run() }
        let result: Result<T, any Error>
        do {
            result = .success(try await withTaskCancellationHandler(operation: body) { pool.cancel() })
        } catch {
            result = .failure(error)
        }
        pool.cancel()
        if await !Self.finished(pool, within: closing) {
            logger.warning(
                "the PostgreSQL connection pool did not finish closing within \(closing); leaving it to the process's exit"
            )
        }
        return try result.get()
    }

    /// Whether `task` finished within `limit`; it is not awaited past it.
    static func finished(_ task: Task<Void, Never>, within limit: Duration) async -> Bool {
        await result(within: limit) { await task.value } != nil
    }

    /// Applies this binary's pending migrations (under an advisory lock, in one transaction) and
    /// returns their identifiers. Logs migrations only a newer griditd knows: additive, so
    /// this one keeps working beside it during a rolling upgrade.
    /// A migration that cannot have its locks within `lockWait` (another session holds its
    /// tables) is tried `tries` times, then fails naming the cause.
    @discardableResult
    public func migrate(lockWait: Duration = .seconds(2), tries: Int = 10) async throws(StateError) -> [String] {
        try await migrate(PostgresMigrations.all, lockWait: lockWait, tries: tries)
    }

    func migrate(_ migrations: [SchemaMigration], lockWait: Duration, tries: Int) async throws(StateError) -> [String] {
        let schema = location.schema, logger = self.logger
        do {
            var attempt = 0
            let (applied, unknown) = try await { () async throws -> ([String], [String]) in
                while true {
                    attempt += 1
                    do {
                        return try await withConnection { connection in
                            try await PostgresMigrator.migrate(
                                connection, schema: schema, migrations: migrations, lockWait: lockWait, logger: logger)
                        }
                    } catch let error as PSQLError where error.sqlState == "55P03" {
                        guard attempt < tries else {
                            throw StateError(
                                .database,
                                "migrating the schema \(schema) at \(location) needs locks another session holds "
                                    + "(a long transaction on griditd's tables, such as a pg_dump: see pg_stat_activity); "
                                    + "griditd gave up after \(tries) tries of \(lockWait) rather than hold every host "
                                    + "up behind it. Start it again once that transaction ends")
                        }
                        logger.notice(
                            "the migration waits for locks another session holds; trying again",
                            metadata: ["try": "\(attempt)", "error": "\(Self.describe(error))"])
                        try? await Task.sleep(for: lockWait)
                    }
                }
            }()
            if !unknown.isEmpty {
                logger.notice(
                    "the job database has migrations of a newer griditd; carrying on (they are additive)",
                    metadata: ["migrations": "\(unknown.joined(separator: ", "))"])
            }
            return applied
        } catch {
            throw translate(error)
        }
    }

    /// The migration identifiers recorded in the schema, in order.
    public func appliedMigrations() async throws(StateError) -> [String] {
        try await read { connection in
            try await connection.sql("SELECT identifier FROM schema_migration ORDER BY identifier").collect(
                String.self)
        }
    }

    /// Null for the database clock: SQL then reads `coalesce($n, now())`.
    func injected(_ now: Date) -> Date? {
        clock == .caller ? Self.clamped(now) : nil
    }

    // MARK: - JobStore

    public func submit(
        _ submission: JobSubmission, owner: UInt32, limits: SubmitLimits, now: Date
    ) async throws(StateError) -> SubmitResult {
        try submission.validate()
        let now = injected(now)
        let owner64 = Int64(owner), channel = notifying
        return try await transaction(onUnknownCommit: .fail) { connection -> SubmitResult in
            // Submits take turns, so that a repeated idempotency key finds the first job across every host.
            try await Self.takeSubmitTurn(connection)
            do {
                try await connection.sql("SELECT \(submission.params)::json IS NOT NULL")
            } catch let error as PSQLError where error.sqlState == "22P02" {
                throw StateError(.invalidArgument, "params must be a JSON text")
            }
            if let key = submission.idempotencyKey,
                let id = try await connection.sql(
                    "SELECT id FROM job WHERE owner_uid = \(owner64) AND idempotency_key = \(key)"
                ).first(Int64.self)
            {
                return SubmitResult(job: try await self.fetchJob(connection, id: id), deduplicated: true)
            }
            // Under the submit turn: no other host adds a job between this check and the insert.
            if let name = submission.outputName {
                try OutputNames.check(name, against: try await Self.liveOutputs(owner: owner, except: nil, connection))
            }
            try await Self.checkLimits(limits, adding: submission.workSeconds, owner: owner, connection)
            if limits.maxRecordedPerOwner != nil {
                try limits.checkRecorded(
                    try await connection.sql("SELECT count(*) FROM job WHERE owner_uid = \(owner64)").first(Int.self)
                        ?? 0,
                    owner: owner)
            }
            let id = try await connection.sql(
                """
                WITH clock AS (SELECT coalesce(\(now)::timestamptz, now()) AS now)
                INSERT INTO job (owner_uid, idempotency_key, state, priority, params, pipeline_digest, length,
                                 created_at, updated_at, max_attempts, not_before, work_seconds, output_name)
                SELECT \(owner64), \(submission.idempotencyKey)::text, 'queued', \(submission.priority), \(submission.params),
                       \(submission.pipelineDigest)::text, \(submission.length), clock.now, clock.now,
                       \(submission.maxAttempts), coalesce(\(submission.notBefore.map(Self.clamped))::timestamptz, clock.now),
                       \(submission.workSeconds), \(submission.outputName)::text
                  FROM clock
                RETURNING id
                """
            ).first(Int64.self)
            guard let id else { throw StateError(.database, "INSERT … RETURNING id returned no row") }
            let job = try await self.fetchJob(connection, id: id)
            if let channel { try await Self.notify(connection, job, channel: channel) }
            return SubmitResult(job: job, deduplicated: false)
        }
    }

    public func claim(
        workerID: String, leaseDuration: TimeInterval, filter: ClaimFilter?, now: Date
    ) async throws(StateError) -> ClaimedJob? {
        try JobStateMachine.checkClaim(workerID: workerID, leaseDuration: leaseDuration)
        let token = LeaseToken.random()
        var binds = PostgresBindings()
        binds.append(injected(now))  // $1
        binds.append(workerID)  // $2
        binds.append(token.rawValue)  // $3
        binds.append(leaseDuration)  // $4
        binds.append(node)  // $5
        var match = ""
        if let filter {
            binds.append(filter.pipelineDigest)  // $6
            binds.append(filter.priority)  // $7
            match = "AND pipeline_digest IS NOT DISTINCT FROM $6 AND priority = $7"
            if filter.neverCrashed { match += " AND crash_count = 0" }
            if !filter.excluding.isEmpty {
                binds.append(filter.excluding.sorted())  // $8
                match += " AND job.id <> ALL($8)"
            }
        }
        // The filter applies to the candidates, or (next in line only) to the one job picked.
        let (inner, outer) = filter.map { $0.nextInLineOnly ? ("", match) : (match, "") } ?? ("", "")
        // One statement picks and takes the job (mirrors JobEvent.claim). MATERIALIZED keeps the
        // planner from folding the CTE into the UPDATE, where LIMIT would no longer bound what
        // FOR UPDATE locks; SKIP LOCKED lets concurrent claimers pass each other's rows. A
        // drained host claims nothing, checked here so that a drain holds from its commit on.
        let sql = """
            WITH clock AS MATERIALIZED (SELECT coalesce($1::timestamptz, now()) AS now),
            next AS MATERIALIZED (
              SELECT job.id FROM job, clock
               WHERE state IN ('queued', 'retryable') AND not_before <= clock.now
                 AND NOT (SELECT paused FROM queue_state WHERE id = 1)
                 AND NOT coalesce((SELECT draining FROM node WHERE id = $5::uuid), false)
                 \(inner)
               ORDER BY priority DESC, id
               LIMIT 1
               FOR UPDATE OF job SKIP LOCKED)
            UPDATE job
               SET state = 'running', attempt = attempt + 1, lease_owner = $2, lease_token = $3,
                   lease_expires_at = clock.now + make_interval(secs => $4),
                   started_at = coalesce(started_at, clock.now), updated_at = clock.now, node_id = $5::uuid
              FROM next, clock
             WHERE job.id = next.id \(outer)
            RETURNING job.*
            """
        let query = PostgresQuery(unsafeSQL: sql, binds: binds)
        return try await transaction(
            onUnknownCommit: .resolve { connection, sent in
                // The claim committed iff a row carries its token; its lease ran from that attempt.
                let rows = try await connection.sql("SELECT * FROM job WHERE lease_token = \(token.rawValue)")
                for row in rows {
                    return .committed(
                        ClaimedJob(
                            job: try self.decodeJob(row), token: token, sentAt: self.clock == .database ? sent : nil))
                }
                return .notCommitted
            }
        ) { connection -> ClaimedJob? in
            for row in try await connection.sql(query) {
                // With the caller's clock the lease runs from `now`, as the caller counts it already.
                return ClaimedJob(
                    job: try self.decodeJob(row), token: token, sentAt: self.clock == .database ? connection.since : nil
                )
            }
            return nil
        }
    }

    public func recoverExpiredLeases(now: Date, sparing: Set<Int64>) async throws(StateError) -> [Job] {
        // SKIP LOCKED: a row locked now is being written by its worker (a heartbeat, perhaps);
        // the next sweep sees it again, and hosts sweeping at once split the rows between them.
        try await recover(
            .leaseExpired, now: now,
            condition: "state = 'running' AND lease_expires_at <= clock.now AND job.id <> ALL($2)",
            sparing: sparing, lock: "FOR UPDATE OF job SKIP LOCKED")
    }

    public func recoverOrphanedJobs(now: Date) async throws(StateError) -> [Job] {
        // This host's running jobs only (it died under them): other hosts' jobs are theirs
        // while their leases last, and the reaper's once they expire. Without a node (one
        // griditd per database), every running job.
        try await recover(
            .orphaned, now: now,
            condition: "state = 'running' AND job.id <> ALL($2) AND ($3::uuid IS NULL OR node_id = $3::uuid)",
            sparing: [], lock: "FOR UPDATE OF job")
    }

    public func setPaused(_ paused: Bool) async throws(StateError) {
        let channel = paused ? nil : notifying
        try await transaction(onUnknownCommit: .retry) { connection in
            _ = try await connection.sql("UPDATE queue_state SET paused = \(paused) WHERE id = 1")
            if let channel { try await Self.notifyLookAgain(connection, channel: channel) }
        }
    }

    public func isPaused() async throws(StateError) -> Bool {
        try await read { connection in
            try await connection.sql("SELECT paused FROM queue_state WHERE id = 1").first(Bool.self) ?? false
        }
    }

    public func get(id: Int64) async throws(StateError) -> Job {
        try await read { connection in try await self.fetchJob(connection, id: id) }
    }

    public func list(_ filter: JobFilter) async throws(StateError) -> [Job] {
        var conditions: [String] = []
        var binds = PostgresBindings()
        if !filter.states.isEmpty {
            binds.append(filter.states.map(\.rawValue).sorted())
            conditions.append("job.state = ANY($\(binds.count))")
        }
        if let owner = filter.ownerUID {
            binds.append(Int64(owner))
            conditions.append("job.owner_uid = $\(binds.count)")
        }
        if let key = filter.idempotencyKey {
            binds.append(key)
            conditions.append("job.idempotency_key = $\(binds.count)")
        }
        binds.append(max(0, filter.limit))
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let inner =
            Self.selectWithPosition
            + " \(whereClause) ORDER BY job.id \(filter.newest ? "DESC" : "") LIMIT $\(binds.count)"
        let sql = filter.newest ? "SELECT * FROM (\(inner)) AS newest ORDER BY id" : inner
        let query = PostgresQuery(unsafeSQL: sql, binds: binds)
        return try await read { connection in
            var jobs: [Job] = []
            for row in try await connection.sql(query) { jobs.append(try self.decodeJob(row)) }
            return jobs
        }
    }

    public func errors(id: Int64) async throws(StateError) -> [JobErrorRecord] {
        try await read { connection in
            guard
                try await connection.sql("SELECT EXISTS (SELECT 1 FROM job WHERE id = \(id))").first(Bool.self)
                    == true
            else { throw StateError.jobNotFound(id) }
            var records: [JobErrorRecord] = []
            let rows = try await connection.sql(
                "SELECT job_id, attempt, at, class, message FROM job_error WHERE job_id = \(id) ORDER BY at, id")
            for row in rows {
                let (jobID, attempt, at, errorClass, message) = try row.decode((Int64, Int, Date, String, String).self)
                records.append(
                    JobErrorRecord(jobID: jobID, attempt: attempt, at: at, errorClass: errorClass, message: message))
            }
            return records
        }
    }

    public func counts() async throws(StateError) -> [JobState: Int] {
        try await read { connection in
            var counts: [JobState: Int] = [:]
            let rows = try await connection.sql("SELECT state, count(*) FROM job GROUP BY state")
            for row in rows {
                let (state, count) = try row.decode((String, Int).self)
                if let state = JobState(rawValue: state) { counts[state] = count }
            }
            return counts
        }
    }

    public func livePipelinePins() async throws(StateError) -> [String: [Int64]] {
        try await read { connection in
            var pins: [String: [Int64]] = [:]
            let rows = try await connection.sql(
                """
                SELECT id, pipeline_digest FROM job
                 WHERE state IN ('queued', 'retryable', 'running') AND pipeline_digest IS NOT NULL ORDER BY id
                """)
            for row in rows {
                let (id, digest) = try row.decode((Int64, String).self)
                pins[digest, default: []].append(id)
            }
            return pins
        }
    }

    public func prune(
        olderThan: TimeInterval, states: Set<JobState>, now: Date, limit: Int
    ) async throws(StateError) -> [PrunedJob] {
        guard olderThan >= 0 else {
            throw StateError(.invalidArgument, "prune needs an age of 0 seconds or more (got \(olderThan))")
        }
        let terminal = states.filter(\.isTerminal).map(\.rawValue).sorted()
        guard !terminal.isEmpty else { return [] }
        // Ages past the timestamp range reach back before every job.
        let age = min(olderThan, Self.timestampLimit)
        let machine = self.machine, now = injected(now)
        let removed = try await transaction(onUnknownCommit: .fail) { connection in
            let rows = try await connection.sql(
                """
                WITH clock AS MATERIALIZED (SELECT coalesce(\(now)::timestamptz, now()) AS now)
                SELECT job.*, clock.now AS clock FROM job, clock
                 WHERE state = ANY(\(terminal)) AND finished_at <= clock.now - make_interval(secs => \(age))
                 ORDER BY id LIMIT \(Int64(max(limit, 0))) FOR UPDATE OF job SKIP LOCKED
                """)
            var pruned: [PrunedJob] = []
            for row in rows {
                let job = try self.decodeJob(row)
                _ = try machine.apply(.prune, to: job, now: try row.makeRandomAccess()["clock"].decode(Date.self))
                pruned.append(PrunedJob(job))
            }
            // Their error history goes with them (ON DELETE CASCADE).
            try await connection.sql("DELETE FROM job WHERE id = ANY(\(pruned.map(\.id)))")
            return pruned
        }
        return removed
    }

    public func delete(id: Int64, requesterUID: UInt32, isAdmin: Bool, now: Date) async throws(StateError) -> PrunedJob
    {
        let machine = self.machine, now = injected(now)
        let removed = try await transaction(onUnknownCommit: .fail) { connection in
            let (job, clock) = try await self.lockJob(connection, id: id, now: now)
            try job.authorizeRemoval(requesterUID: requesterUID, isAdmin: isAdmin)
            _ = try machine.apply(.prune, to: job, now: clock)
            // Its error history goes with it (ON DELETE CASCADE).
            try await connection.sql("DELETE FROM job WHERE id = \(id)")
            return PrunedJob(job)
        }
        return removed
    }

    /// A transaction-scoped lock per schema that submits (and retries under limits) take first,
    /// so that the limits hold exactly across every host.
    private static func takeSubmitTurn(_ connection: PostgresSession) async throws {
        try await connection.sql(
            "SELECT pg_advisory_xact_lock(hashtextextended('gridit.submit.' || current_schema(), 0))")
    }

    /// The named output folders of `owner`'s live jobs but `except`; the caller holds the submit
    /// turn. A job that a griditd from before the column added (a rolling upgrade) has its name
    /// in its params only.
    private static func liveOutputs(
        owner: UInt32, except: Int64?, _ connection: PostgresSession
    ) async throws -> [(id: Int64, name: String)] {
        let rows = try await connection.sql(
            """
            SELECT id, name FROM (
              SELECT id, coalesce(output_name, params::jsonb ->> 'output') AS name FROM job
               WHERE owner_uid = \(Int64(owner)) AND state IN ('queued', 'retryable', 'running')
                 AND id IS DISTINCT FROM \(except)::bigint) AS live
             WHERE name IS NOT NULL
             ORDER BY id
            """)
        var live: [(id: Int64, name: String)] = []
        for row in rows { live.append(try row.decode((Int64, String).self)) }
        return live
    }

    /// Throws when one more live job of `owner` (`added` seconds of work) would break one of
    /// `limits`; the caller holds the submit turn.
    private static func checkLimits(
        _ limits: SubmitLimits, adding added: Double, owner: UInt32, _ connection: PostgresSession
    ) async throws {
        let live = try await connection.sql(
            "SELECT count(*) FROM job WHERE state IN ('queued', 'retryable', 'running')"
        ).first(Int.self)
        try limits.checkQueue(live: live ?? 0)
        guard limits.maxQueuedPerOwner != nil || limits.maxWorkPerOwner != nil else { return }
        let rows = try await connection.sql(
            """
            SELECT count(*), coalesce(sum(work_seconds), 0) FROM job
             WHERE owner_uid = \(Int64(owner)) AND state IN ('queued', 'retryable', 'running')
            """)
        var jobs = 0, work = 0.0
        for row in rows { (jobs, work) = try row.decode((Int, Double).self) }
        try limits.checkOwner(jobs: jobs, work: work, adding: added, owner: owner)
    }

    // MARK: - Transitions

    /// Locks the row, applies `event` with the state machine, writes the row back: one transaction.
    public func transition(
        _ id: Int64, _ event: JobEvent, now: Date, authorize: (@Sendable (Job) throws -> Void)?,
        admitting limits: SubmitLimits?
    ) async throws(StateError) -> Job {
        let machine = self.machine, now = injected(now), channel = notifying
        let written = WrittenRow()
        let job: Job = try await transaction(
            onUnknownCommit: .resolve { connection, _ in
                // By its transaction id, not by reading the row back: another host may have written
                // the row since (a claim after a retry), which would make a committed change look lost.
                guard let expected = written.job, let transaction = written.transaction else { return .notCommitted }
                switch try await connection.sql("SELECT txid_status(\(transaction))").first(String?.self) ?? nil {
                case "committed": return .committed(expected)
                case "aborted": return .notCommitted
                case let status: throw CommitStillUnknown(status: status)  // in progress: ask again
                }
            }
        ) { connection in
            if limits != nil { try await Self.takeSubmitTurn(connection) }  // before the row: submits' order
            let (job, clock) = try await self.lockJob(connection, id: id, now: now)
            try authorize?(job)
            let transition = try machine.apply(event, to: job, now: clock)
            if let limits {
                try await Self.checkLimits(limits, adding: job.workSeconds, owner: job.ownerUID, connection)
                let name = try await connection.sql(
                    "SELECT coalesce(output_name, params::jsonb ->> 'output') FROM job WHERE id = \(id)"
                ).first(String?.self)
                if let name = name ?? nil {
                    try OutputNames.check(
                        name, against: try await Self.liveOutputs(owner: job.ownerUID, except: id, connection))
                }
            }
            try await self.write(transition, connection)
            let result = try await self.fetchJob(connection, id: id)
            // Not for a heartbeat: only what another host acts on or `jobs watch` shows.
            if let channel,
                result.state != job.state || result.cancelRequested != job.cancelRequested
                    || result.progress != job.progress || result.priority != job.priority
            {
                try await Self.notify(connection, result, channel: channel)
            }
            written.job = result
            written.transaction = try await connection.sql("SELECT txid_current()").first(Int64.self)
            return result
        }
        return job
    }

    /// Reads job `id` with its row locked `FOR UPDATE` until the transaction ends, and the clock
    /// its writes use (`now`, or the database's): the prologue of every single-job write.
    private func lockJob(
        _ connection: PostgresSession, id: Int64, now: Date?
    ) async throws -> (job: Job, clock: Date) {
        let rows = try await connection.sql(
            """
            SELECT job.*, coalesce(\(now)::timestamptz, now()) AS clock FROM job WHERE id = \(id) FOR UPDATE
            """)
        var locked: (Job, Date)?
        for row in rows {  // read to the end: the connection is used again after
            locked = (try decodeJob(row), try row.makeRandomAccess()["clock"].decode(Date.self))
        }
        guard let locked else { throw StateError.jobNotFound(id) }
        return locked
    }

    /// Applies `event` to every running job that meets `condition` (with `clock.now`, the
    /// spared ids as `$2` and this store's node as `$3`), in one transaction.
    private func recover(
        _ event: JobEvent, now: Date, condition: String, sparing: Set<Int64>, lock: String
    ) async throws(StateError) -> [Job] {
        let machine = self.machine, channel = notifying
        var binds = PostgresBindings()
        binds.append(injected(now))
        binds.append(sparing.sorted())
        // Only where used: a null parameter the statement never names has no type to infer.
        if condition.contains("$3") { binds.append(node) }
        let query = PostgresQuery(
            unsafeSQL: """
                WITH clock AS MATERIALIZED (SELECT coalesce($1::timestamptz, now()) AS now)
                SELECT job.*, clock.now AS clock FROM job, clock WHERE \(condition) ORDER BY id \(lock)
                """, binds: binds)
        return try await transaction(onUnknownCommit: .fail) { connection in
            var found: [(Job, Date)] = []
            for row in try await connection.sql(query) {
                found.append((try self.decodeJob(row), try row.makeRandomAccess()["clock"].decode(Date.self)))
            }
            var recovered: [Job] = []
            for (job, clock) in found {
                let transition = try machine.apply(event, to: job, now: clock)
                try await self.write(transition, connection)
                recovered.append(transition.job)
            }
            if let channel { try await Self.notify(connection, recovered, channel: channel) }
            return recovered
        }
    }
}

/// What a transition wrote, kept for resolving a COMMIT whose outcome is unknown.
private final class WrittenRow: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: (job: Job?, transaction: Int64?) = (nil, nil)
    var job: Job? {
        get { lock.withLock { stored.job } }
        set { lock.withLock { stored.job = newValue } }
    }
    /// The writing transaction's id (`txid_current()`), for `txid_status` after a lost COMMIT.
    var transaction: Int64? {
        get { lock.withLock { stored.transaction } }
        set { lock.withLock { stored.transaction = newValue } }
    }
}

/// `txid_status` neither committed nor aborted (still in progress on the lost connection's
/// backend): the look-up is asked again.
private struct CommitStillUnknown: Error {
    var status: String?
}
