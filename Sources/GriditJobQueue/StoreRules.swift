import Foundation
import GriditJobSpec
import GriditStateDatabase

// The checks every `JobStore` backend makes outside the state machine, written once so that
// both backends refuse the same inputs with the same messages.

extension JobSubmission {
    /// The submission's own rules (params are checked as JSON by the database).
    public func validate() throws(StateError) {
        guard length > 0, maxAttempts >= 1 else {
            throw StateError(
                .invalidArgument, "length (\(length)) and maxAttempts (\(maxAttempts)) must be at least 1")
        }
        guard workSeconds.isFinite, workSeconds >= 0 else {
            throw StateError(
                .invalidArgument, "a job's estimated work must be 0 seconds or more (got \(workSeconds))")
        }
        if let key = idempotencyKey, key.isEmpty || key.utf8.count > 200 {
            throw StateError(.invalidArgument, "an idempotency key must be 1 to 200 bytes long")
        }
    }
}

/// Output folder names (relative to the owner's outputs, `/`-separated): a live job's may be
/// neither another live job's of the same owner, nor inside or around it, since removing one
/// would delete the other's frames. The stores check it in the transaction that adds the job.
public enum OutputNames {
    /// Throws `outputTaken` naming the first of `live` (id, name) that `name` is, lies in or holds.
    public static func check(_ name: String, against live: [(id: Int64, name: String)]) throws(StateError) {
        let mine = name.split(separator: "/")
        for (id, theirs) in live {
            if theirs == name {
                throw StateError(.outputTaken, "job \(id) already writes to the output '\(name)'", jobID: id)
            }
            let other = theirs.split(separator: "/")
            if mine.starts(with: other) || other.starts(with: mine) {
                throw StateError(
                    .outputTaken,
                    "job \(id) writes to the output '\(theirs)', and outputs cannot lie inside one another",
                    jobID: id)
            }
        }
    }
}

extension SubmitLimits {
    /// `live` queued, retryable and running jobs of everyone leave room for one more.
    public func checkQueue(live: Int) throws(StateError) {
        guard live < maxQueued else {
            throw StateError(
                .queueFull,
                "the queue is full (\(live) queued or running jobs, max_queued \(maxQueued)); "
                    + "wait for jobs to finish, cancel some, or raise max_queued")
        }
    }

    /// The owner's `recorded` jobs (any state) leave room for one more row.
    public func checkRecorded(_ recorded: Int, owner: UInt32) throws(StateError) {
        guard let max = maxRecordedPerOwner, recorded >= max else { return }
        throw StateError(
            .ownerHistoryLimit,
            "uid \(owner) has \(recorded) jobs recorded, finished ones included, the most one user may have (\(max))")
    }

    /// The owner's `jobs` live jobs and their `work` seconds leave room for one more of `added` seconds.
    public func checkOwner(jobs: Int, work: Double, adding added: Double, owner: UInt32) throws(StateError) {
        if let max = maxQueuedPerOwner, jobs >= max {
            throw StateError(
                .ownerJobLimit,
                "uid \(owner) has \(jobs) jobs queued or running, the most one user may have (\(max))")
        }
        if let max = maxWorkPerOwner, work + added > max {
            throw StateError(
                .ownerWorkLimit,
                "this job's estimated compute (\(computeTime(added))) and that of uid \(owner)'s "
                    + "queued and running jobs (\(computeTime(work))) add up to more than one user may queue "
                    + "(\(computeTime(max)))")
        }
    }
}

extension JobStateMachine {
    /// What a claim needs before any SQL runs: a worker id and a positive, finite lease.
    public static func checkClaim(workerID: String, leaseDuration: TimeInterval) throws(StateError) {
        guard !workerID.isEmpty, leaseDuration > 0, leaseDuration.isFinite else {
            throw StateError(
                .invalidArgument,
                "claim needs a non-empty worker id and a positive lease (got \"\(workerID)\", \(leaseDuration) s)")
        }
    }
}

extension Job {
    /// Only the owner or an admin may `action` (cancel, retry) the job.
    public func authorize(requesterUID: UInt32, isAdmin: Bool, action: String) throws(StateError) {
        guard isAdmin || ownerUID == requesterUID else {
            throw StateError(
                .forbidden,
                "uid \(requesterUID) may not \(action) job \(id), which belongs to uid \(ownerUID); ask its owner or an admin",
                jobID: id)
        }
    }

    /// `jobs rm`: the owner or an admin, and only a finished job (a live one is canceled first).
    public func authorizeRemoval(requesterUID: UInt32, isAdmin: Bool) throws(StateError) {
        try authorize(requesterUID: requesterUID, isAdmin: isAdmin, action: "remove")
        guard state.isTerminal else {
            throw StateError(
                .invalidTransition,
                "job \(id) is \(state.rawValue); only a finished job can be removed (`griditctl jobs cancel \(id)` first)",
                jobID: id)
        }
    }
}

extension StateError {
    /// No job `id` (pruned, or never made).
    public static func jobNotFound(_ id: Int64) -> StateError {
        StateError(
            .notFound, "no job \(id); it may have been pruned (`griditctl jobs list` shows the others)", jobID: id)
    }
}

/// "45 s", "12 min", "6.5 h": estimated compute in limit messages.
private func computeTime(_ seconds: Double) -> String {
    if seconds < 120 { return "\(Int(seconds.rounded())) s" }
    if seconds < 7200 { return "\(Int((seconds / 60).rounded())) min" }
    return String(format: "%.1f h", seconds / 3600)
}
