// Wire types of griditd's job API (`/v1/jobs...`), shared by the daemon and griditctl.
// JSON keys are snake_case; dates are ISO 8601 (UTC, second precision) through `APICoding`.
// Request types reject unknown keys, so a misspelt field is a 400, never silently ignored.
import Foundation

/// The job states, as the wire spells them (the same seven as the store's `JobState`).
public enum JobStateName: String, Codable, CaseIterable, Sendable {
    case queued, running, retryable, succeeded, failed, canceled, dead

    public var isTerminal: Bool {
        switch self {
        case .queued, .running, .retryable: false
        case .succeeded, .failed, .canceled, .dead: true
        }
    }
}

/// Generation parameters of a job: the engine's `SequenceRequest` fields, minus `length`, which
/// the job carries itself. Every field is optional; nil means the pipeline's default.
public struct GenerationParameters: Codable, Hashable, Sendable {
    /// Noise seed; the daemon picks one at submit when absent, so the job is reproducible.
    public var seed: UInt64?
    /// `gridit` or `official`.
    public var mode: String?
    /// Stage-1 sampler: `ddpm` or `ddim`.
    public var sampler: String?
    /// Stage-1 respacing: a step count ("250"), "ddimN" or "trailingN". A JSON integer is accepted too.
    public var steps: String?
    public var srSampler: String?
    public var srSteps: String?
    /// DDIM η.
    public var eta: Double?
    public var contextRows: Int?
    /// gridit mode's carried frames: `renoised` or `clean`.
    public var context: String?
    /// Skip stage 2 (frames stay at the low resolution).
    public var noSR: Bool?
    /// `fp32` or `bf16`.
    public var precision: String?

    public init(
        seed: UInt64? = nil, mode: String? = nil, sampler: String? = nil, steps: String? = nil,
        srSampler: String? = nil, srSteps: String? = nil, eta: Double? = nil, contextRows: Int? = nil,
        context: String? = nil, noSR: Bool? = nil, precision: String? = nil
    ) {
        self.seed = seed
        self.mode = mode
        self.sampler = sampler
        self.steps = steps
        self.srSampler = srSampler
        self.srSteps = srSteps
        self.eta = eta
        self.contextRows = contextRows
        self.context = context
        self.noSR = noSR
        self.precision = precision
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case seed, mode, sampler, steps, eta, precision, context
        case srSampler = "sr_sampler"
        case srSteps = "sr_steps"
        case contextRows = "context_rows"
        case noSR = "no_sr"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue), in: "parameters")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
        mode = try c.decodeIfPresent(String.self, forKey: .mode)
        sampler = try c.decodeIfPresent(String.self, forKey: .sampler)
        steps = try Self.decodeSteps(c, .steps)
        srSampler = try c.decodeIfPresent(String.self, forKey: .srSampler)
        srSteps = try Self.decodeSteps(c, .srSteps)
        eta = try c.decodeIfPresent(Double.self, forKey: .eta)
        contextRows = try c.decodeIfPresent(Int.self, forKey: .contextRows)
        context = try c.decodeIfPresent(String.self, forKey: .context)
        noSR = try c.decodeIfPresent(Bool.self, forKey: .noSR)
        precision = try c.decodeIfPresent(String.self, forKey: .precision)
    }

    /// Steps are strings ("250", "ddim50"); `"steps": 50` means "50".
    private static func decodeSteps(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> String? {
        if let n = try? c.decodeIfPresent(Int.self, forKey: key) { return String(n) }
        return try c.decodeIfPresent(String.self, forKey: key)
    }
}

/// `POST /v1/jobs`.
public struct SubmitJobRequest: Codable, Hashable, Sendable {
    /// Number of frames to generate.
    public var length: Int
    /// `NAME:TAG`, `NAME@sha256:<hex>` or `sha256:<hex>`; nil means the daemon's default model.
    public var model: String?
    public var parameters: GenerationParameters
    /// Higher runs first; FIFO within a priority.
    public var priority: Int?
    /// The same caller submitting the same key gets the existing job back.
    public var idempotencyKey: String?
    /// Output folder, relative to the daemon's output root (`a/b` or `name`); default `job-<id>`.
    public var output: String?
    /// Attempts for transient errors (disk full, I/O) before the job fails.
    public var maxAttempts: Int?

    public init(
        length: Int, model: String? = nil, parameters: GenerationParameters = GenerationParameters(),
        priority: Int? = nil, idempotencyKey: String? = nil, output: String? = nil, maxAttempts: Int? = nil
    ) {
        self.length = length
        self.model = model
        self.parameters = parameters
        self.priority = priority
        self.idempotencyKey = idempotencyKey
        self.output = output
        self.maxAttempts = maxAttempts
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case length, model, parameters, priority, output
        case idempotencyKey = "idempotency_key"
        case maxAttempts = "max_attempts"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue), in: "the request")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        length = try c.decode(Int.self, forKey: .length)
        model = try c.decodeIfPresent(String.self, forKey: .model)
        parameters = try c.decodeIfPresent(GenerationParameters.self, forKey: .parameters) ?? GenerationParameters()
        priority = try c.decodeIfPresent(Int.self, forKey: .priority)
        idempotencyKey = try c.decodeIfPresent(String.self, forKey: .idempotencyKey)
        output = try c.decodeIfPresent(String.self, forKey: .output)
        maxAttempts = try c.decodeIfPresent(Int.self, forKey: .maxAttempts)
    }
}

/// Where a job has got to: the durable part (saved in the database, the resume point) and,
/// while it runs, the live denoising step.
public struct JobProgressInfo: Codable, Hashable, Sendable {
    /// `grid` (stage 1) or `sr` (stage 2).
    public var stage: String
    public var gridsDone: Int
    public var framesDone: Int
    public var live: StepProgress?

    public init(stage: String, gridsDone: Int, framesDone: Int, live: StepProgress? = nil) {
        self.stage = stage
        self.gridsDone = gridsDone
        self.framesDone = framesDone
        self.live = live
    }

    enum CodingKeys: String, CodingKey {
        case stage, live
        case gridsDone = "grids_done"
        case framesDone = "frames_done"
    }
}

/// The engine's per-step report: stage, grid i of N, step j of M, frame, and an estimate.
public struct StepProgress: Codable, Hashable, Sendable {
    public var stage: String
    public var grid: Int
    public var grids: Int
    public var step: Int
    public var steps: Int
    /// Frames finished so far and in all (stage 2 counts frames; stage 1 the frames of done grids).
    public var frame: Int
    public var frames: Int
    /// Seconds left for the whole job, when the engine can tell.
    public var etaSeconds: Double?
    /// Share of the job's work done, 0...1 (both stages, by floating-point operations).
    public var fraction: Double?

    public init(
        stage: String, grid: Int, grids: Int, step: Int, steps: Int, frame: Int, frames: Int,
        etaSeconds: Double? = nil, fraction: Double? = nil
    ) {
        self.stage = stage
        self.grid = grid
        self.grids = grids
        self.step = step
        self.steps = steps
        self.frame = frame
        self.frames = frames
        self.etaSeconds = etaSeconds
        self.fraction = fraction
    }

    enum CodingKeys: String, CodingKey {
        case stage, grid, grids, step, steps, frame, frames, fraction
        case etaSeconds = "eta_seconds"
    }
}

/// One failed attempt or crash in a job's history.
public struct JobErrorInfo: Codable, Hashable, Sendable {
    public var attempt: Int
    public var at: Date
    /// `invalid_input`, `model_missing`, `digest_mismatch`, `disk_full`, `transient`,
    /// `worker_crashed`, `internal`, ...
    public var errorClass: String
    public var message: String

    public init(attempt: Int, at: Date, errorClass: String, message: String) {
        self.attempt = attempt
        self.at = at
        self.errorClass = errorClass
        self.message = message
    }

    enum CodingKeys: String, CodingKey {
        case attempt, at, message
        case errorClass = "class"
    }
}

/// A job as the API shows it.
public struct JobInfo: Codable, Hashable, Sendable {
    public var id: Int64
    public var state: JobStateName
    public var ownerUID: UInt32
    public var priority: Int
    public var length: Int
    /// The reference the caller gave (nil: the daemon's default at submit time).
    public var model: String?
    /// The manifest digest the reference resolved to at submit; what the job runs.
    public var pipelineDigest: String?
    public var parameters: GenerationParameters
    public var output: String?
    public var idempotencyKey: String?
    public var createdAt: Date
    public var updatedAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    public var attempt: Int
    public var maxAttempts: Int
    public var crashCount: Int
    public var cancelRequested: Bool
    /// 1-based place among waiting jobs; nil unless queued or retryable.
    public var queuePosition: Int?
    /// Earliest next start (retry backoff).
    public var notBefore: Date
    public var progress: JobProgressInfo
    public var errorClass: String?
    public var errorMessage: String?
    /// Absolute path of the finished output folder (on the daemon's machine).
    public var outputDir: String?
    /// Every failed attempt and crash, oldest first (`GET /v1/jobs/{id}` only).
    public var errors: [JobErrorInfo]?
    /// Why a waiting job does not start although it is due (no disk space, the database lost).
    public var waitingFor: String?

    public init(
        id: Int64, state: JobStateName, ownerUID: UInt32, priority: Int, length: Int, model: String?,
        pipelineDigest: String?, parameters: GenerationParameters, output: String?, idempotencyKey: String?,
        createdAt: Date, updatedAt: Date, startedAt: Date?, finishedAt: Date?, attempt: Int, maxAttempts: Int,
        crashCount: Int, cancelRequested: Bool, queuePosition: Int?, notBefore: Date, progress: JobProgressInfo,
        errorClass: String?, errorMessage: String?, outputDir: String?, errors: [JobErrorInfo]? = nil,
        waitingFor: String? = nil
    ) {
        self.waitingFor = waitingFor
        self.id = id
        self.state = state
        self.ownerUID = ownerUID
        self.priority = priority
        self.length = length
        self.model = model
        self.pipelineDigest = pipelineDigest
        self.parameters = parameters
        self.output = output
        self.idempotencyKey = idempotencyKey
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.crashCount = crashCount
        self.cancelRequested = cancelRequested
        self.queuePosition = queuePosition
        self.notBefore = notBefore
        self.progress = progress
        self.errorClass = errorClass
        self.errorMessage = errorMessage
        self.outputDir = outputDir
        self.errors = errors
    }

    enum CodingKeys: String, CodingKey {
        case id, state, priority, length, model, parameters, output, attempt, progress, errors
        case ownerUID = "owner_uid"
        case pipelineDigest = "pipeline_digest"
        case idempotencyKey = "idempotency_key"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case maxAttempts = "max_attempts"
        case crashCount = "crash_count"
        case cancelRequested = "cancel_requested"
        case queuePosition = "queue_position"
        case notBefore = "not_before"
        case errorClass = "error_class"
        case errorMessage = "error_message"
        case outputDir = "output_dir"
        case waitingFor = "waiting_for"
    }
}

/// Answer to `POST /v1/jobs` (201 when created, 200 when an idempotency key matched).
public struct SubmitJobResponse: Codable, Hashable, Sendable {
    public var job: JobInfo
    /// True when the idempotency key matched an earlier job of the same caller.
    public var deduplicated: Bool
    /// Identifies the daemon process; changes on every start.
    public var instanceID: String

    public init(job: JobInfo, deduplicated: Bool, instanceID: String) {
        self.job = job
        self.deduplicated = deduplicated
        self.instanceID = instanceID
    }

    enum CodingKeys: String, CodingKey {
        case job, deduplicated
        case instanceID = "instance_id"
    }
}

/// `GET /v1/jobs`.
public struct JobList: Codable, Hashable, Sendable {
    public var jobs: [JobInfo]
    public init(jobs: [JobInfo]) { self.jobs = jobs }
}

/// `POST /v1/jobs/prune`: delete terminal jobs (and their outputs) finished long enough ago.
public struct PruneRequest: Codable, Hashable, Sendable {
    /// Age in seconds; nil means the daemon's retention settings (per state).
    public var olderThanSeconds: Double?
    /// Keep the output folders on disk.
    public var keepOutputs: Bool?

    public init(olderThanSeconds: Double? = nil, keepOutputs: Bool? = nil) {
        self.olderThanSeconds = olderThanSeconds
        self.keepOutputs = keepOutputs
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case olderThanSeconds = "older_than_seconds"
        case keepOutputs = "keep_outputs"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue), in: "the request")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        olderThanSeconds = try c.decodeIfPresent(Double.self, forKey: .olderThanSeconds)
        keepOutputs = try c.decodeIfPresent(Bool.self, forKey: .keepOutputs)
    }
}

public struct PruneResponse: Codable, Hashable, Sendable {
    public struct Pruned: Codable, Hashable, Sendable {
        public var id: Int64
        public var state: JobStateName
        public var outputDir: String?
        public init(id: Int64, state: JobStateName, outputDir: String?) {
            self.id = id
            self.state = state
            self.outputDir = outputDir
        }
        enum CodingKeys: String, CodingKey {
            case id, state
            case outputDir = "output_dir"
        }
    }
    public var pruned: [Pruned]
    public init(pruned: [Pruned]) { self.pruned = pruned }
}

/// One line of `GET /v1/jobs/{id}/events` (newline-delimited JSON, one object per line).
public struct JobEventMessage: Codable, Hashable, Sendable {
    public enum Kind: String, Codable, Sendable {
        /// The job row changed (state, durable progress, error); `job` is set.
        case job
        /// A denoising step finished; `step` is set.
        case step
    }
    public var kind: Kind
    public var job: JobInfo?
    public var step: StepProgress?

    public init(kind: Kind, job: JobInfo? = nil, step: StepProgress? = nil) {
        self.kind = kind
        self.job = job
        self.step = step
    }
}

/// A file of a finished job's output folder (`GET /v1/jobs/{id}/files`).
public struct OutputFile: Codable, Hashable, Sendable {
    /// Relative to the output folder, `/`-separated.
    public var path: String
    public var size: Int64
    public init(path: String, size: Int64) {
        self.path = path
        self.size = size
    }
}

public struct OutputFileList: Codable, Hashable, Sendable {
    public var outputDir: String
    public var files: [OutputFile]
    public init(outputDir: String, files: [OutputFile]) {
        self.outputDir = outputDir
        self.files = files
    }
    enum CodingKeys: String, CodingKey {
        case files
        case outputDir = "output_dir"
    }
}
