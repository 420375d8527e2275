import Foundation
import GRDB
import GriditDurable

#if canImport(Glibc)
import Glibc
#endif

/// Which database a state directory owns, so that a lost one is never silently replaced by an
/// empty one (acknowledged jobs and the model catalog live in it).
///
/// The marker `<stateDir>/jobs.sqlite.identity` (JSON) records the database's id (a random
/// number kept in the file's `user_version` header field), the file's device and inode, and
/// whether a process has it open. The process holding the state-directory lock checks it before
/// it opens the database, like PostgreSQL refuses a data directory without its WAL:
/// - the marker exists and the database file does not: deleted or moved;
/// - the database's id is not the marker's: replaced, or truncated (an empty file has id 0);
/// - the marker says the last process did not close the database, and its write-ahead log
///   (`-wal`, which holds the latest commits until a checkpoint) is gone.
/// A different inode with the right id is a restore or a move of the same database: accepted.
/// `initialize` (`griditd serve --init`) accepts what is there, or creates a new empty database.
/// While the database is open, `problem()` tells whether its file is still the one opened.
final class DatabaseIdentity: Sendable {
    static let markerName = "jobs.sqlite.identity"

    struct Marker: Codable, Equatable {
        static let currentFormat = "gridit.database-identity.v1"
        var format = currentFormat
        var databaseID: Int32
        var device: UInt64
        var inode: UInt64
        /// True from open to a clean close: after a crash the `-wal` file must still be there.
        var open: Bool

        enum CodingKeys: String, CodingKey {
            case format
            case databaseID = "database_id"
            case device, inode, open
        }
    }

    let databasePath: String
    let markerPath: String
    /// The database file as opened (device, inode) and its id.
    let opened: Marker

    private init(databasePath: String, markerPath: String, opened: Marker) {
        self.databasePath = databasePath
        self.markerPath = markerPath
        self.opened = opened
    }

    /// What `guardedOpen` found and accepted, for the log.
    struct Opening {
        var identity: DatabaseIdentity
        var notes: [String]
    }

    /// Checks the marker against the database file, calls `open` (the pool, not migrated yet),
    /// checks the database's id, calls `migrate` and records the identity. Throws `databaseLost`
    /// with what happened and the fix unless `initialize`.
    static func guardedOpen(
        path: String, initialize: Bool, open: () throws(StateError) -> DatabasePool,
        migrate: (DatabasePool) throws -> Void
    ) throws(StateError) -> (DatabasePool, Opening) {
        let directory = (path as NSString).deletingLastPathComponent
        let markerPath = (directory as NSString).appendingPathComponent(markerName)
        var notes: [String] = []
        let marker = try readMarker(markerPath, initialize: initialize, notes: &notes)
        let exists = fileIdentity(path) != nil
        let fix =
            "restore jobs.sqlite together with its jobs.sqlite-wal file from a backup, or start over with an "
            + "empty queue and model catalog: `griditd serve --init` (the model blobs, outputs and work folders stay)"
        if let marker, !initialize {
            guard exists else {
                throw StateError(
                    .databaseLost,
                    "the job database \(path) is missing, but \(markerPath) says griditd created database "
                        + "\(marker.databaseID) there (inode \(marker.inode)): it was deleted or moved, and with it "
                        + "every acknowledged job and the model catalog. Refusing to start over silently: \(fix)")
            }
            if marker.open, fileIdentity(path + "-wal") == nil {
                throw StateError(
                    .databaseLost,
                    "\(path)-wal is missing although the last process that used \(path) did not close it: the "
                        + "write-ahead log held its latest commits (recent submits and job states), which are lost. "
                        + "Refusing to go on with an older queue silently: restore both files from a backup, or "
                        + "accept the database as it is: `griditd serve --init`")
            }
        } else if marker == nil, !exists, !initialize, let remnant = remnant(of: directory) {
            throw StateError(
                .databaseLost,
                "the state directory \(directory) holds \(remnant) but no job database (\(path)) and no "
                    + "identity marker: its database was deleted. Refusing to start over silently: \(fix)")
        }
        if !exists, initialize {
            // A new database must not pick up the write-ahead log of the one that was lost.
            let stamp = Int64(Date().timeIntervalSince1970)
            for suffix in ["-wal", "-shm"] where fileIdentity(path + suffix) != nil {
                let aside = "\(path)\(suffix).lost-\(stamp)"
                if rename(path + suffix, aside) == 0 {
                    notes.append("--init: moved the lost database's \(path)\(suffix) to \(aside)")
                }
            }
            notes.append("--init: started over with a new, empty job database \(path)")
        }

        let pool = try open()
        do {
            var id = try pool.read { try Int32.fetchOne($0, sql: "PRAGMA user_version") ?? 0 }
            if let marker, id != marker.databaseID, exists {
                guard initialize else {
                    throw StateError(
                        .databaseLost,
                        "\(path) is not the job database griditd created in this state directory (its id is \(id), "
                            + "\(markerPath) names \(marker.databaseID)): it was replaced or truncated. Refusing to "
                            + "start over silently: \(fix); or, if this is the database you mean to use, adopt it "
                            + "with `griditd serve --init`")
                }
                notes.append("--init: adopted \(path) (database \(id), the marker named \(marker.databaseID))")
            }
            try migrate(pool)
            if id == 0 {
                id = Int32.random(in: 1...Int32.max)
                try pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA user_version = \(id)") }
            }
            guard let file = fileIdentity(path) else {
                throw StateError(.io, "\(path) vanished right after it was opened")
            }
            if let marker, marker.databaseID == id, marker.inode != file.inode || marker.device != file.device {
                notes.append(
                    "\(path) is database \(id) as recorded, in another file (inode \(marker.inode) → \(file.inode)): "
                        + "restored or moved; accepted")
            }
            let opened = Marker(databaseID: id, device: file.device, inode: file.inode, open: true)
            try writeMarker(opened, to: markerPath)
            return (
                pool,
                Opening(
                    identity: DatabaseIdentity(databasePath: path, markerPath: markerPath, opened: opened), notes: notes
                )
            )
        } catch {
            try? pool.close()
            throw StateDatabase.translate(error)
        }
    }

    /// Records a clean close (the pool is closed, its `-wal` checkpointed and removed).
    func closed() {
        guard problem() == nil else { return }
        var marker = opened
        marker.open = false
        try? Self.writeMarker(marker, to: markerPath)
    }

    /// Nil while the path still names the database file this process opened; otherwise what
    /// happened to it. Only `stat`: opening and closing the file here would drop SQLite's locks.
    func problem() -> String? {
        guard let now = Self.fileIdentity(databasePath) else {
            return "the job database \(databasePath) was deleted while griditd ran: everything written since then "
                + "goes to a file no one will open again"
        }
        if now.device != opened.device || now.inode != opened.inode {
            return
                "the job database \(databasePath) was replaced while griditd ran (inode \(opened.inode) → \(now.inode))"
        }
        if now.size < 100 {
            return "the job database \(databasePath) was truncated to \(now.size) bytes while griditd ran"
        }
        if Self.fileIdentity(databasePath + "-wal") == nil {
            return
                "the job database's write-ahead log \(databasePath)-wal was deleted while griditd ran: the commits in "
                + "it are lost if griditd dies before it closes the database"
        }
        return nil
    }

    // MARK: - Files

    private static func readMarker(
        _ path: String, initialize: Bool, notes: inout [String]
    ) throws(StateError) -> Marker? {
        guard let data = FileManager.default.contents(atPath: path) else {
            guard fileIdentity(path) == nil else {
                throw StateError(.io, "cannot read \(path); check its owner and mode")
            }
            return nil
        }
        guard let marker = try? JSONDecoder().decode(Marker.self, from: data), marker.format == Marker.currentFormat
        else {
            guard initialize else {
                throw StateError(
                    .databaseLost,
                    "\(path) is not a database identity marker griditd wrote (\(data.count) bytes); restore it, or "
                        + "accept the database as it is with `griditd serve --init`")
            }
            notes.append("--init: replaced the unreadable marker \(path)")
            return nil
        }
        return marker
    }

    private static func writeMarker(_ marker: Marker, to path: String) throws(StateError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var data: Data
        do { data = try encoder.encode(marker) } catch {
            throw StateError(.io, "encoding the identity marker \(path): \(error)")
        }
        data.append(0x0A)
        try DurableFile.write(
            [UInt8](data), to: path, failure: { StateError(.io, "writing the identity marker: \($0)") })
    }

    /// What shows that a state directory had a database: outputs, work folders, model blobs, a WAL.
    private static func remnant(of directory: String) -> String? {
        func nonEmpty(_ sub: String) -> Bool {
            !((try? FileManager.default.contentsOfDirectory(atPath: (directory as NSString).appendingPathComponent(sub)))
                ?? [])
                .isEmpty
        }
        if fileIdentity((directory as NSString).appendingPathComponent(StateDatabase.fileName + "-wal")) != nil {
            return "a write-ahead log (jobs.sqlite-wal)"
        }
        for (sub, what) in [
            ("outputs", "job outputs"), ("work", "work folders of jobs"), ("blobs/sha256", "model blobs"),
        ]
        where nonEmpty(sub) {
            return "\(what) (\(sub)/)"
        }
        return nil
    }

    struct FileID {
        var device: UInt64
        var inode: UInt64
        var size: Int64
    }

    static func fileIdentity(_ path: String) -> FileID? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size))
    }
}
