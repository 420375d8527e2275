import GriditStateDatabase
import Logging
import PostgresNIO

extension SchemaMigration {
    /// The file's statements, one per `;` that ends a line, comment lines dropped: the extended
    /// protocol PostgresNIO speaks runs one statement per query.
    var statements: [String] {
        var statements: [String] = []
        var current: [Substring] = []
        for line in sql.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop { $0 == " " }
            if trimmed.hasPrefix("--") || trimmed.isEmpty { continue }
            current.append(line)
            if line.hasSuffix(";") {
                statements.append(current.joined(separator: "\n"))
                current = []
            }
        }
        if !current.isEmpty { statements.append(current.joined(separator: "\n")) }
        return statements
    }
}

/// Applies pending migrations to one schema, in one transaction under an advisory lock, so that
/// hosts starting together migrate once and none sees a half-made schema.
enum PostgresMigrator {
    /// Returns the identifiers applied now. Migrations recorded in the database that this binary
    /// does not know are a newer griditd's: additive, so this one carries on (rolling upgrade).
    /// Each lock a migration needs is waited for at most `lockWait`: an `ALTER TABLE` queued
    /// behind a long reader (a pg_dump) would have every later statement on the table, every
    /// host's claims and heartbeats, queue behind it. It fails with SQLSTATE 55P03 instead.
    static func migrate(
        _ connection: PostgresSession, schema: String, migrations: [SchemaMigration], lockWait: Duration,
        logger: Logger
    ) async throws -> (applied: [String], unknown: [String]) {
        precondition(PostgresLocation.isPlainIdentifier(schema), "schema names are checked where they enter")
        try await connection.sql("BEGIN")
        do {
            let lockKey = "gridit.migrate." + schema
            try await connection.sql("SELECT pg_advisory_xact_lock(hashtextextended(\(lockKey), 0))")
            // The schema name is a checked plain identifier: safe to splice (DDL takes no binds).
            try await connection.sql(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)"))
            try await connection.sql(PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(schema)"))
            let wait = Int(lockWait / .milliseconds(1))
            try await connection.sql(PostgresQuery(unsafeSQL: "SET LOCAL lock_timeout = \(wait)"))
            try await connection.sql(
                """
                CREATE TABLE IF NOT EXISTS schema_migration (
                  identifier text PRIMARY KEY,
                  applied_at timestamptz NOT NULL DEFAULT now()
                )
                """)
            let recorded = Set(try await connection.sql("SELECT identifier FROM schema_migration").collect(String.self))
            var applied: [String] = []
            for migration in migrations where !recorded.contains(migration.identifier) {
                for statement in migration.statements {
                    try await connection.sql(PostgresQuery(unsafeSQL: statement))
                }
                try await connection.sql(
                    "INSERT INTO schema_migration (identifier) VALUES (\(migration.identifier))")
                applied.append(migration.identifier)
            }
            try await connection.sql("COMMIT")
            let known = Set(migrations.map(\.identifier))
            return (applied, recorded.subtracting(known).sorted())
        } catch {
            _ = try? await connection.sql("ROLLBACK")
            throw error
        }
    }
}
