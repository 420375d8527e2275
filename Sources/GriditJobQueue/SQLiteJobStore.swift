import Foundation
import GRDB
import GriditJobSpec
import GriditStateDatabase

/// `JobStore` on one SQLite file through a GRDB `DatabasePool` (the `StateDatabase`; its notes
/// give the connection settings). Every write is one `BEGIN IMMEDIATE` transaction; reads run in
/// snapshot transactions on reader connections.
///
/// Open one database per file per process (GRDB rule 1), after taking the `StateDirectoryLock`.
/// Opening applies any pending migrations and refuses (`schemaTooNew`) a database that records
/// a migration this binary does not know.
public final class SQLiteJobStore: TransitionStore {
    public let path: String
    /// The database's folder (the state directory): output folders are stored relative to it.
    let root: String
    public let machine: JobStateMachine
    /// The shared database (the model store uses the same one).
    public let database: StateDatabase
    private var pool: DatabasePool { database.pool }

    /// - Parameters:
    ///   - path: the database file, normally `<stateDir>/jobs.sqlite`; created if missing.
    ///   - busyTimeout: how long a connection waits on another's lock before `busy`.
    ///   - migrations: the schema to apply; leave the default (`SchemaMigration.all`) outside tests.
    public convenience init(
        path: String, policy: RetryPolicy = RetryPolicy(), busyTimeout: TimeInterval = 5,
        migrations: [SchemaMigration] = SchemaMigration.all
    ) throws(StateError) {
        self.init(
            database: try StateDatabase(path: path, busyTimeout: busyTimeout, migrations: migrations),
            policy: policy)
    }

    /// A job store over an already opened (and migrated) database.
    public init(database: StateDatabase, policy: RetryPolicy = RetryPolicy()) {
        self.database = database
        self.path = database.path
        self.root = (database.path as NSString).deletingLastPathComponent
        self.machine = JobStateMachine(policy: policy)
    }

    /// Closes every connection; later calls fail.
    public func close() throws(StateError) {
        try database.close()
    }

    /// Migration identifiers recorded in the database, in the order applied.
    public func appliedMigrations() throws(StateError) -> [String] {
        try database.appliedMigrations()
    }

    /// The writer connection's `journal_mode`, `synchronous`, `foreign_keys` and `busy_timeout`.
    public func connectionSettings() throws(StateError) -> [String: String] {
        do {
            return try pool.writeWithoutTransaction { db in
                var settings: [String: String] = [:]
                for name in ["journal_mode", "synchronous", "foreign_keys", "busy_timeout"] {
                    settings[name] = try String.fetchOne(db, sql: "PRAGMA \(name)")
                }
                return settings
            }
        } catch { throw Self.translate(error) }
    }

    // MARK: - JobStore

    public func submit(
        _ submission: JobSubmission, owner: UInt32, limits: SubmitLimits, now: Date
    ) async throws(StateError) -> SubmitResult {
        try submission.validate()
        let nowMs = now.unixMillis
        return try await write { db in
            guard try Bool.fetchOne(db, sql: "SELECT json_valid(?)", arguments: [submission.params]) == true else {
                throw StateError(.invalidArgument, "params must be a JSON text")
            }
            if let key = submission.idempotencyKey,
                let id = try Int64.fetchOne(
                    db, sql: "SELECT id FROM job WHERE owner_uid = ? AND idempotency_key = ?",
                    arguments: [Int64(owner), key])
            {
                return SubmitResult(job: try Self.fetchJob(db, id: id, root: self.root), deduplicated: true)
            }
            if let name = submission.outputName {
                try OutputNames.check(name, against: try Self.liveOutputs(owner: owner, except: nil, db))
            }
            try Self.checkLimits(limits, adding: submission.workSeconds, owner: owner, db)
            if limits.maxRecordedPerOwner != nil {
                try limits.checkRecorded(
                    try Int.fetchOne(db, sql: "SELECT count(*) FROM job WHERE owner_uid = ?", arguments: [Int64(owner)])
                        ?? 0, owner: owner)
            }
            let id = try Int64.fetchOne(
                db,
                sql: """
                    INSERT INTO job (owner_uid, idempotency_key, state, priority, params, pipeline_digest,
                                     length, created_at, updated_at, max_attempts, not_before, work_seconds,
                                     output_name)
                    VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    RETURNING id
                    """,
                arguments: [
                    Int64(owner), submission.idempotencyKey, submission.priority, submission.params,
                    submission.pipelineDigest, submission.length, nowMs, nowMs, submission.maxAttempts,
                    submission.notBefore?.unixMillis ?? nowMs, submission.workSeconds, submission.outputName,
                ])!
            return SubmitResult(job: try Self.fetchJob(db, id: id, root: self.root), deduplicated: false)
        }
    }

    /// Throws when one more live job of `owner` (`added` seconds of work) would break one of
    /// `limits` (read in the writing transaction).
    private static func checkLimits(_ limits: SubmitLimits, adding added: Double, owner: UInt32, _ db: Database) throws
    {
        let live =
            try Int.fetchOne(
                db, sql: "SELECT count(*) FROM job WHERE state IN ('queued', 'retryable', 'running')") ?? 0
        try limits.checkQueue(live: live)
        guard limits.maxQueuedPerOwner != nil || limits.maxWorkPerOwner != nil else { return }
        let row = try Row.fetchOne(
            db,
            sql: """
                SELECT count(*) AS jobs, coalesce(sum(work_seconds), 0) AS work FROM job
                 WHERE owner_uid = ? AND state IN ('queued', 'retryable', 'running')
                """,
            arguments: [Int64(owner)])
        try limits.checkOwner(jobs: row?["jobs"] ?? 0, work: row?["work"] ?? 0, adding: added, owner: owner)
    }

    /// The named output folders of `owner`'s live jobs but `except`.
    private static func liveOutputs(owner: UInt32, except: Int64?, _ db: Database) throws -> [(id: Int64, name: String)]
    {
        try Row.fetchAll(
            db,
            sql: """
                SELECT id, output_name FROM job
                 WHERE owner_uid = ? AND state IN ('queued', 'retryable', 'running') AND output_name IS NOT NULL
                   AND id IS NOT ?
                 ORDER BY id
                """,
            arguments: [Int64(owner), except]
        ).map { ($0["id"], $0["output_name"]) }
    }

    public func claim(
        workerID: String, leaseDuration: TimeInterval, filter: ClaimFilter?, now: Date
    ) async throws(StateError) -> ClaimedJob? {
        try JobStateMachine.checkClaim(workerID: workerID, leaseDuration: leaseDuration)
        let token = LeaseToken.random()
        let nowMs = now.unixMillis
        let expiresMs = now.addingTimeInterval(leaseDuration).unixMillis
        var arguments: StatementArguments = [
            "worker": workerID, "token": token.rawValue, "expires": expiresMs, "now": nowMs,
        ]
        var match = "AND pipeline_digest IS :digest AND priority = :priority"
        if filter?.neverCrashed == true { match += " AND crash_count = 0" }
        if let excluded = filter?.excluding, !excluded.isEmpty {
            match += " AND id NOT IN (\(excluded.sorted().map(String.init).joined(separator: ", ")))"
        }
        // The filter applies to the candidates, or (next in line only) to the one job picked.
        let (inner, outer) = filter.map { $0.nextInLineOnly ? ("", match) : (match, "") } ?? ("", "")
        if let filter {
            arguments += ["digest": filter.pipelineDigest, "priority": filter.priority]
        }
        let finalArguments = arguments
        return try await write { db in
            // One statement: pick and take the job atomically (mirrors JobEvent.claim).
            let row = try Row.fetchOne(
                db,
                sql: """
                    UPDATE job
                       SET state = 'running', attempt = attempt + 1, lease_owner = :worker,
                           lease_token = :token, lease_expires_at = :expires,
                           started_at = coalesce(started_at, :now), updated_at = :now
                     WHERE id = (SELECT id FROM job
                                  WHERE state IN ('queued', 'retryable') AND not_before <= :now
                                    AND (SELECT paused FROM queue_state WHERE id = 1) = 0
                                    \(inner)
                                  ORDER BY priority DESC, id
                                  LIMIT 1)
                       \(outer)
                    RETURNING *
                    """,
                arguments: finalArguments)
            guard let row else { return nil }
            return ClaimedJob(job: try Self.decodeJob(row, root: self.root), token: token)
        }
    }

    public func delete(id: Int64, requesterUID: UInt32, isAdmin: Bool, now: Date) async throws(StateError) -> PrunedJob
    {
        let machine = self.machine
        return try await write { db in
            let job = try Self.fetchJob(db, id: id, root: self.root)
            try job.authorizeRemoval(requesterUID: requesterUID, isAdmin: isAdmin)
            try Self.apply(try machine.apply(.prune, to: job, now: now), db, root: self.root)
            return PrunedJob(job)
        }
    }

    public func recoverExpiredLeases(now: Date, sparing: Set<Int64>) async throws(StateError) -> [Job] {
        try await recover(.leaseExpired, now: now, sparing: sparing)
    }

    public func recoverOrphanedJobs(now: Date) async throws(StateError) -> [Job] {
        try await recover(.orphaned, now: now)
    }

    public func setPaused(_ paused: Bool) async throws(StateError) {
        try await write { db in
            try db.execute(sql: "UPDATE queue_state SET paused = ? WHERE id = 1", arguments: [paused ? 1 : 0])
        }
    }

    public func isPaused() async throws(StateError) -> Bool {
        try await read { db in
            try Int.fetchOne(db, sql: "SELECT paused FROM queue_state WHERE id = 1") == 1
        }
    }

    public func get(id: Int64) async throws(StateError) -> Job {
        try await read { db in try Self.fetchJob(db, id: id, root: self.root) }
    }

    public func list(_ filter: JobFilter) async throws(StateError) -> [Job] {
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if !filter.states.isEmpty {
            let states = filter.states.map(\.rawValue).sorted()
            conditions.append("job.state IN (\(Array(repeating: "?", count: states.count).joined(separator: ", ")))")
            arguments += StatementArguments(states)
        }
        if let owner = filter.ownerUID {
            conditions.append("job.owner_uid = ?")
            arguments += [Int64(owner)]
        }
        if let key = filter.idempotencyKey {
            conditions.append("job.idempotency_key = ?")
            arguments += [key]
        }
        arguments += [max(0, filter.limit)]
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let inner = Self.selectWithPosition + " \(whereClause) ORDER BY job.id \(filter.newest ? "DESC" : "") LIMIT ?"
        let sql = filter.newest ? "SELECT * FROM (\(inner)) ORDER BY id" : inner
        let finalArguments = arguments
        return try await read { db in
            try Row.fetchAll(db, sql: sql, arguments: finalArguments).map { try Self.decodeJob($0, root: self.root) }
        }
    }

    public func errors(id: Int64) async throws(StateError) -> [JobErrorRecord] {
        try await read { db in
            guard try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM job WHERE id = ?)", arguments: [id]) == true
            else {
                throw StateError.jobNotFound(id)
            }
            return try Row.fetchAll(
                db, sql: "SELECT * FROM job_error WHERE job_id = ? ORDER BY at, rowid", arguments: [id]
            ).map { row in
                JobErrorRecord(
                    jobID: row["job_id"], attempt: row["attempt"], at: Date(unixMillis: row["at"]),
                    errorClass: row["class"], message: row["message"])
            }
        }
    }

    public func counts() async throws(StateError) -> [JobState: Int] {
        try await read { db in
            var counts: [JobState: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT state, count(*) AS n FROM job GROUP BY state") {
                if let state = JobState(rawValue: row["state"]) { counts[state] = row["n"] }
            }
            return counts
        }
    }

    public func livePipelinePins() async throws(StateError) -> [String: [Int64]] {
        let live = JobState.allCases.filter { !$0.isTerminal }.map { "'\($0.rawValue)'" }.joined(separator: ", ")
        return try await read { db in
            var pins: [String: [Int64]] = [:]
            let sql =
                "SELECT id, pipeline_digest FROM job WHERE state IN (\(live)) AND pipeline_digest IS NOT NULL ORDER BY id"
            for row in try Row.fetchAll(db, sql: sql) {
                pins[row["pipeline_digest"] as String, default: []].append(row["id"])
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
        let cutoff = now.addingTimeInterval(-olderThan).unixMillis
        let terminal = states.filter(\.isTerminal).map { "'\($0.rawValue)'" }.sorted().joined(separator: ", ")
        guard !terminal.isEmpty else { return [] }
        let machine = self.machine
        return try await write { db in
            let rows = try Row.fetchAll(
                db,
                sql: "SELECT * FROM job WHERE state IN (\(terminal)) AND finished_at <= ? ORDER BY id LIMIT ?",
                arguments: [cutoff, max(limit, 0)])
            var pruned: [PrunedJob] = []
            for row in rows {
                let job = try Self.decodeJob(row, root: self.root)
                let transition = try machine.apply(.prune, to: job, now: now)
                try Self.apply(transition, db, root: self.root)
                pruned.append(PrunedJob(job))
            }
            return pruned
        }
    }

    // MARK: - Transactions

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction on the writer, translating errors (a
    /// full filesystem releases the database's reserve first: `StateDatabase.write`).
    private func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(StateError) -> T {
        try await database.write(body)
    }

    private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(StateError) -> T {
        do {
            return try await pool.read(body)
        } catch {
            throw Self.translate(error)
        }
    }

    /// Read the row, apply `event` with the state machine, write the result: one transaction.
    public func transition(
        _ id: Int64, _ event: JobEvent, now: Date, authorize: (@Sendable (Job) throws -> Void)?,
        admitting limits: SubmitLimits?
    ) async throws(StateError) -> Job {
        let machine = self.machine
        let now = Date(unixMillis: now.unixMillis)  // the columns' resolution, so SQL and Swift agree
        return try await write { db in
            let job = try Self.fetchJob(db, id: id, root: self.root)
            try authorize?(job)
            let transition = try machine.apply(event, to: job, now: now)
            if let limits {
                try Self.checkLimits(limits, adding: job.workSeconds, owner: job.ownerUID, db)
                if let name = try String.fetchOne(db, sql: "SELECT output_name FROM job WHERE id = ?", arguments: [id])
                {
                    try OutputNames.check(name, against: try Self.liveOutputs(owner: job.ownerUID, except: id, db))
                }
            }
            try Self.apply(transition, db, root: self.root)
            return try Self.fetchJob(db, id: id, root: self.root)
        }
    }

    private func recover(_ event: JobEvent, now: Date, sparing: Set<Int64> = []) async throws(StateError) -> [Job] {
        let machine = self.machine
        let nowMs = now.unixMillis
        let now = Date(unixMillis: nowMs)  // the columns' resolution, so SQL and Swift agree
        return try await write { db in
            let sql =
                event == .orphaned
                ? "SELECT * FROM job WHERE state = 'running' ORDER BY id"
                : "SELECT * FROM job WHERE state = 'running' AND lease_expires_at <= ? ORDER BY id"
            let rows = try Row.fetchAll(db, sql: sql, arguments: event == .orphaned ? [] : [nowMs])
            var recovered: [Job] = []
            for row in rows where !sparing.contains(row["id"] as Int64) {
                let transition = try machine.apply(event, to: try Self.decodeJob(row, root: self.root), now: now)
                try Self.apply(transition, db, root: self.root)
                recovered.append(transition.job)
            }
            return recovered
        }
    }

    // MARK: - Rows

    private static let selectWithPosition = """
        WITH waiting AS (
          SELECT id, row_number() OVER (ORDER BY priority DESC, id) AS queue_position
            FROM job WHERE state IN ('queued', 'retryable'))
        SELECT job.*, waiting.queue_position FROM job LEFT JOIN waiting ON waiting.id = job.id
        """

    static func fetchJob(_ db: Database, id: Int64, root: String) throws -> Job {
        guard let row = try Row.fetchOne(db, sql: selectWithPosition + " WHERE job.id = ?", arguments: [id]) else {
            throw StateError.jobNotFound(id)
        }
        return try decodeJob(row, root: root)
    }

    static func decodeJob(_ row: Row, root: String) throws -> Job {
        let stateText: String = row["state"]
        guard let state = JobState(rawValue: stateText) else {
            throw StateError(.database, "job \(row["id"] as Int64): unknown state '\(stateText)'")
        }
        let progressText: String = row["progress"]
        let progress: JobProgress
        do {
            progress = try JSONDecoder().decode(JobProgress.self, from: Data(progressText.utf8))
        } catch {
            throw StateError(.database, "job \(row["id"] as Int64): unreadable progress \(progressText): \(error)")
        }
        let owner: Int64 = row["owner_uid"]
        return Job(
            id: row["id"],
            ownerUID: UInt32(truncatingIfNeeded: owner),
            idempotencyKey: row["idempotency_key"],
            state: state,
            priority: row["priority"],
            params: row["params"],
            pipelineDigest: row["pipeline_digest"],
            length: row["length"],
            createdAt: Date(unixMillis: row["created_at"]),
            updatedAt: Date(unixMillis: row["updated_at"]),
            startedAt: (row["started_at"] as Int64?).map(Date.init(unixMillis:)),
            finishedAt: (row["finished_at"] as Int64?).map(Date.init(unixMillis:)),
            attempt: row["attempt"],
            maxAttempts: row["max_attempts"],
            crashCount: row["crash_count"],
            cancelRequested: row["cancel_requested"] as Int64 != 0,
            leaseOwner: row["lease_owner"],
            leaseToken: (row["lease_token"] as Int64?).map(LeaseToken.init(rawValue:)),
            leaseExpiresAt: (row["lease_expires_at"] as Int64?).map(Date.init(unixMillis:)),
            notBefore: Date(unixMillis: row["not_before"]),
            progress: progress,
            errorClass: row["error_class"],
            errorMessage: row["error_message"],
            outputDir: OutputPaths.resolved(
                row["output_dir"], root: root, id: row["id"], owner: UInt32(truncatingIfNeeded: owner)),
            workSeconds: row.hasColumn("work_seconds") ? row["work_seconds"] : 0,
            queuePosition: row.hasColumn("queue_position") ? row["queue_position"] : nil)
    }

    /// Writes a state-machine transition: the new row (every mutable column) and its effects.
    private static func apply(_ transition: JobTransition, _ db: Database, root: String) throws {
        let job = transition.job
        for effect in transition.effects {
            switch effect {
            case .recordError(let record):
                try db.execute(
                    sql: "INSERT INTO job_error (job_id, attempt, at, class, message) VALUES (?, ?, ?, ?, ?)",
                    arguments: [record.jobID, record.attempt, record.at.unixMillis, record.errorClass, record.message])
            case .delete:
                try db.execute(sql: "DELETE FROM job WHERE id = ?", arguments: [job.id])
                return
            }
        }
        let progress = String(decoding: try JSONEncoder().encode(job.progress), as: UTF8.self)
        let values: [(any DatabaseValueConvertible)?] = [
            job.state.rawValue, job.priority, job.updatedAt.unixMillis, job.startedAt?.unixMillis,
            job.finishedAt?.unixMillis, job.attempt, job.maxAttempts, job.crashCount,
            job.cancelRequested ? 1 : 0, job.leaseOwner, job.leaseToken?.rawValue,
            job.leaseExpiresAt?.unixMillis, job.notBefore.unixMillis, progress, job.errorClass,
            job.errorMessage, OutputPaths.stored(job.outputDir, root: root), job.id,
        ]
        try db.execute(
            sql: """
                UPDATE job SET state = ?, priority = ?, updated_at = ?, started_at = ?, finished_at = ?,
                       attempt = ?, max_attempts = ?, crash_count = ?, cancel_requested = ?,
                       lease_owner = ?, lease_token = ?, lease_expires_at = ?, not_before = ?,
                       progress = ?, error_class = ?, error_message = ?, output_dir = ?
                 WHERE id = ?
                """,
            arguments: StatementArguments(values))
    }

    static func translate(_ error: any Error) -> StateError { StateDatabase.translate(error) }
}
