import Foundation
import GriditStateDatabase

/// How the offline `griditd models …` commands open a state directory. A command that changes
/// the store takes the state-directory lock and refuses while a daemon holds it (the daemon does
/// the change for `griditctl models …`). A read-only command takes the lock if it can; otherwise
/// it reads the store as it is, without writing anything (not even a migration).
public struct OfflineSession: Sendable {
    public let store: ModelStore
    /// Held while the session lives (nil: another process owns the directory).
    public let lock: StateDirectoryLock?

    /// - Parameters:
    ///   - command: its name in messages (`import`, `gc`, …).
    ///   - mutating: whether the command changes the store.
    ///   - origin: the cluster's model origin, which imports publish to (`ModelStore`).
    public static func open(
        stateDirectory: String, siteRoots: [String] = [], origin: String? = nil, command: String, mutating: Bool
    ) throws(ModelStoreError) -> OfflineSession {
        if mutating, !FileIdentity.exists(directory: stateDirectory) {
            do {
                try StatePermissions.directory(stateDirectory, mode: StatePermissions.stateDirectory)
            } catch {
                throw StoreChecks.explainFailure(creating: stateDirectory, stateDirectory: stateDirectory)
            }
        }
        guard FileIdentity.exists(directory: stateDirectory) else {
            throw ModelStoreError(
                .notFound, "there is no state directory \(stateDirectory) (nothing was imported yet)",
                hint: "check --state-dir (or GRIDIT_STATE_DIR); `griditd models import` creates it")
        }
        let lock: StateDirectoryLock?
        do {
            lock = try StateDirectoryLock(stateDirectory: stateDirectory)
        } catch  where error.code == .locked {
            if mutating {
                throw ModelStoreError(
                    .daemonRunning,
                    "`models \(command)` changes the store, but \(error.message.components(separatedBy: ";").first ?? error.message)",
                    hint:
                        "use `griditctl models \(command) …`, which asks the running daemon to do it (or stop griditd first)"
                )
            }
            lock = nil
        } catch {
            if mutating {
                throw StoreChecks.writeProblem(stateDirectory) ?? ModelStoreError(.io, error.message)
            }
            lock = nil
        }
        let store = try ModelStore(
            stateDirectory: stateDirectory, siteRoots: siteRoots, origin: origin,
            access: lock == nil ? .readOnly : .readWrite)
        return OfflineSession(store: store, lock: lock)
    }
}
