import Foundation

/// One griditd host sharing the queue (`GET /v1/nodes`).
public struct NodeInfo: Codable, Hashable, Sendable {
    /// The node id the host keeps in its state directory (a UUID), not its hostname.
    public var id: String
    public var hostname: String
    public var version: String
    public var startedAt: Date
    /// Its latest node heartbeat.
    public var lastSeen: Date
    /// A drained host claims no job; its running jobs finish.
    public var draining: Bool
    public var runningJobs: Int
    /// The host that answered.
    public var current: Bool

    public init(
        id: String, hostname: String, version: String, startedAt: Date, lastSeen: Date, draining: Bool,
        runningJobs: Int, current: Bool
    ) {
        self.id = id
        self.hostname = hostname
        self.version = version
        self.startedAt = startedAt
        self.lastSeen = lastSeen
        self.draining = draining
        self.runningJobs = runningJobs
        self.current = current
    }

    enum CodingKeys: String, CodingKey {
        case id, hostname, version, draining, current
        case startedAt = "started_at"
        case lastSeen = "last_seen"
        case runningJobs = "running_jobs"
    }
}

public struct NodeList: Codable, Hashable, Sendable {
    public var nodes: [NodeInfo]

    public init(nodes: [NodeInfo]) { self.nodes = nodes }
}
