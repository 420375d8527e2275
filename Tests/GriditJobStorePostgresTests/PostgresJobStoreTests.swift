import Foundation
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import PostgresNIO
import Synchronization
import Testing

@testable import GriditJobStorePostgres

@Suite("PostgresJobStore")
struct PostgresJobStoreTests {
    @Test("claim exclusivity: 5 connection pools race for 10,000 jobs, each claimed exactly once")
    func fivePoolsTenThousandJobs() async throws {
        let jobCount = 10_000
        try await TestSchema().withStores(5, clock: .database) { stores in
            try await stores[0].insertJobs(jobCount)
            let claims = try await withThrowingTaskGroup(of: [ClaimedJob].self) { group in
                // Two claimers per pool: ten workers on five "hosts".
                for (index, store) in stores.enumerated() {
                    for worker in 0..<2 {
                        group.addTask {
                            var mine: [ClaimedJob] = []
                            while let claimed = try await store.claim(
                                workerID: "host\(index)-w\(worker)", leaseDuration: 600, now: Date())
                            {
                                mine.append(claimed)
                            }
                            return mine
                        }
                    }
                }
                var all: [ClaimedJob] = []
                for try await batch in group { all += batch }
                return all
            }
            #expect(claims.count == jobCount)
            #expect(Set(claims.map(\.job.id)).count == jobCount)
            #expect(Set(claims.map(\.token)).count == jobCount)
            #expect(
                try await stores[0].count("SELECT count(*) FROM job WHERE state = 'running' AND attempt = 1")
                    == jobCount)
            // Every pool took a share: the race was real.
            let hosts = Set(claims.compactMap { $0.job.leaseOwner?.split(separator: "-").first })
            #expect(hosts.count == 5)
        }
    }

    @Test("across hosts: 1,000 submits with 100 idempotency keys on 5 pools give exactly 100 jobs")
    func idempotencyAcrossPools() async throws {
        try await TestSchema().withStores(5, clock: .database, connections: 4) { stores in
            let results = try await withThrowingTaskGroup(of: SubmitResult.self) { group in
                // Each key is submitted 10 times, twice from every pool, in an interleaved order.
                for attempt in 0..<1_000 {
                    let store = stores[attempt % stores.count], key = "key-\(attempt % 100)"
                    group.addTask {
                        try await store.submit(
                            JobSubmission(params: "{}", length: 4, idempotencyKey: key), owner: 1, maxQueued: 10_000,
                            now: Date())
                    }
                }
                var all: [SubmitResult] = []
                for try await result in group { all.append(result) }
                return all
            }
            #expect(results.count == 1_000)
            #expect(results.filter { !$0.deduplicated }.count == 100)
            // Every answer for a key names the one job of that key.
            let jobsPerKey = Dictionary(grouping: results, by: { $0.job.idempotencyKey ?? "" }).mapValues {
                Set($0.map(\.job.id))
            }
            #expect(jobsPerKey.count == 100 && jobsPerKey.values.allSatisfy { $0.count == 1 })
            #expect(try await stores[0].count("SELECT count(*) FROM job") == 100)
        }
    }

    @Test("across hosts: maxQueued holds exactly under 500 concurrent submits on 5 pools")
    func maxQueuedAcrossPools() async throws {
        let limit = 137
        try await TestSchema().withStores(5, clock: .database, connections: 4) { stores in
            let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
                for attempt in 0..<500 {
                    let store = stores[attempt % stores.count]
                    group.addTask {
                        do {
                            _ = try await store.submit(
                                JobSubmission(params: "{}", length: 4), owner: UInt32(attempt % 7 + 1),
                                maxQueued: limit, now: Date())
                            return true
                        } catch let error as StateError where error.code == .queueFull {
                            return false
                        }
                    }
                }
                var all: [Bool] = []
                for try await accepted in group { all.append(accepted) }
                return all
            }
            #expect(outcomes.filter { $0 }.count == limit)
            #expect(outcomes.filter { !$0 }.count == 500 - limit)
            #expect(try await stores[0].count("SELECT count(*) FROM job WHERE state = 'queued'") == limit)
        }
    }

    @Test("cancel racing heartbeats 1,000 times: the cancel is never lost")
    func cancelRacesHeartbeats() async throws {
        let rounds = 1_000
        try await TestSchema().withStores(2, clock: .database, connections: 4) { stores in
            let (worker, user) = (stores[0], stores[1])
            try await worker.insertJobs(rounds)
            var claims: [ClaimedJob] = []
            while let claimed = try await worker.claim(workerID: "w", leaseDuration: 600, now: Date()) {
                claims.append(claimed)
            }
            #expect(claims.count == rounds)
            // Per job: two heartbeats from the worker's pool and a cancel from another pool, at once.
            for chunk in stride(from: 0, to: claims.count, by: 25) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for claimed in claims[chunk..<min(chunk + 25, claims.count)] {
                        group.addTask {
                            for _ in 0..<2 {
                                _ = try await worker.heartbeat(
                                    id: claimed.job.id, token: claimed.token, leaseDuration: 600, now: Date())
                            }
                        }
                        group.addTask {
                            let job = try await user.cancel(
                                id: claimed.job.id, requesterUID: 1, isAdmin: false, now: Date())
                            #expect(job.cancelRequested)
                        }
                    }
                    try await group.waitForAll()
                }
            }
            for claimed in claims {
                let lease = try await worker.heartbeat(
                    id: claimed.job.id, token: claimed.token, leaseDuration: 600, now: Date())
                #expect(lease.cancelRequested, "job \(claimed.job.id): a heartbeat erased its cancel")
            }
            #expect(try await worker.count("SELECT count(*) FROM job WHERE cancel_requested") == rounds)
        }
    }

    @Test(
        "a COMMIT whose answer is lost: a claim and a transition that committed are found by their token and row, not run twice; one that did not commit runs again"
    )
    func unknownCommitOutcomes() async throws {
        try await TestSchema().withStores(1, clock: .database) { stores in
            let store = stores[0]
            try await store.insertJobs(2)
            // Committed, the answer lost: the claim is looked up by its lease token.
            let beforeClaim = Date()
            store.commitFaults.add(.answerLost)
            let first = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: Date()))
            #expect(first.job.state == .running && first.job.attempt == 1)
            #expect(first.job.leaseToken == first.token)
            let sent = try #require(first.sentAt, "the lease counts from the attempt that took it")
            // Not from the lookup's connection, 300 ms later.
            #expect(sent >= beforeClaim && Date().timeIntervalSince(sent) >= 0.3, "\(sent)")
            #expect(try await store.count("SELECT count(*) FROM job WHERE state = 'running'") == 1)
            // Not committed: the claim runs again and takes the same next job, once.
            store.commitFaults.add(.rolledBack)
            let second = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: Date()))
            #expect(second.job.id != first.job.id && second.job.attempt == 1)
            #expect(try await store.count("SELECT count(*) FROM job WHERE state = 'running'") == 2)
            #expect(try await store.claim(workerID: "w", leaseDuration: 60, now: Date()) == nil)
            // A transition that committed is read back, not applied a second time.
            store.commitFaults.add(.answerLost)
            let progress = JobProgress(stage: .grid, gridsDone: 1, framesDone: 0)
            _ = try await store.saveProgress(id: first.job.id, token: first.token, progress: progress, now: Date())
            #expect(try await store.get(id: first.job.id).progress == progress)
            store.commitFaults.add(.rolledBack)
            let ended = try await store.complete(
                id: first.job.id, token: first.token, outputDir: "/tmp/out-\(first.job.id)", now: Date())
            #expect(ended.state == .succeeded && ended.attempt == 1)
            #expect(try await store.get(id: first.job.id).state == .succeeded)
        }
    }

    @Test(
        "a COMMIT whose answer is lost while another host writes the row: the committed transition is known by its transaction id, not run again"
    )
    func unknownCommitThenAnotherWrite() async throws {
        try await TestSchema().withStores(2, clock: .database) { stores in
            let (a, b) = (stores[0], stores[1])
            let id = try await a.submit(JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: Date())
                .job.id
            let claimed = try #require(try await a.claim(workerID: "a", leaseDuration: 60, now: Date()))
            _ = try await a.fail(
                id: id, token: claimed.token, errorClass: "x", message: "m", retryable: false, now: Date())
            // The retry commits; before its answer is looked up, host B claims the job it queued.
            let claimedByB = Mutex<ClaimedJob?>(nil)
            a.commitFaults.add(
                .answerLostWhile {
                    let claim = try await b.claim(workerID: "b", leaseDuration: 60, now: Date())
                    claimedByB.withLock { $0 = claim }
                })
            let retried = try await a.retry(
                id: id, requesterUID: 1, isAdmin: false, limits: SubmitLimits(maxQueued: 10), now: Date())
            #expect(retried.state == .queued && retried.attempt == 0, "\(retried)")
            #expect(claimedByB.withLock { $0?.job.id } == id)
            let now = try await a.get(id: id)
            #expect(now.state == .running && now.attempt == 1 && now.leaseOwner == "b", "\(now)")
        }
    }

    @Test("the SQL claim matches JobStateMachine's claim")
    func claimMatchesStateMachine() async throws {
        try await TestSchema().withStores(1) { stores in
            let store = stores[0]
            let before = try await store.submit(
                JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: at(0)
            ).job
            let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 45, now: at(3)))
            let expected = try store.machine.apply(
                .claim(workerID: "w", token: claimed.token, leaseDuration: 45), to: before, now: at(3))
            var stored = claimed.job
            stored.queuePosition = nil
            #expect(stored == expected.job)
        }
    }

    @Test("the database clock decides, not the caller's")
    func databaseClock() async throws {
        try await TestSchema().withStores(1, clock: .database) { stores in
            let store = stores[0]
            let job = try await store.submit(
                JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: at(0)
            ).job
            // The caller says 2023; the database says now.
            #expect(abs(job.createdAt.timeIntervalSinceNow) < 60)
            let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 30, now: at(0)))
            let expires = try #require(claimed.job.leaseExpiresAt)
            #expect(abs(expires.timeIntervalSinceNow - 30) < 60)
            // A caller whose clock runs far behind still sees no lease expire early.
            #expect(try await store.recoverExpiredLeases(now: at(1e6)).isEmpty)
        }
    }

    @Test("migrations: applied once under the advisory lock, however many hosts start at once")
    func concurrentMigrations() async throws {
        let schema = try TestSchema()
        try await schema.withStores(4) { stores in
            let applied = try await withThrowingTaskGroup(of: [String].self) { group in
                for store in stores { group.addTask { try await store.migrate() } }
                var all: [String] = []
                for try await identifiers in group { all += identifiers }
                return all
            }
            // withStores migrated first; the four concurrent runs find nothing left to do.
            #expect(applied.isEmpty)
            #expect(try await stores[0].appliedMigrations() == PostgresMigrations.all.map(\.identifier))
        }
        try await TestSchema().withStores(1) { _ in }
        let fresh = try TestSchema()
        let stores = (0..<4).map { _ in
            PostgresJobStore(location: fresh.location, clock: .caller, timeout: TestSchema.patientTimeout)
        }
        let applied = try await withThrowingTaskGroup(of: [String].self) { group in
            for store in stores { group.addTask { try await store.withRunningPool { try await store.migrate() } } }
            var all: [String] = []
            for try await identifiers in group { all += identifiers }
            return all
        }
        #expect(applied == PostgresMigrations.all.map(\.identifier), "each migration applied exactly once")
    }

    @Test("jobs an older griditd added bind new submits by the output name in their params; 0004's backfill copies it")
    func outputNamesFromParams() async throws {
        try await TestSchema().withStores(1) { stores in
            let store = stores[0]
            // Jobs as a griditd of 0003 added them: the name in the params only.
            for params in [#"{"length":4,"output":"cats/a"}"#, #"{"length":4,"output":7}"#, "{}"] {
                _ = try await store.submit(
                    JobSubmission(params: params, length: 4), owner: 1, maxQueued: 10, now: at(0))
            }
            // A new host sees their names before the backfill (hosts of both versions share the database).
            func refused(_ name: String) async throws {
                do {
                    _ = try await store.submit(
                        JobSubmission(params: "{}", length: 4, outputName: name), owner: 1, maxQueued: 10, now: at(1))
                    Issue.record("\(name): a name inside a live job's output was accepted")
                } catch let error as StateError {
                    #expect(error.code == .outputTaken && error.jobID == 1, "\(error)")
                }
            }
            try await refused("cats")
            let migration = try #require(PostgresMigrations.all.first { $0.identifier == "0004_job_output_name" })
            let backfill = try #require(migration.sql.range(of: "UPDATE job"))
            try await store.execute(PostgresQuery(unsafeSQL: String(migration.sql[backfill.lowerBound...])))
            #expect(try await store.count("SELECT count(*) FROM job WHERE output_name = 'cats/a'") == 1)
            #expect(try await store.count("SELECT count(*) FROM job WHERE output_name IS NULL") == 2)
            try await refused("cats/a/b")
        }
    }

    @Test("a newer griditd's migrations are tolerated (additive: rolling upgrades)")
    func newerMigrationTolerated() async throws {
        try await TestSchema().withStores(1) { stores in
            let store = stores[0]
            try await store.execute("INSERT INTO schema_migration (identifier) VALUES ('9999_from_the_future')")
            #expect(try await store.migrate().isEmpty)
            _ = try await store.submit(JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: at(0))
        }
    }
}

@Suite("PostgresJobStore on killed connections")
struct PostgresKilledConnectionTests {
    /// Terminates every backend of `application` through another pool; returns how many.
    static func kill(_ application: String, using killer: PostgresJobStore) async throws -> Int {
        // Victims first (materialised): the planner may otherwise call pg_terminate_backend on
        // rows it has not filtered yet, other tests' and its own included.
        try await killer.count(
            """
            WITH victim AS MATERIALIZED (
              SELECT pid FROM pg_stat_activity WHERE application_name = \(application))
            SELECT count(*) FROM victim WHERE pg_terminate_backend(pid)
            """)
    }

    /// Rounds of claim, kill, heartbeat, kill: 80 kills a run.
    static let rounds = 40

    // Before PostgresSession, most runs hung within a few rounds: the pool leased a connection
    // whose channel had just closed, and PostgresNIO dropped its statement (PostgresSession).
    @Test(
        "a connection the server killed is replaced: 40 rounds of claims and heartbeats, each after a kill",
        .timeLimit(.minutes(5)))
    func retriedAfterKill() async throws {
        var schema = try TestSchema()
        schema.location.applicationName = "killed-" + schema.location.schema
        let application = schema.location.applicationName
        try await schema.withStores(1, clock: .database) { stores in
            let store = stores[0]
            try await store.insertJobs(Self.rounds)
            var killerLocation = schema.location
            killerLocation.applicationName = "killer"
            let killer = PostgresJobStore(
                location: killerLocation, maximumConnections: 1, timeout: TestSchema.patientTimeout)
            try await killer.withRunningPool {
                var claims: [ClaimedJob] = []
                for _ in 0..<Self.rounds {
                    claims.append(try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: Date())))
                    #expect(try await Self.kill(application, using: killer) == 1)
                    let claimed = claims[claims.count - 1]
                    _ = try await store.heartbeat(
                        id: claimed.job.id, token: claimed.token, leaseDuration: 60, now: Date())
                    #expect(try await Self.kill(application, using: killer) == 1)
                }
                #expect(Set(claims.map(\.job.id)).count == Self.rounds)
                #expect(try await killer.count("SELECT count(*) FROM job WHERE state = 'running'") == Self.rounds)
            }
        }
    }
}

@Suite("PostgresJobStore deadlines", .timeLimit(.minutes(5)))
struct PostgresDeadlineTests {
    /// A store of one pooled connection, already open, with a deadline of 10 s.
    static func withOneConnection(_ body: (PostgresJobStore) async throws -> Void) async throws {
        let store = PostgresJobStore(location: try TestSchema().location, maximumConnections: 1, timeout: .seconds(10))
        try await store.withRunningPool {
            // Open, however long a starved test process takes (the suite's time limit guards).
            while (try? await store.count("SELECT 1")) != 1 {}
            try await body(store)
        }
    }

    @Test("a statement past the deadline fails as a lost connection, and the store goes on")
    func statementDeadline() async throws {
        try await Self.withOneConnection { store in
            // The server would answer after 600 s; the deadline closes the connection first.
            await #expect {
                try await store.withConnection { try await $0.sql("SELECT pg_sleep(600)") }
            } throws: { error in
                guard case .timedOut = error as? ConnectionUnusable else { return false }
                return PostgresJobStore.isTransient(error)
            }
            let after = try await store.count("SELECT 41 + 1")
            #expect(after == 42)
            // The server stops it too (statement_timeout, a second past the deadline): a backend
            // does not notice its client is gone while it sleeps or waits on a lock.
            let deadline = Date().addingTimeInterval(60)
            var lingering = -1
            while Date() < deadline {
                lingering = try await store.count(
                    "SELECT count(*)::int FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)' AND state = 'active'"
                )
                if lingering == 0 { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(lingering == 0, "the statement the client gave up on still runs on the server")
        }
    }

    @Test("a session that stops in the middle of a transaction loses it, and its locks, soon after the deadline")
    func idleInTransaction() async throws {
        try await Self.withOneConnection { store in
            let other = PostgresJobStore(location: store.location, maximumConnections: 1, timeout: .seconds(10))
            try await other.withRunningPool {
                let (locked, tookIt) = AsyncStream.makeStream(of: Bool.self)
                // A host that stopped answering (it died, or hangs) while it held a lock.
                let holder = Task {
                    do {
                        try await store.withConnection { session in
                            try await session.sql("BEGIN")
                            try await session.sql("SELECT pg_advisory_xact_lock(4242)")
                            tookIt.yield(true)
                            try await Task.sleep(for: .seconds(300))
                        }
                    } catch {
                        tookIt.yield(false)  // a loaded machine's deadline, before the lock: nothing to see
                    }
                }
                var held = false
                for await answer in locked {
                    held = answer
                    break
                }
                try #require(held, "the holder could not take the lock")
                // idle_in_transaction_session_timeout (11 s here) ends the session: the lock is free.
                let taken = PostgresQuery(
                    unsafeSQL: "SELECT CASE WHEN pg_try_advisory_xact_lock(4242) THEN 1 ELSE 0 END")
                let deadline = Date().addingTimeInterval(120)
                var free = false
                while Date() < deadline, !free {
                    free = (try? await other.count(taken)) == 1  // a poll past the deadline just polls again
                    if !free { try await Task.sleep(for: .milliseconds(250)) }
                }
                #expect(free, "the lock of a session that stopped mid-transaction is still held")
                holder.cancel()
                _ = await holder.result
            }
        }
    }

    @Test(
        "a migration whose table another session holds gives up, naming why, instead of queueing every host behind it")
    func migrationLockWait() async throws {
        // Patient stores: what is measured is the lock wait, not the statement deadline.
        let location = try TestSchema().location
        let store = PostgresJobStore(location: location, maximumConnections: 1, timeout: TestSchema.patientTimeout)
        let reader = PostgresJobStore(location: location, maximumConnections: 2, timeout: TestSchema.patientTimeout)
        try await store.withRunningPool {
            let create = SchemaMigration(identifier: "9001_t", sql: "CREATE TABLE t (a int);\n")
            let alter = SchemaMigration(identifier: "9002_t_b", sql: "ALTER TABLE t ADD COLUMN b int;\n")
            #expect(try await store.migrate([create], lockWait: .milliseconds(200), tries: 2) == ["9001_t"])
            try await reader.withRunningPool {
                let (held, release) = AsyncStream.makeStream(of: Void.self)
                let (locked, tookIt) = AsyncStream.makeStream(of: Void.self)
                // A long reader of the table (a pg_dump's transaction).
                let holder = Task {
                    try await reader.withConnection { session in
                        try await session.sql("BEGIN")
                        try await session.sql("LOCK TABLE t IN ACCESS SHARE MODE")
                        tookIt.yield()
                        for await _ in held { break }
                        try await session.sql("COMMIT")
                    }
                }
                for await _ in locked { break }
                do {
                    _ = try await store.migrate([create, alter], lockWait: .milliseconds(200), tries: 3)
                    Issue.record("the migration ran while another session held its table")
                } catch let error as StateError {
                    #expect(error.message.contains("pg_stat_activity") && error.message.contains("3 tries"), "\(error)")
                }
                // Nothing queued behind it: the table is read at once.
                #expect(try await reader.count("SELECT count(*)::int FROM t") == 0)
                release.yield()
                try await holder.value
                #expect(
                    try await store.migrate([create, alter], lockWait: .milliseconds(200), tries: 2) == ["9002_t_b"])
            }
        }
    }

    @Test("a wait for a pooled connection past the deadline fails, and the body never runs late")
    func leaseDeadline() async throws {
        try await Self.withOneConnection { store in
            let (held, release) = AsyncStream.makeStream(of: Void.self)
            let (taken, tookIt) = AsyncStream.makeStream(of: Void.self)
            // The pool's one connection is held until the test lets it go.
            let holder = Task {
                try await store.withConnection { _ in
                    tookIt.yield()
                    for await _ in held { break }
                }
            }
            for await _ in taken { break }
            let ranLate = ManagedFlag()
            await #expect {
                try await store.withConnection { _ in ranLate.set() }
            } throws: { error in
                guard case .noConnection = error as? ConnectionUnusable else { return false }
                return true
            }
            release.yield()
            try await holder.value
            #expect(!ranLate.isSet, "a body started after its caller was told the wait timed out")
            let after = try await store.count("SELECT 7")
            #expect(after == 7)
        }
    }
}

/// A flag set from any task.
final class ManagedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

@Suite("PostgresJobStore notifications")
struct PostgresNotificationTests {
    @Test(
        "writes notify in their transaction; the listener reconnects after its connection is killed",
        .timeLimit(.minutes(5)))
    func listenerReconnects() async throws {
        var schema = try TestSchema()
        schema.location.applicationName = "notify-" + schema.location.schema
        let listenerName = schema.location.applicationName + " listener"
        try await schema.withStores(2, clock: .database) { stores in
            let (events, delivered) = AsyncStream.makeStream(of: JobChangeEvent.self)
            let follower = Task { await stores[0].followChanges { delivered.yield($0) } }
            defer { follower.cancel() }
            var next = events.makeAsyncIterator()
            #expect(await next.next() == .lookAgain, "listening")
            let first = try await stores[1].submit(
                JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: Date()
            ).job
            #expect(await next.next() == .job(JobChange(id: first.id, state: .queued, cancelRequested: false)))
            // The listening connection dies: the listener comes back and says to look again.
            #expect(try await PostgresKilledConnectionTests.kill(listenerName, using: stores[1]) == 1)
            #expect(await next.next() == .lookAgain, "listening again")
            _ = try await stores[1].cancel(id: first.id, requesterUID: 1, isAdmin: false, now: Date())
            #expect(await next.next() == .job(JobChange(id: first.id, state: .canceled, cancelRequested: true)))
        }
    }

    @Test("a recovery notifies every job it requeues", .timeLimit(.minutes(5)))
    func recoveryNotifiesEveryJob() async throws {
        try await TestSchema().withStores(2, clock: .caller) { stores in
            let (events, delivered) = AsyncStream.makeStream(of: JobChangeEvent.self)
            let follower = Task { await stores[0].followChanges { delivered.yield($0) } }
            defer { follower.cancel() }
            var next = events.makeAsyncIterator()
            #expect(await next.next() == .lookAgain, "listening")
            // The next job change; a `.lookAgain` (the listener reconnected on a loaded machine) is skipped.
            func nextChange() async -> JobChangeEvent? {
                while let event = await next.next() { if event != .lookAgain { return event } }
                return nil
            }
            var submitted: Set<Int64> = []
            for _ in 0..<3 {
                let job = try await stores[1].submit(
                    JobSubmission(params: "{}", length: 4), owner: 1, maxQueued: 10, now: at(0)
                ).job
                submitted.insert(job.id)
                #expect(await nextChange() == .job(JobChange(id: job.id, state: .queued, cancelRequested: false)))
            }
            for _ in 0..<3 { _ = try await stores[1].claim(workerID: "w", leaseDuration: 60, now: at(1)) }
            let recovered = try await stores[1].recoverExpiredLeases(now: at(1_000))
            #expect(Set(recovered.map(\.id)) == submitted)
            var heard: [JobChange] = []
            for _ in recovered {
                if case .job(let change) = await nextChange() { heard.append(change) }
            }
            #expect(
                heard.sorted { $0.id < $1.id }
                    == recovered.sorted { $0.id < $1.id }.map {
                        JobChange(id: $0.id, state: $0.state, cancelRequested: $0.cancelRequested)
                    })
        }
    }
}
