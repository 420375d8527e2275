import Foundation
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import Synchronization

/// What a COMMIT whose outcome is unknown (the connection dropped while it was sent) becomes.
enum UnknownCommit<T: Sendable>: Sendable {
    /// Report the error: running the transaction again could do its work twice (a submit).
    case fail
    /// Run it again: doing it twice is doing it once (pause, resume).
    case retry
    /// Look the outcome up on a fresh connection (a claim by its lease token, a transition by
    /// reading its row back); run it again if it did not commit. The date is when the broken
    /// attempt's connection was handed out (`PostgresSession.since`).
    case resolve(@Sendable (PostgresSession, Date) async throws -> Resolution<T>)
}

enum Resolution<T: Sendable>: Sendable {
    case committed(T)
    case notCommitted
}

/// A COMMIT whose answer never arrives, acted out by the next transactions (tests only: nothing
/// else queues one). `answerLost`: it committed; `answerLostWhile`: it committed, and `meanwhile`
/// runs before the look-up (another host's write); `rolledBack`: it did not.
final class CommitFaults: Sendable {
    enum Fault: Sendable {
        case answerLost, rolledBack
        case answerLostWhile(meanwhile: @Sendable () async throws -> Void)
    }
    private let queue = Mutex<[Fault]>([])

    func add(_ faults: Fault...) { queue.withLock { $0 += faults } }
    func next() -> Fault? { queue.withLock { $0.isEmpty ? nil : $0.removeFirst() } }
}

/// The connection broke after COMMIT was sent: the transaction may or may not have committed.
struct CommitOutcomeUnknown: Error {
    var underlying: any Error
    /// When the attempt's connection was handed out.
    var since: Date
}

extension PostgresJobStore {
    /// Runs `body` in one READ COMMITTED transaction on a pooled connection. Serialization
    /// failures, deadlocks and connections lost before COMMIT roll back whole, so the
    /// transaction runs again (up to `maximumTries`, with a short backoff); a lost COMMIT goes
    /// through `onUnknownCommit`. Errors come out as `StateError`.
    func transaction<T: Sendable>(
        onUnknownCommit: UnknownCommit<T>, _ body: @escaping @Sendable (PostgresSession) async throws -> T
    ) async throws(StateError) -> T {
        let logger = self.logger
        var tries = 0
        while true {
            tries += 1
            do {
                return try await withConnection { connection in
                    try await connection.sql("BEGIN")
                    let value: T
                    do {
                        value = try await body(connection)
                    } catch {
                        _ = try? await connection.sql("ROLLBACK")
                        throw error
                    }
                    let fault = self.commitFaults.next()
                    do {
                        if case .rolledBack? = fault {
                            try await connection.sql("ROLLBACK")
                        } else {
                            try await connection.sql("COMMIT")
                        }
                        // The lookup comes later than the attempt, as after a real broken connection.
                        if let fault {
                            try await Task.sleep(for: .milliseconds(300))
                            if case .answerLostWhile(let meanwhile) = fault { try await meanwhile() }
                            throw ConnectionUnusable.closed
                        }
                    } catch  where Self.isConnectionLoss(error) {
                        throw CommitOutcomeUnknown(underlying: error, since: connection.since)
                    }
                    return value
                }
            } catch let error as StateError {
                throw error
            } catch let unknown as CommitOutcomeUnknown {
                switch onUnknownCommit {
                case .fail:
                    throw StateError(
                        .database,
                        "the connection to \(location) broke while committing; the change may or may not be saved "
                            + "(\(Self.describe(unknown.underlying)))")
                case .retry:
                    break
                case .resolve(let lookUp):
                    // A lookup that fails proves nothing: ask again rather than guess.
                    var resolution: Resolution<T>?
                    for lookUpTry in 1...Self.maximumTries where resolution == nil {
                        resolution = try? await withConnection { try await lookUp($0, unknown.since) }
                        if resolution == nil { try? await Task.sleep(for: .milliseconds(10 << lookUpTry)) }
                    }
                    switch resolution {
                    case .committed(let value)?: return value
                    case .notCommitted?: break
                    case nil:
                        throw StateError(
                            .database,
                            "the connection to \(location) broke while committing and the outcome could not be "
                                + "looked up (\(Self.describe(unknown.underlying)))")
                    }
                }
                guard tries < Self.maximumTries else { throw translate(unknown.underlying) }
                logger.warning("COMMIT outcome unknown; it did not commit, running it again")
            } catch {
                guard tries < Self.maximumTries, Self.isTransient(error) else { throw translate(error) }
                logger.debug(
                    "transaction rolled back; running it again", metadata: ["error": "\(Self.describe(error))"])
            }
            try? await Task.sleep(for: .milliseconds(10 << min(tries, 6)))
        }
    }

    /// A read: one statement or a few, outside an explicit transaction.
    func read<T: Sendable>(
        _ body: @escaping @Sendable (PostgresSession) async throws -> T
    ) async throws(StateError)
        -> T
    {
        var tries = 0
        while true {
            tries += 1
            do {
                return try await withConnection { try await body($0) }
            } catch let error as StateError {
                throw error
            } catch {
                guard tries < Self.maximumTries, Self.isTransient(error) else { throw translate(error) }
            }
            try? await Task.sleep(for: .milliseconds(10 << min(tries, 6)))
        }
    }

    /// A pooled connection for `body`, waited for at most `timeout`: PostgresNIO 1.33.2's pool
    /// can leave a request waiting when the connection it counted on closes (postgres-nio#657);
    /// the request is withdrawn, and asking again makes the pool open a connection.
    func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresSession) async throws -> T
    ) async throws -> T {
        let client = self.client, timeout = self.timeout
        // Whichever comes first, the connection or the deadline, decides: a body never starts
        // after its caller was told it timed out.
        let decided = NIOLockedValueBox<Bool?>(nil)  // true: leased; false: timed out
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await client.withConnection { connection in
                    let leased = decided.withLockedValue { state in
                        if state == nil { state = true }
                        return state == true
                    }
                    guard leased else { throw ConnectionUnusable.noConnection(seconds: timeout / .seconds(1)) }
                    return try await body(PostgresSession(connection: connection, timeout: TimeAmount(timeout)))
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                let expired = decided.withLockedValue { state in
                    if state == nil, !Task.isCancelled { state = false }
                    return state == false
                }
                if expired { throw ConnectionUnusable.noConnection(seconds: timeout / .seconds(1)) }
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let value = result { return value }
            }
            preconditionFailure("the connection task returns a value or throws")
        }
    }

    /// Serialization failure, deadlock, or a connection that broke: the work rolled back whole.
    static func isTransient(_ error: any Error) -> Bool {
        if isConnectionLoss(error) { return true }
        guard let error = error as? PSQLError else { return false }
        return ["40001", "40P01"].contains(error.sqlState ?? "")
    }

    /// The connection broke, was closed under its statement, or never came: nothing of the work
    /// it carried committed (unless the statement was COMMIT).
    static func isConnectionLoss(_ error: any Error) -> Bool {
        if error is ConnectionUnusable { return true }
        return (error as? PSQLError)?.isConnectionLoss ?? false
    }

    func translate(_ error: any Error) -> StateError {
        if let error = error as? StateError { return error }
        return StateError(.database, "PostgreSQL at \(location): \(Self.describe(error))")
    }

    /// The server's message and SQLSTATE, or what broke on the way (PSQLError's own description
    /// hides both).
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] {
            return "\(message) (SQLSTATE \(error.sqlState ?? "?"))"
        }
        return "\(error.code)" + (error.underlying.map { ": \($0)" } ?? "")
    }

    // MARK: - Rows

    /// Seconds either side of the epoch a timestamp is clamped to: far inside PostgreSQL's range
    /// (4713 BC to 294276 AD) and past any real instant, so huge user-given durations never overflow.
    static let timestampLimit: TimeInterval = 1e11

    static func clamped(_ date: Date) -> Date {
        let seconds = date.timeIntervalSince1970
        if seconds.isNaN { return Date(timeIntervalSince1970: 0) }
        return Date(timeIntervalSince1970: min(max(seconds, -timestampLimit), timestampLimit))
    }

    /// Every column plus `queue_position`: 1-based place in claim order among waiting jobs.
    static let selectWithPosition = """
        WITH waiting AS (
          SELECT id, row_number() OVER (ORDER BY priority DESC, id) AS queue_position
            FROM job WHERE state IN ('queued', 'retryable'))
        SELECT job.*, waiting.queue_position FROM job LEFT JOIN waiting ON waiting.id = job.id
        """

    /// One job with its queue position (counted through the claim index, not over the whole queue).
    func fetchJob(_ connection: PostgresSession, id: Int64) async throws -> Job {
        let rows = try await connection.sql(
            """
            SELECT job.*,
                   CASE WHEN job.state IN ('queued', 'retryable') THEN
                     (SELECT count(*) FROM job AS ahead
                       WHERE ahead.state IN ('queued', 'retryable')
                         AND (ahead.priority > job.priority OR (ahead.priority = job.priority AND ahead.id <= job.id)))
                   END AS queue_position
              FROM job WHERE job.id = \(id)
            """)
        for row in rows { return try decodeJob(row) }
        throw StateError.jobNotFound(id)
    }

    /// A row as a job; a shared queue's output folder, stored relative to the shared root, made
    /// absolute under this host's mount of it (`write` stores it back relative).
    func decodeJob(_ postgresRow: PostgresRow) throws -> Job {
        let row = postgresRow.makeRandomAccess()
        let id = try row["id"].decode(Int64.self)
        let stateText = try row["state"].decode(String.self)
        guard let state = JobState(rawValue: stateText) else {
            throw StateError(.database, "job \(id): unknown state '\(stateText)'")
        }
        let stored = try row["output_dir"].decode(String?.self)
        let progressText = try row["progress"].decode(String.self)
        let progress: JobProgress
        do {
            progress = try JSONDecoder().decode(JobProgress.self, from: Data(progressText.utf8))
        } catch {
            throw StateError(.database, "job \(id): unreadable progress \(progressText): \(error)")
        }
        return Job(
            id: id,
            ownerUID: UInt32(truncatingIfNeeded: try row["owner_uid"].decode(Int64.self)),
            idempotencyKey: try row["idempotency_key"].decode(String?.self),
            state: state,
            priority: try row["priority"].decode(Int.self),
            params: try row["params"].decode(String.self),
            pipelineDigest: try row["pipeline_digest"].decode(String?.self),
            length: try row["length"].decode(Int.self),
            createdAt: try row["created_at"].decode(Date.self),
            updatedAt: try row["updated_at"].decode(Date.self),
            startedAt: try row["started_at"].decode(Date?.self),
            finishedAt: try row["finished_at"].decode(Date?.self),
            attempt: try row["attempt"].decode(Int.self),
            maxAttempts: try row["max_attempts"].decode(Int.self),
            crashCount: try row["crash_count"].decode(Int.self),
            cancelRequested: try row["cancel_requested"].decode(Bool.self),
            leaseOwner: try row["lease_owner"].decode(String?.self),
            leaseToken: try row["lease_token"].decode(Int64?.self).map(LeaseToken.init(rawValue:)),
            leaseExpiresAt: try row["lease_expires_at"].decode(Date?.self),
            notBefore: try row["not_before"].decode(Date.self),
            progress: progress,
            errorClass: try row["error_class"].decode(String?.self),
            errorMessage: try row["error_message"].decode(String?.self),
            outputDir: outputRoot.map { OutputPaths.resolved(stored, root: $0) } ?? stored,
            workSeconds: try row["work_seconds"].decode(Double.self),
            queuePosition: row.contains("queue_position") ? try row["queue_position"].decode(Int?.self) : nil,
            node: row.contains("node_id") ? try row["node_id"].decode(UUID?.self)?.uuidString.lowercased() : nil)
    }

    /// Writes a state-machine transition: the new row (every mutable column) and its effects.
    func write(_ transition: JobTransition, _ connection: PostgresSession) async throws {
        let job = transition.job
        for effect in transition.effects {
            switch effect {
            case .recordError(let record):
                try await connection.sql(
                    """
                    INSERT INTO job_error (job_id, attempt, at, class, message)
                    VALUES (\(record.jobID), \(record.attempt), \(record.at), \(record.errorClass), \(record.message))
                    """)
            case .delete:
                try await connection.sql("DELETE FROM job WHERE id = \(job.id)")
                return
            }
        }
        let progress = String(decoding: try JSONEncoder().encode(job.progress), as: UTF8.self)
        let outputDir = outputRoot.map { OutputPaths.stored(job.outputDir, root: $0) } ?? job.outputDir
        try await connection.sql(
            """
            UPDATE job SET state = \(job.state.rawValue), priority = \(job.priority), updated_at = \(job.updatedAt),
                   started_at = \(job.startedAt), finished_at = \(job.finishedAt), attempt = \(job.attempt),
                   max_attempts = \(job.maxAttempts), crash_count = \(job.crashCount),
                   cancel_requested = \(job.cancelRequested), lease_owner = \(job.leaseOwner),
                   lease_token = \(job.leaseToken?.rawValue), lease_expires_at = \(job.leaseExpiresAt.map(Self.clamped)),
                   not_before = \(Self.clamped(job.notBefore)), progress = \(progress), error_class = \(job.errorClass),
                   error_message = \(job.errorMessage), output_dir = \(outputDir)
             WHERE id = \(job.id)
            """)
    }
}

extension PSQLError {
    var sqlState: String? { serverInfo?[.sqlState] }

    /// The connection broke (server gone or restarting, the backend terminated, network cut, pool
    /// closing): whatever was not committed rolled back.
    var isConnectionLoss: Bool {
        if [.serverClosedConnection, .connectionError, .uncleanShutdown, .clientClosedConnection].contains(code) {
            return true
        }
        // 57P01-57P03: terminated by an administrator, a crash of another backend, or a server
        // still starting; class 08: connection exceptions.
        guard let state = sqlState else { return false }
        return ["57P01", "57P02", "57P03"].contains(state) || state.hasPrefix("08")
    }
}
