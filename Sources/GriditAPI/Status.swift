// Wire types of `/v1/status`, `/v1/version` and `/v1/queue`.

import Foundation
import GriditJobSpec

/// `GET /v1/version`: what a client checks first (griditctl refuses a daemon with another major).
public struct VersionInfo: Codable, Hashable, Sendable {
    public var version: String
    public var apiVersion: String

    public init(version: String = griditVersion, apiVersion: String = GriditAPI.apiVersion) {
        self.version = version
        self.apiVersion = apiVersion
    }

    enum CodingKeys: String, CodingKey {
        case version
        case apiVersion = "api_version"
    }
}

/// Job counts by state.
public struct QueueCounts: Codable, Hashable, Sendable {
    public var queued = 0
    public var retryable = 0
    public var running = 0
    public var succeeded = 0
    public var failed = 0
    public var canceled = 0
    public var dead = 0

    public init() {}

    /// Jobs waiting or running: what counts against `max_queued`.
    public var depth: Int { queued + retryable + running }

    public subscript(state: JobState) -> Int {
        get {
            switch state {
            case .queued: queued
            case .retryable: retryable
            case .running: running
            case .succeeded: succeeded
            case .failed: failed
            case .canceled: canceled
            case .dead: dead
            }
        }
        set {
            switch state {
            case .queued: queued = newValue
            case .retryable: retryable = newValue
            case .running: running = newValue
            case .succeeded: succeeded = newValue
            case .failed: failed = newValue
            case .canceled: canceled = newValue
            case .dead: dead = newValue
            }
        }
    }
}

/// `GET /v1/queue`, and the answer to `POST /v1/queue/pause|resume`.
public struct QueueStatus: Codable, Hashable, Sendable {
    /// Persisted: a paused queue accepts submits but starts nothing.
    public var paused: Bool
    public var counts: QueueCounts
    public var maxQueued: Int

    public init(paused: Bool, counts: QueueCounts, maxQueued: Int) {
        self.paused = paused
        self.counts = counts
        self.maxQueued = maxQueued
    }

    enum CodingKeys: String, CodingKey {
        case paused, counts
        case maxQueued = "max_queued"
    }
}

/// A model the daemon has mapped (from the model store's keep-alive cache).
public struct LoadedModel: Codable, Hashable, Sendable {
    public var digest: String
    /// Tags pointing at the digest, if any.
    public var names: [String]
    /// The precision its weights are loaded in, "fp32" or "bf16" (a version may be loaded in
    /// both); nil from a griditd before 2026-12-08, which put a bf16 copy's in `digest`.
    public var precision: String?
    /// Bytes of the mapped files resident in memory.
    public var residentBytes: Int64?
    /// Jobs using it now.
    public var activeJobs: Int
    /// When it will be unmapped if nothing uses it meanwhile.
    public var expiresAt: Date?

    public init(
        digest: String, names: [String], precision: String?, residentBytes: Int64?, activeJobs: Int, expiresAt: Date?
    ) {
        self.digest = digest
        self.names = names
        self.precision = precision
        self.residentBytes = residentBytes
        self.activeJobs = activeJobs
        self.expiresAt = expiresAt
    }

    enum CodingKeys: String, CodingKey {
        case digest, names, precision
        case residentBytes = "resident_bytes"
        case activeJobs = "active_jobs"
        case expiresAt = "expires_at"
    }
}

/// A running job, as `status` shows it.
public struct RunningJob: Codable, Hashable, Sendable {
    public var id: Int64
    public var ownerUID: UInt32
    public var pipelineDigest: String?
    public var progress: JobProgress

    public init(id: Int64, ownerUID: UInt32, pipelineDigest: String?, progress: JobProgress) {
        self.id = id
        self.ownerUID = ownerUID
        self.pipelineDigest = pipelineDigest
        self.progress = progress
    }

    enum CodingKeys: String, CodingKey {
        case id, progress
        case ownerUID = "owner_uid"
        case pipelineDigest = "pipeline_digest"
    }
}

/// The caller's own waiting job and its place in the queue.
public struct QueuedJobPosition: Codable, Hashable, Sendable {
    public var id: Int64
    public var state: JobState
    public var queuePosition: Int?

    public init(id: Int64, state: JobState, queuePosition: Int?) {
        self.id = id
        self.state = state
        self.queuePosition = queuePosition
    }

    enum CodingKeys: String, CodingKey {
        case id, state
        case queuePosition = "queue_position"
    }
}

/// `GET /v1/status`.
public struct DaemonStatus: Codable, Hashable, Sendable {
    public var version: String
    public var apiVersion: String
    public var instanceID: String
    public var pid: Int32
    public var startedAt: Date
    public var uptimeSeconds: Double
    public var stateDirectory: String
    /// Free bytes on the state directory's filesystem.
    public var diskFreeBytes: Int64?
    /// Below this, jobs are not started (`disk_full`).
    public var minFreeBytes: Int64
    public var queue: QueueStatus
    public var running: [RunningJob]
    /// The caller's waiting and running jobs, with queue positions.
    public var yourJobs: [QueuedJobPosition]
    public var loadedModels: [LoadedModel]
    /// False when this griditd was built without an engine: jobs are accepted and stay queued.
    public var engineAvailable: Bool
    public var modelStoreAvailable: Bool
    /// Threads the engine uses for its matrix products.
    public var blasThreads: Int
    /// The caller as the daemon sees it (from SO_PEERCRED).
    public var caller: CallerInfo
    /// What keeps jobs from starting or griditd from working normally (waiting for disk space,
    /// the database's filesystem full, the database lost), most serious first; empty when all is well.
    public var notices: [StatusNotice]
    /// The engine's worker process (nil: no engine in this build).
    public var worker: EngineWorkerInfo?
    /// Every host sharing the queue (`current`: this one), as `GET /v1/nodes` lists them; nil
    /// on a queue of one host (SQLite).
    public var nodes: [NodeInfo]?
    /// The folder every host mounts for work folders and outputs (nil: the state directory).
    public var sharedRoot: String?

    public init(
        version: String, apiVersion: String, instanceID: String, pid: Int32, startedAt: Date, uptimeSeconds: Double,
        stateDirectory: String, diskFreeBytes: Int64?, minFreeBytes: Int64, queue: QueueStatus, running: [RunningJob],
        yourJobs: [QueuedJobPosition],
        loadedModels: [LoadedModel], engineAvailable: Bool, modelStoreAvailable: Bool, blasThreads: Int,
        caller: CallerInfo, notices: [StatusNotice] = [], worker: EngineWorkerInfo? = nil, nodes: [NodeInfo]? = nil,
        sharedRoot: String? = nil
    ) {
        self.notices = notices
        self.worker = worker
        self.nodes = nodes
        self.sharedRoot = sharedRoot
        self.version = version
        self.apiVersion = apiVersion
        self.instanceID = instanceID
        self.pid = pid
        self.startedAt = startedAt
        self.uptimeSeconds = uptimeSeconds
        self.stateDirectory = stateDirectory
        self.diskFreeBytes = diskFreeBytes
        self.minFreeBytes = minFreeBytes
        self.queue = queue
        self.running = running
        self.yourJobs = yourJobs
        self.loadedModels = loadedModels
        self.engineAvailable = engineAvailable
        self.modelStoreAvailable = modelStoreAvailable
        self.blasThreads = blasThreads
        self.caller = caller
    }

    enum CodingKeys: String, CodingKey {
        case version, pid, queue, running, caller
        case apiVersion = "api_version"
        case instanceID = "instance_id"
        case startedAt = "started_at"
        case uptimeSeconds = "uptime_seconds"
        case stateDirectory = "state_directory"
        case diskFreeBytes = "disk_free_bytes"
        case minFreeBytes = "min_free_bytes"
        case yourJobs = "your_jobs"
        case loadedModels = "loaded_models"
        case engineAvailable = "engine_available"
        case modelStoreAvailable = "model_store_available"
        case blasThreads = "blas_threads"
        case notices, worker, nodes
        case sharedRoot = "shared_root"
    }
}

/// Something an operator should know from `status`: a stable `code` and what to do.
public struct StatusNotice: Codable, Hashable, Sendable {
    public struct Code: RawRepresentable, Codable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        /// Free space under `min_free_bytes`: no job starts (none uses an attempt) until there is room.
        public static let waitingForDisk = Code(rawValue: "waiting_for_disk")
        /// A write found the database's filesystem full: griditd released its reserve for the
        /// database and starts no job until there is room.
        public static let databaseDiskFull = Code(rawValue: "database_disk_full")
        /// The database file was deleted or replaced while griditd ran: nothing starts, writes are refused.
        public static let databaseLost = Code(rawValue: "database_lost")
        /// This host is drained (`griditctl nodes drain`): it claims no job; its running jobs finish.
        public static let draining = Code(rawValue: "draining")
        /// The shared job database (PostgreSQL) does not answer: nothing is claimed or recorded;
        /// running jobs stop at their lease's fence and run again once it answers.
        public static let databaseUnreachable = Code(rawValue: "database_unreachable")
        /// The shared root does not hold the cluster's mark (the share is not mounted, or another
        /// is): no job starts on this host until it is back.
        public static let sharedRootUnavailable = Code(rawValue: "shared_root_unavailable")
    }

    public var code: Code
    public var message: String
    /// Jobs cannot start while it lasts (`jobs show` gives it as the reason a job waits).
    public var blocksJobs: Bool

    public init(_ code: Code, _ message: String, blocksJobs: Bool) {
        self.code = code
        self.message = message
        self.blocksJobs = blocksJobs
    }

    enum CodingKeys: String, CodingKey {
        case code, message
        case blocksJobs = "blocks_jobs"
    }
}

/// The process griditd runs the engine in.
public struct EngineWorkerInfo: Codable, Hashable, Sendable {
    /// Nil while none runs (it starts with the first batch and after a crash).
    public var pid: Int32?
    /// `idle` (models may stay loaded), `running`, `stopped` (none yet, or ended).
    public var state: String
    /// Worker processes started so far.
    public var starts: Int
    /// How the last one ended, when one did ("killed by SIGSEGV while it ran jobs 3, 4").
    public var lastExit: String?

    public init(pid: Int32?, state: String, starts: Int, lastExit: String?) {
        self.pid = pid
        self.state = state
        self.starts = starts
        self.lastExit = lastExit
    }

    enum CodingKeys: String, CodingKey {
        case pid, state, starts
        case lastExit = "last_exit"
    }
}

/// Who the daemon thinks is calling, and what they may do.
public struct CallerInfo: Codable, Hashable, Sendable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    /// Root, the daemon's own user, or a member of the admin group: manages every job and model.
    public var admin: Bool

    public init(uid: UInt32, gid: UInt32, pid: Int32, admin: Bool) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.admin = admin
    }
}

/// `GET /healthz`: griditd is alive (it answers; its database is not lost).
public struct HealthStatus: Codable, Hashable, Sendable {
    public var status: String
    public var version: String
    public var uptimeSeconds: Double

    public init(status: String, version: String = griditVersion, uptimeSeconds: Double) {
        self.status = status
        self.version = version
        self.uptimeSeconds = uptimeSeconds
    }

    enum CodingKeys: String, CodingKey {
        case status, version
        case uptimeSeconds = "uptime_seconds"
    }
}

/// `GET /readyz`: whether griditd would start a job now (200), or why not (503).
public struct Readiness: Codable, Hashable, Sendable {
    public var ready: Bool
    /// Empty when ready: the queue paused, no engine, too little disk, a lost database.
    public var reasons: [String]

    public init(ready: Bool, reasons: [String]) {
        self.ready = ready
        self.reasons = reasons
    }
}
