// Which griditd host this is: a node id made once and kept in the state directory, so that it
// survives restarts, upgrades and renames (the hostname is only shown), and two hosts cloned
// from one image still differ once each made its own state directory.

import Foundation
import GriditDurable
import GriditJobQueue
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public struct NodeIdentity: Sendable, Hashable {
    /// A UUID, lower case: what jobs and the node registry record.
    public var id: String
    public var hostname: String

    public init(id: String = UUID().uuidString.lowercased(), hostname: String = NodeIdentity.currentHostname()) {
        self.id = id
        self.hostname = hostname
    }

    /// The file in the state directory that holds the id.
    public static let fileName = "node-id"

    /// The state directory's node id, made (durably) on first use. Call it holding the state
    /// directory's lock. A file that holds no UUID is refused: the id names this host's jobs in a
    /// shared queue, so it is never silently replaced.
    public static func loadOrCreate(stateDirectory: String) throws -> NodeIdentity {
        let path = stateDirectory + "/" + fileName
        // Only a missing file makes a new id: one we cannot read (permissions, I/O) is an error,
        // never a reason to replace it.
        if FileManager.default.fileExists(atPath: path) {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw DaemonError("cannot read the node id in \(path): \(error); fix its permissions or restore it")
            }
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard let uuid = UUID(uuidString: trimmed) else {
                throw DaemonError(
                    "\(path) holds no node id (a UUID); restore it from a backup of this host, or remove it to "
                        + "make this host a new node (its running jobs then go back to the queue when their leases expire)"
                )
            }
            return NodeIdentity(id: uuid.uuidString.lowercased())
        }
        let identity = NodeIdentity()
        do {
            try DurableFile.write(Array((identity.id + "\n").utf8), to: path, permissions: 0o644, failure: { $0 })
        } catch {
            throw DaemonError("cannot write the node id to \(path): \(error)")
        }
        return identity
    }

    public static func currentHostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        return String(cString: buffer)
    }
}

/// Whether this host is drained, as its node heartbeat last read it (a drain from this host's
/// own API counts at once).
public final class NodeState: Sendable {
    private let flag = Atomic(false)

    public init() {}

    public var draining: Bool {
        get { flag.load(ordering: .acquiring) }
        set { flag.store(newValue, ordering: .releasing) }
    }
}
