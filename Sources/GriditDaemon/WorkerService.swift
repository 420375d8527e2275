// The queue worker: claims jobs (a batch of same-pipeline, same-priority jobs), runs them on the
// inference thread, turns the engine's hooks into fenced database writes, and records outcomes.

import Foundation
import GriditAPI
import GriditFaults
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public struct WorkerService: Service {
    let context: DaemonContext
    let workerID: String
    /// Outcomes the database could not take yet (its filesystem full): retried before anything starts.
    let unrecorded = Unrecorded()
    /// When each held lease was granted or last renewed, for self-fencing.
    let leases = LeaseTimes()

    public init(context: DaemonContext) {
        self.context = context
        // The node first: the lease owner names the host (its id, as in `nodes list`).
        self.workerID = "\(context.node.id)/worker-0"
    }

    public func run() async throws {
        let logger = context.logger
        guard let engine = context.engine else {
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
                    await handBack(carried)
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
                    await idle(pollInterval, watchdog: true)
                    continue
                }
                carried = await run(batch, engine: engine, thread: thread, stopping: stopping)
                await context.refreshStatus()
            }
            await handBack(carried)
            await retryUnrecorded()
        } onGracefulShutdown: {
            stopping.set()
            context.monitor.requestStopAll(.shutdown)
            context.monitor.wake()
        }
        await thread.run { engine.shutdown() }
        thread.stop()
    }

    /// Whether jobs may start now (no lost database, no full filesystem); logs each change.
    private func startsAllowed(log: Bool) -> Bool {
        let blocker = context.startBlocker(remakeReserve: true)
        if log && context.conditions.update(blocker) {
            if let blocker {
                let level: Logger.Level = blocker.code == .databaseLost ? .critical : .warning
                context.logger.log(
                    level: level, "no job starts: \(blocker.message)",
                    metadata: ["condition": "\(blocker.code.rawValue)"])
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
            await record(pending.record, id: pending.id, token: pending.token)
        }
    }

    private var pollInterval: Duration { .milliseconds(Int64(context.configuration.pollInterval * 1000)) }

    /// Waits for a wake-up or `timeout`, telling systemd's watchdog every `watchdogTick` that
    /// this loop is alive when `watchdog` (griditd's own work): a poll interval may be longer
    /// than WatchdogSec, and an idle host must not be killed as hung.
    private func idle(_ timeout: Duration, watchdog: Bool) async {
        let end = ContinuousClock.now + timeout
        while !Task.isCancelled {
            let left = end - .now
            guard left > .zero else { return }
            if await context.monitor.waitForWake(timeout: min(left, watchdogTick)) { return }
            if watchdog { context.notifier.watchdog() }
        }
    }

    private var watchdogTick: Duration {
        min(context.notifier.watchdogInterval ?? .seconds(1), .seconds(1))
    }

    // MARK: - Claiming

    /// Claims the next job and up to `maxBatchJobs - 1` more of its pipeline and priority.
    private func claimBatch() async throws(StateError) -> [ClaimedJob] {
        let store = context.store
        let lease = context.configuration.leaseDuration
        var sent = Date()
        guard let first = try await store.claim(workerID: workerID, leaseDuration: lease, now: sent) else {
            return []
        }
        leases.granted(first.job.id, at: first.sentAt ?? sent)
        var claimed = [first]
        // A job that crashed a worker before runs alone: its next crash is then its own.
        guard first.job.crashCount == 0 else { return claimed }
        let filter = ClaimFilter(pipelineDigest: first.job.pipelineDigest, priority: first.job.priority)
        sent = Date()
        while claimed.count < context.configuration.maxBatchJobs {
            let more: ClaimedJob?
            do {
                more = try await store.claim(workerID: workerID, leaseDuration: lease, matching: filter, now: sent)
            } catch {
                // The jobs claimed so far are this host's: thrown away, they would sit `running`
                // until their leases expired and count a crash each.
                context.logger.warning(
                    "claiming more jobs for the batch failed; running the \(claimed.count) claimed",
                    metadata: ["error": "\(error)"])
                break
            }
            guard let more else { break }
            leases.granted(more.job.id, at: more.sentAt ?? sent)
            claimed.append(more)
            sent = Date()
        }
        return claimed
    }

    /// Claims the engine never took (or no longer runs), back to the queue uncounted. A carried
    /// claim may have joined a batch before it closed: it is no longer running here either.
    private func handBack(_ claims: [ClaimedJob]) async {
        for c in claims {
            do {
                _ = try await context.store.releaseLease(id: c.job.id, token: c.token, now: Date())
            } catch  where error.code == .leaseLost || error.code == .invalidTransition || error.code == .notFound {
                // Not this worker's any more: nothing to hand back.
            } catch {
                // The database refused it (a full filesystem): handed back again later, and until
                // then running here, so that the lease reaper charges it no crash.
                context.monitor.started([c.job.id])
                unrecorded.add(Unrecorded.Pending(id: c.job.id, token: c.token, record: .releaseLease(.diskFull)))
                continue
            }
            leases.released(c.job.id)
            if context.monitor.isRunning(c.job.id) { context.metrics.jobFinished(c.job.id, outcome: "handed_back") }
            context.monitor.finished(c.job.id)
            context.monitor.changed(c.job.id)
        }
    }

    /// Claimed jobs ready for the engine: their folders made. Jobs the worker cannot start (no
    /// disk space) are failed as transient right here; during shutdown all are handed back.
    private func start(_ claimed: [ClaimedJob], stopping: StopFlag) async -> ClaimedBatch? {
        for c in claimed where context.faults.crashAfterClaim.contains(c.job.id) {
            context.logger.critical(
                "test fault: crashing after claiming job \(c.job.id)", metadata: ["job.id": "\(c.job.id)"])
            abort()
        }
        if stopping.isSet {
            await handBack(claimed)  // shutdown began while we claimed
            return nil
        }
        var items: [ExecutionItem] = []
        var tokens: [Int64: LeaseToken] = [:]
        for c in claimed {
            // Space went below the minimum since the claim: back to the queue, no attempt used.
            if context.startBlocker(remakeReserve: false) != nil {
                await handBack([c])
                continue
            }
            do {
                items.append(try prepare(c.job))
                tokens[c.job.id] = c.token
            } catch {
                context.monitor.started([c.job.id])  // spared by the reaper until recorded
                await record(.fail(error), id: c.job.id, token: c.token)
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
        let output =
            spec.output.map { layout.namedOutputDirectory(owner: job.ownerUID, name: $0) }
            ?? layout.automaticOutputDirectory(job: job.id)
        do {
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(
                atPath: (output as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        } catch {
            let errno = (error as NSError).userInfo[NSUnderlyingErrorKey].flatMap { ($0 as? NSError)?.code }
            throw JobFailure(
                errno == Int(ENOSPC) ? .diskFull : .transient, "preparing \(work): \(error.localizedDescription)")
        }
        return ExecutionItem(
            jobID: job.id, spec: spec, workDirectory: work, outputDirectory: output, resumeFrom: job.progress,
            attempt: job.attempt)
    }

    // MARK: - Running

    /// Runs a batch on the inference thread while the async side performs what its
    /// `BatchScheduler` decides: progress saves and heartbeats, each job's outcome as it leaves,
    /// jobs claimed to join. Returns jobs claimed to join that the engine did not take before it
    /// finished.
    private func run(
        _ claimed: ClaimedBatch, engine: any JobEngine, thread: WorkerThread, stopping: StopFlag
    ) async -> [ClaimedJob] {
        let batch = claimed.batch
        let ids = batch.items.map(\.jobID)
        let monitor = context.monitor
        let notifier = context.notifier
        let faults = context.faults
        let stateDirectory = context.layout.root
        let metrics = context.metrics
        let inProcess = !engineRunsApart
        let scheduler = RunningBatch(
            BatchScheduler(
                batch.items, tokens: claimed.tokens,
                settings: .init(
                    maxJobs: context.configuration.maxBatchJobs,
                    heartbeatEvery: context.configuration.leaseDuration / 3,
                    // Fenced only where another host could take the job: on a queue of its own,
                    // griditd's reaper spares the jobs it supervises (a SIGSTOP says nothing of them).
                    leaseDuration: context.singleHost ? .infinity : context.configuration.leaseDuration,
                    fenceMargin: context.configuration.leaseDuration / 4),
                now: Date(), leaseFrom: leases.times(of: ids)))
        monitor.started(ids)
        context.metrics.jobsStarted(batch.items)
        for id in ids { monitor.changed(id) }
        context.logger.info(
            "running job\(ids.count == 1 ? "" : "s") \(ids.map(String.init).joined(separator: ", ")) on \(batch.pipelineDigest.map { String($0.prefix(19)) } ?? "no model")",
            metadata: [
                "job.ids": "\(ids.map(String.init).joined(separator: ","))",
                "model.digest": "\(batch.pipelineDigest ?? "none")",
            ])
        await context.refreshStatus()

        let (signals, signal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let hooks = ExecutionHooks(
            admit: {
                let actions = scheduler.withLock { $0.handle(.admit, now: Date()) }
                return actions.flatMap { action -> [ExecutionItem] in
                    if case .join(let items) = action { return items }
                    return []
                }
            },
            finished: { id, outcome in
                _ = scheduler.withLock { $0.handle(.finished(id, outcome), now: Date()) }
                signal.yield()
                monitor.wake()  // a slot is free: the admission loop may claim another job
            },
            durable: { id, progress in
                _ = scheduler.withLock { $0.handle(.durable(id, progress), now: Date()) }
                metrics.unitDone(id, progress)
                signal.yield()
            },
            step: { id, step in
                _ = scheduler.withLock { $0.handle(.stepDone(id), now: Date()) }
                monitor.publish(step: step, for: id)
                metrics.stepDone(id, step)
                notifier.watchdog()
                signal.yield()
                // An engine in a worker process pauses there itself (griditd stays responsive).
                if inProcess, let pause = faults.pauseAt, pause.matches(step) {
                    PausePoint.hold("job \(id) paused at \(pause)", stateDirectory: stateDirectory)
                }
            },
            shouldStop: { id in
                monitor.stopReason(id) ?? (stopping.isSet ? .shutdown : nil)
            },
            working: { id in
                _ = scheduler.withLock { $0.handle(.stepDone(id), now: Date()) }
                notifier.watchdog()
                signal.yield()
            })

        let carried = await withTaskGroup(of: [ClaimedJob].self) { group in
            group.addTask {
                await thread.run { engine.execute(batch, hooks: hooks) }
                let actions = scheduler.withLock { $0.handle(.engineReturned, now: Date()) }
                signal.finish()
                monitor.wake()  // ends the admission loop's wait
                return await perform(actions, scheduler)  // hands back only
            }
            group.addTask {
                // One writer for progress, heartbeats and outcomes, in the order they happened.
                for await _ in signals {
                    let actions = scheduler.withLock {
                        $0.handle(.tick(stops: self.stops(of: $0, stopping: stopping), final: false), now: Date())
                    }
                    _ = await perform(actions, scheduler)
                    try? await Task.sleep(for: .milliseconds(200))
                }
                return []
            }
            group.addTask {
                let filter = ClaimFilter(
                    pipelineDigest: batch.pipelineDigest, priority: claimed.priority, nextInLineOnly: true)
                return await admitMore(scheduler, filter: filter, stopping: stopping)
            }
            group.addTask {
                // Self-fencing runs on the clock alone: a heartbeat stuck on an unreachable
                // database holds up the writer above, never this.
                let every = Duration.milliseconds(Int64(min(1, context.configuration.leaseDuration / 20) * 1000))
                while !scheduler.withLock({ $0.isClosed }) {
                    for case .stop(let id, let reason) in scheduler.withLock({ $0.handle(.fence, now: Date()) }) {
                        context.logger.critical(
                            "the job's lease was not renewed in time (is the job database reachable?): stopping it, writing nothing more for it",
                            metadata: ["job.id": "\(id)"])
                        monitor.requestStop(id, reason)
                    }
                    try? await Task.sleep(for: every)
                }
                return []
            }
            var carried: [ClaimedJob] = []
            for await jobs in group { carried += jobs }
            return carried
        }
        // Every writer is done: what is left, in order.
        let last = scheduler.withLock {
            $0.handle(.tick(stops: self.stops(of: $0, stopping: stopping), final: true), now: Date())
        }
        return carried + (await perform(last, scheduler))
    }

    /// Why the batch's jobs were asked to stop (the API's cancel, a lost lease), or shutdown (as
    /// the engine's `shouldStop` says, also for a job that started after the shutdown began).
    private func stops(of scheduler: BatchScheduler, stopping: StopFlag) -> [Int64: StopReason] {
        var stops: [Int64: StopReason] = [:]
        for id in scheduler.memberIDs {
            stops[id] = context.monitor.stopReason(id) ?? (stopping.isSet ? .shutdown : nil)
        }
        return stops
    }

    /// The engine runs in a supervised worker process (not on griditd's inference thread).
    private var engineRunsApart: Bool { context.engine?.worker != nil }

    /// While the batch runs and has room, claims the next job in line if it shares the batch's
    /// pipeline and priority, and hands it to the engine (which admits it between batches).
    private func admitMore(
        _ scheduler: RunningBatch, filter: ClaimFilter, stopping: StopFlag
    ) async -> [ClaimedJob] {
        var carried: [ClaimedJob] = []
        let lease = context.configuration.leaseDuration
        while !scheduler.withLock({ $0.isClosed }) && !stopping.isSet {
            // griditd is alive while the engine works (the worker process is supervised apart).
            if engineRunsApart { context.notifier.watchdog() }
            stopIfBlocked()
            var filter = filter
            let (room, members) = scheduler.withLock { ($0.hasRoom, $0.memberIDs) }
            filter.excluding = members  // never a second run of a job the engine still has
            let sent = Date()
            guard room, startsAllowed(log: false),
                let claimed = try? await context.store.claim(
                    workerID: workerID, leaseDuration: lease, matching: filter, now: sent)
            else {
                await idle(pollInterval, watchdog: engineRunsApart)
                continue
            }
            leases.granted(claimed.job.id, at: claimed.sentAt ?? sent)
            guard let ready = await start([claimed], stopping: stopping), let item = ready.batch.items.first else {
                continue
            }
            let granted = leases.times(of: [item.jobID])[item.jobID] ?? Date()
            let refused = scheduler.withLock { $0.handle(.offered(item, claimed), now: granted) }
            if refused.isEmpty {
                context.monitor.started([item.jobID])
                context.metrics.jobsStarted([item])
                context.monitor.changed(item.jobID)
                context.logger.info("joining the running batch", metadata: ["job.id": "\(item.jobID)"])
            } else {
                carried.append(claimed)
            }
        }
        return carried
    }

    /// Performs the scheduler's actions in order; returns the claims it hands back.
    private func perform(_ actions: [BatchScheduler.Action], _ scheduler: RunningBatch) async -> [ClaimedJob] {
        let lease = context.configuration.leaseDuration
        var handedBack: [ClaimedJob] = []
        for action in actions {
            switch action {
            case .join:
                break  // answered to the engine where it asked
            case .handBack(let claim):
                handedBack.append(claim)
            case .stop(let id, let reason):
                context.monitor.requestStop(id, reason)
            case .saveProgress(let id, let token, let progress):
                await leaseWrite(id, scheduler) { () async throws(StateError) -> LeaseStatus in
                    let status = try await context.store.saveProgress(
                        id: id, token: token, progress: progress, now: Date())
                    context.monitor.changed(id)
                    return status
                }
            case .heartbeat(let id, let token):
                let sent = Date()
                await leaseWrite(id, scheduler) { () async throws(StateError) -> LeaseStatus in
                    let status = try await context.store.heartbeat(
                        id: id, token: token, leaseDuration: lease, now: sent)
                    context.metrics.leaseRenewed()
                    leases.granted(id, at: sent)
                    _ = scheduler.withLock { $0.handle(.renewed(id, sentAt: sent), now: Date()) }
                    return status
                }
            case .record(let id, let token, let record):
                await self.record(record, id: id, token: token)
            }
        }
        return handedBack
    }

    /// A write fenced by the job's lease: a cancel seen in the answer, or a lost lease, goes back
    /// to the scheduler and becomes a stop request for the engine.
    private func leaseWrite(
        _ id: Int64, _ scheduler: RunningBatch, _ write: () async throws(StateError) -> LeaseStatus
    ) async {
        let event: BatchScheduler.Event?
        do {
            event = try await write().cancelRequested ? .cancelRequested(id) : nil
        } catch  where error.code == .leaseLost || error.code == .invalidTransition {
            context.logger.warning(
                "lost the lease; stopping the job", metadata: ["job.id": "\(id)", "error": "\(error.message)"])
            context.metrics.leaseLost()
            event = .leaseLost(id)
        } catch {
            context.logger.error("saving progress failed", metadata: ["job.id": "\(id)", "error": "\(error)"])
            event = nil
        }
        guard let event else { return }
        for case .stop(let id, let reason) in scheduler.withLock({ $0.handle(event, now: Date()) }) {
            context.monitor.requestStop(id, reason)
        }
    }

    /// " in 24 s" since the job first started (nothing when it never did).
    static func took(_ job: Job, _ now: Date) -> String {
        guard let started = job.startedAt else { return "" }
        return " in \(Int(max(0, now.timeIntervalSince(started)).rounded())) s"
    }

    /// The job's outcome as a fenced state transition. An outcome the database cannot take now
    /// (its filesystem full even after its reserve went) is kept and retried, the job still
    /// shown running: it is never left for its lease to expire and count as a crash.
    private func record(_ record: BatchScheduler.Record, id: Int64, token: LeaseToken) async {
        let store = context.store
        let logger = context.logger
        let now = Date()
        var metadata: Logger.Metadata = ["job.id": "\(id)"]
        do {
            switch record {
            case .complete(let output):
                let job = try await store.complete(id: id, token: token, outputDir: output, now: now)
                try? FileManager.default.removeItem(atPath: context.layout.workDirectory(job: id))
                metadata["output"] = "\(output)"
                // The message reads on its own in `journalctl`; the fields stay for filtering.
                logger.info(
                    "job \(id) succeeded\(Self.took(job, now)): \(job.length) frames → \(context.layout.relative(output))",
                    metadata: metadata)
                context.metrics.jobFinished(id, outcome: "succeeded")
            case .fail(let failure):
                let after = try await store.fail(
                    id: id, token: token, errorClass: failure.errorClass.rawValue, message: failure.message,
                    retryable: failure.errorClass.retryable, now: now)
                metadata["error.class"] = "\(failure.errorClass.rawValue)"
                metadata["state"] = "\(after.state.rawValue)"
                let outcome = after.state == .retryable ? "failed, will retry" : "failed"
                logger.warning(
                    "job \(id) \(outcome)\(Self.took(after, now)) (\(failure.errorClass.rawValue)): \(failure.message)",
                    metadata: metadata)
                context.metrics.jobFinished(
                    id, outcome: after.state == .retryable ? "retried" : "failed",
                    errorClass: failure.errorClass.rawValue)
            case .crash(let message):
                let after = try await store.recordWorkerCrash(id: id, token: token, message: message, now: now)
                metadata["state"] = "\(after.state.rawValue)"
                metadata["crashes"] = "\(after.crashCount)"
                logger.error(
                    "job \(id) crashed the engine (crash \(after.crashCount), now \(after.state.rawValue)): \(message)",
                    metadata: metadata)
                context.metrics.jobFinished(id, outcome: "crashed")
            case .requeue(let message):
                _ = try await store.requeue(id: id, token: token, reason: message, now: now)
                logger.warning("job \(id) requeued, not counted as a crash: \(message)", metadata: metadata)
                context.metrics.jobFinished(id, outcome: "requeued")
            case .acknowledgeCancel:
                let job = try await store.acknowledgeCancel(id: id, token: token, now: now)
                logger.info("job \(id) canceled\(Self.took(job, now))", metadata: metadata)
                context.metrics.jobFinished(id, outcome: "canceled")
            case .releaseLease(let reason):
                _ = try await store.releaseLease(id: id, token: token, now: now)
                context.metrics.jobFinished(id, outcome: "handed_back")
                if reason == .diskFull {
                    logger.warning(
                        "job \(id) checkpointed and handed back: the state filesystem is full", metadata: metadata)
                } else {
                    logger.info("job \(id) checkpointed and handed back for shutdown", metadata: metadata)
                }
            case .nothing(.databaseLost):
                logger.critical("job \(id) stopped: the job database is lost, nothing is recorded", metadata: metadata)
                context.metrics.jobFinished(id, outcome: "unrecorded")
                leases.released(id)
                context.monitor.finished(id)
                return
            case .nothing(.fenced):
                logger.critical(
                    "job \(id) stopped unrecorded: its lease was not renewed in time; it runs again (here or on another host) once its lease expires",
                    metadata: metadata)
                context.metrics.jobFinished(id, outcome: "unrecorded")
                leases.released(id)
                context.monitor.finished(id)
                return
            case .nothing:
                logger.warning("job \(id) stopped: another worker owns it now", metadata: metadata)
                context.metrics.jobFinished(id, outcome: "unrecorded")
            }
        } catch  where error.code == .leaseLost || error.code == .invalidTransition || error.code == .notFound {
            logger.warning("job \(id)'s outcome was not recorded: \(error.message)", metadata: metadata)
            context.metrics.jobFinished(id, outcome: "unrecorded")
        } catch {
            logger.error(
                "recording the job's outcome failed; retrying", metadata: metadata.merging(["error": "\(error)"]) { $1 }
            )
            unrecorded.add(Unrecorded.Pending(id: id, token: token, record: record))
            return
        }
        leases.released(id)
        context.monitor.finished(id)
        context.monitor.changed(id)
    }
}

/// When each lease this worker holds was granted or last renewed, as sent (the database's
/// instant is later, so a lease counted from here ends no earlier than counted).
final class LeaseTimes: Sendable {
    private let times = Mutex<[Int64: Date]>([:])

    func granted(_ id: Int64, at instant: Date) {
        times.withLock { if $0[id].map({ $0 < instant }) ?? true { $0[id] = instant } }
    }
    func released(_ id: Int64) { _ = times.withLock { $0.removeValue(forKey: id) } }
    func times(of ids: [Int64]) -> [Int64: Date] {
        times.withLock { all in all.filter { ids.contains($0.key) } }
    }
}

/// The running batch's `BatchScheduler`, shared by the engine's hooks (worker thread) and the
/// async side.
final class RunningBatch: Sendable {
    private let scheduler: Mutex<BatchScheduler>

    init(_ scheduler: BatchScheduler) { self.scheduler = Mutex(scheduler) }

    func withLock<T: Sendable>(_ body: (inout BatchScheduler) -> T) -> T { scheduler.withLock { body(&$0) } }
}

/// Outcomes the database refused (not fenced off: its filesystem was full), kept to record again.
final class Unrecorded: Sendable {
    struct Pending: Sendable {
        var id: Int64
        var token: LeaseToken
        var record: BatchScheduler.Record
    }
    private let pending = Mutex<[Pending]>([])

    func add(_ p: Pending) { pending.withLock { $0.append(p) } }
    func take() -> [Pending] {
        pending.withLock { p in
            defer { p = [] }
            return p
        }
    }
    var isEmpty: Bool { pending.withLock { $0.isEmpty } }
}

/// A flag set once (graceful shutdown; read from the worker thread between steps).
final class StopFlag: Sendable {
    private let flag = Atomic(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}
