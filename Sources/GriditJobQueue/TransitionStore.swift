import Foundation
import GriditJobSpec
import GriditStateDatabase

/// A `JobStore` whose claims are one statement and whose other writes to one job all come down
/// to one step: read the job's row (locked), apply a `JobEvent` with `JobStateMachine`, write
/// the row back, in one transaction. The worker's and the users' writes follow from those two
/// here, the same for every backend.
public protocol TransitionStore: JobStore {
    /// Applies `event` to job `id` in one transaction, once `authorize` (if any) accepts the row
    /// as it was and, with `limits`, the job is admitted as a submit of it by its owner would be
    /// (room in the queue, its output folder free; checked in the same transaction), and returns
    /// the job as stored. Throws `notFound`, the state machine's errors, what `authorize` throws,
    /// `outputTaken` or the limits' errors.
    func transition(
        _ id: Int64, _ event: JobEvent, now: Date, authorize: (@Sendable (Job) throws -> Void)?,
        admitting limits: SubmitLimits?
    ) async throws(StateError) -> Job

    /// `JobStore.claim`, among the jobs that match `filter` when there is one: one statement
    /// that mirrors `JobEvent.claim` (`JobStateMachine.checkClaim` first).
    func claim(
        workerID: String, leaseDuration: TimeInterval, filter: ClaimFilter?, now: Date
    ) async throws(StateError) -> ClaimedJob?
}

extension TransitionStore {
    public func transition(
        _ id: Int64, _ event: JobEvent, now: Date, authorize: (@Sendable (Job) throws -> Void)?
    ) async throws(StateError) -> Job {
        try await transition(id, event, now: now, authorize: authorize, admitting: nil)
    }

    public func claim(workerID: String, leaseDuration: TimeInterval, now: Date) async throws(StateError) -> ClaimedJob?
    {
        try await claim(workerID: workerID, leaseDuration: leaseDuration, filter: nil, now: now)
    }

    public func claim(
        workerID: String, leaseDuration: TimeInterval, matching filter: ClaimFilter, now: Date
    ) async throws(StateError) -> ClaimedJob? {
        try await claim(workerID: workerID, leaseDuration: leaseDuration, filter: filter, now: now)
    }

    public func heartbeat(
        id: Int64, token: LeaseToken, leaseDuration: TimeInterval, now: Date
    ) async throws(StateError) -> LeaseStatus {
        let job = try await transition(
            id, .heartbeat(token: token, leaseDuration: leaseDuration), now: now, authorize: nil)
        return LeaseStatus(cancelRequested: job.cancelRequested, leaseExpiresAt: job.leaseExpiresAt ?? now)
    }

    public func saveProgress(
        id: Int64, token: LeaseToken, progress: JobProgress, now: Date
    ) async throws(StateError) -> LeaseStatus {
        let job = try await transition(id, .saveProgress(token: token, progress: progress), now: now, authorize: nil)
        return LeaseStatus(cancelRequested: job.cancelRequested, leaseExpiresAt: job.leaseExpiresAt ?? now)
    }

    public func complete(id: Int64, token: LeaseToken, outputDir: String, now: Date) async throws(StateError) -> Job {
        try await transition(id, .succeed(token: token, outputDir: outputDir), now: now, authorize: nil)
    }

    public func fail(
        id: Int64, token: LeaseToken, errorClass: String, message: String, retryable: Bool, now: Date
    ) async throws(StateError) -> Job {
        try await transition(
            id, .fail(token: token, errorClass: errorClass, message: message, retryable: retryable), now: now,
            authorize: nil)
    }

    public func acknowledgeCancel(id: Int64, token: LeaseToken, now: Date) async throws(StateError) -> Job {
        try await transition(id, .acknowledgeCancel(token: token), now: now, authorize: nil)
    }

    public func releaseLease(id: Int64, token: LeaseToken, now: Date) async throws(StateError) -> Job {
        try await transition(id, .releaseLease(token: token), now: now, authorize: nil)
    }

    public func requeue(id: Int64, token: LeaseToken, reason: String, now: Date) async throws(StateError) -> Job {
        try await transition(id, .requeue(token: token, reason: reason), now: now, authorize: nil)
    }

    public func recordWorkerCrash(
        id: Int64, token: LeaseToken, message: String, now: Date
    ) async throws(StateError) -> Job {
        try await transition(id, .workerCrashed(token: token, message: message), now: now, authorize: nil)
    }

    public func cancel(id: Int64, requesterUID: UInt32, isAdmin: Bool, now: Date) async throws(StateError) -> Job {
        try await transition(id, .cancel, now: now) { job in
            try job.authorize(requesterUID: requesterUID, isAdmin: isAdmin, action: "cancel")
        }
    }

    public func retry(
        id: Int64, requesterUID: UInt32, isAdmin: Bool, limits: SubmitLimits, now: Date
    ) async throws(StateError) -> Job {
        try await transition(
            id, .retry, now: now,
            authorize: { job in try job.authorize(requesterUID: requesterUID, isAdmin: isAdmin, action: "retry") },
            admitting: limits)
    }
}
