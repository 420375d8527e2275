import Foundation
import GriditJobSpec
import GriditStateDatabase

/// What a client asks to run. `submit` validates it and creates the `job` row.
public struct JobSubmission: Hashable, Sendable {
    /// Generation parameters as a JSON text (validated as JSON, otherwise opaque to the store).
    public var params: String
    /// Number of frames (> 0).
    public var length: Int
    public var priority: Int
    /// Same owner + same key ⇒ the existing job is returned instead of a new one.
    public var idempotencyKey: String?
    public var maxAttempts: Int
    public var pipelineDigest: String?
    /// Earliest start; nil means now.
    public var notBefore: Date?
    /// Estimated compute in seconds (≥ 0), what `SubmitLimits.maxWorkPerOwner` adds up.
    public var workSeconds: Double
    /// The output folder the job names (relative to its owner's outputs, `/`-separated); nil:
    /// the automatic one. No live job of the same owner may name it, or a folder inside or
    /// around it (`OutputNames.check`).
    public var outputName: String?

    public init(
        params: String, length: Int, priority: Int = 0, idempotencyKey: String? = nil,
        maxAttempts: Int = 3, pipelineDigest: String? = nil, notBefore: Date? = nil, workSeconds: Double = 0,
        outputName: String? = nil
    ) {
        self.params = params
        self.length = length
        self.priority = priority
        self.idempotencyKey = idempotencyKey
        self.maxAttempts = maxAttempts
        self.pipelineDigest = pipelineDigest
        self.notBefore = notBefore
        self.workSeconds = workSeconds
        self.outputName = outputName
    }
}

/// What a submit may add to the queue. The store checks every limit in the transaction that
/// inserts the job, so concurrent submits cannot overshoot one. Live jobs are the queued,
/// retryable and running ones.
public struct SubmitLimits: Hashable, Sendable {
    /// Live jobs of everyone (`queueFull`).
    public var maxQueued: Int
    /// Live jobs of the submitting owner (`ownerJobLimit`); nil: no limit of its own.
    public var maxQueuedPerOwner: Int?
    /// `workSeconds` of the owner's live jobs, the new one included (`ownerWorkLimit`); nil: none.
    public var maxWorkPerOwner: Double?
    /// Jobs of the owner recorded in any state, the new one excluded (`ownerHistoryLimit`): a
    /// submit-and-cancel loop keeps one live job and adds a row each time, kept for the
    /// retention of finished jobs. Nil: none. Checked on submit only (a retry adds no row).
    public var maxRecordedPerOwner: Int?

    public init(
        maxQueued: Int, maxQueuedPerOwner: Int? = nil, maxWorkPerOwner: Double? = nil, maxRecordedPerOwner: Int? = nil
    ) {
        self.maxQueued = maxQueued
        self.maxQueuedPerOwner = maxQueuedPerOwner
        self.maxWorkPerOwner = maxWorkPerOwner
        self.maxRecordedPerOwner = maxRecordedPerOwner
    }
}

public struct SubmitResult: Hashable, Sendable {
    public var job: Job
    /// True when an earlier submit with the same owner and idempotency key created `job`.
    public var deduplicated: Bool

    public init(job: Job, deduplicated: Bool) {
        self.job = job
        self.deduplicated = deduplicated
    }
}

/// A claimed job and the fencing token every later write for it must carry.
public struct ClaimedJob: Hashable, Sendable {
    public var job: Job
    public var token: LeaseToken
    /// When the store sent the transaction that took the lease, where it knows (the database
    /// starts the lease no earlier); nil: count from when `claim` was called. A claim can wait
    /// long for a connection (a database that is restarting): counted from the call, a lease
    /// granted just now would look old, and its worker would let go of it at once.
    public var sentAt: Date?

    public init(job: Job, token: LeaseToken, sentAt: Date? = nil) {
        self.job = job
        self.token = token
        self.sentAt = sentAt
    }
}

/// Returned to a worker by `heartbeat` and `saveProgress`.
public struct LeaseStatus: Hashable, Sendable {
    /// A user asked to cancel: stop at the next step boundary and call `acknowledgeCancel`.
    public var cancelRequested: Bool
    public var leaseExpiresAt: Date

    public init(cancelRequested: Bool, leaseExpiresAt: Date) {
        self.cancelRequested = cancelRequested
        self.leaseExpiresAt = leaseExpiresAt
    }
}

public struct JobFilter: Hashable, Sendable {
    /// Empty means every state.
    public var states: Set<JobState>
    public var ownerUID: UInt32?
    /// Only the job an owner submitted with this key (meant with `ownerUID`: keys are per owner).
    public var idempotencyKey: String?
    /// At most this many jobs, ordered by id (newest last).
    public var limit: Int
    /// Take the `limit` newest jobs instead of the oldest (the result is still ordered by id).
    public var newest: Bool

    public init(
        states: Set<JobState> = [], ownerUID: UInt32? = nil, idempotencyKey: String? = nil, limit: Int = 1000,
        newest: Bool = false
    ) {
        self.states = states
        self.ownerUID = ownerUID
        self.idempotencyKey = idempotencyKey
        self.limit = limit
        self.newest = newest
    }
}

/// Restricts a claim to jobs that can join a batch already being formed: same pipeline digest
/// (nil matches jobs without one) and same priority, so batching never runs a lower-priority
/// job ahead of a higher one.
public struct ClaimFilter: Hashable, Sendable {
    public var pipelineDigest: String?
    public var priority: Int
    /// Only the job an unfiltered claim would take, if it matches: jobs joining a batch that is
    /// already running never overtake a waiting job of another pipeline, however long it runs.
    public var nextInLineOnly: Bool
    /// Jobs the claimer runs already (a job its stalled worker lost and the queue gave back).
    public var excluding: Set<Int64>
    /// Only jobs that never crashed a worker. A job that did runs alone, so that its next crash
    /// counts against it and not against the jobs batched with it.
    public var neverCrashed: Bool

    public init(
        pipelineDigest: String?, priority: Int, nextInLineOnly: Bool = false, excluding: Set<Int64> = [],
        neverCrashed: Bool = true
    ) {
        self.pipelineDigest = pipelineDigest
        self.priority = priority
        self.nextInLineOnly = nextInLineOnly
        self.excluding = excluding
        self.neverCrashed = neverCrashed
    }
}

/// A job deleted by `prune`; the caller removes `outputDir` from disk if it still holds this
/// job's output (a folder removed by hand can have been given to a later job since).
public struct PrunedJob: Hashable, Sendable {
    public var id: Int64
    public var state: JobState
    public var outputDir: String?
    /// What the job asked for (stored params and length) and the model version it ran: what its
    /// output's `sequence.json` records.
    public var params: String
    public var length: Int
    public var pipelineDigest: String?

    public init(_ job: Job) {
        id = job.id
        state = job.state
        outputDir = job.outputDir
        params = job.params
        length = job.length
        pipelineDigest = job.pipelineDigest
    }
}

/// The durable job queue, independent of the database behind it.
///
/// The methods are `async` because a store's work is I/O that must not hold one of the two
/// cooperative threads on the target machine: GRDB runs it on its own serial writer queue (and
/// `synchronous = FULL` fsyncs each commit), and a future PostgreSQL backend (D7) is async by
/// nature, so the same protocol and conformance suite serve both.
///
/// Every method takes the clock as `now` (the daemon passes `Date()`, tests pass fixed instants),
/// applies the rules of `JobStateMachine`, and throws only `StateError` (typed throws). Each method is one
/// transaction. Worker writes (`heartbeat`, `saveProgress`, `complete`, `fail`,
/// `acknowledgeCancel`, `releaseLease`) are fenced by the lease token: a stale worker gets
/// `leaseLost` (job still live) or `invalidTransition` (job already terminal) and changes nothing.
public protocol JobStore: Sendable {
    /// Creates a queued job, or returns the existing one for a repeated (owner, idempotency key),
    /// whatever its state and whatever the limits. Throws `outputTaken` when a live job of the
    /// owner writes to its output folder (or one inside or around it), `queueFull`,
    /// `ownerJobLimit` or `ownerWorkLimit` when the new job would break one of `limits`. Job ids
    /// are never reused, not even those of pruned jobs.
    func submit(
        _ submission: JobSubmission, owner: UInt32, limits: SubmitLimits, now: Date
    ) async throws(StateError) -> SubmitResult

    /// Atomically takes the highest-priority (FIFO within a priority) claimable job whose
    /// `notBefore <= now`, unless the queue is paused. Nil when there is nothing to run.
    func claim(workerID: String, leaseDuration: TimeInterval, now: Date) async throws(StateError) -> ClaimedJob?

    /// Like `claim`, among the jobs that match `filter` only (batch formation). Nil when none does.
    func claim(
        workerID: String, leaseDuration: TimeInterval, matching filter: ClaimFilter, now: Date
    ) async throws(StateError) -> ClaimedJob?

    /// Extends the lease to `now + leaseDuration`. Call about every `leaseDuration / 3`.
    func heartbeat(
        id: Int64, token: LeaseToken, leaseDuration: TimeInterval, now: Date
    ) async throws(StateError) -> LeaseStatus

    /// Records progress (the resume point after a crash). Does not extend the lease.
    func saveProgress(
        id: Int64, token: LeaseToken, progress: JobProgress, now: Date
    ) async throws(StateError) -> LeaseStatus

    /// `running → succeeded`. Commit point of the job: write the files first, then call this.
    func complete(id: Int64, token: LeaseToken, outputDir: String, now: Date) async throws(StateError) -> Job

    /// Records the error in the history; `retryable` with attempts left → `retryable` after a
    /// backoff, otherwise → `failed` (→ `canceled` if a cancel was requested meanwhile).
    func fail(
        id: Int64, token: LeaseToken, errorClass: String, message: String, retryable: Bool, now: Date
    ) async throws(StateError) -> Job

    /// The worker stopped because `cancelRequested` was set: `running → canceled`.
    func acknowledgeCancel(id: Int64, token: LeaseToken, now: Date) async throws(StateError) -> Job

    /// Graceful shutdown: `running → queued` at its saved progress, no crash or attempt counted.
    func releaseLease(id: Int64, token: LeaseToken, now: Date) async throws(StateError) -> Job

    /// The run stopped through no fault of the job (its engine process was killed from outside,
    /// or to stop another job): `running → queued` at its saved progress with `reason` in its
    /// history; no crash or attempt counted (`canceled` if a cancel was requested).
    func requeue(id: Int64, token: LeaseToken, reason: String, now: Date) async throws(StateError) -> Job

    /// The engine process crashed while it ran the job: counts a crash like an expired lease
    /// (`queued` to resume, or `dead` at `RetryPolicy.maxCrashes`), fenced by the token.
    func recordWorkerCrash(id: Int64, token: LeaseToken, message: String, now: Date) async throws(StateError) -> Job

    /// `queued`/`retryable → canceled` at once; `running` → `cancelRequested` (the worker sees it
    /// in `heartbeat`/`saveProgress`). Only the owner or an admin; others get `forbidden`.
    func cancel(id: Int64, requesterUID: UInt32, isAdmin: Bool, now: Date) async throws(StateError) -> Job

    /// `failed`/`canceled`/`dead → queued` with attempts and crashes reset and progress kept.
    /// Only the owner or an admin, and only within `limits` (the job comes back into the queue:
    /// the limits a submit by the requester would meet).
    func retry(
        id: Int64, requesterUID: UInt32, isAdmin: Bool, limits: SubmitLimits, now: Date
    ) async throws(StateError)
        -> Job

    /// Running jobs whose lease expired (`leaseExpiresAt <= now`) count a crash and go back to
    /// `queued` (resuming from their progress), or to `dead` at `RetryPolicy.maxCrashes`, except
    /// those in `sparing` (jobs whose worker griditd supervises itself). Returns the recovered
    /// jobs as they are now.
    func recoverExpiredLeases(now: Date, sparing: Set<Int64>) async throws(StateError) -> [Job]

    /// At daemon start, under the state directory lock: every `running` job is orphaned whatever
    /// its lease says (griditd died under it) and goes back to `queued` at its saved progress,
    /// without counting a crash or an attempt.
    func recoverOrphanedJobs(now: Date) async throws(StateError) -> [Job]

    /// Persisted: a paused queue accepts submits but `claim` returns nil.
    func setPaused(_ paused: Bool) async throws(StateError)
    func isPaused() async throws(StateError) -> Bool

    /// The job with its queue position. Throws `notFound`.
    func get(id: Int64) async throws(StateError) -> Job
    /// Jobs by id, with queue positions for waiting jobs.
    func list(_ filter: JobFilter) async throws(StateError) -> [Job]
    /// The job's error history, oldest first. Throws `notFound`.
    func errors(id: Int64) async throws(StateError) -> [JobErrorRecord]

    /// Number of jobs in each state (states without jobs are absent).
    func counts() async throws(StateError) -> [JobState: Int]

    /// The pipeline digests live jobs (queued, retryable, running) pin, each with their ids in
    /// ascending order: what the model store must keep (gc) and shows (`models list`, `show`).
    func livePipelinePins() async throws(StateError) -> [String: [Int64]]

    /// Deletes one finished job and its error history (`jobs rm`); a job still waiting or running
    /// is an `invalidTransition` (cancel it first). Only the owner or an admin. Returns it so that
    /// the caller deletes its folders.
    func delete(id: Int64, requesterUID: UInt32, isAdmin: Bool, now: Date) async throws(StateError) -> PrunedJob

    /// Deletes jobs in `states` (terminal ones only; others are ignored) finished at or before
    /// `now - olderThan`, and their error history: at most `limit` of them, lowest ids first, in
    /// one transaction (call again while `limit` come back: a long history goes in batches that
    /// hold the writers up briefly). Returns them so that the caller deletes their folders.
    func prune(
        olderThan: TimeInterval, states: Set<JobState>, now: Date, limit: Int
    ) async throws(StateError)
        -> [PrunedJob]
}

extension JobStore {
    /// A submit bounded by the queue's size alone.
    public func submit(
        _ submission: JobSubmission, owner: UInt32, maxQueued: Int, now: Date
    ) async throws(StateError) -> SubmitResult {
        try await submit(submission, owner: owner, limits: SubmitLimits(maxQueued: maxQueued), now: now)
    }

    public func recoverExpiredLeases(now: Date) async throws(StateError) -> [Job] {
        try await recoverExpiredLeases(now: now, sparing: [])
    }

    /// Prunes every terminal state, in one transaction.
    public func prune(olderThan: TimeInterval, now: Date) async throws(StateError) -> [PrunedJob] {
        try await prune(olderThan: olderThan, states: Set(JobState.terminal), now: now)
    }

    /// Prunes `states`, in one transaction.
    public func prune(olderThan: TimeInterval, states: Set<JobState>, now: Date) async throws(StateError) -> [PrunedJob]
    {
        try await prune(olderThan: olderThan, states: states, now: now, limit: .max)
    }
}
