// Wire types of griditd's job API (`/v1/jobs...`), shared by the daemon and griditctl.
// JSON keys are snake_case; dates are ISO 8601 (UTC, second precision) through `APICoding`.
// Request types reject unknown keys, so a misspelt field is a 400, never silently ignored. A job's
// spec and progress are GriditJobSpec's `JobSpec`, `JobProgress` and `StepProgress` as they are.

import Foundation
import GriditJobSpec

/// `POST /v1/jobs/plan` (`griditctl submit --dry-run`): what a submit of the same request would run,
/// and its estimated compute at the nominal rate, against griditd's per-job limit.
public struct JobPlanResponse: Codable, Hashable, Sendable {
    /// The grids, steps and model evaluations, as `griditd run --dry-run` prints them.
    public var plan: String
    public var estimatedSeconds: Double
    /// `--max-job-time` (nil: none); a submit over it is refused.
    public var limitSeconds: Double?
    public var pipelineDigest: String?

    public init(plan: String, estimatedSeconds: Double, limitSeconds: Double?, pipelineDigest: String?) {
        self.plan = plan
        self.estimatedSeconds = estimatedSeconds
        self.limitSeconds = limitSeconds
        self.pipelineDigest = pipelineDigest
    }
}

/// `POST /v1/jobs`: the job's spec (`length`, `model`, `output`, `parameters`, as `JobSpec` codes
/// them) beside the queue's own fields.
public struct SubmitJobRequest: Codable, Hashable, Sendable {
    public var spec: JobSpec
    /// Higher runs first; FIFO within a priority.
    public var priority: Int?
    /// The same caller submitting the same key gets the existing job back.
    public var idempotencyKey: String?
    /// Attempts for transient errors (disk full, I/O) before the job fails.
    public var maxAttempts: Int?

    public init(spec: JobSpec, priority: Int? = nil, idempotencyKey: String? = nil, maxAttempts: Int? = nil) {
        self.spec = spec
        self.priority = priority
        self.idempotencyKey = idempotencyKey
        self.maxAttempts = maxAttempts
    }

    /// A request for `length` frames with every default.
    public init(length: Int) { self.init(spec: JobSpec(length: length)) }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case priority
        case idempotencyKey = "idempotency_key"
        case maxAttempts = "max_attempts"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: JobSpec.keys + CodingKeys.allCases.map(\.rawValue), in: "the request")
        spec = try JobSpec(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        priority = try c.decodeIfPresent(Int.self, forKey: .priority)
        idempotencyKey = try c.decodeIfPresent(String.self, forKey: .idempotencyKey)
        maxAttempts = try c.decodeIfPresent(Int.self, forKey: .maxAttempts)
    }

    public func encode(to encoder: any Encoder) throws {
        try spec.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(priority, forKey: .priority)
        try c.encodeIfPresent(idempotencyKey, forKey: .idempotencyKey)
        try c.encodeIfPresent(maxAttempts, forKey: .maxAttempts)
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

/// A job as the API shows it: its spec (`length`, `model`, `output`, `parameters`, as `JobSpec`
/// codes them; the seed always filled in) beside the queue's fields.
public struct JobInfo: Codable, Hashable, Sendable {
    public var id: Int64
    public var state: JobState
    public var ownerUID: UInt32
    public var priority: Int
    public var spec: JobSpec
    /// The manifest digest the spec's model resolved to at submit; what the job runs.
    public var pipelineDigest: String?
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
    public var progress: JobProgress
    public var errorClass: String?
    public var errorMessage: String?
    /// Absolute path of the finished output folder (on the daemon's machine).
    public var outputDir: String?
    /// Every failed attempt and crash, oldest first (`GET /v1/jobs/{id}` only).
    public var errors: [JobErrorInfo]?
    /// Why a waiting job does not start although it is due (no disk space, the database lost).
    public var waitingFor: String?
    /// The griditd host (node id) that runs the job, or ran it last; nil before its first claim.
    public var node: String?
    /// That node's hostname, as it registered.
    public var host: String?

    public init(
        id: Int64, state: JobState, ownerUID: UInt32, priority: Int, spec: JobSpec, pipelineDigest: String?,
        idempotencyKey: String?, createdAt: Date, updatedAt: Date, startedAt: Date?, finishedAt: Date?, attempt: Int,
        maxAttempts: Int, crashCount: Int, cancelRequested: Bool, queuePosition: Int?, notBefore: Date,
        progress: JobProgress, errorClass: String?, errorMessage: String?, outputDir: String?,
        errors: [JobErrorInfo]? = nil, waitingFor: String? = nil, node: String? = nil, host: String? = nil
    ) {
        self.id = id
        self.state = state
        self.ownerUID = ownerUID
        self.priority = priority
        self.spec = spec
        self.pipelineDigest = pipelineDigest
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
        self.waitingFor = waitingFor
        self.node = node
        self.host = host
    }

    /// Frames the job generates.
    public var length: Int { spec.length }

    enum CodingKeys: String, CodingKey {
        case id, state, priority, attempt, progress, errors
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
        case node, host
    }

    public init(from decoder: any Decoder) throws {
        spec = try JobSpec(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(Int64.self, forKey: .id)
        state = try c.decode(JobState.self, forKey: .state)
        ownerUID = try c.decode(UInt32.self, forKey: .ownerUID)
        priority = try c.decode(Int.self, forKey: .priority)
        pipelineDigest = try c.decodeIfPresent(String.self, forKey: .pipelineDigest)
        idempotencyKey = try c.decodeIfPresent(String.self, forKey: .idempotencyKey)
        createdAt = try c.decode(Date.self, forKey: .createdAt)
        updatedAt = try c.decode(Date.self, forKey: .updatedAt)
        startedAt = try c.decodeIfPresent(Date.self, forKey: .startedAt)
        finishedAt = try c.decodeIfPresent(Date.self, forKey: .finishedAt)
        attempt = try c.decode(Int.self, forKey: .attempt)
        maxAttempts = try c.decode(Int.self, forKey: .maxAttempts)
        crashCount = try c.decode(Int.self, forKey: .crashCount)
        cancelRequested = try c.decode(Bool.self, forKey: .cancelRequested)
        queuePosition = try c.decodeIfPresent(Int.self, forKey: .queuePosition)
        notBefore = try c.decode(Date.self, forKey: .notBefore)
        progress = try c.decode(JobProgress.self, forKey: .progress)
        errorClass = try c.decodeIfPresent(String.self, forKey: .errorClass)
        errorMessage = try c.decodeIfPresent(String.self, forKey: .errorMessage)
        outputDir = try c.decodeIfPresent(String.self, forKey: .outputDir)
        errors = try c.decodeIfPresent([JobErrorInfo].self, forKey: .errors)
        waitingFor = try c.decodeIfPresent(String.self, forKey: .waitingFor)
        node = try c.decodeIfPresent(String.self, forKey: .node)
        host = try c.decodeIfPresent(String.self, forKey: .host)
    }

    public func encode(to encoder: any Encoder) throws {
        try spec.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(state, forKey: .state)
        try c.encode(ownerUID, forKey: .ownerUID)
        try c.encode(priority, forKey: .priority)
        try c.encodeIfPresent(pipelineDigest, forKey: .pipelineDigest)
        try c.encodeIfPresent(idempotencyKey, forKey: .idempotencyKey)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
        try c.encodeIfPresent(startedAt, forKey: .startedAt)
        try c.encodeIfPresent(finishedAt, forKey: .finishedAt)
        try c.encode(attempt, forKey: .attempt)
        try c.encode(maxAttempts, forKey: .maxAttempts)
        try c.encode(crashCount, forKey: .crashCount)
        try c.encode(cancelRequested, forKey: .cancelRequested)
        try c.encodeIfPresent(queuePosition, forKey: .queuePosition)
        try c.encode(notBefore, forKey: .notBefore)
        try c.encode(progress, forKey: .progress)
        try c.encodeIfPresent(errorClass, forKey: .errorClass)
        try c.encodeIfPresent(errorMessage, forKey: .errorMessage)
        try c.encodeIfPresent(outputDir, forKey: .outputDir)
        try c.encodeIfPresent(errors, forKey: .errors)
        try c.encodeIfPresent(waitingFor, forKey: .waitingFor)
        try c.encodeIfPresent(node, forKey: .node)
        try c.encodeIfPresent(host, forKey: .host)
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
        public var state: JobState
        public var outputDir: String?
        /// Whether griditd removed `output_dir`: false when it was kept, on request or because it
        /// no longer held this job's output; absent from griditd before 2026-12-07.
        public var outputRemoved: Bool?
        public init(id: Int64, state: JobState, outputDir: String?, outputRemoved: Bool? = nil) {
            self.id = id
            self.state = state
            self.outputDir = outputDir
            self.outputRemoved = outputRemoved
        }
        enum CodingKeys: String, CodingKey {
            case id, state
            case outputDir = "output_dir"
            case outputRemoved = "output_removed"
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
