// The queue worker: claims jobs (a batch of same-pipeline, same-priority jobs), runs them on the
// inference thread, turns the engine's hooks into fenced database writes, and records outcomes.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GriditAPI
import GriditJobSpec
import GriditStore
import Logging
import ServiceLifecycle
import Synchronization

public struct WorkerService: Service {
    let context: DaemonContext
    let workerID: String
    /// Outcomes the database could not take yet (its filesystem full): retried before anything starts.
    let unrecorded = Unrecorded()

    public init(context: DaemonContext) {
        self.context = context
        self.workerID = "\(context.configuration.instanceID.prefix(8))/worker-0"
    }

    public func run() async throws {
        let logger = context.logger
        guard let executor = context.executor else {
            logger.warning("this griditd has no engine: jobs are accepted and stay queued")
            // Keep the watchdog fed while idle, until shutdown.
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                context.notifier.watchdog()
                try? await cancelWhenGracefulShutdown { [watchdogTick] in try await Task.sleep(for: watchdogTick) }
            }
            return
        }
        let thread = WorkerThread(name: "gridit-worker")
        let stopping = StopFlag()
        await withGracefulShutdownHandler {
            // Jobs claimed to join a batch that ended before the engine took them: they start next.
            var carried: [ClaimedJob] = []
            while !stopping.isSet {
                context.notifier.watchdog()
                await retryUnrecorded()
                if !unrecorded.isEmpty || !startsAllowed(log: true) {
                    for c in carried { _ = try? await context.store.releaseLease(id: c.job.id, token: c.token, now: Date()) }
                    carried = []
                    await context.monitor.waitForWake(timeout: .seconds(2))
                    continue
                }
                let batch: ClaimedBatch?
                do {
                    let claimed = carried.isEmpty ? try await claimBatch() : carried
                    carried = []
                    batch = claimed.isEmpty ? nil : await start(claimed, stopping: stopping)
                } catch {
                    logger.error("claiming failed; retrying", metadata: ["error": "\(error)"])
                    await context.monitor.waitForWake(timeout: .seconds(2))
                    continue
                }
                guard let batch else {
                    await context.monitor.waitForWake(timeout: pollInterval)
                    continue
                }
                carried = await run(batch, executor: executor, thread: thread, stopping: stopping)
                await context.refreshStatus()
            }
            for c in carried { _ = try? await context.store.releaseLease(id: c.job.id, token: c.token, now: Date()) }
            await retryUnrecorded()
        } onGracefulShutdown: {
            stopping.set()
            context.monitor.requestStopAll(.shutdown)
            context.monitor.wake()
        }
        await thread.run { executor.shutdown() }
        thread.stop()
    }

    /// Whether jobs may start now (no lost database, no full filesystem); logs each change.
    private func startsAllowed(log: Bool) -> Bool {
        let blocker = context.startBlocker(remakeReserve: true)
        if log && context.conditions.update(blocker) {
            if let blocker {
                let level: Logger.Level = blocker.code == .databaseLost ? .critical : .warning
                context.logger.log(level: level, "no job starts: \(blocker.message)", metadata: ["condition": "\(blocker.code.rawValue)"])
            } else {
                context.logger.notice("jobs start again: the condition that held them is over")
            }
        }
        return blocker == nil
    }

    /// While a batch runs: a lost database stops it (nothing more can be recorded), a full one
    /// hands its jobs back so that the space left goes to the database.
    private func stopIfBlocked() {
        switch context.startBlocker(remakeReserve: false)?.code {
        case .databaseLost?: context.monitor.requestStopAll(.databaseLost)
        case .databaseDiskFull?: context.monitor.requestStopAll(.diskFull)
        default: break
        }
    }

    private func retryUnrecorded() async {
        for pending in unrecorded.take() {
            await record(pending.outcome, id: pending.id, token: pending.token, stopReason: pending.stopReason, item: pending.item)
        }
    }

    private var pollInterval: Duration { .milliseconds(Int64(context.configuration.pollInterval * 1000)) }

    private var watchdogTick: Duration {
        min(context.notifier.watchdogInterval ?? .seconds(1), .seconds(1))
    }

    // MARK: - Claiming

    /// Claims the next job and up to `maxBatchJobs - 1` more of its pipeline and priority.
    private func claimBatch() async throws(StoreError) -> [ClaimedJob] {
        let store = context.store
        let lease = context.configuration.leaseDuration
        guard let first = try await store.claim(workerID: workerID, leaseDuration: lease, now: Date()) else {
            return []
        }
        var claimed = [first]
        // A job that crashed a worker before runs alone: its next crash is then its own.
        guard first.job.crashCount == 0 else { return claimed }
        let filter = ClaimFilter(pipelineDigest: first.job.pipelineDigest, priority: first.job.priority)
        while claimed.count < context.configuration.maxBatchJobs,
              let more = try await store.claim(workerID: workerID, leaseDuration: lease, matching: filter, now: Date())
        {
            claimed.append(more)
        }
        return claimed
    }

    /// Claimed jobs ready for the engine: their folders made. Jobs the worker cannot start (no
    /// disk space) are failed as transient right here; during shutdown all are handed back.
    private func start(_ claimed: [ClaimedJob], stopping: StopFlag) async -> ClaimedBatch? {
        for c in claimed where context.faults.crashAfterClaim.contains(c.job.id) {
            context.logger.critical("test fault: crashing after claiming job \(c.job.id)", metadata: ["job.id": "\(c.job.id)"])
            abort()
        }
        if stopping.isSet {
            // Shutdown began while we claimed: hand them straight back.
            for c in claimed { _ = try? await context.store.releaseLease(id: c.job.id, token: c.token, now: Date()) }
            return nil
        }
        var items: [ExecutionItem] = []
        var tokens: [Int64: LeaseToken] = [:]
        for c in claimed {
            // Space went below the minimum since the claim: back to the queue, no attempt used.
            if context.startBlocker(remakeReserve: false) != nil {
                _ = try? await context.store.releaseLease(id: c.job.id, token: c.token, now: Date())
                context.monitor.changed(c.job.id)
                continue
            }
            do {
                items.append(try prepare(c.job))
                tokens[c.job.id] = c.token
            } catch {
                await record(.failed(error), id: c.job.id, token: c.token, stopReason: nil)
                context.monitor.changed(c.job.id)
            }
        }
        guard let first = claimed.first, !items.isEmpty else { return nil }
        return ClaimedBatch(
            batch: ExecutionBatch(pipelineDigest: first.job.pipelineDigest, items: items), tokens: tokens,
            priority: first.job.priority)
    }

    struct ClaimedBatch: Sendable {
        var batch: ExecutionBatch
        var tokens: [Int64: LeaseToken]
        /// The jobs' priority (a batch shares one).
        var priority: Int
    }

    /// Creates the job's work folder and the output's parent (free space was checked before the claim).
    private func prepare(_ job: Job) throws(JobFailure) -> ExecutionItem {
        let layout = context.layout
        let spec: JobSpec
        do { spec = try job.spec() } catch { throw JobFailure(.internalError, error.message) }
        let work = layout.workDirectory(job: job.id)
        let output = spec.output.map { layout.namedOutputDirectory(owner: job.ownerUID, name: $0) }
            ?? layout.automaticOutputDirectory(job: job.id)
        do {
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(
                atPath: (output as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        } catch {
            let errno = (error as NSError).userInfo[NSUnderlyingErrorKey].flatMap { ($0 as? NSError)?.code }
            throw JobFailure(errno == Int(ENOSPC) ? .diskFull : .transient, "preparing \(work): \(error.localizedDescription)")
        }
        return ExecutionItem(
            jobID: job.id, spec: spec, workDirectory: work, outputDirectory: output, resumeFrom: job.progress,
            attempt: job.attempt)
    }

    // MARK: - Running

    /// Runs a batch on the inference thread while the async side saves progress, records each
    /// job as it leaves, and claims jobs of the same pipeline to join it. Returns jobs claimed
    /// to join that the engine did not take before it finished.
    private func run(
        _ claimed: ClaimedBatch, executor: any JobExecutor, thread: WorkerThread, stopping: StopFlag
    ) async -> [ClaimedJob] {
        let batch = claimed.batch
        let ids = batch.items.map(\.jobID)
        let monitor = context.monitor
        let notifier = context.notifier
        let faults = context.faults
        let pauseMarker = context.layout.root + "/test-paused"
        let inProcess = !engineRunsApart
        let session = BatchSession(batch.items, tokens: claimed.tokens)
        let tracker = BatchTracker(ids: ids)
        monitor.started(ids)
        for id in ids { monitor.changed(id) }
        context.logger.info(
            "running", metadata: [
                "job.ids": "\(ids.map(String.init).joined(separator: ","))",
                "model.digest": "\(batch.pipelineDigest ?? "none")",
            ])
        await context.refreshStatus()

        let (signals, signal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let hooks = ExecutionHooks(
            admit: {
                let items = session.admit()
                for item in items { tracker.admitted(item.jobID) }
                return items
            },
            finished: { id, outcome in
                session.report(id, outcome)
                signal.yield()
                monitor.wake()  // a slot is free: the admission loop may claim another job
            },
            durable: { id, progress in
                tracker.durable(id, progress)
                signal.yield()
            },
            step: { id, step in
                tracker.activity(id)
                monitor.publish(step: step, for: id)
                notifier.watchdog()
                signal.yield()
                // An engine in a worker process pauses there itself (griditd stays responsive).
                if inProcess, let pause = faults.pauseAt, pause.matches(step) { pause.hold(marker: pauseMarker, job: id) }
            },
            shouldStop: { id in
                monitor.stopReason(id) ?? (stopping.isSet ? .shutdown : nil)
            })

        let carried = await withTaskGroup(of: [ClaimedJob].self) { group in
            group.addTask {
                await thread.run { executor.execute(batch, hooks: hooks) }
                let leftovers = session.close()
                signal.finish()
                monitor.wake()  // ends the admission loop's wait
                return leftovers
            }
            group.addTask {
                // One writer for progress, heartbeats and outcomes, in the order they happened.
                for await _ in signals {
                    await flush(session, tracker)
                    try? await Task.sleep(for: .milliseconds(200))
                }
                return []
            }
            group.addTask {
                let filter = ClaimFilter(
                    pipelineDigest: batch.pipelineDigest, priority: claimed.priority, nextInLineOnly: true)
                return await admitMore(session, tracker, filter: filter, stopping: stopping)
            }
            var carried: [ClaimedJob] = []
            for await jobs in group { carried += jobs }
            return carried
        }
        await flush(session, tracker, final: true)
        for id in session.unreported() {
            session.report(id, .failed(JobFailure(.internalError, "the engine returned without reporting job \(id)")))
        }
        await flush(session, tracker, final: true)
        return carried
    }

    /// The engine runs in a supervised worker process (not on griditd's inference thread).
    private var engineRunsApart: Bool { context.executor?.worker != nil }

    /// While the batch runs and has room, claims the next job in line if it shares the batch's
    /// pipeline and priority, and hands it to the engine (which admits it between batches).
    private func admitMore(
        _ session: BatchSession, _ tracker: BatchTracker, filter: ClaimFilter, stopping: StopFlag
    ) async -> [ClaimedJob] {
        var carried: [ClaimedJob] = []
        let lease = context.configuration.leaseDuration
        while !session.isClosed && !stopping.isSet {
            // griditd is alive while the engine works (the worker process is supervised apart).
            if engineRunsApart { context.notifier.watchdog() }
            stopIfBlocked()
            var filter = filter
            filter.excluding = session.memberIDs  // never a second run of a job the engine still has
            guard session.activeCount < context.configuration.maxBatchJobs, startsAllowed(log: false),
                  let claimed = try? await context.store.claim(workerID: workerID, leaseDuration: lease, matching: filter, now: Date())
            else {
                await context.monitor.waitForWake(timeout: pollInterval)
                continue
            }
            guard let ready = await start([claimed], stopping: stopping), let item = ready.batch.items.first else { continue }
            tracker.add(waiting: item.jobID)  // before the engine can take it
            if session.offer(item, claim: claimed) {
                context.monitor.started([item.jobID])
                context.monitor.changed(item.jobID)
                context.logger.info("joining the running batch", metadata: ["job.id": "\(item.jobID)"])
            } else {
                _ = tracker.remove(item.jobID)
                carried.append(claimed)
            }
        }
        return carried
    }

    /// Saves pending progress and heartbeats, then records the outcomes reported since the last flush.
    private func flush(_ session: BatchSession, _ tracker: BatchTracker, final: Bool = false) async {
        await sync(tracker.take(now: Date(), heartbeatEvery: context.configuration.leaseDuration / 3, final: final), session)
        for (id, outcome) in session.takeOutcomes() {
            // Its last progress first (the resume point of an interrupted job), then the outcome.
            if let last = tracker.remove(id) { await sync([last], session) }
            guard let token = session.token(id), let item = session.item(id) else {
                context.monitor.finished(id)
                continue
            }
            await record(outcome, id: id, token: token, stopReason: context.monitor.stopReason(id), item: item)
        }
    }

    /// Writes durable progress and heartbeats (fenced by the lease token); a cancel seen in the
    /// answer, or a lost lease, becomes a stop request for the engine.
    private func sync(_ pending: [BatchTracker.Pending], _ session: BatchSession) async {
        let lease = context.configuration.leaseDuration
        let now = Date()
        for pending in pending {
            guard let token = session.token(pending.id) else { continue }
            do {
                var status: LeaseStatus?
                if let progress = pending.progress {
                    status = try await context.store.saveProgress(
                        id: pending.id, token: token, progress: progress, now: now)
                    context.monitor.changed(pending.id)
                }
                if pending.heartbeat {
                    status = try await context.store.heartbeat(id: pending.id, token: token, leaseDuration: lease, now: now)
                }
                if status?.cancelRequested == true { context.monitor.requestStop(pending.id, .cancel) }
            } catch where error.code == .leaseLost || error.code == .invalidTransition {
                context.logger.warning(
                    "lost the lease; stopping the job", metadata: ["job.id": "\(pending.id)", "error": "\(error.message)"])
                context.monitor.requestStop(pending.id, .leaseLost)
            } catch {
                context.logger.error("saving progress failed", metadata: ["job.id": "\(pending.id)", "error": "\(error)"])
            }
        }
    }

    /// The job's outcome as a fenced state transition. An outcome the database cannot take now
    /// (its filesystem full even after its reserve went) is kept and retried, the job still
    /// shown running: it is never left for its lease to expire and count as a crash.
    private func record(
        _ outcome: ExecutionOutcome, id: Int64, token: LeaseToken, stopReason: StopReason?, item: ExecutionItem? = nil
    ) async {
        let store = context.store
        let logger = context.logger
        let now = Date()
        var metadata: Logger.Metadata = ["job.id": "\(id)"]
        if stopReason == .databaseLost {
            logger.critical("job stopped: the job database is lost, nothing is recorded", metadata: metadata)
            context.monitor.finished(id)
            return
        }
        do {
            switch outcome {
            case .succeeded:
                guard let output = item?.outputDirectory else {
                    preconditionFailure("job \(id): a success is recorded with the item the engine ran")
                }
                _ = try await store.complete(id: id, token: token, outputDir: output, now: now)
                try? FileManager.default.removeItem(atPath: context.layout.workDirectory(job: id))
                metadata["output"] = "\(output)"
                logger.info("job succeeded", metadata: metadata)
            case .failed(let failure):
                let after = try await store.fail(
                    id: id, token: token, errorClass: failure.errorClass.rawValue, message: failure.message,
                    retryable: failure.errorClass.retryable, now: now)
                metadata["error.class"] = "\(failure.errorClass.rawValue)"
                metadata["state"] = "\(after.state.rawValue)"
                logger.warning("job failed: \(failure.message)", metadata: metadata)
            case .crashed(let crash) where crash.counted:
                let after = try await store.recordWorkerCrash(id: id, token: token, message: crash.message, now: now)
                metadata["state"] = "\(after.state.rawValue)"
                metadata["crashes"] = "\(after.crashCount)"
                logger.error("job crashed the engine: \(crash.message)", metadata: metadata)
            case .crashed(let crash):
                _ = try await store.requeue(id: id, token: token, reason: crash.message, now: now)
                logger.warning("job requeued, not counted as a crash: \(crash.message)", metadata: metadata)
            case .interrupted:
                switch stopReason {
                case .cancel:
                    _ = try await store.acknowledgeCancel(id: id, token: token, now: now)
                    logger.info("job canceled", metadata: metadata)
                case .shutdown:
                    _ = try await store.releaseLease(id: id, token: token, now: now)
                    logger.info("job checkpointed and handed back for shutdown", metadata: metadata)
                case .diskFull:
                    _ = try await store.releaseLease(id: id, token: token, now: now)
                    logger.warning("job checkpointed and handed back: the state filesystem is full", metadata: metadata)
                case .leaseLost:
                    logger.warning("job stopped: another worker owns it now", metadata: metadata)
                case .databaseLost:
                    break
                case nil:
                    _ = try await store.fail(
                        id: id, token: token, errorClass: JobFailure.Class.internalError.rawValue,
                        message: "the engine stopped the job although nobody asked it to", retryable: false, now: now)
                }
            }
        } catch where error.code == .leaseLost || error.code == .invalidTransition || error.code == .notFound {
            logger.warning("the job's outcome was not recorded: \(error.message)", metadata: metadata)
        } catch {
            logger.error(
                "recording the job's outcome failed; retrying", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            unrecorded.add(Unrecorded.Pending(id: id, token: token, outcome: outcome, stopReason: stopReason, item: item))
            return
        }
        context.monitor.finished(id)
        context.monitor.changed(id)
    }
}

/// Outcomes the database refused (not fenced off: its filesystem was full), kept to record again.
final class Unrecorded: Sendable {
    struct Pending: Sendable {
        var id: Int64
        var token: LeaseToken
        var outcome: ExecutionOutcome
        var stopReason: StopReason?
        var item: ExecutionItem?
    }
    private let pending = Mutex<[Pending]>([])

    func add(_ p: Pending) { pending.withLock { $0.append(p) } }
    func take() -> [Pending] { pending.withLock { p in defer { p = [] }; return p } }
    var isEmpty: Bool { pending.withLock { $0.isEmpty } }
}

/// A flag set once (graceful shutdown; read from the worker thread between steps).
final class StopFlag: Sendable {
    private let flag = Atomic(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}

/// What the hooks reported since the last database sync, per job of the running batch.
final class BatchTracker: Sendable {
    struct Pending {
        var id: Int64
        var progress: JobProgress?
        var heartbeat: Bool
    }

    private struct Entry {
        var progress: JobProgress?
        var active = false
        /// Claimed to join, not yet taken by the engine: heartbeated while it waits (a batched
        /// forward of a large model can outlast a lease).
        var waiting = false
        var lastHeartbeat = Date()
    }

    private let entries: Mutex<[Int64: Entry]>

    init(ids: [Int64]) {
        entries = Mutex(Dictionary(uniqueKeysWithValues: ids.map { ($0, Entry()) }))
    }

    func durable(_ id: Int64, _ progress: JobProgress) {
        entries.withLock { e in
            e[id]?.progress = progress
            e[id]?.active = true
        }
    }

    func activity(_ id: Int64) { entries.withLock { $0[id]?.active = true } }

    /// A job claimed to join the running batch, waiting for the engine to take it.
    func add(waiting id: Int64) { entries.withLock { $0[id] = Entry(waiting: true) } }

    /// The engine took a waiting job: from now on its own steps keep it alive.
    func admitted(_ id: Int64) { entries.withLock { $0[id]?.waiting = false } }

    /// Forgets a job that left the batch; returns its progress not saved yet.
    func remove(_ id: Int64) -> Pending? {
        entries.withLock { e in
            guard let entry = e.removeValue(forKey: id), let progress = entry.progress else { return nil }
            return Pending(id: id, progress: progress, heartbeat: false)
        }
    }

    /// Progress to save, and a heartbeat for each job that made progress since its last one
    /// when `heartbeatEvery` has passed: a hung engine stops heartbeating, so its lease expires.
    func take(now: Date, heartbeatEvery: TimeInterval, final: Bool) -> [Pending] {
        entries.withLock { e in
            var result: [Pending] = []
            for (id, var entry) in e.sorted(by: { $0.key < $1.key }) {
                let due = (entry.active || entry.waiting) && now.timeIntervalSince(entry.lastHeartbeat) >= heartbeatEvery && !final
                guard entry.progress != nil || due else { continue }
                result.append(Pending(id: id, progress: entry.progress, heartbeat: due))
                entry.progress = nil
                if due {
                    entry.active = false
                    entry.lastHeartbeat = now
                }
                e[id] = entry
            }
            return result
        }
    }
}

/// The jobs of a running batch, shared by the engine's hooks (worker thread) and the async side:
/// their leases, the jobs claimed to join it, and the outcomes not recorded yet.
final class BatchSession: Sendable {
    private struct Member {
        var item: ExecutionItem
        var token: LeaseToken
        /// For a job claimed to join: its claim, handed back if the engine never takes it.
        var claim: ClaimedJob?
        var reported = false
    }

    private struct State {
        var members: [Int64: Member] = [:]
        /// Claimed to join; the engine takes them at its next `admit`.
        var inbox: [Int64] = []
        var outcomes: [(Int64, ExecutionOutcome)] = []
        var closed = false
    }

    private let state: Mutex<State>

    init(_ items: [ExecutionItem], tokens: [Int64: LeaseToken]) {
        var s = State()
        for item in items {
            if let token = tokens[item.jobID] { s.members[item.jobID] = Member(item: item, token: token) }
        }
        state = Mutex(s)
    }

    /// Hands a claimed job to the running batch; false once the engine has returned.
    func offer(_ item: ExecutionItem, claim: ClaimedJob) -> Bool {
        state.withLock { s in
            guard !s.closed else { return false }
            s.members[item.jobID] = Member(item: item, token: claim.token, claim: claim)
            s.inbox.append(item.jobID)
            return true
        }
    }

    /// The jobs offered since the last call (the engine's `admit`).
    func admit() -> [ExecutionItem] {
        state.withLock { s in
            defer { s.inbox = [] }
            return s.inbox.compactMap { s.members[$0]?.item }
        }
    }

    /// The engine says `id` left the batch.
    func report(_ id: Int64, _ outcome: ExecutionOutcome) {
        state.withLock { s in
            guard let member = s.members[id], !member.reported else { return }
            s.members[id]!.reported = true
            s.outcomes.append((id, outcome))
        }
    }

    func takeOutcomes() -> [(Int64, ExecutionOutcome)] {
        state.withLock { s in
            defer { s.outcomes = [] }
            return s.outcomes
        }
    }

    /// After the engine returned: no more offers; the jobs offered but never admitted, which
    /// their claimer still holds, come back (they start the next batch).
    func close() -> [ClaimedJob] {
        state.withLock { s in
            s.closed = true
            defer { s.inbox = [] }
            return s.inbox.compactMap { id in s.members.removeValue(forKey: id)?.claim }
        }
    }

    /// Jobs the engine took and never reported.
    func unreported() -> [Int64] {
        state.withLock { s in s.members.filter { !$0.value.reported }.map(\.key).sorted() }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Every job that has been in the batch, reported or not.
    var memberIDs: Set<Int64> { state.withLock { Set($0.members.keys) } }

    /// Jobs in the batch or waiting to join it, not reported yet.
    var activeCount: Int { state.withLock { s in s.members.values.filter { !$0.reported }.count } }

    func token(_ id: Int64) -> LeaseToken? { state.withLock { $0.members[id]?.token } }
    func item(_ id: Int64) -> ExecutionItem? { state.withLock { $0.members[id]?.item } }
}
