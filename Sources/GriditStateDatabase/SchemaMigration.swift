import GRDB

/// One numbered SQL migration, embedded from `migrations/<identifier>.sql`
/// (see `Migrations+Embedded.swift`; the PostgreSQL job store's come from `migrations/postgres/`).
/// Shipped migrations are frozen.
public struct SchemaMigration: Hashable, Sendable {
    /// The file name without `.sql`, e.g. `0001_create_job`; recorded in `grdb_migrations`.
    public var identifier: String
    public var sql: String

    public init(identifier: String, sql: String) {
        self.identifier = identifier
        self.sql = sql
    }

    /// A migrator that applies `migrations` in order, each in its own IMMEDIATE transaction,
    /// recording each identifier in `grdb_migrations`.
    static func migrator(_ migrations: [SchemaMigration]) -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        for migration in migrations {
            let sql = migration.sql
            migrator.registerMigration(migration.identifier) { db in
                try db.execute(sql: sql)
            }
        }
        return migrator
    }
}
