// What the worker needs from the engine (GriditEngine), as a protocol so that the daemon builds
// and is tested without it. The engine adapter implements `JobEngine` over `LoadedPipeline`,
// resumable runs in a work directory and batched execution (docs/ENGINE.md, "The API the daemon calls").

import Foundation
import GriditAPI
import GriditJobSpec

/// One job of a batch, as the worker hands it to the engine.
public struct ExecutionItem: Sendable, Hashable, Codable {
    public var jobID: Int64
    /// What the job asks for, as it was submitted, the seed filled in.
    public var spec: JobSpec
    /// The job's own resumable state: the engine keeps its durable checkpoints here and resumes
    /// from them when the folder already holds some (after a crash, a shutdown, a retry).
    public var workDirectory: String
    /// Where `finish(into:)` must put the output folder (written under a temporary name, then
    /// renamed); its parent exists. If it already holds this job's finished output (griditd died
    /// after the rename, before recording the success), the run is done: return `.succeeded`.
    public var outputDirectory: String
    /// The last durable progress the database holds, for logs (the work directory is the truth).
    public var resumeFrom: JobProgress
    /// 1 for the first attempt.
    public var attempt: Int

    public init(
        jobID: Int64, spec: JobSpec, workDirectory: String, outputDirectory: String, resumeFrom: JobProgress,
        attempt: Int
    ) {
        self.jobID = jobID
        self.spec = spec
        self.workDirectory = workDirectory
        self.outputDirectory = outputDirectory
        self.resumeFrom = resumeFrom
        self.attempt = attempt
    }
}

/// Jobs that share one pipeline (manifest digest) and run as one batch: stage-1 grids of
/// different jobs in one batched forward, stage-2 frames batched across jobs.
public struct ExecutionBatch: Sendable, Hashable, Codable {
    /// Nil only for jobs submitted while the daemon had no model store.
    public var pipelineDigest: String?
    public var items: [ExecutionItem]
    /// The pipeline as griditd resolved it for an engine in a worker process (its files checked
    /// against their digests, their paths absolute), in the engine's own encoding; nil when the
    /// engine resolves it itself. Opaque to the daemon.
    public var resolved: Data?

    public init(pipelineDigest: String?, items: [ExecutionItem], resolved: Data? = nil) {
        self.pipelineDigest = pipelineDigest
        self.items = items
        self.resolved = resolved
    }
}

/// Why the worker wants a run to stop at the next step boundary.
public enum StopReason: String, Sendable, Hashable, Codable {
    /// A user canceled the job.
    case cancel
    /// SIGTERM: checkpoint and hand the job back to the queue.
    case shutdown
    /// Another worker owns the job now (lease expired); write nothing more.
    case leaseLost = "lease_lost"
    /// The state filesystem filled up: checkpoint and hand the job back, so that the space left
    /// goes to the database; it starts again once there is room.
    case diskFull = "disk_full"
    /// The job database was deleted or replaced under griditd: stop, record nothing more.
    case databaseLost = "database_lost"
    /// Self-fencing: the lease could not be renewed in time (the database unreachable), so
    /// another host may soon take the job; stop and record nothing more.
    case fenced
}

/// Callbacks the engine calls one at a time, on its own (worker) thread or on the second thread
/// it runs stage 2 on. All are cheap and never block on I/O.
public struct ExecutionHooks: Sendable {
    /// Asked between batched forwards: jobs (of the batch's pipeline) to add to the running batch,
    /// so a new job starts without waiting for the others to finish. Each is the engine's until it
    /// reports it through `finished`.
    public var admit: @Sendable () -> [ExecutionItem]
    /// Exactly once per job (given or admitted), as soon as it leaves the batch: succeeded (its
    /// output folder complete), failed, or interrupted (its work directory resumable).
    public var finished: @Sendable (_ jobID: Int64, _ outcome: ExecutionOutcome) -> Void
    /// After each durable unit (a finished stage-1 grid, a finished stage-2 frame batch): the
    /// job's new resume point. The worker saves it in the database.
    public var durable: @Sendable (_ jobID: Int64, _ progress: JobProgress) -> Void
    /// After each denoising step: the live progress bar. Also the worker's liveness signal
    /// (heartbeats and the systemd watchdog), so an engine must call it at least every few
    /// seconds while it works, model loading included.
    public var step: @Sendable (_ jobID: Int64, _ progress: StepProgress) -> Void
    /// Checked between denoising steps; non-nil ⇒ throw the engine's typed "interrupted" error
    /// for that job, leaving its work directory resumable.
    public var shouldStop: @Sendable (_ jobID: Int64) -> StopReason?
    /// The liveness signal of work before the first step that takes long (copying the job's
    /// model from the cluster's origin): keeps the job's lease renewed, shows no progress.
    public var working: @Sendable (_ jobID: Int64) -> Void

    public init(
        admit: @escaping @Sendable () -> [ExecutionItem] = { [] },
        finished: @escaping @Sendable (Int64, ExecutionOutcome) -> Void,
        durable: @escaping @Sendable (Int64, JobProgress) -> Void,
        step: @escaping @Sendable (Int64, StepProgress) -> Void,
        shouldStop: @escaping @Sendable (Int64) -> StopReason?,
        working: @escaping @Sendable (Int64) -> Void = { _ in }
    ) {
        self.admit = admit
        self.finished = finished
        self.durable = durable
        self.step = step
        self.shouldStop = shouldStop
        self.working = working
    }
}

/// A classified job failure. The class decides what the queue does: invalid input and missing
/// or corrupt models fail at once; transient errors (disk full, I/O) are retried with backoff.
public struct JobFailure: Error, Sendable, Hashable, Codable, CustomStringConvertible {
    public struct Class: RawRepresentable, Sendable, Hashable, Codable {
        public var rawValue: String
        public var retryable: Bool
        public init(rawValue: String) {
            self.rawValue = rawValue
            self.retryable = false
        }
        public init(_ rawValue: String, retryable: Bool) {
            self.rawValue = rawValue
            self.retryable = retryable
        }

        /// Parameters the pipeline cannot run (e.g. more context rows than the grid has).
        public static let invalidInput = Class("invalid_input", retryable: false)
        /// The job's pipeline digest is not in the model store.
        public static let modelMissing = Class("model_missing", retryable: false)
        /// A blob failed its digest check (it is quarantined).
        public static let digestMismatch = Class("digest_mismatch", retryable: false)
        /// No space left on the work or output filesystem.
        public static let diskFull = Class("disk_full", retryable: true)
        /// Any other I/O or resource error worth another attempt (EIO, ENOMEM, ...).
        public static let transient = Class("transient", retryable: true)
        /// A bug: the engine broke an invariant. Not retried.
        public static let internalError = Class("internal", retryable: false)

        // Both fields: the default coding of a RawRepresentable would drop `retryable`.
        enum CodingKeys: String, CodingKey { case name, retryable }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(try c.decode(String.self, forKey: .name), retryable: try c.decode(Bool.self, forKey: .retryable))
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(rawValue, forKey: .name)
            try c.encode(retryable, forKey: .retryable)
        }
    }

    public var errorClass: Class
    public var message: String

    public init(_ errorClass: Class, _ message: String) {
        self.errorClass = errorClass
        self.message = message
    }

    public var description: String { "\(errorClass.rawValue): \(message)" }
}

/// How one job of a batch ended.
public enum ExecutionOutcome: Sendable, Hashable, Codable {
    /// The output folder is complete at `ExecutionItem.outputDirectory`.
    case succeeded
    case failed(JobFailure)
    /// `shouldStop` returned non-nil; the work directory is resumable.
    case interrupted
    /// The engine's worker process died (or was killed) while it ran the job; the work
    /// directory is resumable at its last durable unit.
    case crashed(WorkerCrash)
}

/// How the engine's worker process ended under a job, as griditd's supervisor judged it.
public struct WorkerCrash: Sendable, Hashable, Codable, CustomStringConvertible {
    /// True when the job is held responsible (a crash signal, an abnormal exit, out of memory, a
    /// stall): it counts toward `dead`. False when it was killed from outside or to stop another
    /// job: the job is requeued as if nothing happened.
    public var counted: Bool
    public var message: String

    public init(counted: Bool, message: String) {
        self.counted = counted
        self.message = message
    }

    public var description: String { message }
}

/// The engine as the worker drives it.
///
/// `execute` runs on a dedicated worker thread (never on Swift's cooperative pool) and may block
/// it for minutes; the daemon never calls it concurrently with itself. The engine loads the
/// pipeline for the batch's digest (through the model store's keep-alive cache), runs the
/// batch and the jobs `hooks.admit` adds to it, and reports through the hooks.
public protocol JobEngine: Sendable {
    /// Checks a submit against the pipeline before the job row exists (cheap: no model is run)
    /// and returns its estimated compute: seconds at the nominal rate `griditd run --dry-run`
    /// assumes (what the per-user work limit adds up). Throws `.invalidInput` with a message
    /// naming the parameter, or `.modelMissing`.
    func validate(_ spec: JobSpec, pipelineDigest: String?) async throws(JobFailure) -> TimeInterval

    /// `validate`, and the plan it estimated as text (a dry run).
    func plan(
        _ spec: JobSpec, pipelineDigest: String?
    ) async throws(JobFailure) -> (plan: String, seconds: TimeInterval)

    /// Runs every item (and every admitted one) to completion, failure or interruption, calling
    /// `hooks.finished` once for each, and returns when none is left. A job it never reports is
    /// recorded as an internal failure.
    func execute(_ batch: ExecutionBatch, hooks: ExecutionHooks)

    /// The worker process the engine runs in, for `status` (nil: the engine runs in griditd).
    var worker: EngineWorkerInfo? { get }

    /// griditd is stopping and runs no more batches: end what the engine keeps (its process).
    func shutdown()
}

extension JobEngine {
    public func plan(
        _ spec: JobSpec, pipelineDigest: String?
    ) async throws(JobFailure) -> (plan: String, seconds: TimeInterval) {
        ("", try await validate(spec, pipelineDigest: pipelineDigest))
    }

    public var worker: EngineWorkerInfo? { nil }
    public func shutdown() {}
}
