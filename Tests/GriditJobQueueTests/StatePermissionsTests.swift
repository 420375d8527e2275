import Foundation
import GriditJobQueue
import GriditStateDatabase
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("state directory permissions", .serialized)
struct StatePermissionsTests {
    static func mode(_ path: String) -> mode_t {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o7777 : 0
    }

    /// Runs `body` with the umask of a shell outside systemd.
    static func withUmask<T>(_ mask: mode_t, _ body: () async throws -> T) async rethrows -> T {
        let old = umask(mask)
        defer { umask(old) }
        return try await body()
    }

    @Test("the database and its WAL files are 0600 whatever the umask; an older 0644 one is tightened")
    func databaseIsPrivate() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        try await Self.withUmask(0o022) {
            let store = try SQLiteJobStore(path: path)
            _ = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0))
            for file in [path, path + "-wal", path + "-shm"] {
                #expect(Self.mode(file) == 0o600, "\(file) is \(String(Self.mode(file), radix: 8))")
            }
            try store.close()
        }
        chmod(path, 0o644)
        let reopened = try SQLiteJobStore(path: path)
        #expect(Self.mode(path) == 0o600)
        try reopened.close()
    }

    @Test("folders are created with their mode, with missing parents; looser ones lose bits, stricter ones keep theirs")
    func folders() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let state = directory.file("a/b/state")
        try StatePermissions.directory(state, mode: StatePermissions.stateDirectory)
        #expect(Self.mode(state) == 0o750)
        chmod(state, 0o777)
        try StatePermissions.directory(state, mode: StatePermissions.stateDirectory)
        #expect(Self.mode(state) == 0o750)
        chmod(state, 0o700)
        try StatePermissions.directory(state, mode: StatePermissions.stateDirectory)
        #expect(Self.mode(state) == 0o700, "never loosened")
        let file = directory.file("a/file")
        _ = FileManager.default.createFile(atPath: file, contents: Data())
        #expect(throws: StateError.self) { try StatePermissions.directory(file, mode: 0o700) }
    }
}
