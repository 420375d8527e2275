import Crypto
import Foundation
import GRDB
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import GriditTestSupport
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
        "0003_job_ids_never_reused": "0c35433462f222b784f3523ef5ed07f8f99d52c86b8cfd0c49fa3b308d04e4c3",
        "0004_job_work_estimate": "f42646eb09be6b02bcab06d1ed258957370b3cc33b355416a47490ad565e3077",
        "0005_job_output_name": "53e9d77aad1e9dfb885ab512e645d4e134b464dc544ceb9df6bce9bf19a2f483",
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
            #expect(
                file.hasPrefix(String(format: "%04d_", index + 1)),
                "migrations are numbered 0001, 0002, ... without gaps: \(file)")
        }
    }

    @Test("embedded SQL is byte-identical to its file")
    func embeddedEqualsFile() throws {
        for migration in SchemaMigration.all {
            let url = Self.migrationsFolder.appendingPathComponent(migration.identifier + ".sql")
            let file = try Data(contentsOf: url)
            #expect(
                Array(file) == Array(migration.sql.utf8),
                "Migrations+Embedded.swift differs from migrations/\(migration.identifier).sql")
        }
    }

    @Test("shipped migrations match their pinned SHA-256")
    func pinnedHashes() throws {
        #expect(Set(Self.pinned.keys) == Set(SchemaMigration.all.map(\.identifier)), "pin the hash of every migration")
        for migration in SchemaMigration.all {
            let url = Self.migrationsFolder.appendingPathComponent(migration.identifier + ".sql")
            let hash = sha256Hex(try Data(contentsOf: url))
            #expect(
                hash == Self.pinned[migration.identifier],
                "migrations/\(migration.identifier).sql changed after shipping; add a new migration instead")
            #expect(sha256Hex(Array(migration.sql.utf8)) == Self.pinned[migration.identifier])
        }
    }

    @Test("a fresh database gets every migration; reopening is a no-op")
    func freshAndReopen() async throws {
        let directory = TemporaryDirectory()
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

    @Test("0003 on a database of 0002: every job and error kept, ids continue past the largest, never reused")
    func upgradeKeepsJobsAndNeverReusesIDs() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        let shipped = Array(SchemaMigration.all.prefix(2))
        do {
            // Rows as a griditd of 0002 wrote them (today's store writes 0004's column).
            let old = try StateDatabase(path: path, migrations: shipped)
            try await old.write { db in
                for owner in 1...3 {
                    try db.execute(
                        sql: """
                            INSERT INTO job (owner_uid, idempotency_key, params, length, created_at, updated_at, not_before)
                            VALUES (?, ?, ?, 16, 0, 0, 0)
                            """,
                        arguments: [owner, "k\(owner)", sampleParams])
                }
                try db.execute(sql: "UPDATE job SET state = 'failed', finished_at = 1 WHERE id = 1")
                try db.execute(
                    sql:
                        "INSERT INTO job_error (job_id, attempt, at, class, message) VALUES (1, 1, 1, 'invalid', 'bad')"
                )
            }
            try old.close()
        }
        let shippedStore = try SQLiteJobStore(path: path, migrations: shipped)
        let before = try await shippedStore.list(JobFilter())
        try shippedStore.close()
        #expect(before.count == 3)
        let store = try SQLiteJobStore(path: path)
        #expect(try store.appliedMigrations() == SchemaMigration.all.map(\.identifier))
        let after = try await store.list(JobFilter())
        #expect(after.map(\.id) == before.map(\.id))
        #expect(after.map(\.params) == before.map(\.params) && after.map(\.state) == before.map(\.state))
        #expect(after.allSatisfy { $0.workSeconds == 0 })
        #expect(
            try await store.errors(id: before[0].id).map(\.errorClass) == ["invalid"],
            "job_error rows survive the rebuild")
        // The indexes came back: idempotency still dedupes, claims still work.
        #expect(try await store.submit(submission(key: "k2"), owner: 2, maxQueued: 10, now: at(3)).deduplicated)
        let last = before.map(\.id).max()!
        _ = try await store.cancel(id: last, requesterUID: 3, isAdmin: true, now: at(4))
        #expect(try await store.prune(olderThan: 0, states: [.canceled], now: at(5)).map(\.id) == [last])
        let next = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(6)).job.id
        #expect(next == last + 1, "job \(next): the id of pruned job \(last) must not come back")
        let settings = try store.connectionSettings()
        #expect(settings["foreign_keys"] == "1")
    }

    @Test("0005 on a database of 0004: live jobs' output names come from their params and bind new submits")
    func outputNamesFromParams() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        do {
            let old = try StateDatabase(path: path, migrations: Array(SchemaMigration.all.prefix(4)))
            try await old.write { db in
                for params in [#"{"length":4,"output":"cats/a"}"#, #"{"length":4,"output":7}"#, sampleParams] {
                    try db.execute(
                        sql: """
                            INSERT INTO job (owner_uid, params, length, created_at, updated_at, not_before)
                            VALUES (1, ?, 4, 0, 0, 0)
                            """,
                        arguments: [params])
                }
            }
            try old.close()
        }
        let store = try SQLiteJobStore(path: path)
        let error = await storeError {
            try await store.submit(
                JobSubmission(params: sampleParams, length: 4, outputName: "cats/a/b"), owner: 1, maxQueued: 10,
                now: at(1))
        }
        #expect(error?.code == .outputTaken && error?.jobID == 1, "\(String(describing: error))")
        let names = try store.database.read { db in
            try String?.fetchAll(db, sql: "SELECT output_name FROM job ORDER BY id")
        }
        #expect(names == ["cats/a", nil, nil])
    }

    @Test("a database with a migration unknown to this binary is refused")
    func newerSchemaRefused() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        let future =
            SchemaMigration.all + [
                SchemaMigration(identifier: "9999_from_the_future", sql: "CREATE TABLE future (x INTEGER) STRICT;")
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
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        let broken =
            SchemaMigration.all + [
                SchemaMigration(
                    identifier: "0002_broken", sql: "CREATE TABLE half (x INTEGER) STRICT; SELECT * FROM no_such_table;"
                )
            ]
        let error = await storeError { try SQLiteJobStore(path: path, migrations: broken) }
        #expect(error?.code == .database)
        let store = try SQLiteJobStore(path: path)
        #expect(try store.appliedMigrations() == SchemaMigration.all.map(\.identifier))
        // 0002 would run again from scratch: its table was rolled back with it.
        try store.close()
        let fixed =
            SchemaMigration.all + [
                SchemaMigration(identifier: "0002_broken", sql: "CREATE TABLE half (x INTEGER) STRICT;")
            ]
        let again = try SQLiteJobStore(path: path, migrations: fixed)
        #expect(try again.appliedMigrations().last == "0002_broken")
    }
}
