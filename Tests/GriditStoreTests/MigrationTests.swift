import Crypto
import Foundation
import GriditStore
import Testing

/// Lower-case hex SHA-256 (swift-crypto).
func sha256Hex<D: DataProtocol>(_ bytes: D) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

@Suite("Migrations")
struct MigrationTests {
    /// SHA-256 of every shipped migration file. A shipped migration never changes: add a new
    /// numbered file instead. Append a line here when adding one.
    static let pinned: [String: String] = [
        "0001_create_job": "d7cd2be1dbb2261e68937ced6b191833ce6e66ab23489993a5d9d9c8ae14e56e",
        "0002_create_model_store": "ad5edfda9a06e42556f6ecd9ab8862ace194da6a6da62c7fe2679edb232f0260",
    ]

    static var migrationsFolder: URL { repositoryRoot().appendingPathComponent("migrations") }

    static func sqlFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: migrationsFolder.path)
            .filter { $0.hasSuffix(".sql") }
            .sorted()
    }

    @Test("every file in migrations/ is embedded, in order, under its name")
    func filesMatchEmbeddedList() throws {
        let files = try Self.sqlFiles()
        #expect(files.map { String($0.dropLast(4)) } == SchemaMigration.all.map(\.identifier))
        for (index, file) in files.enumerated() {
            #expect(file.hasPrefix(String(format: "%04d_", index + 1)), "migrations are numbered 0001, 0002, ... without gaps: \(file)")
        }
    }

    @Test("embedded SQL is byte-identical to its file")
    func embeddedEqualsFile() throws {
        for migration in SchemaMigration.all {
            let url = Self.migrationsFolder.appendingPathComponent(migration.identifier + ".sql")
            let file = try Data(contentsOf: url)
            #expect(Array(file) == Array(migration.sql.utf8), "Migrations+Embedded.swift differs from migrations/\(migration.identifier).sql")
        }
    }

    @Test("shipped migrations match their pinned SHA-256")
    func pinnedHashes() throws {
        #expect(Set(Self.pinned.keys) == Set(SchemaMigration.all.map(\.identifier)), "pin the hash of every migration")
        for migration in SchemaMigration.all {
            let url = Self.migrationsFolder.appendingPathComponent(migration.identifier + ".sql")
            let hash = sha256Hex(try Data(contentsOf: url))
            #expect(hash == Self.pinned[migration.identifier], "migrations/\(migration.identifier).sql changed after shipping; add a new migration instead")
            #expect(sha256Hex(Array(migration.sql.utf8)) == Self.pinned[migration.identifier])
        }
    }

    @Test("a fresh database gets every migration; reopening is a no-op")
    func freshAndReopen() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        let store = try SQLiteJobStore(path: path)
        #expect(try store.appliedMigrations() == SchemaMigration.all.map(\.identifier))
        let job = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job
        try store.close()

        let reopened = try SQLiteJobStore(path: path)
        #expect(try reopened.appliedMigrations() == SchemaMigration.all.map(\.identifier))
        #expect(try await reopened.get(id: job.id) == job)
    }

    @Test("a database with a migration unknown to this binary is refused")
    func newerSchemaRefused() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        let future = SchemaMigration.all + [
            SchemaMigration(identifier: "9999_from_the_future", sql: "CREATE TABLE future (x INTEGER) STRICT;"),
        ]
        do {
            let newer = try SQLiteJobStore(path: path, migrations: future)
            #expect(try newer.appliedMigrations().last == "9999_from_the_future")
            try newer.close()
        }
        let error = await storeError { try SQLiteJobStore(path: path) }
        #expect(error?.code == .schemaTooNew)
        #expect(error?.message.contains("9999_from_the_future") == true)
        #expect(error?.message.contains(path) == true)
    }

    @Test("a migration that fails leaves nothing half-applied")
    func failingMigrationRollsBack() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        let broken = SchemaMigration.all + [
            SchemaMigration(identifier: "0002_broken", sql: "CREATE TABLE half (x INTEGER) STRICT; SELECT * FROM no_such_table;"),
        ]
        let error = await storeError { try SQLiteJobStore(path: path, migrations: broken) }
        #expect(error?.code == .database)
        let store = try SQLiteJobStore(path: path)
        #expect(try store.appliedMigrations() == SchemaMigration.all.map(\.identifier))
        // 0002 would run again from scratch: its table was rolled back with it.
        try store.close()
        let fixed = SchemaMigration.all + [SchemaMigration(identifier: "0002_broken", sql: "CREATE TABLE half (x INTEGER) STRICT;")]
        let again = try SQLiteJobStore(path: path, migrations: fixed)
        #expect(try again.appliedMigrations().last == "0002_broken")
    }
}
