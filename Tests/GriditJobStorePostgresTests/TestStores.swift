import Foundation
import GriditTestSupport
import PostgresNIO

@testable import GriditJobStorePostgres

/// A fixed instant plus `seconds`.
func at(_ seconds: Double) -> Date {
    Date(timeIntervalSince1970: 1_700_000_000 + seconds)
}

/// Stores on one fresh schema of the tests' server: several stores are several connection
/// pools, as several griditd hosts would have.
struct TestSchema: Sendable {
    var location: PostgresLocation

    /// The tests' stores wait this long for a statement or a connection, not griditd's 30 s: the
    /// whole suite runs on two cores, where the test process's threads can be busy for longer
    /// than that. `PostgresDeadlineTests` checks the deadline itself.
    static let patientTimeout: Duration = .seconds(600)

    init() throws {
        let server = try PostgresTestServer.shared()
        location = PostgresLocation(
            endpoint: .tcp(host: server.host, port: server.port), user: server.user, database: server.database,
            schema: server.freshSchema(), tls: .disable)
    }

    /// Runs `body` with `count` migrated stores on this schema, their pools running.
    func withStores<T: Sendable>(
        _ count: Int, clock: PostgresJobStore.Clock = .caller, connections: Int = 2,
        _ body: ([PostgresJobStore]) async throws -> T
    ) async throws -> T {
        let stores = (0..<count).map { _ in
            PostgresJobStore(
                location: location, clock: clock, maximumConnections: connections, timeout: Self.patientTimeout)
        }
        return try await withServices(run: { (store: PostgresJobStore) in await store.run() }) { start in
            for store in stores { start(store) }
            try await stores[0].migrate()
            return try await body(stores)
        }
    }
}

extension PostgresJobStore {
    /// Runs one SQL statement outside the store's API (bulk test data, checks).
    func execute(_ query: PostgresQuery) async throws {
        try await read { try await $0.sql(query) }
    }

    func count(_ query: PostgresQuery) async throws -> Int {
        try await read { try await $0.sql(query).first(Int.self) } ?? -1
    }

    /// `n` queued jobs in one statement (submitting them one by one would time the submit path).
    func insertJobs(_ n: Int, priority: Int = 0) async throws {
        try await execute(
            """
            INSERT INTO job (owner_uid, state, priority, params, length, created_at, updated_at, not_before)
            SELECT 1, 'queued', \(priority), '{"seed":' || g || '}', 16, now(), now(), now() - interval '1 minute'
              FROM generate_series(1, \(n)) AS g
            """)
    }
}
