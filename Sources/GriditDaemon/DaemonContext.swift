#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GriditAPI
import GriditStore
import Logging

/// What every service and the API share. The store is the truth; the monitor is its fast echo.
public struct DaemonContext: Sendable {
    public var configuration: DaemonConfiguration
    public var store: any JobStore
    /// Nil in a build without the engine: jobs are accepted and stay queued.
    public var executor: (any JobExecutor)?
    /// Nil in a build without the model store: model endpoints answer 501.
    public var catalog: (any ModelCatalog)?
    public var monitor: JobMonitor
    public var notifier: SystemdNotifier
    public var faults: FaultInjection
    public var logger: Logger
    public var startedAt: Date

    public init(
        configuration: DaemonConfiguration, store: any JobStore, executor: (any JobExecutor)?,
        catalog: (any ModelCatalog)?, monitor: JobMonitor = JobMonitor(), notifier: SystemdNotifier = SystemdNotifier(),
        faults: FaultInjection = FaultInjection(), logger: Logger, startedAt: Date = Date()
    ) {
        self.configuration = configuration
        self.store = store
        self.executor = executor
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
        if executor == nil { parts.append("no engine in this build") }
        notifier.status(parts.joined(separator: " · "))
    }

    /// Free bytes on the state directory's filesystem (a test hook can pretend it is full).
    func freeBytes() -> Int64? {
        if let fake = faults.freeBytes { return fake }
        var st = statvfs()
        guard statvfs(configuration.stateDirectory, &st) == 0 else { return nil }
        return Int64(st.f_bavail) * Int64(st.f_frsize)
    }
}

/// Test hooks for fault injection, from `GRIDIT_TEST_FAULTS` (comma-separated):
/// - `crash-after-claim=<job id>`: abort the process right after claiming that job (poison pill);
/// - `free-bytes=<n>`: report `n` free bytes on the state filesystem (`disk_full` without
///   filling a disk).
/// The daemon logs a warning at start when any is set.
public struct FaultInjection: Sendable, Hashable {
    public var crashAfterClaim: Set<Int64> = []
    public var freeBytes: Int64?

    public init() {}

    public init(environment: [String: String]) throws {
        guard let spec = environment["GRIDIT_TEST_FAULTS"], !spec.isEmpty else { return }
        for item in spec.split(separator: ",") {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            switch (kv.first, kv.count == 2 ? kv[1] : nil) {
            case ("crash-after-claim", let v?) where Int64(v) != nil: crashAfterClaim.insert(Int64(v)!)
            case ("free-bytes", let v?) where Int64(v) != nil: freeBytes = Int64(v)!
            default:
                throw FaultInjectionError(message: "GRIDIT_TEST_FAULTS: unknown fault '\(item)' (known: crash-after-claim=<id>, free-bytes=<n>)")
            }
        }
    }

    public var isActive: Bool { !crashAfterClaim.isEmpty || freeBytes != nil }
}

public struct FaultInjectionError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
