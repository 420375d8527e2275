// The queue worker: claims jobs (a batch of same-pipeline, same-priority jobs), runs them on the
// inference thread, turns the engine's hooks into fenced database writes, and records outcomes.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GriditAPI
import GriditStore
import Logging
import ServiceLifecycle
import Synchronization

public struct WorkerService: Service {
    let context: DaemonContext
    let workerID: String

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
        defer { thread.stop() }
        let stopping = StopFlag()
        await withGracefulShutdownHandler {
            while !stopping.isSet {
                context.notifier.watchdog()
                let batch: ClaimedBatch?
                do {
                    batch = try await nextBatch(stopping: stopping)
                } catch {
                    logger.error("claiming failed; retrying", metadata: ["error": "\(error)"])
                    await context.monitor.waitForWake(timeout: .seconds(2))
                    continue
                }
                guard let batch else {
                    await context.monitor.waitForWake(timeout: pollInterval)
                    continue
                }
                await run(batch, executor: executor, thread: thread, stopping: stopping)
                await context.refreshStatus()
            }
        } onGracefulShutdown: {
            stopping.set()
            context.monitor.requestStopAll(.shutdown)
            context.monitor.wake()
        }
    }

    private var pollInterval: Duration { .milliseconds(Int64(context.configuration.pollInterval * 1000)) }

    private var watchdogTick: Duration {
        min(context.notifier.watchdogInterval ?? .seconds(1), .seconds(1))
    }

    // MARK: - Claiming

    /// Claims the next job and up to `maxBatchJobs - 1` more of its pipeline and priority.
    /// Jobs the worker cannot start (no disk space) are failed as transient right here.
    private func nextBatch(stopping: StopFlag) async throws(StoreError) -> ClaimedBatch? {
        let store = context.store
        let lease = context.configuration.leaseDuration
        guard let first = try await store.claim(workerID: workerID, leaseDuration: lease, now: Date()) else {
            return nil
        }
        var claimed = [first]
        let filter = ClaimFilter(pipelineDigest: first.job.pipelineDigest, priority: first.job.priority)
        while claimed.count < context.configuration.maxBatchJobs,
              let more = try await store.claim(workerID: workerID, leaseDuration: lease, matching: filter, now: Date())
        {
            claimed.append(more)
        }
        for c in claimed where context.faults.crashAfterClaim.contains(c.job.id) {
            context.logger.critical("test fault: crashing after claiming job \(c.job.id)", metadata: ["job.id": "\(c.job.id)"])
            abort()
        }
        if stopping.isSet {
            // Shutdown began while we claimed: hand them straight back.
            for c in claimed { _ = try? await store.releaseLease(id: c.job.id, token: c.token, now: Date()) }
            return nil
        }
        var items: [ExecutionItem] = []
        var tokens: [Int64: LeaseToken] = [:]
        for c in claimed {
            do {
                items.append(try prepare(c.job))
                tokens[c.job.id] = c.token
            } catch {
                await record(.failed(error), job: c.job, token: c.token, stopReason: nil)
            }
        }
        guard !items.isEmpty else { return try await nextBatch(stopping: stopping) }
        return ClaimedBatch(batch: ExecutionBatch(pipelineDigest: first.job.pipelineDigest, items: items), tokens: tokens)
    }

    struct ClaimedBatch: Sendable {
        var batch: ExecutionBatch
        var tokens: [Int64: LeaseToken]
    }

    /// Creates the job's work folder and the output's parent; checks free space.
    private func prepare(_ job: Job) throws(JobFailure) -> ExecutionItem {
        let layout = context.layout
        if let free = context.freeBytes(), free < context.configuration.minFreeBytes {
            throw JobFailure(
                .diskFull,
                "only \(formatBytes(free)) free on the filesystem of \(layout.root) (griditd needs "
                    + "\(formatBytes(context.configuration.minFreeBytes))); free some space or prune old jobs "
                    + "(`griditctl jobs prune`)")
        }
        let stored = job.stored
        let work = layout.workDirectory(job: job.id)
        let output = layout.outputDirectory(name: job.outputName())
        do {
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(
                atPath: (output as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        } catch {
            let errno = (error as NSError).userInfo[NSUnderlyingErrorKey].flatMap { ($0 as? NSError)?.code }
            throw JobFailure(errno == Int(ENOSPC) ? .diskFull : .transient, "preparing \(work): \(error.localizedDescription)")
        }
        return ExecutionItem(
            jobID: job.id, length: job.length, parameters: stored.parameters, workDirectory: work,
            outputDirectory: output, resumeFrom: job.progress.info, attempt: job.attempt)
    }

    // MARK: - Running

    private func run(
        _ claimed: ClaimedBatch, executor: any JobExecutor, thread: WorkerThread, stopping: StopFlag
    ) async {
        let batch = claimed.batch
        let tokens = claimed.tokens
        let ids = batch.items.map(\.jobID)
        let monitor = context.monitor
        let notifier = context.notifier
        monitor.started(ids)
        for id in ids { monitor.changed(id) }
        context.logger.info(
            "running", metadata: [
                "job.ids": "\(ids.map(String.init).joined(separator: ","))",
                "model.digest": "\(batch.pipelineDigest ?? "none")",
            ])
        await context.refreshStatus()

        let tracker = BatchTracker(ids: ids)
        let (signals, signal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let hooks = ExecutionHooks(
            durable: { id, progress in
                tracker.durable(id, progress)
                signal.yield()
            },
            step: { id, step in
                tracker.activity(id)
                monitor.publish(step: step, for: id)
                notifier.watchdog()
                signal.yield()
            },
            shouldStop: { id in
                monitor.stopReason(id) ?? (stopping.isSet ? .shutdown : nil)
            })

        let outcomes = await withTaskGroup(of: [Int64: ExecutionOutcome]?.self) { group in
            group.addTask {
                await thread.run { executor.execute(batch, hooks: hooks) }
            }
            group.addTask {
                for await _ in signals {
                    await sync(tracker, tokens: tokens)
                    try? await Task.sleep(for: .milliseconds(200))
                }
                return nil
            }
            var result: [Int64: ExecutionOutcome] = [:]
            for await outcome in group {
                if let outcome {
                    result = outcome
                    signal.finish()
                }
            }
            return result
        }
        await sync(tracker, tokens: tokens, final: true)

        for item in batch.items {
            defer { monitor.finished(item.jobID) }
            // Unreadable now (database trouble): the lease runs out and the reaper requeues it.
            guard let token = tokens[item.jobID], let job = try? await context.store.get(id: item.jobID) else { continue }
            let outcome = outcomes[item.jobID]
                ?? .failed(JobFailure(.internalError, "the engine returned no outcome for job \(item.jobID)"))
            await record(outcome, job: job, token: token, stopReason: monitor.stopReason(item.jobID), item: item)
        }
    }

    /// Writes the durable progress and heartbeats (fenced by the lease token); a cancel seen in
    /// the answer, or a lost lease, becomes a stop request for the engine.
    private func sync(_ tracker: BatchTracker, tokens: [Int64: LeaseToken], final: Bool = false) async {
        let lease = context.configuration.leaseDuration
        let now = Date()
        for pending in tracker.take(now: now, heartbeatEvery: lease / 3, final: final) {
            guard let token = tokens[pending.id] else { continue }
            do {
                var status: LeaseStatus?
                if let progress = pending.progress {
                    status = try await context.store.saveProgress(
                        id: pending.id, token: token, progress: JobProgress(progress), now: now)
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

    /// The job's outcome as a fenced state transition.
    private func record(
        _ outcome: ExecutionOutcome, job: Job, token: LeaseToken, stopReason: StopReason?, item: ExecutionItem? = nil
    ) async {
        let store = context.store
        let logger = context.logger
        let now = Date()
        var metadata: Logger.Metadata = ["job.id": "\(job.id)", "stage": "\(job.progress.stage.rawValue)"]
        do {
            switch outcome {
            case .succeeded:
                let output = item?.outputDirectory ?? context.layout.outputDirectory(name: job.outputName())
                _ = try await store.complete(id: job.id, token: token, outputDir: output, now: now)
                try? FileManager.default.removeItem(atPath: context.layout.workDirectory(job: job.id))
                metadata["output"] = "\(output)"
                logger.info("job succeeded", metadata: metadata)
            case .failed(let failure):
                let after = try await store.fail(
                    id: job.id, token: token, errorClass: failure.errorClass.rawValue, message: failure.message,
                    retryable: failure.errorClass.retryable, now: now)
                metadata["error.class"] = "\(failure.errorClass.rawValue)"
                metadata["state"] = "\(after.state.rawValue)"
                logger.warning("job failed: \(failure.message)", metadata: metadata)
            case .interrupted:
                switch stopReason {
                case .cancel:
                    _ = try await store.acknowledgeCancel(id: job.id, token: token, now: now)
                    logger.info("job canceled", metadata: metadata)
                case .shutdown:
                    _ = try await store.releaseLease(id: job.id, token: token, now: now)
                    logger.info("job checkpointed and handed back for shutdown", metadata: metadata)
                case .leaseLost:
                    logger.warning("job stopped: another worker owns it now", metadata: metadata)
                case nil:
                    _ = try await store.fail(
                        id: job.id, token: token, errorClass: JobFailure.Class.internalError.rawValue,
                        message: "the engine stopped the job although nobody asked it to", retryable: false, now: now)
                }
            }
        } catch where error.code == .leaseLost || error.code == .invalidTransition {
            logger.warning("the job's outcome was not recorded: \(error.message)", metadata: metadata)
        } catch {
            logger.error("recording the job's outcome failed", metadata: metadata.merging(["error": "\(error)"]) { $1 })
        }
        context.monitor.changed(job.id)
    }
}

/// Set once, at graceful shutdown; read from the worker thread between steps.
final class StopFlag: Sendable {
    private let flag = Atomic(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}

/// What the hooks reported since the last database sync, per job of the running batch.
final class BatchTracker: Sendable {
    struct Pending {
        var id: Int64
        var progress: JobProgressInfo?
        var heartbeat: Bool
    }

    private struct Entry {
        var progress: JobProgressInfo?
        var active = false
        var lastHeartbeat = Date()
    }

    private let entries: Mutex<[Int64: Entry]>

    init(ids: [Int64]) {
        entries = Mutex(Dictionary(uniqueKeysWithValues: ids.map { ($0, Entry()) }))
    }

    func durable(_ id: Int64, _ progress: JobProgressInfo) {
        entries.withLock { e in
            e[id]?.progress = progress
            e[id]?.active = true
        }
    }

    func activity(_ id: Int64) { entries.withLock { $0[id]?.active = true } }

    /// Progress to save, and a heartbeat for each job that made progress since its last one
    /// when `heartbeatEvery` has passed: a hung engine stops heartbeating, so its lease expires.
    func take(now: Date, heartbeatEvery: TimeInterval, final: Bool) -> [Pending] {
        entries.withLock { e in
            var result: [Pending] = []
            for (id, var entry) in e.sorted(by: { $0.key < $1.key }) {
                let due = entry.active && now.timeIntervalSince(entry.lastHeartbeat) >= heartbeatEvery && !final
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
