import Foundation

/// Everything `griditd serve` can be told. Defaults suit the systemd units in `systemd/`.
public struct DaemonConfiguration: Sendable {
    /// Database, lock, work and output folders (`StateDirectory=gridit`).
    public var stateDirectory: String
    /// The control socket when griditd binds it itself (not socket-activated).
    public var socketPath: String
    /// Members may submit and manage their own jobs. Nil: no group check beyond the socket mode.
    public var userGroup: String?
    /// Members manage every job and the models.
    public var adminGroup: String?
    /// Group and mode of a self-bound socket (an activated socket gets them from the .socket unit).
    public var socketGroup: String?
    public var socketMode: mode_t = 0o660
    /// Threads of the engine's matrix products.
    public var blasThreads: Int
    /// A paused queue accepts submits and starts nothing; this pauses it (persistently) at start.
    public var startPaused = false
    /// `queued + retryable + running` beyond this ⇒ `queue_full` (exit 75).
    public var maxQueued = 1000
    /// Longest sequence a request may ask for (the pipeline may allow less).
    public var maxLength = 100_000
    /// A running job's lease; the worker heartbeats every third of it while it makes progress.
    public var leaseDuration: TimeInterval = 120
    /// Fallback poll of the queue (backoffs ending, not-before); submits wake the worker at once.
    public var pollInterval: TimeInterval = 1
    /// How often the maintenance service looks for expired leases.
    public var reapInterval: TimeInterval = 15
    /// Retention of finished jobs (and their outputs), by state; the maintenance service prunes
    /// hourly, `griditctl jobs prune` on demand.
    public var keepSucceeded: TimeInterval = 7 * 86_400
    public var keepFailed: TimeInterval = 30 * 86_400
    public var pruneInterval: TimeInterval = 3_600
    /// Most jobs batched together (same pipeline and priority).
    public var maxBatchJobs = 4
    /// Bytes of activations one batched forward may take; the engine sizes its batches to it.
    public var memoryBudget = 2 << 30
    /// Most grids or frames in one batched forward.
    public var maxBatchItems = 16
    /// Seconds a loaded model stays mapped after its last job.
    public var modelKeepAlive: TimeInterval = 600
    /// Below this many free bytes on the state filesystem no job starts: queued jobs wait (using
    /// no attempt) and `status` says why.
    public var minFreeBytes: Int64 = 256 * 1024 * 1024
    /// Bytes set aside for the job database on its filesystem (`jobs.sqlite.reserve`), released
    /// when a write finds the disk full so that outcomes, cancels and pauses are still recorded.
    public var databaseReserveBytes: Int64 = 32 * 1024 * 1024
    /// Accept the state directory's database as it is, or create an empty one, even when its
    /// identity marker says the one griditd created there is gone (`serve --init`).
    public var initialize = false
    /// A job asked to stop (cancel, shutdown) that is still running after this many seconds
    /// (its engine step hung or its worker stopped): the engine's worker process is killed.
    public var stopGrace: TimeInterval = 30
    /// The model of a submit that names none; nil: the store's only model (`NAME:latest` if the
    /// store holds one name), else the submit is refused with a message saying what to pass.
    public var defaultModel: String?
    /// SIGTERM → the running job is checkpointed and handed back within this; then griditd
    /// cancels what is left and exits (below the unit's TimeoutStopSec=90).
    public var stopTimeout: TimeInterval = 75
    /// Identifies this process in leases and replies.
    public var instanceID: String

    public init(
        stateDirectory: String = "/var/lib/gridit", socketPath: String = "/run/gridit/griditd.sock",
        userGroup: String? = nil, adminGroup: String? = nil, socketGroup: String? = nil,
        blasThreads: Int = ProcessInfo.processInfo.activeProcessorCount,
        instanceID: String = UUID().uuidString.lowercased()
    ) {
        self.stateDirectory = stateDirectory
        self.socketPath = socketPath
        self.userGroup = userGroup
        self.adminGroup = adminGroup
        self.socketGroup = socketGroup
        self.blasThreads = blasThreads
        self.instanceID = instanceID
    }

    public var layout: StateLayout { StateLayout(root: stateDirectory) }
}

/// Where things live under the state directory.
public struct StateLayout: Sendable {
    public var root: String

    public var database: String { root + "/jobs.sqlite" }
    /// Per-job resumable engine state: `work/<job id>/`.
    public var work: String { root + "/work" }
    /// Finished outputs: `outputs/<name>/` (default name `job-<id>`).
    public var outputs: String { root + "/outputs" }
    /// Scratch space (model exports streamed to clients).
    public var tmp: String { root + "/tmp" }

    public func workDirectory(job id: Int64) -> String { work + "/\(id)" }
    public func outputDirectory(name: String) -> String { outputs + "/" + name }
}
