import Foundation
import GriditJobQueue
import GriditJobSpec
import Logging
import NIOConcurrencyHelpers
import PostgresNIO

// LISTEN/NOTIFY: each write that changes what other hosts act on (a submit, a requeue or a
// resume: a job to claim; a cancel; a state, progress or priority change `jobs watch` shows;
// not claims, heartbeats, deletes or prunes) sends one NOTIFY inside its transaction, so it is
// delivered only if and when the write commits, and PostgreSQL folds identical notices of one
// transaction into one. Each host LISTENs on one dedicated connection of its own (not a pooled
// one: a pooled connection would stop listening when the pool closes it). Polling stays the
// safety net.

extension PostgresJobStore: JobChangeFeed {
    /// The notification channel: one per schema, so that schemas sharing a database (tests,
    /// several queues) hear only their own writes. At most 63 bytes, PostgreSQL's identifier length.
    var notificationChannel: String {
        String(("gridit_" + location.schema).utf8.prefix(63)) ?? "gridit"
    }

    public var followsChanges: Bool { notifies }

    /// The channel this store's writes notify, nil where it only polls.
    var notifying: String? { notifies ? notificationChannel : nil }

    /// Sends `job`'s change to every listening host when the transaction commits.
    static func notify(_ connection: PostgresSession, _ job: Job, channel: String) async throws {
        try await notify(connection, [job], channel: channel)
    }

    /// Sends every change of `jobs` in one statement (a recovery may requeue hundreds).
    static func notify(_ connection: PostgresSession, _ jobs: [Job], channel: String) async throws {
        guard !jobs.isEmpty else { return }
        let payloads = jobs.map { "\($0.id) \($0.state.rawValue) \($0.cancelRequested ? 1 : 0)" }
        try await connection.sql("SELECT pg_notify(\(channel), p) FROM unnest(\(payloads)::text[]) AS p")
    }

    /// Tells every listening host to look at the queue again (a resume).
    static func notifyLookAgain(_ connection: PostgresSession, channel: String) async throws {
        try await connection.sql("SELECT pg_notify(\(channel), '*')")
    }

    static func decodeNotification(_ payload: String) -> JobChangeEvent? {
        if payload == "*" { return .lookAgain }
        let fields = payload.split(separator: " ")
        guard fields.count == 3, let id = Int64(fields[0]), let state = JobState(rawValue: String(fields[1])) else {
            return nil
        }
        return .job(JobChange(id: id, state: state, cancelRequested: fields[2] == "1"))
    }

    /// Listens on a connection of its own (its own one-connection pool), until cancelled. After
    /// each (re)connection it sends `.lookAgain`, for what was missed meanwhile; a listening
    /// connection that stops answering a ping within the deadline is replaced.
    public func followChanges(_ onEvent: @escaping @Sendable (JobChangeEvent) -> Void) async {
        guard notifies else { return }
        var listening = location
        listening.applicationName += " listener"  // how pg_stat_activity shows it
        let listener = PostgresJobStore(
            location: listening, clock: clock, maximumConnections: 1, timeout: timeout, logger: logger,
            notifications: false)
        let channel = notificationChannel, logger = self.logger
        _ = try? await listener.withRunningPool {
            var retry = 0
            while !Task.isCancelled {
                let listened = ListenedSince()
                do {
                    try await listener.withConnection { session in
                        try await session.connection.listen(on: channel) { notifications in
                            listened.start()
                            logger.debug("listening for queue changes", metadata: ["channel": "\(channel)"])
                            onEvent(.lookAgain)
                            try await withThrowingTaskGroup(of: Void.self) { inner in
                                inner.addTask {
                                    for try await notification in notifications {
                                        if let event = Self.decodeNotification(notification.payload) { onEvent(event) }
                                    }
                                    throw ConnectionUnusable.closed
                                }
                                inner.addTask {
                                    // A cut network ends no stream: ask the connection now and then.
                                    while true {
                                        try await Task.sleep(for: .seconds(15))
                                        try await session.sql("SELECT 1")
                                    }
                                }
                                defer { inner.cancelAll() }
                                try await inner.next()
                            }
                        }
                    }
                } catch {
                    if Task.isCancelled { break }
                    logger.warning(
                        "lost the connection that listens for queue changes; reconnecting (polling covers the gap)",
                        metadata: ["error": "\(Self.describe(error))"])
                }
                // The backoff starts over only after a connection that lasted: one a server or
                // pooler drops right after LISTEN must not be retried every 100 ms.
                retry = listened.lasted(.seconds(30)) ? 0 : min(retry + 1, 5)
                try? await Task.sleep(for: .milliseconds(100 << retry))
            }
        }
    }
}

/// When a listening connection got as far as LISTEN (for its reconnection backoff).
private final class ListenedSince: Sendable {
    private let value = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
    func start() { value.withLockedValue { $0 = .now } }
    /// Whether it listened for at least `duration` before it ended.
    func lasted(_ duration: Duration) -> Bool {
        value.withLockedValue { $0.map { ContinuousClock.now - $0 >= duration } ?? false }
    }
}
