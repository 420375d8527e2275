import Foundation
import GriditJobQueue
import GriditStateDatabase
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("StateDirectoryLock")
struct StateDirectoryLockTests {
    @Test("held by one opener, refused to a second with the holder's pid")
    func exclusive() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let lock = try StateDirectoryLock(stateDirectory: directory.path)
        #expect(lock.path == directory.file("griditd.lock"))
        let text = try String(contentsOfFile: lock.path, encoding: .utf8)
        #expect(text == "\(getpid())\n")

        var refused: StateError?
        do {
            _ = try StateDirectoryLock(stateDirectory: directory.path)
        } catch {
            refused = error
        }
        let error = try #require(refused)
        #expect(error.code == .locked)
        #expect(error.message.contains("another griditd (pid \(getpid())) is using \(directory.path)"))
        #expect(error.message.contains(lock.path))
        #expect(error.message.contains("stop it or use a different --state-dir"))

        lock.release()
        lock.release()  // idempotent
        let next = try StateDirectoryLock(stateDirectory: directory.path)
        next.release()
    }

    @Test("a missing state directory is an io error naming the path")
    func missingDirectory() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let missing = directory.file("does/not/exist")
        #expect(throws: StateError.self) { try StateDirectoryLock(stateDirectory: missing) }
        do {
            _ = try StateDirectoryLock(stateDirectory: missing)
        } catch {
            #expect(error.code == .io && error.message.contains(missing))
        }
    }
}

@Suite("StateError")
struct StoreErrorTests {
    @Test("description is `code: message`, codes have stable names")
    func description() {
        let error = StateError(.queueFull, "the queue is full", jobID: nil)
        #expect("\(error)" == "queue_full: the queue is full")
        #expect(StateError.Code.leaseLost.name == "lease_lost")
        #expect(StateError.Code.schemaTooNew.name == "schema_too_new")
        #expect(StateError.Code.queueFull != StateError.Code.notFound)
    }
}
