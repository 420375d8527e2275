// The daemon's `JobEngine` over GriditEngine: a batch of jobs (one pipeline digest) becomes
// resumable `SequenceRun`s in the jobs' work directories, executed together on the worker thread
// (stage-1 grids of every job in one batched forward, stage-2 frames in batches across jobs),
// with jobs joining between batches; each finished run writes its output folder at once.

import Foundation
import GriditAPI
import GriditCheckpoint
import GriditDaemon
import GriditDiffusion
import GriditEngine
import GriditJobSpec
import GriditModelStore
import GriditTensor
import Logging
import NIOPosix
import Synchronization

public final class InProcessEngine: JobEngine {
    /// Nil in the engine worker process: its batches carry their resolved pipeline.
    let models: ModelStore?
    /// Loaded pipelines by manifest digest; one mapping per blob, shared by every job.
    let cache: KeepAliveCache<LoadedPipeline>
    let blocking: NIOThreadPool
    let options: ExecutionOptions
    let outputOptions: OutputOptions
    let logger: Logger
    /// Configs (no weights) by manifest digest, for validating submits: content-addressed, so
    /// never stale.
    private let configurations = Mutex<[String: PipelineConfiguration]>([:])

    /// The daemon checks its own length limit at submit; the engine checks the pipeline's.
    public init(
        models: ModelStore?, cache: KeepAliveCache<LoadedPipeline>, blocking: NIOThreadPool, options: ExecutionOptions,
        outputOptions: OutputOptions = OutputOptions(), logger: Logger
    ) {
        self.models = models
        self.cache = cache
        self.blocking = blocking
        self.options = options
        self.outputOptions = outputOptions
        self.logger = logger
    }

    // MARK: - Validation at submit

    public func validate(_ spec: JobSpec, pipelineDigest: String?) async throws(JobFailure) -> TimeInterval {
        try await plan(spec, pipelineDigest: pipelineDigest).seconds
    }

    public func plan(
        _ spec: JobSpec, pipelineDigest: String?
    ) async throws(JobFailure) -> (plan: String, seconds: TimeInterval) {
        guard let pipelineDigest else { throw Self.noModel }
        return try await blocking.blocking(
            { () throws(JobFailure) in
                let configuration = try self.configuration(pipelineDigest)
                do {
                    let plan = try SequencePlan(
                        settings: try spec.settings(for: configuration), pipeline: configuration)
                    let cost = CostModel.nominal(configuration)
                    return (plan.render(cost: cost), plan.estimatedSeconds(cost))
                } catch {
                    throw Self.failure(EngineError.classify(error))
                }
            }, stopped: JobFailure(.transient, "griditd is stopping"))
    }

    /// The pipeline's configuration, read once per digest (the blobs' cheap integrity check included).
    func configuration(_ digest: String) throws(JobFailure) -> PipelineConfiguration {
        if let known = configurations.withLock({ $0[digest] }) { return known }
        return try configuration(try resolve(digest))
    }

    private func configuration(_ pipeline: ResolvedPipeline) throws(JobFailure) -> PipelineConfiguration {
        let digest = pipeline.digest.description
        if let known = configurations.withLock({ $0[digest] }) { return known }
        let configuration: PipelineConfiguration
        do { configuration = try PipelineConfiguration(spec: pipeline.spec) } catch {
            throw Self.failure(EngineError.classify(error))
        }
        configurations.withLock { $0[digest] = configuration }
        return configuration
    }

    /// The version's pipeline with absolute blob paths, after the store's integrity check (a
    /// blob that fails it is quarantined: `digest_mismatch`). In a cluster, a version this
    /// host's store lacks is pulled from the model origin first, and runs from this host's copy;
    /// `working` is called about once a second while it is copied.
    public func resolve(_ digest: String, working: (@Sendable () -> Void)? = nil) throws(JobFailure) -> ResolvedPipeline
    {
        guard let blob = BlobDigest(digest) else {
            throw JobFailure(.modelMissing, "'\(digest.prefix(80))' is not a manifest digest")
        }
        guard let models else {
            throw JobFailure(.internalError, "the engine worker got a batch without its resolved pipeline")
        }
        do {
            do { return try models.resolvePipeline(blob) } catch  where error.code == .notFound && models.origin != nil
            {}
            var last = ContinuousClock.now
            let copying = working.map { signal in
                {
                    guard ContinuousClock.now - last >= .seconds(1) else { return }
                    last = ContinuousClock.now
                    signal()
                }
            }
            if let pulled = try models.pull(blob, copying: copying) {
                logger.notice(
                    "pulled model \(digest) from the model origin \(models.origin!): \(formatBytes(pulled.bytesWritten)) copied",
                    metadata: ["model.digest": "\(digest)"])
            }
            return try models.resolvePipeline(blob)
        } catch {
            throw Self.failure(error, digest: digest)
        }
    }

    // MARK: - Execution

    public func execute(_ batch: ExecutionBatch, hooks: ExecutionHooks) {
        guard let digest = batch.pipelineDigest else {
            for item in batch.items + hooks.admit() { hooks.finished(item.jobID, .failed(Self.noModel)) }
            return
        }
        let pipeline: ResolvedPipeline
        do throws(JobFailure) {
            if let data = batch.resolved {
                do { pipeline = try JSONDecoder().decode(ResolvedPipeline.self, from: data) } catch {
                    throw JobFailure(.internalError, "the batch's resolved pipeline does not decode: \(error)")
                }
            } else {
                let ids = batch.items.map(\.jobID)
                pipeline = try resolve(digest) { for id in ids { hooks.working(id) } }
            }
        } catch {
            if error.errorClass == .digestMismatch { unload(digest) }
            logger.error("loading the model failed: \(error.message)", metadata: ["model.digest": "\(digest)"])
            for item in batch.items + hooks.admit() { hooks.finished(item.jobID, .failed(error)) }
            return
        }
        // A loaded pipeline has one precision, so jobs asking for another one run after this
        // batch, each precision as a batch of its own (`WaitingJobs`). Jobs that join the first
        // batch while others wait queue behind them: a steady stream would make them wait for ever.
        let waiting = WaitingJobs(precisions(batch.items, pipeline: pipeline, hooks: hooks), hooks: hooks)
        var first = true
        while let (precision, group) = waiting.nextGroup() {
            let admits = first
            first = false
            run(group, pipeline: pipeline, precision: precision, hooks: hooks, waiting: waiting) {
                waiting.tend(now: true)
                guard admits else { return [] }
                let new = self.precisions(hooks.admit(), pipeline: pipeline, hooks: hooks)
                return waiting.admit(new, joining: precision)
            }
        }
    }

    /// Jobs of the batch waiting for a group of another precision to end. While they wait they
    /// are kept alive (their leases renewed) and end at once when stopped (a cancel): tended from
    /// the running group's steps, admissions and output writing, at most once a second, since a
    /// batched forward of a large model takes minutes between admissions.
    final class WaitingJobs: Sendable {
        private let state:
            Mutex<(items: [(item: ExecutionItem, precision: Precision)], tended: ContinuousClock.Instant)>
        private let hooks: ExecutionHooks

        init(_ items: [(item: ExecutionItem, precision: Precision)], hooks: ExecutionHooks) {
            state = Mutex((items, .now))
            self.hooks = hooks
        }

        /// The first waiting job's precision and every job of it, taken out of the queue.
        func nextGroup() -> (Precision, [ExecutionItem])? {
            state.withLock { s in
                guard let precision = s.items.first?.precision else { return nil }
                let group = s.items.filter { $0.precision == precision }.map(\.item)
                s.items.removeAll { $0.precision == precision }
                return (precision, group)
            }
        }

        /// Of `new` jobs, those of `precision` join the running group while nothing waits; the
        /// others wait.
        func admit(
            _ new: [(item: ExecutionItem, precision: Precision)], joining precision: Precision
        ) -> [ExecutionItem] {
            state.withLock { s in
                let joining = s.items.isEmpty ? new.filter { $0.precision == precision }.map(\.item) : []
                s.items += new.filter { job in !joining.contains { $0.jobID == job.item.jobID } }
                return joining
            }
        }

        /// Ends the waiting jobs asked to stop, and signals life for the others; `now` even if
        /// tended less than a second ago.
        func tend(now force: Bool = false) {
            let hooks = self.hooks
            state.withLock { s in
                let now = ContinuousClock.now
                guard force || now - s.tended >= .seconds(1) else { return }
                s.tended = now
                s.items.removeAll { waiting in
                    guard hooks.shouldStop(waiting.item.jobID) != nil else {
                        hooks.working(waiting.item.jobID)
                        return false
                    }
                    hooks.finished(waiting.item.jobID, .interrupted)
                    return true
                }
            }
        }
    }

    /// Drops the cached copies of a version whose blobs failed their check.
    private func unload(_ digest: String) {
        for precision in Precision.allCases { cache.unload(Self.cacheKey(digest, precision)) }
    }

    /// The precision each item runs in; an item whose request is invalid is reported failed here.
    private func precisions(
        _ items: [ExecutionItem], pipeline: ResolvedPipeline, hooks: ExecutionHooks
    )
        -> [(item: ExecutionItem, precision: Precision)]
    {
        items.compactMap { item in
            do throws(JobFailure) {
                let configuration = try configuration(pipeline)
                do {
                    return (item, try item.spec.settings(for: configuration).precision)
                } catch {
                    throw Self.failure(EngineError.classify(error))
                }
            } catch {
                hooks.finished(item.jobID, .failed(error))
                return nil
            }
        }
    }

    /// Runs `items` (and what `admit` adds) together on the pipeline loaded in `precision`.
    private func run(
        _ items: [ExecutionItem], pipeline resolved: ResolvedPipeline, precision: Precision, hooks: ExecutionHooks,
        waiting: WaitingJobs, admit: () -> [ExecutionItem]
    ) {
        let lease: CacheLease<LoadedPipeline>
        do {
            lease = try load(resolved, precision: precision)
        } catch {
            logger.error(
                "loading the model failed: \(error.message)",
                metadata: ["model.digest": "\(resolved.digest.description)"])
            for item in items + admit() { hooks.finished(item.jobID, .failed(error)) }
            return
        }
        defer { lease.release() }
        let pipeline = lease.value
        var running: [ObjectIdentifier: ExecutionItem] = [:]

        /// A run for `item`, or nil once the item has been reported (it could not start, or its
        /// output is already complete).
        func start(_ item: ExecutionItem) -> SequenceRun? {
            do throws(JobFailure) {
                let run = try makeRun(item, pipeline: pipeline, hooks: hooks, waiting: waiting)
                if let other = run.startedOverFrom {
                    logger.notice(
                        "job \(item.jobID) starts over: its work folder was computed in \(other), which this host runs as \(run.settings.precisionUsed) (its CPU); frames of both could not be continued bit for bit",
                        metadata: ["job.id": "\(item.jobID)"])
                }
                if FileManager.default.fileExists(atPath: item.outputDirectory) {
                    // griditd died after the output's rename, before the database said so.
                    guard run.isFinished(at: item.outputDirectory) else {
                        throw JobFailure(
                            .invalidInput,
                            "the output folder \(item.outputDirectory) exists and holds something else; remove it, "
                                + "then `griditctl jobs retry \(item.jobID)`")
                    }
                    hooks.finished(item.jobID, .succeeded)
                    return nil
                }
                if run.gridsDone > 0 || run.framesDone > 0 {
                    // What the work folder held (written here or, under a shared root, on another host).
                    logger.notice(
                        "job \(item.jobID) resumes from its work folder: \(run.gridsDone) of \(run.plan.grids) grids, \(run.framesDone) of \(run.plan.frames) frames done",
                        metadata: [
                            "job.id": "\(item.jobID)", "grids.done": "\(run.gridsDone)",
                            "frames.done": "\(run.framesDone)",
                        ])
                }
                running[ObjectIdentifier(run)] = item
                return run
            } catch {
                hooks.finished(item.jobID, .failed(error))
                return nil
            }
        }

        let runs = items.compactMap(start)
        SequenceRun.execute(
            runs, options: options,
            admit: { admit().compactMap(start) },
            finished: { run, result in
                guard let item = running.removeValue(forKey: ObjectIdentifier(run)) else { return }
                let others = running.values.map(\.jobID)
                hooks.finished(
                    item.jobID,
                    self.conclude(run, result, item: item, hooks: hooks, others: others, waiting: waiting))
            })
    }

    /// The cache key of a loaded pipeline: its manifest digest, with the precision when not fp32.
    static func cacheKey(_ digest: String, _ precision: Precision) -> String {
        precision == .fp32 ? digest : "\(digest)+\(precision.rawValue)"
    }

    /// `cacheKey`'s digest and precision.
    static func parseCacheKey(_ key: String) -> (digest: String, precision: Precision) {
        let parts = key.split(separator: "+", maxSplits: 1)
        guard parts.count == 2, let precision = Precision(rawValue: String(parts[1])) else { return (key, .fp32) }
        return (String(parts[0]), precision)
    }

    /// The cached pipeline of a resolved version, loading it (mapping its weights) if needed.
    private func load(
        _ resolved: ResolvedPipeline, precision: Precision
    ) throws(JobFailure) -> CacheLease<LoadedPipeline> {
        let digest = resolved.digest.description
        let spec = resolved.spec
        let byRole = resolved.blobs
        // The weight files are what the pipeline maps (and gc must keep while it does).
        var blobs: [BlobDigest: String] = [:]
        for (role, path) in spec.files where role.isWeights {
            if let d = byRole[role] { blobs[d] = path }
        }
        let identity = PipelineIdentity(
            digest: digest, blobs: byRole.reduce(into: [:]) { $0[$1.key.rawValue] = $1.value.description })
        // LoadedPipeline classifies what it catches, and knows nothing of the store: a blob that
        // cannot be mapped (I/O) keeps the store's class through it.
        var mapFailure: ModelStoreError?
        do {
            return try cache.lease(Self.cacheKey(digest, precision), blobs: blobs) { context in
                try LoadedPipeline(
                    spec: spec, identity: identity, precision: precision,
                    map: { role, path in
                        guard let blob = byRole[role] else { return try MappedFile(path: path) }
                        do throws(ModelStoreError) { return try context.map(blob, path: path) } catch {
                            mapFailure = error
                            throw error
                        }
                    })
            }
        } catch let error as ModelStoreError {
            throw Self.failure(error, digest: digest)
        } catch {
            if let mapFailure { throw Self.failure(mapFailure, digest: digest) }
            throw Self.failure(EngineError.classify(error))
        }
    }

    /// A run bound to the job's work directory (resuming what is there), reporting through `hooks`.
    private func makeRun(
        _ item: ExecutionItem, pipeline: LoadedPipeline, hooks: ExecutionHooks, waiting: WaitingJobs
    ) throws(JobFailure)
        -> SequenceRun
    {
        let id = item.jobID
        do {
            return try SequenceRun(
                pipeline: pipeline, spec: item.spec, workDirectory: item.workDirectory,
                hooks: RunHooks(
                    onProgress: { hooks.durable(id, $0) },
                    onStep: {
                        hooks.step(id, $0)
                        waiting.tend()
                    },
                    shouldStop: { hooks.shouldStop(id) != nil }),
                startsOverOnOtherPrecision: true)
        } catch {
            throw Self.failure(EngineError.classify(error))
        }
    }

    /// How a run that left the batch ends: a complete one writes its output folder now.
    private func conclude(
        _ run: SequenceRun, _ result: Result<Void, EngineError>, item: ExecutionItem, hooks: ExecutionHooks,
        others: [Int64], waiting: WaitingJobs
    )
        -> ExecutionOutcome
    {
        switch result {
        case .success:
            do {
                // Every job of the batch waits meanwhile (the output is written under the batch's
                // lock): all of them are kept alive, at most once a second.
                var signalled = ContinuousClock.now
                try run.finish(into: item.outputDirectory, job: item.jobID, options: outputOptions) {
                    guard ContinuousClock.now - signalled >= .seconds(1) else { return }
                    signalled = .now
                    for id in [item.jobID] + others { hooks.working(id) }
                    waiting.tend()
                }
                return .succeeded
            } catch {
                // Another run of this job put the same output in place while this one ran: under
                // a shared root, a host stopped past its lease (its engine goes on until it sees the
                // stop) and its successor can both finish the job, either first. Same bytes.
                if run.isFinished(at: item.outputDirectory) {
                    logger.notice(
                        "job \(item.jobID)'s output was put in place by another run of it meanwhile (one of two hosts lost its lease): the same run, kept",
                        metadata: ["job.id": "\(item.jobID)", "output": "\(item.outputDirectory)"])
                    return .succeeded
                }
                return .failed(Self.failure(EngineError.classify(error)))
            }
        case .failure(let error) where error.code == .interrupted:
            return .interrupted
        case .failure(let error):
            return .failed(Self.failure(error))
        }
    }

    // MARK: - Errors

    static let noModel = JobFailure(
        .modelMissing,
        "the job names no pipeline (it was submitted to a griditd without a model store); submit it again")

    static func failure(_ error: EngineError) -> JobFailure {
        let errorClass: JobFailure.Class =
            switch error.code {
            case .invalidInput: .invalidInput
            case .diskFull: .diskFull
            case .transient: .transient
            case .internal: .internalError
            default: .internalError  // `interrupted` is an outcome, never a failure
            }
        return JobFailure(errorClass, error.description)
    }

    static func failure(_ error: ModelStoreError, digest: String) -> JobFailure {
        let errorClass: JobFailure.Class =
            switch error.code {
            case .notFound: .modelMissing
            case .digestMismatch: .digestMismatch
            case .invalidInput, .invalidReference: .invalidInput
            case .noSpace: .diskFull
            case .io, .database, .permission: .transient
            default: .internalError
            }
        var message = "model \(digest): \(error.description)"
        if error.code == .notFound { message += "; import it again (`griditctl models import PATH --name NAME:TAG`)" }
        return JobFailure(errorClass, message)
    }
}
