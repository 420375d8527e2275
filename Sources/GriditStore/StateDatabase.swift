#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GRDB

/// The one SQLite file of a state directory (`<stateDir>/jobs.sqlite`): the job queue's tables
/// (0001) and the model store's (0002) live in it, so the store can see which manifests queued
/// jobs pin. Open it once per process (GRDB rule 1) and hand it to `SQLiteJobStore(database:)`
/// and `ModelStore`.
///
/// Connection settings: WAL (readers never block the writer), `synchronous = FULL` (a commit
/// survives power loss), foreign keys on, a busy timeout. `write` runs one `BEGIN IMMEDIATE`
/// transaction, so a write never upgrades a read lock midway and never gets a late `SQLITE_BUSY`.
public final class StateDatabase: Sendable {
    /// The database file name inside a state directory.
    public static let fileName = "jobs.sqlite"

    public let path: String
    public let pool: DatabasePool

    /// Opens (creating if missing) the database at `path` and applies pending `migrations`.
    /// Refuses (`schemaTooNew`) a database that records a migration this binary does not know.
    /// With `migrate: false` nothing is written: the caller gets the schema as it is (used by
    /// read-only tools while a daemon owns the state directory).
    public init(
        path: String, busyTimeout: TimeInterval = 5, migrations: [SchemaMigration] = SchemaMigration.all,
        migrate: Bool = true
    ) throws(StoreError) {
        self.path = path
        if migrate { try Self.createPrivately(path) }
        for suffix in ["", "-wal", "-shm"] { StatePermissions.file(path + suffix, mode: StatePermissions.database) }
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(busyTimeout)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            pool = try DatabasePool(path: path, configuration: config)
            // GRDB sets `synchronous = NORMAL` on the writer when it enables WAL, after
            // prepareDatabase; the writer is one long-lived connection, so set FULL on it here.
            try pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
            }
            let known = Set(migrations.map(\.identifier))
            let unknown = try pool.read { db -> [String] in
                guard try db.tableExists("grdb_migrations") else { return [] }
                return try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY identifier")
                    .filter { !known.contains($0) }
            }
            guard unknown.isEmpty else {
                throw StoreError(
                    .schemaTooNew,
                    "the job database \(path) was migrated by a newer griditd (unknown migrations: "
                        + unknown.joined(separator: ", ") + "; this binary knows up to "
                        + (migrations.last?.identifier ?? "none")
                        + "). Run the newer griditd, or point --state-dir at another directory")
            }
            if migrate { try SchemaMigration.migrator(migrations).migrate(pool) }
        } catch let error as StoreError {
            throw error
        } catch {
            let translated = Self.translate(error)
            throw StoreError(translated.code, "opening the job database \(path): \(translated.message)")
        }
    }

    /// Closes every connection; later calls fail.
    public func close() throws(StoreError) {
        do { try pool.close() } catch { throw Self.translate(error) }
    }

    /// A missing database file is created empty with the database's mode before SQLite opens it
    /// (SQLite would create it with 0644 less the umask); SQLite gives `-wal` and `-shm` the same.
    private static func createPrivately(_ path: String) throws(StoreError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, StatePermissions.database)
        if fd >= 0 {
            Glibc.close(fd)
        } else if errno != EEXIST {
            throw StoreError(.io, "cannot create the job database \(path): \(String(cString: strerror(errno))); check the state directory's owner and mode")
        }
    }

    /// Migration identifiers recorded in the database, in the order applied.
    public func appliedMigrations() throws(StoreError) -> [String] {
        do {
            return try pool.read { db in
                guard try db.tableExists("grdb_migrations") else { return [] }
                return try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
            }
        } catch { throw Self.translate(error) }
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction on the writer (blocking).
    public func write<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do {
            return try pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        } catch {
            throw Self.translate(error)
        }
    }

    /// Runs `body` in a snapshot read transaction (blocking).
    public func read<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do {
            return try pool.read(body)
        } catch {
            throw Self.translate(error)
        }
    }

    /// Maps GRDB errors to `StoreError` (style 3.3); `StoreError`s pass through.
    public static func translate(_ error: any Error) -> StoreError {
        if let error = error as? StoreError { return error }
        if let error = error as? DatabaseError {
            let detail = "\(error.resultCode): \(error.message ?? "no message")"
            if error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED {
                return StoreError(
                    .busy,
                    "the job database stayed locked past the busy timeout (\(detail)); "
                        + "only one griditd may use a state directory")
            }
            return StoreError(.database, "SQLite error \(detail)")
        }
        return StoreError(.database, "\(error)")
    }
}
