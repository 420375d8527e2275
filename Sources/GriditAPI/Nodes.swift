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
    /// Seconds since its last heartbeat by the queue database's clock (hosts' clocks may
    /// disagree with it); nil from a griditd that predates it.
    public var unseenSeconds: Double?
    /// Unseen for longer than six node heartbeats (at least 30 s): stopped, crashed or cut off.
    public var gone: Bool

    public init(
        id: String, hostname: String, version: String, startedAt: Date, lastSeen: Date, draining: Bool,
        runningJobs: Int, current: Bool, gone: Bool = false, unseenSeconds: Double? = nil
    ) {
        self.gone = gone
        self.unseenSeconds = unseenSeconds
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
        case id, hostname, version, draining, current, gone
        case unseenSeconds = "unseen_seconds"
        case startedAt = "started_at"
        case lastSeen = "last_seen"
        case runningJobs = "running_jobs"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try c.decode(String.self, forKey: .id), hostname: try c.decode(String.self, forKey: .hostname),
            version: try c.decode(String.self, forKey: .version),
            startedAt: try c.decode(Date.self, forKey: .startedAt),
            lastSeen: try c.decode(Date.self, forKey: .lastSeen), draining: try c.decode(Bool.self, forKey: .draining),
            runningJobs: try c.decode(Int.self, forKey: .runningJobs),
            current: try c.decode(Bool.self, forKey: .current),
            // A griditd older than `gone` does not send it.
            gone: try c.decodeIfPresent(Bool.self, forKey: .gone) ?? false,
            unseenSeconds: try c.decodeIfPresent(Double.self, forKey: .unseenSeconds))
    }
}

public struct NodeList: Codable, Hashable, Sendable {
    public var nodes: [NodeInfo]

    public init(nodes: [NodeInfo]) { self.nodes = nodes }
}
