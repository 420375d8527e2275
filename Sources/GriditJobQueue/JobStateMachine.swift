import Foundation
import GriditJobSpec
import GriditStateDatabase

/// Something that happens to a job. Events a worker sends carry its lease token.
public enum JobEvent: Hashable, Sendable {
    /// A worker takes a `queued` or `retryable` job whose `notBefore` has passed.
    case claim(workerID: String, token: LeaseToken, leaseDuration: TimeInterval)
    /// The worker is alive; extends the lease to `now + leaseDuration`.
    case heartbeat(token: LeaseToken, leaseDuration: TimeInterval)
    case saveProgress(token: LeaseToken, progress: JobProgress)
    case succeed(token: LeaseToken, outputDir: String)
    /// `retryable: true` is a transient error (I/O, ENOMEM): back off and try again while
    /// attempts remain. `false` is permanent (bad params, missing model): `failed` at once.
    case fail(token: LeaseToken, errorClass: String, message: String, retryable: Bool)
    /// The worker saw `cancelRequested` and stopped: `running → canceled` (back to `queued`,
    /// uncounted, if the row no longer asks for a cancel).
    case acknowledgeCancel(token: LeaseToken)
    /// Graceful shutdown: hand the job back to the queue without counting a crash. The claim
    /// does not count as an attempt either: the job did not fail.
    case releaseLease(token: LeaseToken)
    /// The worker stopped running the job for a reason that is not the job's (its engine
    /// process was killed from outside, or to stop another job of its batch): back to the queue
    /// at its saved progress, `reason` in its history, no crash and no attempt counted.
    case requeue(token: LeaseToken, reason: String)
    /// The engine process crashed (a signal, an abnormal exit, a stall) while it ran the job:
    /// counted like an expired lease, fenced by the token.
    case workerCrashed(token: LeaseToken, message: String)
    /// A user cancels: waiting jobs are canceled at once, a running job gets `cancelRequested`.
    case cancel
    /// The lease ran out (`leaseExpiresAt <= now`): the worker is presumed crashed.
    case leaseExpired
    /// The daemon restarted and found the job running: griditd itself died (killed, OOM-killed,
    /// power lost). The engine runs in a worker process of its own, so the job did not cause it:
    /// back to the queue without counting a crash or an attempt, however often it happens.
    case orphaned
    /// Manual retry of a `failed`, `canceled` or `dead` job.
    case retry
    /// Deletion of a terminal job by retention.
    case prune
}

/// What a store must do besides writing the new row.
public enum JobEffect: Hashable, Sendable {
    /// Append to the job's error history (`job_error`).
    case recordError(JobErrorRecord)
    /// Delete the job row; the caller deletes `outputDir` (if any) from disk.
    case delete(outputDir: String?)
}

/// The outcome of applying an event: the job as it must now be stored, plus side effects.
public struct JobTransition: Hashable, Sendable {
    public var job: Job
    public var effects: [JobEffect]
}

/// The job lifecycle as a pure function: `apply(event, to: job, now:)` either returns the next
/// row and its effects or throws `invalidTransition` / `leaseLost`. No I/O and no clock of its
/// own, so every rule is unit-tested with an injected `now`; stores read the row, apply the
/// event and write the result inside one transaction.
///
/// ```
///            claim                succeed
///  queued ──────────▶ running ───────────▶ succeeded
///    ▲  ▲ ▲             │ │ │ fail(permanent | no attempts left) ──▶ failed
///    │  │ │ lease expired │ │ └ fail(transient) ──▶ retryable ──claim──▶ running
///    │  │ │ worker crashed│ │   (crash < max)        (not_before = now + backoff)
///    │  │ └───────────────┘ ├ lease expired | worker crashed (crash = max) ──▶ dead
///    │  │                   └ cancel → cancelRequested, acknowledged ──▶ canceled
///    │  └── orphaned | release | requeue (no crash, no attempt counted) ◀── running
///    └──── retry ◀── failed | canceled | dead          (queued/retryable ─cancel─▶ canceled)
/// ```
public struct JobStateMachine: Hashable, Sendable {
    public var policy: RetryPolicy

    public init(policy: RetryPolicy = RetryPolicy()) {
        self.policy = policy
    }

    public func apply(_ event: JobEvent, to job: Job, now: Date) throws(StateError) -> JobTransition {
        var next = job
        next.updatedAt = now
        next.queuePosition = nil
        var effects: [JobEffect] = []

        switch event {
        case .claim(let workerID, let token, let leaseDuration):
            try require(JobState.claimable.contains(job.state), "claim", job)
            guard job.notBefore <= now else {
                throw StateError(
                    .invalidTransition,
                    "job \(job.id) is not claimable before \(job.notBefore) (backoff or schedule)",
                    jobID: job.id)
            }
            try validateLease(workerID: workerID, leaseDuration: leaseDuration)
            next.state = .running
            next.attempt += 1
            next.leaseOwner = workerID
            next.leaseToken = token
            next.leaseExpiresAt = now.addingTimeInterval(leaseDuration)
            next.startedAt = job.startedAt ?? now

        case .heartbeat(let token, let leaseDuration):
            try requireLease(token, job)
            try validateLease(workerID: job.leaseOwner ?? "", leaseDuration: leaseDuration)
            next.leaseExpiresAt = now.addingTimeInterval(leaseDuration)

        case .saveProgress(let token, let progress):
            try requireLease(token, job)
            // No upper bound from the length: official mode writes K² + 2K·N frames, more than a
            // short length asks for.
            guard progress.gridsDone >= 0, progress.framesDone >= 0 else {
                throw StateError(.invalidArgument, "job \(job.id): progress \(progress) is negative", jobID: job.id)
            }
            next.progress = progress
            next.progress.live = nil  // the resume point only; the live step is never stored

        case .succeed(let token, let outputDir):
            try requireLease(token, job)
            next.state = .succeeded
            next.outputDir = outputDir
            next.finishedAt = now
            clearLease(&next)

        case .fail(let token, let errorClass, let message, let retryable):
            try requireLease(token, job)
            effects.append(
                .recordError(
                    JobErrorRecord(
                        jobID: job.id, attempt: job.attempt, at: now, errorClass: errorClass, message: message)))
            next.errorClass = errorClass
            next.errorMessage = message
            clearLease(&next)
            if job.cancelRequested {
                next.state = .canceled
                next.finishedAt = now
            } else if retryable && job.attempt < job.maxAttempts {
                next.state = .retryable
                next.notBefore = now.addingTimeInterval(policy.backoff(afterAttempt: job.attempt))
            } else {
                next.state = .failed
                next.finishedAt = now
                if retryable {
                    next.errorMessage = "\(message) (gave up after \(job.attempt) of \(job.maxAttempts) attempts)"
                }
            }

        case .acknowledgeCancel(let token):
            try requireLease(token, job)
            // Canceled only if the row still asks for it: a stop requested before a retry must
            // not cancel the retried run.
            requeueUncounted(
                job, &next, &effects, note: "stopped by a cancel request made before the job was retried; requeued",
                now: now)

        case .releaseLease(let token):
            try requireLease(token, job)
            requeueUncounted(job, &next, &effects, note: nil, now: now)

        case .requeue(let token, let reason):
            try requireLease(token, job)
            requeueUncounted(job, &next, &effects, note: reason, now: now)

        case .cancel:
            switch job.state {
            case .queued, .retryable:
                next.state = .canceled
                next.finishedAt = now
                next.cancelRequested = true
            case .running:
                next.cancelRequested = true
            case .canceled:
                return JobTransition(job: job, effects: [])  // idempotent
            case .succeeded, .failed, .dead:
                try require(false, "cancel", job)
            }

        case .orphaned:
            try require(job.state == .running, "recover", job)
            requeueUncounted(
                job, &next, &effects,
                note: "griditd stopped while the job ran (killed, crashed or the machine went down); "
                    + "requeued to resume from its saved progress, not counted as a crash",
                now: now)

        case .leaseExpired:
            try require(job.state == .running, "recover", job)
            guard let expiry = job.leaseExpiresAt, expiry <= now else {
                throw StateError(
                    .invalidTransition,
                    "job \(job.id): lease still valid until \(job.leaseExpiresAt.map { "\($0)" } ?? "?")",
                    jobID: job.id)
            }
            countCrash(job, &next, &effects, why: "worker \(job.leaseOwner ?? "?") lease expired", now: now)

        case .workerCrashed(let token, let message):
            try requireLease(token, job)
            countCrash(job, &next, &effects, why: message, now: now)

        case .retry:
            try require([.failed, .canceled, .dead].contains(job.state), "retry", job)
            next.state = .queued
            next.attempt = 0
            next.crashCount = 0
            next.cancelRequested = false
            next.notBefore = now
            next.finishedAt = nil
            next.errorClass = nil
            next.errorMessage = nil
        // progress is kept: frames already committed are not generated again.

        case .prune:
            try require(job.state.isTerminal, "prune", job)
            effects.append(.delete(outputDir: job.outputDir))
        }
        return JobTransition(job: next, effects: effects)
    }

    // MARK: - Guards

    private func require(_ condition: Bool, _ event: String, _ job: Job) throws(StateError) {
        guard condition else {
            let hint =
                job.state.isTerminal
                ? "; \(job.state.rawValue) is terminal (only retry of failed/canceled/dead leaves it)"
                : ""
            throw StateError(
                .invalidTransition, "job \(job.id): cannot \(event) a \(job.state.rawValue) job\(hint)",
                jobID: job.id)
        }
    }

    /// A worker event is valid only while the job runs under the caller's token.
    private func requireLease(_ token: LeaseToken, _ job: Job) throws(StateError) {
        if job.state == .running, job.leaseToken == token { return }
        if job.state.isTerminal {
            throw StateError(
                .invalidTransition,
                "job \(job.id) is already \(job.state.rawValue), a terminal state; stop working on it",
                jobID: job.id)
        }
        throw StateError(
            .leaseLost,
            "job \(job.id): lease token \(token) no longer owns the job (now \(job.state.rawValue)"
                + (job.leaseOwner.map { ", leased by \($0)" } ?? "")
                + "); stop working on it and write nothing more",
            jobID: job.id)
    }

    private func validateLease(workerID: String, leaseDuration: TimeInterval) throws(StateError) {
        guard !workerID.isEmpty, leaseDuration > 0, leaseDuration.isFinite else {
            throw StateError(
                .invalidArgument,
                "lease needs a non-empty worker id and a positive duration (got \"\(workerID)\", \(leaseDuration) s)")
        }
    }

    /// A crash the job is held responsible for: back to the queue at its saved progress, or `dead`
    /// at `maxCrashes` so that the queue keeps draining. A requested cancel just completes.
    private func countCrash(_ job: Job, _ next: inout Job, _ effects: inout [JobEffect], why: String, now: Date) {
        clearLease(&next)
        if job.cancelRequested {
            // The user wanted it stopped anyway: not a crash, just finish the cancel.
            next.state = .canceled
            next.finishedAt = now
            return
        }
        next.crashCount += 1
        let message = "\(why) (crash \(next.crashCount) of \(policy.maxCrashes))"
        effects.append(
            .recordError(
                JobErrorRecord(
                    jobID: job.id, attempt: job.attempt, at: now, errorClass: workerCrashedErrorClass, message: message)
            ))
        next.errorClass = workerCrashedErrorClass
        if next.crashCount >= policy.maxCrashes {
            next.state = .dead
            next.finishedAt = now
            next.errorMessage =
                "the job crashed or stalled its worker \(next.crashCount) times "
                + "(last: \(message)); it is dead so the queue keeps draining. "
                + "Inspect it, then `griditctl jobs retry \(job.id)` to run it again"
        } else {
            next.state = .queued
            next.notBefore = now
            next.errorMessage = message + "; requeued to resume from its saved progress"
        }
    }

    /// A run that stopped through no fault of the job: back to the queue at once, and the claim
    /// that made it run is not an attempt; `note` goes into its history. A requested cancel
    /// completes instead.
    private func requeueUncounted(_ job: Job, _ next: inout Job, _ effects: inout [JobEffect], note: String?, now: Date)
    {
        clearLease(&next)
        if job.cancelRequested {
            next.state = .canceled
            next.finishedAt = now
            return
        }
        if let note {
            effects.append(
                .recordError(
                    JobErrorRecord(
                        jobID: job.id, attempt: job.attempt, at: now, errorClass: interruptedErrorClass, message: note))
            )
        }
        next.state = .queued
        next.notBefore = now
        next.attempt = max(0, next.attempt - 1)
    }

    private func clearLease(_ job: inout Job) {
        job.leaseOwner = nil
        job.leaseToken = nil
        job.leaseExpiresAt = nil
    }
}
