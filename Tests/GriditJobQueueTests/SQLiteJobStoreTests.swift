import Foundation
import GRDB
import GriditJobQueue
import GriditStateDatabase
import GriditTestSupport
import Testing

@Suite("SQLiteJobStore")
struct SQLiteJobStoreTests {
    @Test("output folders are stored relative to the database's folder; absolute rows of a moved one are found again")
    func relativeOutputs() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let root = directory.path
        let store = try SQLiteJobStore(path: directory.file("jobs.sqlite"))
        defer { try? store.close() }
        var ids: [Int64] = []
        for output in [
            root + "/outputs/job-1", "/moved/from/outputs/job-2", "/moved/from/outputs/named/7/a/b", "/elsewhere/x",
        ] {
            let id = try await store.submit(submission(), owner: 7, maxQueued: 10, now: at(0)).job.id
            let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(1)))
            _ = try await store.complete(id: id, token: claimed.token, outputDir: output, now: at(2))
            ids.append(id)
        }
        let stored = try await store.database.pool.read { db in
            try String.fetchAll(db, sql: "SELECT output_dir FROM job ORDER BY id")
        }
        #expect(
            stored == ["outputs/job-1", "/moved/from/outputs/job-2", "/moved/from/outputs/named/7/a/b", "/elsewhere/x"])
        let read = try await ids.asyncMap { try await store.get(id: $0).outputDir }
        #expect(
            read == [root + "/outputs/job-1", root + "/outputs/job-2", root + "/outputs/named/7/a/b", "/elsewhere/x"])
    }

    @Test("connection: WAL, synchronous FULL, foreign keys, busy timeout")
    func connectionSettings() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try SQLiteJobStore(path: directory.file("jobs.sqlite"), busyTimeout: 5)
        let settings = try store.connectionSettings()
        #expect(settings["journal_mode"] == "wal")
        #expect(settings["synchronous"] == "2")  // FULL
        #expect(settings["foreign_keys"] == "1")
        #expect(settings["busy_timeout"] == "5000")
    }

    @Test("pause survives reopening the file")
    func pauseSurvivesReopen() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        do {
            let store = try SQLiteJobStore(path: path)
            _ = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0))
            try await store.setPaused(true)
            try store.close()
        }
        let reopened = try SQLiteJobStore(path: path)
        #expect(try await reopened.isPaused())
        #expect(try await reopened.claim(workerID: "w", leaseDuration: 60, now: at(1)) == nil)
        try await reopened.setPaused(false)
        #expect(try await reopened.claim(workerID: "w", leaseDuration: 60, now: at(1)) != nil)
    }

    @Test("claims stay exclusive across two connections pools on one file")
    func exclusiveAcrossPools() async throws {
        // Two pools break GRDB's one-connection-per-file rule on purpose: the claim must be
        // atomic in SQLite itself (BEGIN IMMEDIATE + busy timeout), not only in GRDB's queue.
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("jobs.sqlite")
        let first = try SQLiteJobStore(path: path, busyTimeout: 30)
        let second = try SQLiteJobStore(path: path, busyTimeout: 30)
        for _ in 0..<100 {
            _ = try await first.submit(submission(), owner: 1, maxQueued: 1000, now: at(0))
        }
        let ids = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for worker in 0..<8 {
                let store = worker % 2 == 0 ? first : second
                group.addTask {
                    var mine: [Int64] = []
                    while let claimed = try await store.claim(workerID: "w\(worker)", leaseDuration: 60, now: at(1)) {
                        mine.append(claimed.job.id)
                    }
                    return mine
                }
            }
            var all: [Int64] = []
            for try await batch in group { all += batch }
            return all
        }
        #expect(ids.count == 100)
        #expect(Set(ids).count == 100)
    }

    @Test("the SQL claim matches JobStateMachine's claim")
    func claimMatchesStateMachine() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try SQLiteJobStore(path: directory.file("jobs.sqlite"))
        let before = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 45, now: at(3)))
        let expected = try store.machine.apply(
            .claim(workerID: "w", token: claimed.token, leaseDuration: 45), to: before, now: at(3))
        #expect(expected.effects.isEmpty)
        var stored = claimed.job
        stored.queuePosition = nil
        #expect(stored == expected.job)
    }

    @Test("sub-millisecond clocks: recovery agrees with the stored millisecond lease")
    func subMillisecondClock() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try SQLiteJobStore(path: directory.file("jobs.sqlite"))
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        _ = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(0)))
        // 59.9996 s rounds to the 60.000 s expiry.
        let recovered = try await store.recoverExpiredLeases(now: at(59.9996))
        #expect(recovered.map(\.id) == [id])
    }
}

extension Array {
    fileprivate func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
