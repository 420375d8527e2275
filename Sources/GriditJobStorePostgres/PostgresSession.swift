import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// A pooled connection as the store uses it: every statement is answered, or fails, within the
/// store's deadline.
///
/// Why not `PostgresConnection.query` straight (PostgresNIO 1.33.2): it hands the statement to
/// the channel with no write promise. The pool learns that a connection closed only from its
/// close future, which NIO completes after it has removed the channel's handlers; a connection
/// leased in between (the server terminated it while it was idle) takes the statement into a
/// pipeline with no handler left, which drops it, and the caller waits forever. Here the check
/// that the channel is open and the write run in one event-loop tick, so a statement either
/// reaches the connection's handler (which answers or fails it, also when the connection closes
/// later) or fails at once as a lost connection. The deadline covers a server that never answers
/// (a cut network): it closes the connection, which fails the statement.
struct PostgresSession: Sendable {
    let connection: PostgresConnection
    /// How long one statement may take before its connection is closed under it.
    let timeout: TimeAmount
    /// When the connection was handed out, before anything was sent on it: a transaction's
    /// `now()` comes later.
    let since = Date()

    /// One statement, its rows read whole (the store's results are small: one job, a page).
    @discardableResult
    func sql(_ query: PostgresQuery) async throws -> PostgresQueryResult {
        let connection = self.connection, timeout = self.timeout
        let timedOut = NIOLockedValueBox(false)
        let result = connection.eventLoop.flatSubmit { () -> EventLoopFuture<PostgresQueryResult> in
            guard !connection.isClosed else {
                return connection.eventLoop.makeFailedFuture(ConnectionUnusable.closed)
            }
            let answer = connection.query(query, logger: queryLogger)
            let deadline = connection.eventLoop.scheduleTask(in: timeout) {
                timedOut.withLockedValue { $0 = true }
                _ = connection.close() as EventLoopFuture<Void>
            }
            answer.whenComplete { _ in deadline.cancel() }
            return answer
        }
        do {
            return try await result.get()
        } catch  where timedOut.withLockedValue({ $0 }) {
            throw ConnectionUnusable.timedOut(seconds: Double(timeout.nanoseconds) / 1e9, underlying: error)
        }
    }
}

/// A connection the store gave up on: it was closed when its statement was to be sent, or a
/// statement or the wait for a pooled connection ran past the store's deadline. Whatever was not
/// committed rolled back (a closed connection's transaction ends with it), as for a lost
/// connection.
enum ConnectionUnusable: Error, CustomStringConvertible {
    case closed
    case timedOut(seconds: Double, underlying: any Error)
    case noConnection(seconds: Double)

    var description: String {
        switch self {
        case .closed: "the connection was closed"
        case .timedOut(let seconds, let underlying):
            "a statement took longer than \(seconds) s; its connection was closed (\(PostgresJobStore.describe(underlying)))"
        case .noConnection(let seconds): "no pooled connection within \(seconds) s"
        }
    }
}

extension PostgresQueryResult {
    /// The first row's single column, nil without rows.
    func first<T: PostgresDecodable>(_: T.Type) throws -> T? {
        try rows.first?.decode(T.self)
    }

    /// Every row's single column.
    func collect<T: PostgresDecodable>(_: T.Type) throws -> [T] {
        try rows.map { try $0.decode(T.self) }
    }
}

/// PostgresNIO logs each query at debug level here.
private let queryLogger = Logger(label: "gridit.postgres.query")
