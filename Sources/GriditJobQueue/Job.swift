import Foundation
import GriditJobSpec

/// The fencing token handed out by `claim`. Every write a worker makes for the job carries it;
/// once the job is re-claimed, recovered or finished, the old token is refused with `leaseLost`.
public struct LeaseToken: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }

    /// A fresh random token (63 bits, never 0).
    public static func random() -> LeaseToken {
        LeaseToken(rawValue: Int64.random(in: 1...Int64.max))
    }

    public var description: String { String(rawValue) }
}

/// One row of the `job` table.
public struct Job: Hashable, Sendable {
    public var id: Int64
    public var ownerUID: UInt32
    public var idempotencyKey: String?
    public var state: JobState
    /// Higher runs first; FIFO (by id) within a priority.
    public var priority: Int
    /// The job's `JobSpec` as JSON, a text the store does not interpret.
    public var params: String
    public var pipelineDigest: String?
    /// Number of frames to generate.
    public var length: Int
    public var createdAt: Date
    public var updatedAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// Claims that counted (crashes included): a run handed back through no fault of the job
    /// (shutdown, griditd's death, waiting for disk space) gives its claim back.
    public var attempt: Int
    public var maxAttempts: Int
    public var crashCount: Int
    public var cancelRequested: Bool
    public var leaseOwner: String?
    public var leaseToken: LeaseToken?
    public var leaseExpiresAt: Date?
    /// Not claimable before this instant (retry backoff, scheduled start).
    public var notBefore: Date
    public var progress: JobProgress
    /// The latest error; all of them are in `JobStore.errors(id:)`.
    public var errorClass: String?
    public var errorMessage: String?
    public var outputDir: String?
    /// Estimated compute in seconds, as given at submit (0 for jobs older than the estimate).
    public var workSeconds: Double
    /// 1-based place in claim order among waiting (`queued`, `retryable`) jobs; nil otherwise.
    /// Filled in by `get` and `list`; it ignores `notBefore`.
    public var queuePosition: Int?
    /// The griditd host (`NodeRecord.id`) whose worker holds the lease, or held it last; nil
    /// where the store does not record hosts (SQLite: one host) or before the first claim.
    public var node: String?

    public init(
        id: Int64, ownerUID: UInt32, idempotencyKey: String? = nil, state: JobState = .queued,
        priority: Int = 0, params: String, pipelineDigest: String? = nil, length: Int,
        createdAt: Date, updatedAt: Date, startedAt: Date? = nil, finishedAt: Date? = nil,
        attempt: Int = 0, maxAttempts: Int = 3, crashCount: Int = 0, cancelRequested: Bool = false,
        leaseOwner: String? = nil, leaseToken: LeaseToken? = nil, leaseExpiresAt: Date? = nil,
        notBefore: Date, progress: JobProgress = JobProgress(), errorClass: String? = nil,
        errorMessage: String? = nil, outputDir: String? = nil, workSeconds: Double = 0, queuePosition: Int? = nil,
        node: String? = nil
    ) {
        self.id = id
        self.ownerUID = ownerUID
        self.idempotencyKey = idempotencyKey
        self.state = state
        self.priority = priority
        self.params = params
        self.pipelineDigest = pipelineDigest
        self.length = length
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.crashCount = crashCount
        self.cancelRequested = cancelRequested
        self.leaseOwner = leaseOwner
        self.leaseToken = leaseToken
        self.leaseExpiresAt = leaseExpiresAt
        self.notBefore = notBefore
        self.progress = progress
        self.errorClass = errorClass
        self.errorMessage = errorMessage
        self.outputDir = outputDir
        self.workSeconds = workSeconds
        self.queuePosition = queuePosition
        self.node = node
    }
}

/// One entry of a job's error history (`job_error`): every failed attempt and every crash.
public struct JobErrorRecord: Hashable, Sendable {
    public var jobID: Int64
    public var attempt: Int
    public var at: Date
    public var errorClass: String
    public var message: String

    public init(jobID: Int64, attempt: Int, at: Date, errorClass: String, message: String) {
        self.jobID = jobID
        self.attempt = attempt
        self.at = at
        self.errorClass = errorClass
        self.message = message
    }
}

/// Retry and crash policy (D1.5, D1.6).
public struct RetryPolicy: Hashable, Sendable {
    /// Backoff after a transient failure: `min(backoffCap, backoffBase * 2^attempt)`.
    public var backoffBase: TimeInterval
    public var backoffCap: TimeInterval
    /// A job whose worker crashed (engine crash, stall, lease expired) this many times goes `dead`.
    public var maxCrashes: Int

    public init(backoffBase: TimeInterval = 10, backoffCap: TimeInterval = 600, maxCrashes: Int = 2) {
        precondition(backoffBase >= 0 && backoffCap >= 0 && maxCrashes >= 1, "RetryPolicy: bad values")
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
        self.maxCrashes = maxCrashes
    }

    /// Delay before a job that has made `attempt` attempts may run again. No jitter: one daemon
    /// owns the queue, so there is no thundering herd to spread, and tests stay exact.
    public func backoff(afterAttempt attempt: Int) -> TimeInterval {
        let exponent = Double(max(0, min(attempt, 62)))
        return min(backoffCap, backoffBase * pow(2, exponent))
    }
}

/// The error class recorded when a lease expires or the engine process crashes under a job.
public let workerCrashedErrorClass = "worker_crashed"

/// The error class of a history entry for a run stopped through no fault of the job (griditd
/// died, its engine process was killed from outside); no crash or attempt is counted for it.
public let interruptedErrorClass = "interrupted"
