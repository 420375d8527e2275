import Foundation
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import PostgresNIO
import Testing

@testable import GriditJobStorePostgres

/// Several griditd hosts on one queue: each store acts for a node of its own, as griditd does.
@Suite("PostgresJobStore hosts")
struct PostgresNodeTests {
    static let nodeA = UUID(uuidString: "00000000-0000-4000-8000-00000000000a")!
    static let nodeB = UUID(uuidString: "00000000-0000-4000-8000-00000000000b")!

    @Test("claims record their node; a starting host takes back only its own running jobs")
    func recoveryTakesOwnJobsOnly() async throws {
        try await TestSchema().withStores(2) { stores in
            let (a, b) = (stores[0].acting(for: Self.nodeA), stores[1].acting(for: Self.nodeB))
            for _ in 0..<3 {
                _ = try await a.submit(JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: at(0))
            }
            let onA = try #require(try await a.claim(workerID: "a/worker-0", leaseDuration: 60, now: at(1)))
            let onB = try #require(try await b.claim(workerID: "b/worker-0", leaseDuration: 60, now: at(1)))
            #expect(onA.job.node == Self.nodeA.uuidString.lowercased())
            #expect(try await b.get(id: onB.job.id).node == Self.nodeB.uuidString.lowercased())

            // Host A restarts: its job goes back to the queue, B's keeps running under B's lease.
            let recovered = try await a.recoverOrphanedJobs(now: at(2))
            #expect(recovered.map(\.id) == [onA.job.id])
            #expect(try await a.get(id: onA.job.id).state == .queued)
            let stillB = try await a.get(id: onB.job.id)
            #expect(stillB.state == .running && stillB.leaseToken == onB.token)
            // B's worker carries on with its token.
            _ = try await b.heartbeat(id: onB.job.id, token: onB.token, leaseDuration: 60, now: at(3))
        }
    }

    @Test(
        "nodes rm: a host unseen long enough and running no job is forgotten; one seen lately or holding a job is not")
    func removeGoneNode() async throws {
        try await TestSchema().withStores(1) { stores in
            let (a, b) = (stores[0].acting(for: Self.nodeA), stores[0].acting(for: Self.nodeB))
            let (idA, idB) = (Self.nodeA.uuidString.lowercased(), Self.nodeB.uuidString.lowercased())
            try await a.registerNode(id: idA, hostname: "a", version: "t", now: at(0))
            try await b.registerNode(id: idB, hostname: "b", version: "t", now: at(0))
            _ = try await b.submit(JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: at(0))
            let onB = try #require(try await b.claim(workerID: "b/worker-0", leaseDuration: 60, now: at(1)))

            func refusal(_ now: Date) async -> String? {
                do {
                    try await a.removeNode(id: idB, unseenFor: 30, now: now)
                    return nil
                } catch {
                    #expect(error.code == .invalidTransition)
                    return error.message
                }
            }
            #expect(await refusal(at(10))?.contains("was seen 10 s ago, not gone") == true)
            #expect(await refusal(at(40))?.contains("still holds 1 running job(s)") == true)
            // Another host's reaper requeues B's job once its lease expires: then B can go.
            #expect(try await a.recoverExpiredLeases(now: at(61)).map(\.id) == [onB.job.id])
            #expect(await refusal(at(62)) == nil)
            #expect(try await a.nodes().map(\.id) == [idA])
            let twice = await #expect(throws: StateError.self) {
                try await a.removeNode(id: idB, unseenFor: 30, now: at(63))
            }
            #expect(twice?.code == .notFound)
            // A removed host that was alive after all registers again with its heartbeat.
            #expect(try await b.touchNode(id: idB, hostname: "b", version: "t", now: at(70)) == false)
            #expect(Set(try await a.nodes().map(\.id)) == [idA, idB])
        }
    }

    @Test(
        "clock skew: a host's clock far off changes neither its last seen nor how long it has been unseen (the database's clock)"
    )
    func lastSeenByDatabaseClock() async throws {
        try await TestSchema().withStores(1, clock: .database) { stores in
            let a = stores[0].acting(for: Self.nodeA)
            let id = Self.nodeA.uuidString.lowercased()
            // The caller's clock says 2023 (years behind the database's).
            try await a.registerNode(id: id, hostname: "a", version: "t", now: at(0))
            _ = try await a.touchNode(id: id, hostname: "a", version: "t", now: at(0))
            let node = try #require(try await a.nodes().first)
            #expect(abs(node.lastSeen.timeIntervalSinceNow) < 60, "\(node.lastSeen)")
            let unseen = try #require(node.unseenFor)
            #expect(unseen >= 0 && unseen < 60, "\(unseen)")
        }
    }

    @Test("a claim that waited for a connection says when it was sent: its lease counts from then, not the call")
    func claimSentAtIsWhenSent() async throws {
        // One connection, held by another transaction for a while: the claim waits for it (as
        // claims wait while PostgreSQL restarts), and its lease starts only once it is sent.
        try await TestSchema().withStores(1, clock: .database, connections: 1) { stores in
            let store = stores[0].acting(for: Self.nodeA)
            _ = try await store.submit(JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: Date())
            let (held, holding) = AsyncStream.makeStream(of: Date.self)
            let holder = Task {
                try await store.withConnection { connection in
                    try await connection.sql("SELECT 1")
                    holding.yield(Date())
                    try await Task.sleep(for: .seconds(1))
                    return Date()
                }
            }
            var iterator = held.makeAsyncIterator()
            _ = await iterator.next()
            let called = Date()
            let claimed = try #require(try await store.claim(workerID: "a/worker-0", leaseDuration: 60, now: called))
            let released = try await holder.value
            let sent = try #require(claimed.sentAt)
            #expect(sent >= released, "sent \(sent), the connection came back at \(released), claim called \(called)")
            #expect(sent <= Date())
        }
    }

    @Test("output folders are stored relative to the shared root: each host reads them under its own mount of it")
    func outputsRelativeToSharedRoot() async throws {
        try await TestSchema().withStores(2) { stores in
            let a = stores[0].acting(for: Self.nodeA, outputRoot: "/srv/gridit")
            let b = stores[1].acting(for: Self.nodeB, outputRoot: "/mnt/shared")
            let id = try await a.submit(JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: at(0))
                .job.id
            let claimed = try #require(try await a.claim(workerID: "a/worker-0", leaseDuration: 60, now: at(1)))
            let done = try await a.complete(
                id: id, token: claimed.token, outputDir: "/srv/gridit/outputs/job-\(id)", now: at(2))
            #expect(done.outputDir == "/srv/gridit/outputs/job-\(id)")
            let stored = try await a.count(
                "SELECT count(*) FROM job WHERE id = \(id) AND output_dir = \("outputs/job-\(id)")")
            #expect(stored == 1, "the row holds the relative name")
            #expect(try await b.get(id: id).outputDir == "/mnt/shared/outputs/job-\(id)")
            #expect(try await b.list(JobFilter()).map(\.outputDir) == ["/mnt/shared/outputs/job-\(id)"])
            #expect(
                try await b.delete(id: id, requesterUID: 1, isAdmin: false, now: at(3)).outputDir
                    == "/mnt/shared/outputs/job-\(id)")
        }
    }

    @Test("the registry: hosts register and heartbeat; a drained host claims nothing, the others carry on")
    func registryAndDrain() async throws {
        try await TestSchema().withStores(2) { stores in
            let (a, b) = (stores[0].acting(for: Self.nodeA), stores[1].acting(for: Self.nodeB))
            let (idA, idB) = (Self.nodeA.uuidString.lowercased(), Self.nodeB.uuidString.lowercased())
            try await a.registerNode(id: idA, hostname: "alpha", version: "1.0", now: at(0))
            try await b.registerNode(id: idB, hostname: "beta", version: "1.1", now: at(0))
            #expect(try await a.touchNode(id: idA, hostname: "alpha", version: "1.0", now: at(5)) == false)
            for _ in 0..<3 {
                _ = try await a.submit(JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: at(0))
            }
            _ = try #require(try await b.claim(workerID: "b/worker-0", leaseDuration: 60, now: at(6)))

            var nodes = try await a.nodes()
            #expect(nodes.map(\.hostname) == ["alpha", "beta"])
            #expect(nodes.map(\.runningJobs) == [0, 1])
            #expect(nodes[0].lastSeen == at(5) && nodes[1].lastSeen == at(0))
            #expect(nodes.map(\.version) == ["1.0", "1.1"])

            // Any host drains B; B's next heartbeat reads it, and B's claims find nothing.
            let drained = try await a.setDraining(id: idB, true, now: at(7))
            #expect(drained.draining && drained.runningJobs == 1)
            #expect(try await b.touchNode(id: idB, hostname: "beta", version: "1.1", now: at(8)) == true)
            #expect(try await b.claim(workerID: "b/worker-0", leaseDuration: 60, now: at(8)) == nil)
            #expect(try await a.claim(workerID: "a/worker-0", leaseDuration: 60, now: at(8)) != nil)
            // A restart keeps the drain; undrain lets B claim again.
            try await b.registerNode(id: idB, hostname: "beta", version: "1.2", now: at(9))
            nodes = try await a.nodes()
            #expect(nodes[1].draining && nodes[1].version == "1.2")
            _ = try await a.setDraining(id: idB, false, now: at(10))
            #expect(try await b.claim(workerID: "b/worker-0", leaseDuration: 60, now: at(11)) != nil)

            let unknown = UUID().uuidString.lowercased()
            await #expect(throws: StateError.self) { _ = try await a.setDraining(id: unknown, true, now: at(12)) }
            await #expect(throws: StateError.self) { _ = try await a.setDraining(id: "beta", true, now: at(12)) }
            // A host missing from the registry (a wiped node table) registers again on its heartbeat.
            try await a.execute("DELETE FROM node")
            #expect(try await a.touchNode(id: idA, hostname: "alpha", version: "1.0", now: at(13)) == false)
            #expect(try await a.nodes().map(\.id) == [idA])
        }
    }

    @Test("a superseded lease token writes nothing: the stalled host's heartbeat, progress and outcome are refused")
    func supersededTokenRefused() async throws {
        try await TestSchema().withStores(2) { stores in
            let (a, b) = (stores[0].acting(for: Self.nodeA), stores[1].acting(for: Self.nodeB))
            let id = try await a.submit(JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: at(0))
                .job.id
            let stalled = try #require(try await a.claim(workerID: "a/worker-0", leaseDuration: 30, now: at(1)))
            // A stops renewing; B's reaper takes the job once the lease ends, and B claims it.
            #expect(try await b.recoverExpiredLeases(now: at(31)).map(\.id) == [id])
            let taken = try #require(try await b.claim(workerID: "b/worker-0", leaseDuration: 30, now: at(32)))
            #expect(taken.job.node == Self.nodeB.uuidString.lowercased())

            let refused: [(String, @Sendable () async throws -> Void)] = [
                (
                    "heartbeat",
                    { _ = try await a.heartbeat(id: id, token: stalled.token, leaseDuration: 30, now: at(33)) }
                ),
                (
                    "progress",
                    {
                        _ = try await a.saveProgress(
                            id: id, token: stalled.token,
                            progress: JobProgress(stage: .grid, gridsDone: 9, framesDone: 0),
                            now: at(33))
                    }
                ),
                ("complete", { _ = try await a.complete(id: id, token: stalled.token, outputDir: "/x", now: at(33)) }),
                (
                    "fail",
                    {
                        _ = try await a.fail(
                            id: id, token: stalled.token, errorClass: "transient", message: "x", retryable: true,
                            now: at(33))
                    }
                ),
                ("release", { _ = try await a.releaseLease(id: id, token: stalled.token, now: at(33)) }),
            ]
            for (name, write) in refused {
                let error = await #expect(throws: StateError.self, "\(name)") { try await write() }
                #expect(error?.code == .leaseLost, "\(name): \(String(describing: error))")
            }
            let job = try await b.get(id: id)
            #expect(job.state == .running && job.leaseToken == taken.token && job.progress.gridsDone == 0)
            #expect(job.outputDir == nil && job.crashCount == 1)
        }
    }
}
