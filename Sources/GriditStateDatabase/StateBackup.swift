import Foundation
import GRDB
import GriditDurable

#if canImport(Glibc)
import Glibc
#endif

/// Backups of a state directory's database, taken while griditd runs, and their restore.
///
/// A backup is SQLite's online backup (GRDB `backup(to:)`) in one step: one read transaction
/// copies every page, so the copy is the database at one commit whatever griditd writes
/// meanwhile, and it carries no `-wal` file. It is written under a temporary name, checked
/// (`quick_check`), fsynced and renamed into place. The model blobs and outputs are files of
/// their own, copied beside it (`rsync`): blobs are immutable and named by digest.
public enum StateBackup {
    /// What a backup or a restore holds.
    public struct Summary: Sendable {
        public var path: String
        public var bytes: Int64
        /// The database's id (`user_version`), which its identity marker records.
        public var databaseID: Int32
        public var jobs: Int
        public var migrations: [String]
    }

    /// Copies the database at `databasePath` to `destination`, which must not exist.
    public static func backup(databasePath: String, to destination: String) throws(StateError) -> Summary {
        guard FileManager.default.fileExists(atPath: databasePath) else {
            throw StateError(.notFound, "no job database at \(databasePath); check --state-dir")
        }
        guard !FileManager.default.fileExists(atPath: destination) else {
            throw StateError(.invalidArgument, "\(destination) exists already; name a new file")
        }
        let source = try open(databasePath, readonly: true)
        defer { try? source.close() }
        return try write(from: source, to: destination)
    }

    /// Puts the backup at `backupPath` in place as the database of `stateDirectory`, whose lock
    /// the caller holds (griditd stopped). The backup is copied in and checked beside the
    /// database first; only then is the database there (with its `-wal` and `-shm`, as a set
    /// that can itself be restored) moved aside, not deleted, the copy renamed into its place and
    /// the identity marker removed, so that griditd adopts the restored file as its database. A
    /// failure before that leaves the state directory as it was. `outputLevels`: how deep named
    /// outputs go (their `sequence.json` names their job). Returns the summary and where the old
    /// files went.
    public static func restore(
        _ backupPath: String, stateDirectory: String, outputLevels: Int
    ) throws(StateError) -> (Summary, movedAside: [String]) {
        let summary = try describe(try open(backupPath, readonly: true), path: backupPath)
        guard summary.migrations.contains(where: { $0.hasPrefix("0001") }) else {
            throw StateError(.invalidArgument, "\(backupPath) is not a gridit job database (it has no job table)")
        }
        let database = (stateDirectory as NSString).appendingPathComponent(StateDatabase.fileName)
        let staged = database + ".restoring"
        var restored: Summary
        do {
            let source = try open(backupPath, readonly: true)
            defer { try? source.close() }
            restored = try write(from: source, to: staged)
            try continueJobIDs(staged, after: highestJobOnDisk(stateDirectory, outputLevels: outputLevels))
        } catch {
            unlink(staged)
            throw error
        }
        let stamp = Int64(Date().timeIntervalSince1970)
        var moved: [(from: String, to: String)] = []
        func undo() {
            for (from, to) in moved.reversed() { rename(to, from) }
            unlink(staged)
        }
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: database + suffix) {
            let aside = "\(database).before-restore-\(stamp)\(suffix)"
            guard rename(database + suffix, aside) == 0 else {
                let reason = String(cString: strerror(errno))
                undo()
                throw StateError(.io, "cannot move \(database + suffix) aside: \(reason); nothing was changed")
            }
            moved.append((database + suffix, aside))
        }
        guard rename(staged, database) == 0 else {
            let reason = String(cString: strerror(errno))
            undo()
            throw StateError(.io, "cannot rename \(staged) to \(database): \(reason); nothing was changed")
        }
        restored.path = database
        // The marker names the database griditd last opened; the restored one is adopted anew.
        unlink((stateDirectory as NSString).appendingPathComponent(DatabaseIdentity.markerName))
        DurableFiles.syncDirectory(stateDirectory)
        // Root restores for griditd's user: the files take the state directory's owner.
        var st = stat()
        if getuid() == 0, stat(stateDirectory, &st) == 0 { _ = chown(database, st.st_uid, st.st_gid) }
        return (restored, moved.map(\.to))
    }

    /// Ids are never reused: jobs that ran after the backup left `outputs/job-<id>` and
    /// `work/<id>` folders, or named outputs whose `sequence.json` names them, and a new job with
    /// one of their ids would take their frames for its own.
    private static func highestJobOnDisk(_ stateDirectory: String, outputLevels: Int) -> Int64 {
        let files = FileManager.default
        let outputs = (try? files.contentsOfDirectory(atPath: stateDirectory + "/outputs")) ?? []
        let work = (try? files.contentsOfDirectory(atPath: stateDirectory + "/work")) ?? []
        var ids =
            outputs.compactMap { $0.hasPrefix("job-") ? Int64($0.dropFirst(4)) : nil } + work.compactMap { Int64($0) }
        struct Writer: Decodable { var job: Int64? }
        // outputs/named/<uid>/<name of up to `outputLevels` folders>; a finished output is not searched.
        func scan(_ folder: String, levels: Int) {
            if let data = files.contents(atPath: folder + "/sequence.json") {
                if let id = (try? JSONDecoder().decode(Writer.self, from: data))?.job { ids.append(id) }
                return
            }
            guard levels > 0 else { return }
            for name in (try? files.contentsOfDirectory(atPath: folder)) ?? [] {
                var st = stat()
                guard lstat(folder + "/" + name, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { continue }
                scan(folder + "/" + name, levels: levels - 1)
            }
        }
        scan(stateDirectory + "/outputs/named", levels: 1 + outputLevels)
        return ids.max() ?? 0
    }

    private static func continueJobIDs(_ database: String, after id: Int64) throws(StateError) {
        guard id > 0 else { return }
        let queue = try open(database, readonly: false)
        defer { try? queue.close() }
        do {
            try queue.write { db in try continueJobIDs(db, after: id) }
        } catch {
            throw StateDatabase.translate(error)
        }
    }

    /// `serve --init`: the new (or adopted) database of `stateDirectory` hands out ids past those
    /// of the folders it keeps, as a restore does.
    public static func continueJobIDs(
        _ database: StateDatabase, stateDirectory: String, outputLevels: Int
    ) throws(StateError) {
        let id = highestJobOnDisk(stateDirectory, outputLevels: outputLevels)
        guard id > 0 else { return }
        try database.write { db in try continueJobIDs(db, after: id) }
    }

    private static func continueJobIDs(_ db: Database, after id: Int64) throws {
        guard try db.tableExists("sqlite_sequence") else { return }
        try db.execute(sql: "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'job'", arguments: [id])
        if db.changesCount == 0 {
            try db.execute(sql: "INSERT INTO sqlite_sequence (name, seq) VALUES ('job', ?)", arguments: [id])
        }
    }

    private static func write(from source: DatabaseQueue, to destination: String) throws(StateError) -> Summary {
        let temporary = destination + ".tmp-\(getpid())"
        unlink(temporary)
        do {
            let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, StatePermissions.database)
            guard fd >= 0 else {
                throw StateError(.io, "cannot create \(temporary): \(String(cString: strerror(errno)))")
            }
            close(fd)
            let target = try open(temporary, readonly: false)
            do {
                try source.backup(to: target)
                let check = try target.read { try String.fetchOne($0, sql: "PRAGMA quick_check") }
                guard check == "ok" else {
                    throw StateError(.database, "the copy in \(temporary) fails its check: \(check ?? "?")")
                }
                // One self-contained file: a rollback-journal database, so opening it (read-only
                // below, or by a user's sqlite3) leaves no -wal and -shm beside it.
                try target.writeWithoutTransaction {
                    try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
                    try $0.execute(sql: "PRAGMA journal_mode = DELETE")
                }
            } catch {
                try? target.close()
                throw error
            }
            try target.close()
            let fd2 = Glibc.open(temporary, O_RDONLY | O_CLOEXEC)
            if fd2 >= 0 {
                _ = fsync(fd2)
                close(fd2)
            }
            for suffix in ["-wal", "-shm"] { unlink(temporary + suffix) }
            try DurableFiles.rename(temporary, to: destination)
        } catch {
            for suffix in ["", "-wal", "-shm"] { unlink(temporary + suffix) }
            throw StateDatabase.translate(error)
        }
        let copy = try open(destination, readonly: true)
        defer { try? copy.close() }
        return try describe(copy, path: destination)
    }

    private static func describe(_ queue: DatabaseQueue, path: String) throws(StateError) -> Summary {
        do {
            return try queue.read { db in
                let tables = try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'")
                let migrations =
                    tables.contains("grdb_migrations")
                    ? try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid") : []
                let jobs = tables.contains("job") ? try Int.fetchOne(db, sql: "SELECT count(*) FROM job") ?? 0 : 0
                let id = try Int32.fetchOne(db, sql: "PRAGMA user_version") ?? 0
                let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int64
                return Summary(path: path, bytes: size ?? 0, databaseID: id, jobs: jobs, migrations: migrations)
            }
        } catch {
            throw StateDatabase.translate(error)
        }
    }

    private static func open(_ path: String, readonly: Bool) throws(StateError) -> DatabaseQueue {
        var config = Configuration()
        config.readonly = readonly
        config.busyMode = .timeout(10)
        do {
            return try DatabaseQueue(path: path, configuration: config)
        } catch {
            throw StateError(.io, "cannot open \(path) as a database: \(StateDatabase.translate(error).message)")
        }
    }
}
