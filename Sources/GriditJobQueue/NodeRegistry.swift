import Foundation
import GriditJobSpec
import GriditStateDatabase
import Synchronization

/// One griditd host as the queue knows it.
public struct NodeRecord: Hashable, Sendable {
    /// The host's persisted node id (a UUID, lower case), not its hostname: a renamed or
    /// re-imaged machine with the same state directory is the same node.
    public var id: String
    public var hostname: String
    /// The griditd version that registered it last.
    public var version: String
    public var startedAt: Date
    /// The node's last heartbeat.
    public var lastSeen: Date
    /// A draining node claims nothing new; its running jobs finish.
    public var draining: Bool
    /// Jobs running on it now.
    public var runningJobs: Int
    /// Seconds since its last heartbeat by the registry's clock, where it keeps one (a shared
    /// database); nil: compare `lastSeen` with this host's clock.
    public var unseenFor: TimeInterval?

    public init(
        id: String, hostname: String, version: String, startedAt: Date, lastSeen: Date, draining: Bool,
        runningJobs: Int
    ) {
        self.id = id
        self.hostname = hostname
        self.version = version
        self.startedAt = startedAt
        self.lastSeen = lastSeen
        self.draining = draining
        self.runningJobs = runningJobs
    }
}

/// The griditd hosts that share a queue: each registers at start, then heartbeats; any of them
/// may drain another (it stops claiming). Throws only `StateError`.
public protocol NodeRegistry: Sendable {
    /// At start: records the node (or updates its hostname and version), last seen `now`. Its
    /// draining flag survives a restart.
    func registerNode(id: String, hostname: String, version: String, now: Date) async throws(StateError)

    /// The node's heartbeat (last seen `now`); returns whether it is draining. A node missing
    /// from the registry registers again.
    func touchNode(id: String, hostname: String, version: String, now: Date) async throws(StateError) -> Bool

    /// Every known node, by id.
    func nodes() async throws(StateError) -> [NodeRecord]

    /// Drains (or undrains) a node. `notFound` for an unknown id.
    func setDraining(id: String, _ draining: Bool, now: Date) async throws(StateError) -> NodeRecord

    /// Forgets a host that is gone: unseen for `unseenFor` seconds by the registry's clock and
    /// running no job. `notFound` for an unknown id, `invalidTransition` (saying why) for a host
    /// seen since or still holding jobs. A removed host that starts again registers again.
    func removeNode(id: String, unseenFor: TimeInterval, now: Date) async throws(StateError)

    /// The token of the hosts' shared root (`<shared-root>/.gridit-cluster`) the registry holds;
    /// with `proposed`, it keeps that one from now on if it had none. Nil: none yet.
    func sharedRootMark(proposing proposed: String?) async throws(StateError) -> String?
}

/// The registry of a queue only one host can use (the state directory's SQLite database: its
/// lock keeps a second griditd out), held in memory: the one node, draining until undrained or
/// restarted (`queue pause` is the persisted switch).
public final class SingleNodeRegistry: NodeRegistry {
    private let store: any JobStore
    private let record = Mutex<NodeRecord?>(nil)

    /// `store` counts the running jobs.
    public init(store: any JobStore) {
        self.store = store
    }

    public func registerNode(id: String, hostname: String, version: String, now: Date) async throws(StateError) {
        record.withLock {
            let draining = $0?.id == id ? $0!.draining : false
            $0 = NodeRecord(
                id: id, hostname: hostname, version: version, startedAt: now, lastSeen: now, draining: draining,
                runningJobs: 0)
        }
    }

    public func touchNode(id: String, hostname: String, version: String, now: Date) async throws(StateError) -> Bool {
        if record.withLock({ $0?.id != id }) {
            try await registerNode(id: id, hostname: hostname, version: version, now: now)
        }
        return record.withLock {
            $0?.lastSeen = now
            return $0?.draining ?? false
        }
    }

    public func nodes() async throws(StateError) -> [NodeRecord] {
        guard var node = record.withLock({ $0 }) else { return [] }
        node.runningJobs = try await store.counts()[.running] ?? 0
        return [node]
    }

    public func setDraining(id: String, _ draining: Bool, now: Date) async throws(StateError) -> NodeRecord {
        let found = record.withLock { r -> Bool in
            guard r?.id == id else { return false }
            r?.draining = draining
            return true
        }
        guard found else { throw StateError.nodeNotFound(id) }
        return try await nodes()[0]
    }

    public func removeNode(id: String, unseenFor: TimeInterval, now: Date) async throws(StateError) {
        throw StateError(.invalidTransition, "this queue has one host, the one answering: there is no node to remove")
    }

    /// One host has no shared root to check.
    public func sharedRootMark(proposing proposed: String?) async throws(StateError) -> String? { proposed }
}

extension StateError {
    public static func nodeNotFound(_ id: String) -> StateError {
        StateError(.notFound, "no griditd node \(id) (see `griditctl nodes list`)")
    }
}
