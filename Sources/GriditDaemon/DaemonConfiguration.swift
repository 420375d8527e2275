import CDispatch  // declares `struct stat` first once Hummingbird is a dependency
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Everything `griditd serve` can be told. Defaults suit the systemd units in `systemd/`.
public struct DaemonConfiguration: Sendable {
    /// Every priority a job may have; higher runs first.
    public static let priorities = -1000...1000

    /// Database, lock, work and output folders (`StateDirectory=gridit`).
    public var stateDirectory: String
    /// The job queue on PostgreSQL (`postgres://USER@HOST:PORT/DATABASE`, never with the
    /// password); nil: the state directory's SQLite database. griditd opens it, not GriditDaemon.
    public var databaseURL: String?
    /// With `databaseURL`: hosts wake each other through LISTEN/NOTIFY; false polls only (a
    /// transaction pooler between griditd and PostgreSQL cannot carry LISTEN).
    public var databaseNotify = true
    /// A folder mounted on every host of a shared queue (NFS, CephFS) that holds the jobs' work
    /// folders and outputs, so that a job resumes on any host from the grids it finished and
    /// its output is readable from any host. Needed with `databaseURL`, refused without it.
    public var sharedRoot: String?
    /// The control socket when griditd binds it itself (not socket-activated).
    public var socketPath: String
    /// Members may submit and manage their own jobs. Nil: no group check beyond the socket mode.
    public var userGroup: String?
    /// Members manage every job and the models.
    public var adminGroup: String?
    /// Group and mode of a self-bound socket (an activated socket gets them from the .socket unit).
    /// With a users' group the socket is 0666: griditd itself refuses everyone outside that group
    /// and the admin group from SO_PEERCRED (a 0660 socket would shut out admins who are not in
    /// the users' group), like D-Bus's and snapd's sockets. Without one, the mode decides (0660).
    public var socketGroup: String?
    public var socketMode: mode_t
    /// Threads of the engine's matrix products.
    public var blasThreads: Int
    /// A paused queue accepts submits and starts nothing; this pauses it (persistently) at start.
    public var startPaused = false
    /// `queued + retryable + running` beyond this ⇒ `queue_full` (exit 75).
    public var maxQueued = 1000
    /// The same for one user who is not an admin ⇒ `user_limit` (exit 75).
    public var maxQueuedPerUser = 100
    /// Jobs one member may have recorded, finished ones included (admins: no limit).
    public var maxJobsPerUser = 100_000
    /// Estimated compute of one non-admin user's queued and running jobs, in seconds at the nominal
    /// rate `griditd run --dry-run` assumes (a 128-frame job of the bundled model: 28 s; one of
    /// 100,000 frames: 6.2 h) ⇒ `user_limit`.
    public var maxWorkPerUser: TimeInterval = 24 * 3600
    /// Most estimated compute of one job, at the same nominal rate (nil: no limit) ⇒ refused
    /// with its estimate.
    public var maxJobTime: TimeInterval?
    /// Priorities a user who is not an admin may give a job (admins: all of -1000...1000); a
    /// member's job without one gets the one closest to 0. Members cannot outrank admins' default
    /// (0) unless this allows it.
    public var memberPriorities: ClosedRange<Int> {
        get { memberPriorityMin...memberPriorityMax }
        set { (memberPriorityMin, memberPriorityMax) = (newValue.lowerBound, newValue.upperBound) }
    }
    /// The ends of `memberPriorities`, each a setting of its own (`DaemonSettings` checks min ≤ max).
    public var memberPriorityMin = -1000
    public var memberPriorityMax = 0
    /// The control socket's limits: body size, connections (in all, per user, kept for admins)
    /// and the timeouts of slow or idle clients.
    public var http = HTTPServerLimits()
    /// Longest sequence a request may ask for (the pipeline may allow less).
    public var maxLength = 100_000
    /// A running job's lease; the worker heartbeats every third of it while it makes progress.
    public var leaseDuration: TimeInterval = 120
    /// Fallback poll of the queue (backoffs ending, not-before, a notice missed); submits wake
    /// the worker at once (on PostgreSQL, other hosts' submits too, through LISTEN/NOTIFY).
    public var pollInterval: TimeInterval = 1
    /// How often the maintenance service looks for expired leases.
    public var reapInterval: TimeInterval = 15
    /// How often this host records "last seen" in the node registry and reads whether it is
    /// drained (a drain made on this host counts at once).
    public var nodeHeartbeatInterval: TimeInterval = 5
    /// A host unseen this long is shown `gone` and may be removed (`nodes rm`).
    public var nodeGoneAfter: TimeInterval { max(30, 6 * nodeHeartbeatInterval) }
    /// Retention of finished jobs (and their outputs), by state: succeeded ones, and failed,
    /// canceled and dead ones. Nil keeps them until `griditctl jobs prune` (retention off). The
    /// maintenance service applies it at start and every `pruneInterval`.
    public var keepSucceeded: TimeInterval? = 7 * 86_400
    public var keepFailed: TimeInterval? = 30 * 86_400
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
    /// Seconds between re-reads of a watched job (and keepalive lines of its event stream).
    public var eventsKeepalive: TimeInterval = 15
    /// The model of a submit that names none; nil: the store's only model (`NAME:latest` if the
    /// store holds one name), else the submit is refused with a message saying what to pass.
    public var defaultModel: String?
    /// SIGTERM → the running job is checkpointed and handed back within this; then griditd
    /// cancels what is left and exits (below the unit's TimeoutStopSec=90).
    public var stopTimeout: TimeInterval = 75
    /// `HOST:PORT` of an optional TCP listener that serves `/metrics`, `/healthz` and
    /// `/readyz` only, for scrapers that cannot reach a Unix socket; nil: none (the default).
    public var metricsListen: String?
    /// Log level of griditd and of its engine's worker process.
    public var logLevel = "info"
    /// Read-only model store roots searched before the state directory's.
    public var siteRoots: [String] = []
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
        self.socketMode = userGroup == nil ? 0o660 : 0o666
        self.blasThreads = blasThreads
        self.instanceID = instanceID
    }

    public var layout: StateLayout { StateLayout(root: stateDirectory, sharedRoot: sharedRoot) }
}

/// Where things live under the state directory, and under the shared root when there is one.
public struct StateLayout: Sendable {
    public var root: String
    /// Holds `work` and `outputs` instead of the state directory (`DaemonConfiguration.sharedRoot`).
    public var sharedRoot: String?

    public init(root: String, sharedRoot: String? = nil) {
        self.root = root
        self.sharedRoot = sharedRoot
    }

    /// The folder of work folders and outputs: the shared root, else the state directory.
    public var artifacts: String { sharedRoot ?? root }
    public var database: String { root + "/jobs.sqlite" }
    /// Per-job resumable engine state: `work/<job id>/`.
    public var work: String { artifacts + "/work" }
    /// Finished outputs: `outputs/job-<id>/`, or `outputs/named/<uid>/<name>/` for a name the
    /// submitter chose (`--output`): apart from the automatic folders and per user, so that no
    /// name claims another job's or another user's folder.
    public var outputs: String { artifacts + "/outputs" }
    /// The cluster's model origin (`models/` of the shared root): every import publishes its
    /// version there, and a host pulls from it the versions its own store lacks. Nil: one host.
    public var modelOrigin: String? { sharedRoot.map { $0 + "/models" } }
    /// Scratch space (model exports streamed to clients); always local.
    public var tmp: String { root + "/tmp" }

    public func workDirectory(job id: Int64) -> String { work + "/\(id)" }
    /// `outputs/job-12` for a path under the artifacts' folder (what the logs show), else the path.
    public func relative(_ path: String) -> String {
        path.hasPrefix(artifacts + "/") ? String(path.dropFirst(artifacts.count + 1)) : path
    }
    public func automaticOutputDirectory(job id: Int64) -> String { outputs + "/job-\(id)" }
    public func namedOutputDirectory(owner: UInt32, name: String) -> String { outputs + "/named/\(owner)/" + name }

    /// Whether `folder` is a finished output: it holds the `sequence.json` file every output has
    /// (a file: a folder of outputs may hold an output named `sequence.json`).
    public static func isFinishedOutput(_ folder: String) -> Bool {
        var st = stat()
        return lstat(folder + "/sequence.json", &st) == 0 && st.st_mode & S_IFMT == S_IFREG
    }
}
