import Foundation
import GRDB

#if canImport(Glibc)
import Glibc
#endif

/// The one SQLite file of a state directory (`<stateDir>/jobs.sqlite`), owned by this module: its
/// schema (every migration, the job queue's tables (0001) and the model store's (0002)), its
/// identity marker and reserve. Each module reads and writes only its own tables; the model store
/// learns which manifests live jobs pin from `JobStore`. Open it once per process (GRDB rule 1)
/// and hand it to `SQLiteJobStore(database:)` and `ModelStore`.
///
/// Connection settings: WAL (readers never block the writer), `synchronous = FULL` (a commit
/// survives power loss), foreign keys on, a busy timeout. `write` runs one `BEGIN IMMEDIATE`
/// transaction, so a write never upgrades a read lock midway and never gets a late `SQLITE_BUSY`.
public final class StateDatabase: Sendable {
    /// The database file name inside a state directory.
    public static let fileName = "jobs.sqlite"

    public let path: String
    public let pool: DatabasePool
    /// Space set aside for the database on its filesystem (`openOwned` only): a write that
    /// finds the disk full releases it and tries once more.
    public let reserve: DatabaseReserve?
    private let identity: DatabaseIdentity?

    /// Opens (creating if missing) the database at `path` and applies pending `migrations`.
    /// Refuses (`schemaTooNew`) a database that records a migration this binary does not know.
    /// With `migrate: false` nothing is written: the caller gets the schema as it is (used by
    /// read-only tools while a daemon owns the state directory). No identity check: the process
    /// that holds the state directory's lock opens it with `openOwned`.
    public convenience init(
        path: String, busyTimeout: TimeInterval = 5, migrations: [SchemaMigration] = SchemaMigration.all,
        migrate: Bool = true
    ) throws(StateError) {
        let pool = try Self.openPool(path: path, busyTimeout: busyTimeout, migrations: migrations, create: migrate)
        if migrate {
            do { try SchemaMigration.migrator(migrations).migrate(pool) } catch {
                throw Self.openingError(path, error)
            }
        }
        self.init(path: path, pool: pool, reserve: nil, identity: nil)
    }

    private init(path: String, pool: DatabasePool, reserve: DatabaseReserve?, identity: DatabaseIdentity?) {
        self.path = path
        self.pool = pool
        self.reserve = reserve
        self.identity = identity
    }

    /// The database of the state directory this process has locked (`StateDirectoryLock`):
    /// checked against its identity marker first (a deleted, replaced or truncated database, or a
    /// lost write-ahead log, throws `databaseLost` unless `initialize`), then migrated, with a
    /// reserve of `reserveBytes` made beside it when the filesystem has room. Returns notes on
    /// what `initialize` accepted or what was found moved, for the log.
    public static func openOwned(
        path: String, initialize: Bool = false, reserveBytes: Int64 = 0, busyTimeout: TimeInterval = 5,
        migrations: [SchemaMigration] = SchemaMigration.all
    ) throws(StateError) -> (database: StateDatabase, notes: [String]) {
        let (pool, opening) = try DatabaseIdentity.guardedOpen(
            path: path, initialize: initialize,
            open: { () throws(StateError) in
                try openPool(path: path, busyTimeout: busyTimeout, migrations: migrations, create: true)
            },
            migrate: { try SchemaMigration.migrator(migrations).migrate($0) })
        let directory = (path as NSString).deletingLastPathComponent
        let reserve = DatabaseReserve(
            path: (directory as NSString).appendingPathComponent(DatabaseReserve.fileName), size: reserveBytes)
        reserve.ensure(keepFree: 0)
        return (StateDatabase(path: path, pool: pool, reserve: reserve, identity: opening.identity), opening.notes)
    }

    private static func openPool(
        path: String, busyTimeout: TimeInterval, migrations: [SchemaMigration], create: Bool
    ) throws(StateError) -> DatabasePool {
        if create { try createPrivately(path) }
        for suffix in ["", "-wal", "-shm"] { StatePermissions.file(path + suffix, mode: StatePermissions.database) }
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(busyTimeout)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            let pool = try DatabasePool(path: path, configuration: config)
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
                try? pool.close()
                throw StateError(
                    .schemaTooNew,
                    "the job database \(path) was migrated by a newer griditd (unknown migrations: "
                        + unknown.joined(separator: ", ") + "; this binary knows up to "
                        + (migrations.last?.identifier ?? "none")
                        + "). Run the newer griditd, or point --state-dir at another directory")
            }
            return pool
        } catch {
            throw openingError(path, error)
        }
    }

    private static func openingError(_ path: String, _ error: any Error) -> StateError {
        if let error = error as? StateError { return error }
        let translated = translate(error)
        return StateError(translated.code, "opening the job database \(path): \(translated.message)")
    }

    // The pool closes when this goes (SQLite may then remove the -wal file): the marker must not
    // keep saying "open", or the next start would take that for a lost WAL.
    deinit {
        checkpointForClose()
        identity?.closed()
    }

    /// Nil while `path` still names the database file this process opened (`openOwned`); else
    /// what happened to it (deleted, replaced, truncated, its write-ahead log deleted).
    public func identityProblem() -> String? { identity?.problem() }

    /// Closes every connection; later calls fail. A database opened with `openOwned` first moves
    /// everything into the main file (the `-wal` file stays, empty: GRDB closes its writer before
    /// its readers) and records the clean close in its identity marker.
    public func close() throws(StateError) {
        checkpointForClose()
        do { try pool.close() } catch { throw Self.translate(error) }
        identity?.closed()
    }

    private func checkpointForClose() {
        guard identity != nil else { return }
        _ = try? pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
    }

    /// A missing database file is created empty with the database's mode before SQLite opens it
    /// (SQLite would create it with 0644 less the umask); SQLite gives `-wal` and `-shm` the same.
    private static func createPrivately(_ path: String) throws(StateError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, StatePermissions.database)
        if fd >= 0 {
            Glibc.close(fd)
        } else if errno != EEXIST {
            throw StateError(
                .io,
                "cannot create the job database \(path): \(String(cString: strerror(errno))); check the state directory's owner and mode"
            )
        }
    }

    /// Migration identifiers recorded in the database, in the order applied.
    public func appliedMigrations() throws(StateError) -> [String] {
        do {
            return try pool.read { db in
                guard try db.tableExists("grdb_migrations") else { return [] }
                return try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
            }
        } catch { throw Self.translate(error) }
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction on the writer (blocking). On a full
    /// filesystem it releases the reserve and tries once more.
    public func write<T>(_ body: (Database) throws -> T) throws(StateError) -> T {
        do {
            return try pool.writeWithoutTransaction { try Self.immediate($0, body) }
        } catch  where Self.translate(error).code == .diskFull && reserve?.release() == true {
            do { return try pool.writeWithoutTransaction { try Self.immediate($0, body) } } catch {
                throw Self.translate(error)
            }
        } catch {
            throw Self.translate(error)
        }
    }

    /// The same without blocking the caller (GRDB's writer queue runs it): outcomes, cancels and
    /// pauses are still recorded while an operator frees space.
    public func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(StateError) -> T {
        do {
            return try await pool.writeWithoutTransaction { try Self.immediate($0, body) }
        } catch  where Self.translate(error).code == .diskFull && reserve?.release() == true {
            do { return try await pool.writeWithoutTransaction { try Self.immediate($0, body) } } catch {
                throw Self.translate(error)
            }
        } catch {
            throw Self.translate(error)
        }
    }

    private static func immediate<T>(_ db: Database, _ body: (Database) throws -> T) throws -> T {
        var result: T?
        try db.inTransaction(.immediate) {
            result = try body(db)
            return .commit
        }
        return result!
    }

    /// Runs `body` in a snapshot read transaction (blocking).
    public func read<T>(_ body: (Database) throws -> T) throws(StateError) -> T {
        do {
            return try pool.read(body)
        } catch {
            throw Self.translate(error)
        }
    }

    /// Maps GRDB errors to `StateError` (style 3.3); `StateError`s pass through.
    public static func translate(_ error: any Error) -> StateError {
        if let error = error as? StateError { return error }
        if let error = error as? DatabaseError {
            let detail = "\(error.resultCode): \(error.message ?? "no message")"
            if error.resultCode == .SQLITE_FULL {
                return StateError(
                    .diskFull,
                    "no space left for the job database (\(detail)); free space on the state directory's filesystem")
            }
            if error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED {
                return StateError(
                    .busy,
                    "the job database stayed locked past the busy timeout (\(detail)); "
                        + "only one griditd may use a state directory")
            }
            return StateError(.database, "SQLite error \(detail)")
        }
        return StateError(.database, "\(error)")
    }
}
