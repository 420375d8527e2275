import Crypto
import Foundation
import GriditJobStorePostgres
import GriditStateDatabase
import GriditTestSupport
import Testing

@Suite("PostgreSQL migrations")
struct PostgresMigrationTests {
    /// SHA-256 of every shipped file in migrations/postgres/. A shipped migration never changes:
    /// add a new numbered file (additive only) and append its line here.
    static let pinned: [String: String] = [
        "0001_create_job": "93110527ef4e0977ec683a55f7ff3c4f8235affe2c565757d2e68104c9751552",
        "0002_create_node": "ba209b3110221285e76e76a0ce47abfbcaaca963e1fd96b037a5ebb0b38b7e08",
        "0003_create_cluster_fact": "957fb306ab22b08019a9b57412467538e996ed745642aaf3ecd7d307c870a6e8",
        "0004_job_output_name": "e073f340b3b2d4004603737fda31f3ef81dbe173a5da23fd7e61a9de532bc19b",
    ]

    static var folder: URL { repositoryRoot().appendingPathComponent("migrations/postgres") }

    @Test("every file in migrations/postgres/ is embedded, in order, byte for byte")
    func embeddedEqualsFiles() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.folder.path)
            .filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files.map { String($0.dropLast(4)) } == PostgresMigrations.all.map(\.identifier))
        for (index, file) in files.enumerated() {
            #expect(file.hasPrefix(String(format: "%04d_", index + 1)), "numbered without gaps: \(file)")
        }
        for migration in PostgresMigrations.all {
            let file = try Data(contentsOf: Self.folder.appendingPathComponent(migration.identifier + ".sql"))
            #expect(
                Array(file) == Array(migration.sql.utf8),
                "PostgresMigrations+Embedded.swift differs from migrations/postgres/\(migration.identifier).sql")
        }
    }

    @Test("shipped migrations match their pinned SHA-256")
    func pinnedHashes() throws {
        #expect(Set(Self.pinned.keys) == Set(PostgresMigrations.all.map(\.identifier)))
        for migration in PostgresMigrations.all {
            let hash = SHA256.hash(data: Array(migration.sql.utf8)).map { String(format: "%02x", $0) }.joined()
            #expect(
                hash == Self.pinned[migration.identifier],
                "migrations/postgres/\(migration.identifier).sql changed after shipping; add a new migration instead")
        }
    }
}
