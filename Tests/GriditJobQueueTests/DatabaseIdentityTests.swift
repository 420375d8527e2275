// The state directory's database never silently starts over: a deleted, replaced or truncated
// database, or a write-ahead log lost after a crash, is refused until `--init`; and a full
// filesystem still takes the writes that record outcomes (the reserve).

import Foundation
import GRDB
import GriditJobQueue
import GriditStateDatabase
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("database identity and reserve", .offPool)
struct DatabaseIdentityTests {
    /// A state directory whose database (opened by its owner) holds one job.
    func populated(_ directory: TemporaryDirectory) async throws {
        let (database, notes) = try StateDatabase.openOwned(path: directory.file("jobs.sqlite"))
        #expect(notes.isEmpty)
        _ = try await SQLiteJobStore(database: database).submit(submission(), owner: 1, maxQueued: 10, now: at(0))
        try database.close()
    }

    func marker(_ directory: TemporaryDirectory) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: directory.file("jobs.sqlite.identity")))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func openError(_ path: String, initialize: Bool = false) -> StateError? {
        do {
            let (database, _) = try StateDatabase.openOwned(path: path, initialize: initialize)
            try database.close()
            return nil
        } catch {
            return error
        }
    }

    func jobCount(_ path: String) async throws -> Int {
        let (database, _) = try StateDatabase.openOwned(path: path)
        defer { try? database.close() }
        return try await SQLiteJobStore(database: database).list(JobFilter()).count
    }

    @Test("the marker records the database; a clean close says so; reopening finds it")
    func markerRoundTrip() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let (database, _) = try StateDatabase.openOwned(path: directory.file("jobs.sqlite"))
        #expect(try marker(directory)["open"] as? Bool == true)
        let id = try #require(try marker(directory)["database_id"] as? Int)
        #expect(id != 0)
        #expect(try database.read { try Int.fetchOne($0, sql: "PRAGMA user_version") } == id)
        #expect(database.identityProblem() == nil)
        try database.close()
        #expect(try marker(directory)["open"] as? Bool == false)
        #expect(openError(directory.file("jobs.sqlite")) == nil)
    }

    @Test("a deleted database is refused, naming the fix; --init starts over with an empty one")
    func deleted() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try await populated(directory)
        try FileManager.default.removeItem(atPath: directory.file("jobs.sqlite"))
        let error = try #require(openError(directory.file("jobs.sqlite")))
        #expect(error.code == .databaseLost)
        #expect(
            error.message.contains("is missing") && error.message.contains("griditd serve --init"), "\(error.message)")
        #expect(!FileManager.default.fileExists(atPath: directory.file("jobs.sqlite")), "nothing was created")
        // The lost database's jobs left folders: griditd serve --init continues ids past them.
        for folder in ["work/7", "outputs/job-12"] {
            try FileManager.default.createDirectory(atPath: directory.file(folder), withIntermediateDirectories: true)
        }
        let (database, notes) = try StateDatabase.openOwned(path: directory.file("jobs.sqlite"), initialize: true)
        #expect(notes.contains { $0.contains("new, empty job database") }, "\(notes)")
        try StateBackup.continueJobIDs(database, stateDirectory: directory.path, outputLevels: 1)
        try database.close()
        #expect(try await jobCount(directory.file("jobs.sqlite")) == 0)
        let store = try SQLiteJobStore(path: directory.file("jobs.sqlite"))
        defer { try? store.close() }
        let next = try await store.submit(
            JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: Date()
        ).job.id
        #expect(next == 13, "job \(next) would take the frames of the lost database's job-12")
    }

    @Test("a replaced or truncated database is refused; --init adopts it")
    func replacedOrTruncated() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try await populated(directory)
        let other = TemporaryDirectory()
        defer { other.remove() }
        try await populated(other)
        let path = directory.file("jobs.sqlite")
        // Another gridit database copied over this one.
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: other.file("jobs.sqlite"), toPath: path)
        let replaced = try #require(openError(path))
        #expect(
            replaced.code == .databaseLost && replaced.message.contains("replaced or truncated"), "\(replaced.message)")
        // Truncated to nothing (its id with it).
        #expect(truncate(path, 0) == 0)
        #expect(try #require(openError(path)).code == .databaseLost)
        #expect(openError(path, initialize: true) == nil)
        #expect(openError(path) == nil, "adopted: the marker names it now")
    }

    @Test("the same database restored into another file (a new inode) is accepted")
    func restored() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try await populated(directory)
        let path = directory.file("jobs.sqlite")
        try FileManager.default.copyItem(atPath: path, toPath: path + ".backup")
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: path + ".backup", toPath: path)
        let (database, notes) = try StateDatabase.openOwned(path: path)
        #expect(notes.contains { $0.contains("restored or moved") }, "\(notes)")
        try database.close()
        #expect(try await jobCount(path) == 1)
    }

    @Test("after an unclean stop, a missing write-ahead log is refused; --init accepts the database as it is")
    func lostWAL() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try await populated(directory)
        // What kill -9 leaves: the marker still says open; then the WAL goes.
        let path = directory.file("jobs.sqlite.identity")
        let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(
            of: "\"open\":false", with: "\"open\":true")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        try? FileManager.default.removeItem(atPath: directory.file("jobs.sqlite-wal"))
        try? FileManager.default.removeItem(atPath: directory.file("jobs.sqlite-shm"))
        let error = try #require(openError(directory.file("jobs.sqlite")))
        #expect(error.code == .databaseLost && error.message.contains("jobs.sqlite-wal is missing"), "\(error.message)")
        #expect(openError(directory.file("jobs.sqlite"), initialize: true) == nil)
        #expect(try await jobCount(directory.file("jobs.sqlite")) == 1)
    }

    @Test("a state directory with outputs and blobs but no database and no marker is refused")
    func remnants() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try FileManager.default.createDirectory(
            atPath: directory.file("outputs/job-1"), withIntermediateDirectories: true)
        let error = try #require(openError(directory.file("jobs.sqlite")))
        #expect(error.code == .databaseLost && error.message.contains("job outputs"), "\(error.message)")
        #expect(openError(directory.file("jobs.sqlite"), initialize: true) == nil)
    }

    @Test("while open: a deleted, replaced or truncated file, or a deleted WAL, is noticed")
    func problemsWhileOpen() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        let (database, _) = try StateDatabase.openOwned(path: path)
        defer { try? database.close() }
        #expect(database.identityProblem() == nil)
        #expect(unlink(path + "-wal") == 0)
        #expect(database.identityProblem()?.contains("write-ahead log") == true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: path + "-wal"))
        #expect(unlink(path) == 0)
        #expect(database.identityProblem()?.contains("was deleted") == true)
        try Data(count: 8192).write(to: URL(fileURLWithPath: path))
        #expect(database.identityProblem()?.contains("was replaced") == true)
    }

    @Test("the reserve is made beside the database, released on demand and made again")
    func reserve() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let (database, _) = try StateDatabase.openOwned(path: directory.file("jobs.sqlite"), reserveBytes: 1 << 20)
        defer { try? database.close() }
        let reserve = try #require(database.reserve)
        #expect(reserve.isHeld && reserve.releasedAt == nil)
        #expect(reserve.release())
        #expect(!reserve.isHeld && reserve.releasedAt != nil)
        #expect(!reserve.release(), "nothing left to release")
        #expect(reserve.ensure(keepFree: 0))
        #expect(reserve.isHeld && reserve.releasedAt == nil)
    }

    @Test(
        "on a full filesystem the writes that record outcomes still go through: the reserve gives room; then disk_full")
    func fullFilesystem() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        guard getuid() == 0,
            (try? runMount(["-t", "tmpfs", "-o", "size=8m", "tmpfs", directory.path])) == true
        else { return }  // no mount here (a container without CAP_SYS_ADMIN): the daemon tests inject it
        defer { _ = try? runMount(["-u", directory.path]) }
        let (database, _) = try StateDatabase.openOwned(path: directory.file("jobs.sqlite"), reserveBytes: 2 << 20)
        defer { try? database.close() }
        let store = SQLiteJobStore(database: database)
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        // Fill the rest of the filesystem.
        let filler = open(directory.file("filler"), O_CREAT | O_WRONLY, 0o600)
        var chunk = [UInt8](repeating: 1, count: 64 << 10)
        while chunk.withUnsafeMutableBytes({ write(filler, $0.baseAddress, $0.count) }) > 0 {}
        close(filler)
        var wrote = 0
        var last: StateError?
        for n in 0..<2000 {
            do {
                _ = try await store.submit(
                    JobSubmission(params: #"{"pad":"\#(String(repeating: "x", count: 3000))"}"#, length: 1),
                    owner: 1, maxQueued: 100_000, now: at(Double(n)))
                wrote += 1
            } catch {
                last = error
                break
            }
        }
        #expect(database.reserve?.releasedAt != nil, "the full disk released the reserve")
        #expect(wrote > 0, "the reserve gave the database room")
        #expect(last?.code == .diskFull, "\(String(describing: last))")
        #expect(last?.message.contains("free space") == true)
        // Once space is back, so are writes; the reserve comes back too.
        unlink(directory.file("filler"))
        _ = try await store.cancel(id: id, requesterUID: 1, isAdmin: false, now: at(10_000))
        #expect(database.reserve?.ensure(keepFree: 0) == true)
    }

    private func runMount(_ arguments: [String]) throws -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments.first == "-u" ? "/bin/umount" : "/bin/mount")
        process.arguments = arguments.first == "-u" ? Array(arguments.dropFirst()) : arguments
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus == 0
    }
}
