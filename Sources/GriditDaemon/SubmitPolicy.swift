// Who may put how much into the queue: the per-user limits and the priorities members may use
// (admins — root, griditd's user, the admin group — are bounded by the queue's size alone).

import GriditAPI
import GriditJobQueue
import GriditStateDatabase

enum SubmitPolicy {
    /// The priority a submit gets: as asked, if the caller may use it; for a member without
    /// one, the allowed priority closest to 0.
    static func priority(_ asked: Int?, caller: Caller, configuration: DaemonConfiguration) throws(APIError) -> Int {
        let allowed = configuration.memberPriorities
        guard !caller.isAdmin else { return asked ?? 0 }
        guard let asked else { return min(max(0, allowed.lowerBound), allowed.upperBound) }
        guard allowed.contains(asked) else {
            throw APIError(
                .forbidden,
                "uid \(caller.uid) may not use priority \(asked): members may use \(allowed.lowerBound)...\(allowed.upperBound) "
                    + "(griditd serve --member-priority-min/--member-priority-max); higher ones are for root and the group "
                    + "'\(configuration.adminGroup ?? "gridit-admin")'")
        }
        return asked
    }

    static func limits(for caller: Caller, configuration c: DaemonConfiguration) -> SubmitLimits {
        caller.isAdmin
            ? SubmitLimits(maxQueued: c.maxQueued)
            : SubmitLimits(
                maxQueued: c.maxQueued, maxQueuedPerOwner: c.maxQueuedPerUser, maxWorkPerOwner: c.maxWorkPerUser,
                maxRecordedPerOwner: c.maxJobsPerUser)
    }

    /// What to do about a per-user limit the store refused a submit for; nil for other errors.
    static func remedy(_ code: StateError.Code) -> String? {
        let flag: String
        switch code {
        case .outputTaken: return "; choose another --output-name, beside it rather than in or above it"
        case .ownerJobLimit: flag = "--max-queued-per-user"
        case .ownerWorkLimit: flag = "--max-work-per-user"
        case .ownerHistoryLimit:
            return "; remove finished jobs you no longer need (`griditctl jobs rm ID`; they also go after "
                + "griditd's --keep-succeeded/--keep-failed), or ask an admin to prune them or raise --max-jobs-per-user"
        default: return nil
        }
        return "; wait for your jobs to finish or cancel some (`griditctl jobs cancel ID`), "
            + "or ask an admin to raise griditd's \(flag)"
    }
}
