import Foundation
import GriditAPI
import GriditFaults
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What every service and the API share. The store is the truth; the monitor is its fast echo.
public struct DaemonContext: Sendable {
    public var configuration: DaemonConfiguration
    public var store: any JobStore
    /// Nil in a build without the engine: jobs are accepted and stay queued.
    public var engine: (any JobEngine)?
    /// Nil in a build without the model store: model endpoints answer 501.
    public var catalog: (any ModelCatalog)?
    public var monitor: JobMonitor
    public var notifier: SystemdNotifier
    public var faults: FaultInjection
    public var logger: Logger
    public var startedAt: Date
    /// The database file, for its identity checks and its reserve (nil: a store of another kind).
    public var database: StateDatabase?
    /// What keeps jobs from starting, as last seen.
    public var conditions: StartConditions
    /// Counters and timings for `GET /metrics`.
    public var metrics: DaemonMetrics
    /// This host, and the registry of every host sharing the queue.
    public var node: NodeIdentity
    public var nodes: any NodeRegistry
    /// Whether this host is drained (as its node heartbeat last read it).
    public var nodeState: NodeState
    /// The queue is this host's alone (SQLite): its running jobs are this node's. True unless
    /// a registry of several hosts is given.
    public var singleHost: Bool
    /// Checks the shared root's mark (`SharedRootMark`) and free space (nil: no shared root).
    var sharedRootProbe: SharedRootProbe?

    public init(
        configuration: DaemonConfiguration, store: any JobStore, engine: (any JobEngine)?,
        catalog: (any ModelCatalog)?, monitor: JobMonitor = JobMonitor(), notifier: SystemdNotifier = SystemdNotifier(),
        faults: FaultInjection = FaultInjection(), logger: Logger, startedAt: Date = Date(),
        database: StateDatabase? = nil,
        metrics: DaemonMetrics = DaemonMetrics(), node: NodeIdentity = NodeIdentity(),
        nodes: (any NodeRegistry)? = nil
    ) {
        self.node = node
        self.nodes = nodes ?? SingleNodeRegistry(store: store)
        self.singleHost = nodes == nil || nodes is SingleNodeRegistry
        self.nodeState = NodeState()
        self.database = database
        self.metrics = metrics
        self.conditions = StartConditions()
        self.configuration = configuration
        self.store = store
        self.engine = engine
        self.catalog = catalog
        self.monitor = monitor
        self.notifier = notifier
        self.faults = faults
        self.logger = logger
        self.startedAt = startedAt
    }

    public var layout: StateLayout { configuration.layout }

    /// The STATUS= line of `systemctl status griditd`: "1 running (job 12: sr 40/128) · 3 queued".
    func refreshStatus() async {
        guard notifier.isEnabled else { return }
        guard let counts = try? await store.counts(), let paused = try? await store.isPaused() else { return }
        var parts: [String] = []
        let running = monitor.runningIDs
        if running.isEmpty {
            parts.append("idle")
        } else {
            let first = running[0]
            let live = monitor.live(first).map { " \($0.stage) \($0.frame)/\($0.frames)" } ?? ""
            parts.append("\(running.count) running (job \(first)\(live))")
        }
        parts.append("\((counts[.queued] ?? 0) + (counts[.retryable] ?? 0)) queued")
        if paused { parts.append("paused") }
        if let blocker = startBlocker(remakeReserve: false) {
            parts.append(blocker.code.rawValue.replacingOccurrences(of: "_", with: " "))
        }
        if engine == nil { parts.append("no engine in this build") }
        notifier.status(parts.joined(separator: " · "))
    }

    /// What keeps jobs from starting now, most serious first (nil: they may start): the database
    /// lost (for good: griditd must be restarted), the database's filesystem full (its reserve
    /// released; `remakeReserve` makes it again once there is room), too little free space.
    func startBlocker(remakeReserve: Bool) -> StatusNotice? {
        let root = configuration.stateDirectory
        if let problem = conditions.databaseLost ?? database?.identityProblem() {
            conditions.databaseLost = problem
            return StatusNotice(
                .databaseLost,
                problem + ". griditd starts no job and refuses changes until it is restarted: restore the "
                    + "database (and its -wal file) from a backup, or restart griditd with `--init` to start "
                    + "over with an empty queue",
                blocksJobs: true)
        }
        if let problem = conditions.sharedRootProblem {
            return StatusNotice(.sharedRootUnavailable, problem + "; no job starts until it is back", blocksJobs: true)
        }
        if nodeState.draining {
            return StatusNotice(
                .draining,
                "this host (node \(node.id.prefix(8)), \(node.hostname)) is drained: it starts no job; "
                    + "`griditctl nodes undrain \(node.id.prefix(8))` lets it claim again",
                blocksJobs: true)
        }
        let minimum = configuration.minFreeBytes
        let free = freeBytes()
        // The reserve is made again (or at last, if there was no room at start) once there is room.
        if let reserve = database?.reserve, reserve.size > 0, !reserve.isHeld, remakeReserve, faults.freeBytes == nil {
            reserve.ensure(keepFree: minimum)
        }
        if let reserve = database?.reserve, reserve.releasedAt != nil, !reserve.isHeld {
            return StatusNotice(
                .databaseDiskFull,
                "the filesystem of \(root) filled up under the job database (\(free.map(formatBytes) ?? "?") free): "
                    + "griditd released its \(formatBytes(reserve.size)) reserve so that job states, cancels and "
                    + "pauses are still recorded, and starts no job until \(formatBytes(minimum + reserve.size)) are "
                    + "free. Free space, or prune old jobs (`griditctl jobs prune`)",
                blocksJobs: true)
        }
        if let free, free < minimum {
            return StatusNotice(
                .waitingForDisk,
                "waiting for disk space: \(formatBytes(free)) free, need \(formatBytes(minimum)) in "
                    + "\(configuration.sharedRoot.map { "\(root) and \($0)" } ?? root); "
                    + "queued jobs start (using no attempt) once there is room. Free space, or prune old jobs "
                    + "(`griditctl jobs prune`)",
                blocksJobs: true)
        }
        return nil
    }

    /// The notice `status` gives while the shared job database does not answer (nil: it does).
    func databaseOutageNotice(now: Date = Date()) -> StatusNotice? {
        guard let outage = conditions.databaseOutage else { return nil }
        let seconds = Int(max(0, now.timeIntervalSince(outage.since)).rounded())
        return StatusNotice(
            .databaseUnreachable,
            "the job database \(configuration.databaseURL ?? "") does not answer (for \(seconds) s): \(outage.reason). "
                + "No job is claimed or recorded meanwhile; running jobs stop before their leases can expire "
                + "and run again once it answers",
            blocksJobs: true)
    }

    /// Free bytes on the state directory's filesystem, or on the shared root's where that has
    /// less, as `measureSharedRoot` last saw it (a test hook can pretend it is full).
    func freeBytes() -> Int64? {
        if let fake = faults.freeBytes { return fake }
        return [Self.freeBytes(on: configuration.stateDirectory), conditions.sharedRootFree].compactMap { $0 }.min()
    }

    /// Measures the shared root's free space for `freeBytes` and checks its mark (MaintenanceService, every few
    /// seconds): on a network filesystem a statvfs is a round trip, and it blocks while a hard
    /// mount is down, too slow for every claim, listed job and status.
    func measureSharedRoot() async {
        guard let reading = await sharedRootProbe?.read() else { return }
        conditions.sharedRootFree = reading.free
        conditions.sharedRootProblem = reading.problem
    }

    static func freeBytes(on folder: String) -> Int64? {
        var st = statvfs()
        guard statvfs(folder, &st) == 0 else { return nil }
        return Int64(st.f_bavail) * Int64(st.f_frsize)
    }
}

/// What keeps jobs from starting, as the worker last saw it (for its log lines on each change),
/// and a lost database, which stays lost until griditd restarts.
public final class StartConditions: Sendable {
    private let state = Mutex<(lost: String?, last: StatusNotice.Code?)>((nil, nil))
    private let sharedFree = Mutex<Int64?>(nil)
    private let sharedProblem = Mutex<String?>(nil)
    private let unreachable = Mutex<DatabaseOutage?>(nil)

    public init() {}

    /// Since when the shared job database has not answered, and why it last failed (nil: it
    /// answered last time it was asked).
    var databaseOutage: DatabaseOutage? { unreachable.withLock { $0 } }

    /// A read or write of the shared job database failed or timed out: keeps when that began.
    func databaseFailed(_ reason: String, at now: Date) {
        unreachable.withLock { $0 = DatabaseOutage(since: $0?.since ?? now, reason: reason) }
    }

    /// The shared job database answered; true when it had not before (the outage is over).
    @discardableResult
    func databaseAnswered() -> Bool {
        unreachable.withLock { outage in
            defer { outage = nil }
            return outage != nil
        }
    }

    /// The shared root's free bytes when last measured (nil: no shared root, or not yet).
    var sharedRootFree: Int64? {
        get { sharedFree.withLock { $0 } }
        set { sharedFree.withLock { $0 = newValue } }
    }

    /// Why the shared root is not the cluster's when last checked (nil: it is, or no shared root).
    var sharedRootProblem: String? {
        get { sharedProblem.withLock { $0 } }
        set { sharedProblem.withLock { $0 = newValue } }
    }

    var databaseLost: String? {
        get { state.withLock { $0.lost } }
        set { state.withLock { if $0.lost == nil { $0.lost = newValue } } }
    }

    /// What blocked starts when the worker last looked (nil: nothing).
    var lastBlocker: StatusNotice.Code? { state.withLock { $0.last } }

    /// Records what blocks starts now; true when that changed since the last call.
    func update(_ blocker: StatusNotice?) -> Bool {
        state.withLock { s in
            defer { s.last = blocker?.code }
            return s.last != blocker?.code
        }
    }
}

/// The shared job database not answering, as `status` reports it.
struct DatabaseOutage: Sendable, Hashable {
    var since: Date
    var reason: String
}
