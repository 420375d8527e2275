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
///   filling a disk);
/// - `pause-at=grid:<n>` / `pause-at=sr:<n>`: stop the worker for good at the first denoising
///   step of stage-1 grid n or of frame n (1-based), after writing `<state dir>/test-paused`, so
///   that a test can `kill -9` griditd at a known point of a job.
/// The daemon logs a warning at start when any is set.
public struct FaultInjection: Sendable, Hashable {
    public var crashAfterClaim: Set<Int64> = []
    public var freeBytes: Int64?
    public var pauseAt: PausePoint?

    public init() {}

    public init(environment: [String: String]) throws {
        guard let spec = environment["GRIDIT_TEST_FAULTS"], !spec.isEmpty else { return }
        for item in spec.split(separator: ",") {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            switch (kv.first, kv.count == 2 ? kv[1] : nil) {
            case ("crash-after-claim", let v?) where Int64(v) != nil: crashAfterClaim.insert(Int64(v)!)
            case ("free-bytes", let v?) where Int64(v) != nil: freeBytes = Int64(v)!
            case ("pause-at", let v?) where PausePoint(v) != nil: pauseAt = PausePoint(v)
            default:
                throw FaultInjectionError(
                    message: "GRIDIT_TEST_FAULTS: unknown fault '\(item)' "
                        + "(known: crash-after-claim=<id>, free-bytes=<n>, pause-at=grid:<n>, pause-at=sr:<n>)")
            }
        }
    }

    public var isActive: Bool { !crashAfterClaim.isEmpty || freeBytes != nil || pauseAt != nil }
}

/// Where `pause-at` stops the worker: the first step of stage-1 grid `unit` (`grid`) or of frame
/// `unit` (`sr`), 1-based, of any job.
public struct PausePoint: Sendable, Hashable {
    public var stage: String
    public var unit: Int

    init?(_ text: String) {
        let parts = text.split(separator: ":")
        guard parts.count == 2, ["grid", "sr"].contains(parts[0]), let n = Int(parts[1]), n >= 1 else { return nil }
        stage = String(parts[0])
        unit = n
    }

    func matches(_ step: StepProgress) -> Bool {
        step.stage == stage && (stage == "grid" ? step.grid : step.frame) >= unit
    }

    /// Writes the marker and blocks the calling (worker) thread until the process is killed.
    func hold(marker: String, job: Int64) -> Never {
        try? Data("job \(job) paused at \(stage):\(unit)\n".utf8).write(to: URL(fileURLWithPath: marker), options: .atomic)
        while true { sleep(3600) }
    }
}

public struct FaultInjectionError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
