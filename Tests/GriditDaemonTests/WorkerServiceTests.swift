// The worker with a scripted stand-in for the engine (test double, this file only) on a real
// SQLite job store: claims and batches, fenced progress, cancel, graceful shutdown, failures.

import Foundation
import GriditAPI
import GriditFaults
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import GriditTestSupport
import HTTPTypes
import Hummingbird
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing

@testable import GriditDaemon

/// What each job does when the worker runs it.
enum Script: Sendable {
    /// `steps` denoising steps (a durable unit every other step), then an output folder.
    case succeed(steps: Int)
    /// Steps until `shouldStop` says otherwise (at most 300 s: a loaded machine may take long to ask).
    case runUntilStopped
    case fail(JobFailure)
    /// Signals `working` (no step) until `done` says so, as a model pull from the origin does, then succeeds.
    case work(until: @Sendable () -> Bool)
}

/// A `JobEngine` that follows a script per job id and records what it was asked to do.
final class ScriptedEngine: JobEngine {
    let script: @Sendable (Int64, Int) -> Script
    private let state = Mutex<(batches: [[Int64]], threads: Set<String>, stops: [Int64: StopReason])>(([], [], [:]))

    init(_ script: @escaping @Sendable (_ jobID: Int64, _ attempt: Int) -> Script) { self.script = script }

    var batches: [[Int64]] { state.withLock { $0.batches } }
    var threads: Set<String> { state.withLock { $0.threads } }
    func stopSeen(_ id: Int64) -> StopReason? { state.withLock { $0.stops[id] } }

    func validate(_ spec: JobSpec, pipelineDigest: String?) async throws(JobFailure) -> TimeInterval {
        Double(spec.length)  // a second a frame
    }

    /// Runs the items one after the other, taking in the jobs `admit` offers between steps (as
    /// the engine does between batched forwards); each joins the batch's record.
    func execute(_ batch: ExecutionBatch, hooks: ExecutionHooks) {
        state.withLock {
            $0.batches.append(batch.items.map(\.jobID))
            $0.threads.insert(osThreadName())
        }
        let pending = Mutex(batch.items)
        let admit = {
            let joined = hooks.admit()
            self.state.withLock { $0.batches[$0.batches.count - 1] += joined.map(\.jobID) }
            pending.withLock { $0 += joined }
        }
        while let item = pending.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
            hooks.finished(item.jobID, run(item, script(item.jobID, item.attempt), hooks, admit: admit))
            admit()
        }
    }

    private func run(
        _ item: ExecutionItem, _ script: Script, _ hooks: ExecutionHooks, admit: () -> Void
    ) -> ExecutionOutcome {
        let id = item.jobID
        func step(_ n: Int, of total: Int) -> StopReason? {
            admit()
            if let reason = hooks.shouldStop(id) {
                state.withLock { $0.stops[id] = reason }
                return reason
            }
            hooks.step(
                id,
                StepProgress(stage: .grid, grid: 1, grids: 1, step: n, steps: total, frame: 0, frames: item.spec.length)
            )
            if n % 2 == 0 { hooks.durable(id, JobProgress(stage: .grid, gridsDone: n / 2, framesDone: 0)) }
            return nil
        }
        switch script {
        case .succeed(let steps):
            for n in 1...steps where step(n, of: steps) != nil { return .interrupted }
            try? FileManager.default.createDirectory(atPath: item.outputDirectory, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(
                atPath: item.outputDirectory + "/sequence.json", contents: Data("{}".utf8))
            return .succeeded
        case .runUntilStopped:
            let deadline = Date().addingTimeInterval(300)
            var n = 0
            while Date() < deadline {
                n += 1
                if step(n, of: 1_000_000) != nil { return .interrupted }
                usleep(5_000)
            }
            return .failed(JobFailure(.internalError, "the test never stopped the job"))
        case .fail(let failure):
            return .failed(failure)
        case .work(let done):
            let deadline = Date().addingTimeInterval(300)
            while !done() && Date() < deadline {
                hooks.working(id)
                usleep(20_000)
            }
            return .succeeded
        }
    }
}

/// The calling thread's name as the kernel knows it (what ps and gdb show).
func osThreadName() -> String {
    ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?").trimmingCharacters(in: .newlines)
}

extension ControlAPI {
    /// Runs a bodiless request through the router, as the server does for `caller`'s connection.
    func handle(_ method: HTTPRequest.Method, _ path: String, caller: Caller) async -> Response {
        let request = Request(
            head: HTTPRequest(method: method, scheme: nil, authority: nil, path: path),
            body: RequestBody(buffer: ByteBuffer()))
        let source = APIContext.Source(logger: Logger(label: "test"), caller: caller, limits: HTTPServerLimits())
        do {
            return try await router().buildResponder().respond(to: request, context: APIContext(source: source))
        } catch {
            return .error(APIError(.internalError, "\(error)"))
        }
    }
}

extension Response {
    /// The whole body.
    var bodyData: Data? {
        get async {
            final class Sink: @unchecked Sendable { var data = Data() }
            struct Collector: ResponseBodyWriter {
                let sink: Sink
                mutating func write(_ buffer: ByteBuffer) async throws {
                    sink.data.append(contentsOf: buffer.readableBytesView)
                }
                consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
            }
            let sink = Sink()
            do {
                try await body.write(Collector(sink: sink))
            } catch {
                return nil
            }
            return sink.data
        }
    }
}

/// A worker on a fresh database, run until the test body returns.
struct WorkerHarness {
    let directory: TemporaryDirectory
    let store: SQLiteJobStore
    let context: DaemonContext
    let engine: ScriptedEngine

    init(
        faults: FaultInjection = FaultInjection(), lease: TimeInterval? = nil,
        script: @escaping @Sendable (Int64, Int) -> Script
    ) throws {
        directory = TemporaryDirectory()
        var configuration = DaemonConfiguration(
            stateDirectory: directory.file("state"), socketPath: directory.file("s.sock"))
        configuration.pollInterval = 0.05
        if let lease { configuration.leaseDuration = lease }
        configuration.maxBatchJobs = 4
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        store = try SQLiteJobStore(
            path: configuration.layout.database, policy: RetryPolicy(backoffBase: 0.05, backoffCap: 0.05))
        engine = ScriptedEngine(script)
        context = DaemonContext(
            configuration: configuration, store: store, engine: engine, catalog: nil, faults: faults,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    func submit(priority: Int = 0, digest: String? = nil) async throws -> Int64 {
        let spec = JobSpec(length: 8, parameters: .init(seed: 1))
        return try await store.submit(
            JobSubmission(
                params: spec.storedJSON, length: 8, priority: priority, maxAttempts: 2, pipelineDigest: digest),
            owner: 1000, maxQueued: 100, now: Date()
        ).job.id
    }

    /// Runs the worker while `body` runs, then shuts it down gracefully (as SIGTERM does).
    func withWorker(_ body: () async throws -> Void) async throws {
        let worker = WorkerService(context: context)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await worker.run() }
                try await body()
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
    }

    /// Generous: the suites run in parallel with process tests on a loaded 2-core machine.
    func waitUntil(_ what: String, timeout: Double = 180, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out waiting until \(what)")
    }

    func state(_ id: Int64) async throws -> JobState { try await store.get(id: id).state }
}

@Suite("worker")
struct WorkerServiceTests {
    @Test("jobs of one pipeline and priority run as one batch, on the worker thread, and succeed")
    func batchesAndSucceeds() async throws {
        let h = try WorkerHarness { _, _ in .succeed(steps: 4) }
        defer { h.directory.remove() }
        let a = try await h.submit(digest: "sha256:a")
        let b = try await h.submit(digest: "sha256:a")
        let other = try await h.submit(digest: "sha256:b")
        let urgent = try await h.submit(priority: 5, digest: "sha256:a")
        try await h.withWorker {
            try await h.waitUntil("all succeeded") {
                for id in [a, b, other, urgent] where try await h.state(id) != .succeeded { return false }
                return true
            }
        }
        #expect(h.engine.batches == [[urgent], [a, b], [other]])
        #expect(h.engine.threads == ["gridit-worker"], "the engine must run on the dedicated thread")
        let job = try await h.store.get(id: a)
        #expect(job.outputDir == h.context.layout.automaticOutputDirectory(job: a))
        #expect(job.progress.gridsDone == 2)
        #expect(FileManager.default.fileExists(atPath: job.outputDir! + "/sequence.json"))
        #expect(!FileManager.default.fileExists(atPath: h.context.layout.workDirectory(job: a)), "work folder removed")
    }

    @Test("a job of the running batch's pipeline joins it; one queued behind another pipeline's job waits its turn")
    func admission() async throws {
        let h = try WorkerHarness { id, _ in id == 1 ? .runUntilStopped : .succeed(steps: 2) }
        defer { h.directory.remove() }
        let a = try await h.submit(digest: "sha256:a")
        let api = ControlAPI(context: h.context)
        try await h.withWorker {
            try await h.waitUntil("running") { try await h.state(a) == .running }
            let joining = try await h.submit(digest: "sha256:a")
            h.context.monitor.wake()
            try await h.waitUntil("the second job joined the batch") { h.engine.batches == [[a, joining]] }
            // Another pipeline's job waits first: a later job of the batch's pipeline may not overtake it.
            let other = try await h.submit(digest: "sha256:b")
            let later = try await h.submit(digest: "sha256:a")
            h.context.monitor.wake()
            try await Task.sleep(for: .milliseconds(500))  // ten admission polls
            #expect(try await h.state(later) == .queued)
            let owner = Caller(
                credentials: PeerCredentials(pid: 1, uid: 1000, gid: 1000), isAdmin: false, isMember: true)
            _ = await api.handle(.post, "/v1/jobs/\(a)/cancel", caller: owner)
            try await h.waitUntil("all done") {
                for id in [joining, other, later] where try await h.state(id) != .succeeded { return false }
                return true
            }
            #expect(h.engine.batches == [[a, joining], [other], [later]])
            #expect(try await h.state(a) == .canceled)
        }
    }

    @Test("an engine that works without steps (pulling its model) keeps its job's lease renewed")
    func workingRenewsLease() async throws {
        let renewed = Mutex(false)
        let h = try WorkerHarness(lease: 3) { _, _ in .work(until: { renewed.withLock { $0 } }) }
        defer { h.directory.remove() }
        let id = try await h.submit()
        try await h.withWorker {
            try await h.waitUntil("running") { try await h.state(id) == .running }
            let claimed = try #require(try await h.store.get(id: id).leaseExpiresAt)
            try await h.waitUntil("the lease was renewed while the engine worked") {
                guard let expires = try await h.store.get(id: id).leaseExpiresAt else { return false }
                return expires > claimed
            }
            renewed.withLock { $0 = true }
            try await h.waitUntil("succeeded") { try await h.state(id) == .succeeded }
        }
        let job = try await h.store.get(id: id)
        #expect(job.attempt == 1 && job.crashCount == 0, "\(job)")
    }

    @Test("graceful shutdown (SIGTERM) checkpoints the running job and hands it back without a crash")
    func shutdownReleasesLease() async throws {
        let h = try WorkerHarness { _, _ in .runUntilStopped }
        defer { h.directory.remove() }
        let id = try await h.submit()
        try await h.withWorker {
            try await h.waitUntil("running with progress saved") {
                let job = try await h.store.get(id: id)
                return job.state == .running && job.progress.gridsDone >= 2
            }
        }
        let job = try await h.store.get(id: id)
        #expect(job.state == .queued)
        #expect(job.crashCount == 0)
        #expect(job.leaseToken == nil)
        #expect(job.progress.gridsDone >= 2, "the resume point survives")
        #expect(h.engine.stopSeen(id) == .shutdown)
        #expect(
            FileManager.default.fileExists(atPath: h.context.layout.workDirectory(job: id)),
            "work folder kept for the resume")
    }

    @Test("cancel through the API stops a running job at its next step")
    func cancelRunning() async throws {
        let h = try WorkerHarness { _, _ in .runUntilStopped }
        defer { h.directory.remove() }
        let id = try await h.submit()
        let api = ControlAPI(context: h.context)
        try await h.withWorker {
            try await h.waitUntil("running") { try await h.state(id) == .running }
            let owner = Caller(
                credentials: PeerCredentials(pid: 1, uid: 1000, gid: 1000), isAdmin: false, isMember: true)
            let response = await api.handle(.post, "/v1/jobs/\(id)/cancel", caller: owner)
            #expect(response.status == .ok)
            try await h.waitUntil("canceled") { try await h.state(id) == .canceled }
        }
        #expect(h.engine.stopSeen(id) == .cancel)
    }

    @Test("transient failures back off and retry, then fail; invalid input fails at once")
    func failureClasses() async throws {
        let h = try WorkerHarness { id, _ in
            id == 1
                ? .fail(JobFailure(.transient, "EIO on the work folder"))
                : .fail(JobFailure(.invalidInput, "context_rows 9 > 3"))
        }
        defer { h.directory.remove() }
        let transient = try await h.submit()
        let invalid = try await h.submit()
        try await h.withWorker {
            try await h.waitUntil("both failed") {
                let first = try await h.state(transient), second = try await h.state(invalid)
                return first == .failed && second == .failed
            }
        }
        let errors = try await h.store.errors(id: transient)
        #expect(errors.map(\.errorClass) == ["transient", "transient"], "two attempts (max_attempts 2)")
        #expect(try await h.store.get(id: transient).attempt == 2)
        #expect(try await h.store.errors(id: invalid).count == 1)
        #expect(try await h.store.get(id: invalid).errorMessage == "context_rows 9 > 3")
    }

    @Test("too little free space: jobs stay queued without using attempts, and status and the job say why")
    func waitsForDiskSpace() async throws {
        var faults = FaultInjection()
        faults.freeBytes = 1000
        let h = try WorkerHarness(faults: faults) { _, _ in .succeed(steps: 2) }
        defer { h.directory.remove() }
        let id = try await h.submit()
        let api = ControlAPI(context: h.context)
        let owner = Caller(credentials: PeerCredentials(pid: 1, uid: 1000, gid: 1000), isAdmin: false, isMember: true)
        func get(_ path: [String]) async -> Response {
            await api.handle(.get, "/" + path.joined(separator: "/"), caller: owner)
        }
        try await h.withWorker {
            try await h.waitUntil("the worker sees the disk too full") {
                h.context.conditions.lastBlocker == .waitingForDisk
            }
            // Many polls (50 ms each) later, still nothing claimed.
            try await Task.sleep(for: .milliseconds(500))
            let job = try await h.store.get(id: id)
            #expect(job.state == .queued && job.attempt == 0, "\(job)")
            let status = try APICoding.decoder().decode(
                DaemonStatus.self, from: try #require(await get(["v1", "status"]).bodyData))
            #expect(status.notices.map(\.code) == [.waitingForDisk])
            #expect(
                status.notices.first?.message.contains("waiting for disk space: 1.0 KB free, need 268 MB in") == true,
                "\(status.notices)")
            let shown = try APICoding.decoder().decode(
                JobInfo.self, from: try #require(await get(["v1", "jobs", "\(id)"]).bodyData))
            #expect(shown.waitingFor?.hasPrefix("waiting for disk space") == true, "\(shown)")
        }
        #expect(h.engine.batches.isEmpty)
        #expect(try await h.store.errors(id: id).isEmpty, "waiting is not a failure")
    }

    @Test("a lost lease stops the run and nothing more is written for it; the job runs again")
    func leaseLost() async throws {
        let h = try WorkerHarness { _, attempt in attempt == 1 ? .runUntilStopped : .succeed(steps: 2) }
        defer { h.directory.remove() }
        let id = try await h.submit()
        try await h.withWorker {
            try await h.waitUntil("running") { try await h.state(id) == .running }
            // The job is taken from under the worker (as when its lease expires and the reaper
            // requeues it): a crash is recorded with the worker's own token.
            let token = try #require(try await h.store.get(id: id).leaseToken)
            _ = try await h.store.recordWorkerCrash(id: id, token: token, message: "stalled", now: Date())
            try await h.waitUntil("succeeded on the second attempt") { try await h.state(id) == .succeeded }
        }
        #expect(h.engine.stopSeen(id) == .leaseLost)
        let job = try await h.store.get(id: id)
        #expect(job.attempt == 2 && job.crashCount == 1, "\(job)")
    }
}

/// The SQLite store with switches that make lease renewals, or the claims that fill a batch,
/// fail as an unreachable database would (test double of the worker's store, this file only);
/// everything else goes through. It keeps the limits prunes were called with.
final class FailingStore: TransitionStore {
    let base: SQLiteJobStore
    private let failing = Mutex((renewals: false, batchClaims: false))
    private let prunes = Mutex<[Int]>([])

    var pruneLimits: [Int] { prunes.withLock { $0 } }

    init(_ base: SQLiteJobStore) { self.base = base }

    var renewalsFail: Bool {
        get { failing.withLock { $0.renewals } }
        set { failing.withLock { $0.renewals = newValue } }
    }

    var batchClaimsFail: Bool {
        get { failing.withLock { $0.batchClaims } }
        set { failing.withLock { $0.batchClaims = newValue } }
    }

    func transition(
        _ id: Int64, _ event: JobEvent, now: Date, authorize: (@Sendable (Job) throws -> Void)?,
        admitting limits: SubmitLimits?
    ) async throws(StateError) -> Job {
        if case .heartbeat = event, renewalsFail {
            throw StateError(.database, "connection refused (the test made the database unreachable)")
        }
        return try await base.transition(id, event, now: now, authorize: authorize, admitting: limits)
    }

    func claim(
        workerID: String, leaseDuration: TimeInterval, filter: ClaimFilter?, now: Date
    ) async throws(StateError) -> ClaimedJob? {
        if filter != nil, batchClaimsFail { throw StateError(.database, "connection lost (the test's doing)") }
        return try await base.claim(workerID: workerID, leaseDuration: leaseDuration, filter: filter, now: now)
    }

    func submit(
        _ submission: JobSubmission, owner: UInt32, limits: SubmitLimits, now: Date
    ) async throws(StateError) -> SubmitResult {
        try await base.submit(submission, owner: owner, limits: limits, now: now)
    }
    func recoverExpiredLeases(now: Date, sparing: Set<Int64>) async throws(StateError) -> [Job] {
        try await base.recoverExpiredLeases(now: now, sparing: sparing)
    }
    func recoverOrphanedJobs(now: Date) async throws(StateError) -> [Job] {
        try await base.recoverOrphanedJobs(now: now)
    }
    func setPaused(_ paused: Bool) async throws(StateError) { try await base.setPaused(paused) }
    func isPaused() async throws(StateError) -> Bool { try await base.isPaused() }
    func get(id: Int64) async throws(StateError) -> Job { try await base.get(id: id) }
    func list(_ filter: JobFilter) async throws(StateError) -> [Job] { try await base.list(filter) }
    func errors(id: Int64) async throws(StateError) -> [JobErrorRecord] { try await base.errors(id: id) }
    func counts() async throws(StateError) -> [JobState: Int] { try await base.counts() }
    func livePipelinePins() async throws(StateError) -> [String: [Int64]] { try await base.livePipelinePins() }
    func delete(id: Int64, requesterUID: UInt32, isAdmin: Bool, now: Date) async throws(StateError) -> PrunedJob {
        try await base.delete(id: id, requesterUID: requesterUID, isAdmin: isAdmin, now: now)
    }
    func prune(
        olderThan: TimeInterval, states: Set<JobState>, now: Date, limit: Int
    ) async throws(StateError)
        -> [PrunedJob]
    {
        prunes.withLock { $0.append(limit) }
        return try await base.prune(olderThan: olderThan, states: states, now: now, limit: limit)
    }
}

@Suite("worker self-fencing")
struct SelfFencingTests {
    @Test("renewals that fail: the worker stops the job before its lease can expire and writes nothing more for it")
    func stopsBeforeLeaseExpires() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = DaemonConfiguration(
            stateDirectory: directory.file("state"), socketPath: directory.file("s.sock"))
        configuration.pollInterval = 0.05
        // The fence falls 30 s after the claim, 10 s before the lease can expire.
        configuration.leaseDuration = 40
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        let base = try SQLiteJobStore(path: configuration.layout.database)
        let store = FailingStore(base)
        let engine = ScriptedEngine { _, attempt in attempt == 1 ? .runUntilStopped : .succeed(steps: 2) }
        var shared = DaemonContext(
            configuration: configuration, store: store, engine: engine, catalog: nil,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        shared.singleHost = false  // a shared queue: another host could take the job
        let context = shared
        let spec = JobSpec(length: 8, parameters: .init(seed: 1))
        let id = try await store.submit(
            JobSubmission(params: spec.storedJSON, length: 8), owner: 1000, maxQueued: 10, now: Date()
        ).job.id
        let worker = WorkerService(context: context)
        func waitUntil(_ what: String, _ condition: () async throws -> Bool) async throws {
            let deadline = Date().addingTimeInterval(180)
            while Date() < deadline {
                if try await condition() { return }
                try await Task.sleep(for: .milliseconds(20))
            }
            Issue.record("timed out waiting until \(what)")
        }
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await worker.run() }
                // The database "goes away" as the job starts: no renewal ever goes through.
                store.renewalsFail = true
                try await waitUntil("running") { try await store.get(id: id).state == .running }
                let claimed = try await store.get(id: id)
                try await waitUntil("the engine stopped the job") { engine.stopSeen(id) != nil }
                #expect(engine.stopSeen(id) == .fenced)
                // When the fence falls (before the lease can expire) is BatchSchedulerTests' job, with
                // fixed instants: a wall-clock bound here would race the machine's load.
                // Nothing was written for it: the same lease, the progress it had.
                try await waitUntil("the worker let go of it") { context.monitor.runningIDs.isEmpty }
                // The metrics count it as ended (and forget its timings).
                let rendered = context.metrics.render(
                    .init(counts: [:], paused: false, running: 0, ready: true, diskFreeBytes: nil, models: []))
                #expect(rendered.contains(#"gridit_jobs_finished_total{outcome="unrecorded"} 1"#), "\(rendered)")
                let unchanged = try await store.get(id: id)
                #expect(unchanged.state == .running && unchanged.leaseToken == claimed.leaseToken)
                #expect(unchanged.leaseExpiresAt == claimed.leaseExpiresAt)
                #expect(try await store.errors(id: id).isEmpty)
                // The database is back; once the lease expires the reaper requeues the job, and it runs.
                store.renewalsFail = false
                let expired = try await store.recoverExpiredLeases(now: unchanged.leaseExpiresAt!)
                #expect(expired.map(\.id) == [id])
                context.monitor.wake()
                try await waitUntil("succeeded on the second attempt") {
                    try await store.get(id: id).state == .succeeded
                }
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
    }
}

@Suite("claims that fill a batch")
struct BatchClaimTests {
    @Test("a claim that fails while filling a batch: the jobs claimed before it run now, no lease left to expire")
    func failedBatchClaim() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = DaemonConfiguration(
            stateDirectory: directory.file("state"), socketPath: directory.file("s.sock"))
        configuration.pollInterval = 0.05
        configuration.maxBatchJobs = 4
        // A claim thrown away would sit `running` until its lease expired: far past the wait below.
        configuration.leaseDuration = 900
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        let store = FailingStore(try SQLiteJobStore(path: configuration.layout.database))
        store.batchClaimsFail = true
        let engine = ScriptedEngine { _, _ in .succeed(steps: 2) }
        let context = DaemonContext(
            configuration: configuration, store: store, engine: engine, catalog: nil,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let spec = JobSpec(length: 8, parameters: .init(seed: 1))
        var ids: [Int64] = []
        for _ in 0..<2 {
            ids.append(
                try await store.submit(
                    JobSubmission(params: spec.storedJSON, length: 8, pipelineDigest: "sha256:a"), owner: 1000,
                    maxQueued: 10, now: Date()
                ).job.id)
        }
        let worker = WorkerService(context: context)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await worker.run() }
                // Generous (a loaded 2-core machine), and long before a lease could expire.
                let deadline = Date().addingTimeInterval(300)
                while Date() < deadline {
                    var done = true
                    for id in ids where try await store.get(id: id).state != .succeeded { done = false }
                    if done { break }
                    try await Task.sleep(for: .milliseconds(20))
                }
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        for id in ids {
            let job = try await store.get(id: id)
            #expect(job.state == .succeeded && job.crashCount == 0 && job.attempt == 1, "\(job)")
        }
        #expect(engine.batches == ids.map { [$0] }, "each ran alone: the claim that would add the other failed")
    }
}

@Suite("nodes on the SQLite queue")
struct SingleNodeTests {
    @Test("nodes list shows this host; drain is for admins and holds new jobs back; undrain starts them")
    func drainOneHost() async throws {
        let h = try WorkerHarness { _, _ in .succeed(steps: 2) }
        defer { h.directory.remove() }
        let api = ControlAPI(context: h.context)
        let node = h.context.node
        try await h.context.nodes.registerNode(id: node.id, hostname: node.hostname, version: "test", now: Date())
        func call(_ method: HTTPRequest.Method, _ path: [String], admin: Bool) async -> Response {
            let caller = Caller(
                credentials: PeerCredentials(pid: 1, uid: admin ? 0 : 1000, gid: 1000), isAdmin: admin, isMember: true)
            return await api.handle(method, "/" + path.joined(separator: "/"), caller: caller)
        }
        let listed = try APICoding.decoder().decode(
            NodeList.self, from: try #require(await call(.get, ["v1", "nodes"], admin: false).bodyData))
        #expect(listed.nodes.map(\.id) == [node.id] && listed.nodes[0].current && !listed.nodes[0].draining)

        #expect(await call(.post, ["v1", "nodes", node.id, "drain"], admin: false).status == .forbidden)
        #expect(await call(.post, ["v1", "nodes", "nosuchnode", "drain"], admin: true).status == .notFound)
        let drained = await call(.post, ["v1", "nodes", String(node.id.prefix(8)), "drain"], admin: true)
        #expect(drained.status == .ok)
        #expect(h.context.startBlocker(remakeReserve: false)?.code == .draining)
        let id = try await h.submit()
        try await h.withWorker {
            try await Task.sleep(for: .milliseconds(500))  // ten polls (50 ms each): nothing claimed
            #expect(try await h.state(id) == .queued)
            let shown = try APICoding.decoder().decode(
                JobInfo.self, from: try #require(await call(.get, ["v1", "jobs", "\(id)"], admin: true).bodyData))
            #expect(shown.waitingFor?.contains("drained") == true, "\(shown)")
            #expect(await call(.post, ["v1", "nodes", node.hostname, "undrain"], admin: true).status == .ok)
            try await h.waitUntil("succeeded once undrained") { try await h.state(id) == .succeeded }
        }
        let job = try APICoding.decoder().decode(
            JobList.self, from: try #require(await call(.get, ["v1", "jobs"], admin: true).bodyData)
        ).jobs[0]
        #expect(job.node == nil, "a finished job on the SQLite queue names no host")
    }
}

@Suite("retention in batches")
struct RetentionBatchTests {
    @Test("a prune of a long history deletes a batch per transaction, and every job's folders go")
    func batches() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = DaemonConfiguration(
            stateDirectory: directory.file("state"), socketPath: directory.file("s.sock"))
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        let store = FailingStore(try SQLiteJobStore(path: configuration.layout.database))
        let context = DaemonContext(
            configuration: configuration, store: store, engine: nil, catalog: nil,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let spec = JobSpec(length: 8, parameters: .init(seed: 1))
        var ids: [Int64] = []
        for _ in 0..<5 {
            let id = try await store.submit(
                JobSubmission(params: spec.storedJSON, length: 8), owner: 1000, maxQueued: 10, now: Date()
            ).job.id
            _ = try await store.cancel(id: id, requesterUID: 1000, isAdmin: false, now: Date())
            try FileManager.default.createDirectory(
                atPath: context.layout.workDirectory(job: id), withIntermediateDirectories: true)
            ids.append(id)
        }
        let pruned = try await Retention.prune(context, olderThan: 0, keepOutputs: false, batchSize: 2)
        #expect(pruned.map(\.id) == ids)
        #expect(store.pruneLimits == [2, 2, 2], "three transactions of at most 2")
        for id in ids {
            #expect(!FileManager.default.fileExists(atPath: context.layout.workDirectory(job: id)))
        }
        #expect(try await store.list(JobFilter()).isEmpty)
    }
}
