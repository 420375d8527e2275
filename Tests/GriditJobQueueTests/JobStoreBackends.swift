import Foundation
import GriditJobQueue
import GriditJobStorePostgres
import GriditTestSupport
import Testing

/// Every `JobStore` backend, each giving the conformance suite a fresh, empty store per call:
/// a new SQLite file, or a new schema on the tests' PostgreSQL server (which must start: a
/// server that cannot fails these tests rather than skipping them).
enum JobStoreBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgresql

    var testDescription: String { rawValue }

    /// Runs `body` with a factory of fresh stores of this backend; the PostgreSQL stores' pools
    /// run until `body` returns.
    func withStores<T: Sendable>(
        _ body: (_ makeStore: @escaping @Sendable () async throws -> any JobStore) async throws -> T
    ) async throws -> T {
        switch self {
        case .sqlite:
            let directory = TemporaryDirectory()
            defer { directory.remove() }
            return try await body { try SQLiteJobStore(path: directory.file("jobs-\(UUID().uuidString).sqlite")) }
        case .postgresql:
            let server = try PostgresTestServer.shared()
            return try await withServices(run: { (store: PostgresJobStore) in await store.run() }) { start in
                try await body {
                    let location = PostgresLocation(
                        endpoint: .tcp(host: server.host, port: server.port), user: server.user,
                        database: server.database, schema: server.freshSchema(), tls: .disable)
                    // The suite's clock is the instants it passes; three connections are enough
                    // for its concurrent cases to contend.
                    // Patient: the whole suite runs on two cores (PostgresDeadlineTests checks the deadline).
                    let store = PostgresJobStore(
                        location: location, clock: .caller, maximumConnections: 3, timeout: .seconds(600))
                    start(store)
                    try await store.migrate()
                    return store
                }
            }
        }
    }
}

@Suite("JobStore conformance")
struct JobStoreConformanceTests {
    /// The backend-independent suite, unchanged, against every backend.
    @Test("conformance", arguments: JobStoreBackend.allCases, JobStoreConformance.cases)
    func conformance(_ backend: JobStoreBackend, _ check: JobStoreConformance.Case) async throws {
        try await backend.withStores { makeStore in
            try await check.run(JobStoreConformance(makeStore: makeStore))
        }
    }
}
