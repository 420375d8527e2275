// `griditd serve`: parse, set up logging, hand over to GriditDaemon. No logic lives here.
import ArgumentParser
import Foundation
import GriditAPI
import GriditBackend
import GriditDaemon
import GriditFaults
import GriditJobQueue
import GriditStateDatabase
import Logging

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon in the foreground (systemd: Type=notify, socket activation).",
        discussion: """
            Without systemd, griditd binds --socket itself, logs to stderr and runs until SIGTERM or Ctrl-C. Under systemd it adopts the socket of griditd.socket, reports READY/STATUS/WATCHDOG and logs to the journal with JOB_ID=, STAGE= fields.
            """)

    @Option(help: "Database, lock, work and output folders.")
    var stateDir = "/var/lib/gridit"

    @Option(help: "Control socket to bind when not socket-activated.")
    var socket = "/run/gridit/griditd.sock"

    @Option(help: "Group whose members may use the API (default: 'gridit' if it exists, else no check).")
    var group: String?

    @Option(help: "Group whose members manage every job and the models (default: 'gridit-admin' if it exists).")
    var adminGroup: String?

    @Option(help: "Group of a self-bound socket (default: --group).")
    var socketGroup: String?

    @Option(help: "Threads of the engine's matrix products (default: the number of CPUs).")
    var blasThreads: Int?

    @Flag(help: "Pause the queue (persistently) before starting: jobs are accepted, none runs.")
    var startPaused = false

    @Option(help: "Most waiting + running jobs; beyond, a submit gets queue_full.")
    var maxQueued = 1000

    @Option(help: "Most waiting + running jobs of one user who is not an admin; beyond, a submit gets user_limit.")
    var maxQueuedPerUser = 100

    @Option(
        help: ArgumentHelp(
            "Most estimated compute of one non-admin user's waiting + running jobs (90m, 24h, 2d), at the nominal rate of `griditd run --dry-run`.",
            valueName: "duration"))
    var maxWorkPerUser = "24h"

    @Option(parsing: .unconditional, help: "Lowest priority a user who is not an admin may give a job.")
    var memberPriorityMin = -1000

    @Option(parsing: .unconditional, help: "Highest priority a user who is not an admin may give a job (admins' default is 0).")
    var memberPriorityMax = 0

    @Option(help: "Most open connections to the socket; beyond, a client gets 503.")
    var maxConnections = 512

    @Option(help: "Most open connections of one user (uid).")
    var maxConnectionsPerUser = 32

    @Option(help: "Connections of --max-connections kept for root, griditd's user and the admin group.")
    var adminConnections = 32

    @Option(help: "Seconds a client has to send a request's headers (from connecting, or from its first byte on a reused connection).")
    var headerTimeout: Double = 10

    @Option(help: "Seconds a client has to send a request's body after its headers.")
    var bodyTimeout: Double = 30

    @Option(help: "Seconds an open connection may wait without a request, or without reading the answer, before it is closed.")
    var idleTimeout: Double = 60

    @Option(help: "Longest sequence a job may ask for, in frames.")
    var maxLength = 100_000

    @Option(help: "Model used when a submit names none (default: the store's only model, NAME:latest).")
    var defaultModel: String?

    @Option(
        name: .customLong("site-root"),
        help: "A read-only model store root searched before the state directory; repeatable (env GRIDIT_SITE_ROOTS).")
    var siteRoots: [String] = []

    @Option(help: "Bytes of activations one batched forward may take (K, M, G suffixes).")
    var memoryBudget: String = "2G"

    @Option(help: "Most grids or frames in one batched forward.")
    var maxBatch = 16

    @Option(help: "Most jobs (of one model and priority) run together.")
    var maxBatchJobs = 4

    @Option(help: "Seconds a model stays loaded after its last job.")
    var keepAlive: Double = 600

    @Option(help: "Lease of a running job in seconds (heartbeats every third of it while it progresses).")
    var lease: Double = 120

    @Option(help: "Seconds a SIGTERM waits for the running job to checkpoint before griditd exits.")
    var stopTimeout: Double = 75

    @Option(help: "Seconds a canceled or stopping job may take to stop before griditd kills the engine's worker process.")
    var stopGrace: Double = 30

    @Option(help: "Free space (K, M, G) below which no job starts; queued jobs wait without using attempts.")
    var minFree: String = "256M"

    @Option(help: "Space (K, M, G; 0: none) set aside for the job database, released when the disk fills up.")
    var dbReserve: String = "32M"

    @Option(
        help: ArgumentHelp(
            "Delete succeeded jobs and their output folders this long after they finished (90m, 24h, 7d; off: keep them until `griditctl jobs prune`).",
            valueName: "age|off"))
    var keepSucceeded = "7d"

    @Option(
        help: ArgumentHelp(
            "The same for failed, canceled and dead jobs (off: keep them).", valueName: "age|off"))
    var keepFailed = "30d"

    @Flag(help: "Accept the state directory's job database as it is, or create an empty one, although its identity marker says the database griditd created there is gone (deleted, replaced, its WAL lost).")
    var `init` = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func validate() throws {
        if let n = blasThreads, !(1...1024).contains(n) { throw ValidationError("--blas-threads must be 1...1024") }
        guard maxQueued >= 1 else { throw ValidationError("--max-queued must be at least 1") }
        guard maxLength >= 1 else { throw ValidationError("--max-length must be at least 1") }
        try Self.checkSeconds(lease, "--lease", 5...86_400)
        try Self.checkSeconds(stopTimeout, "--stop-timeout", 1...86_400)
        try Self.checkSeconds(headerTimeout, "--header-timeout", 1...3600)
        try Self.checkSeconds(bodyTimeout, "--body-timeout", 1...3600)
        try Self.checkSeconds(idleTimeout, "--idle-timeout", 1...86_400)
        guard maxQueuedPerUser >= 1 else { throw ValidationError("--max-queued-per-user must be at least 1") }
        guard parseDuration(maxWorkPerUser) != nil else {
            throw ValidationError("--max-work-per-user '\(maxWorkPerUser)' is not a duration like 90m, 24h or 2d")
        }
        let priorities = DaemonConfiguration.priorities
        guard priorities.contains(memberPriorityMin), priorities.contains(memberPriorityMax), memberPriorityMin <= memberPriorityMax else {
            throw ValidationError("--member-priority-min and --member-priority-max must lie in \(priorities), min ≤ max")
        }
        guard (1...100_000).contains(maxConnections) else { throw ValidationError("--max-connections must be 1...100000") }
        guard (1...maxConnections).contains(maxConnectionsPerUser) else {
            throw ValidationError("--max-connections-per-user must be 1...--max-connections")
        }
        guard (0..<maxConnections).contains(adminConnections) else {
            throw ValidationError("--admin-connections must be 0 or more and less than --max-connections")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'") }
        guard let budget = parseBytes(memoryBudget), budget >= 1 << 20 else {
            throw ValidationError("--memory-budget '\(memoryBudget)' is not a size of at least 1M (e.g. 512M, 2G)")
        }
        guard (1...1024).contains(maxBatch) else { throw ValidationError("--max-batch must be 1...1024") }
        guard (1...64).contains(maxBatchJobs) else { throw ValidationError("--max-batch-jobs must be 1...64") }
        try Self.checkSeconds(keepAlive, "--keep-alive", 0...(365 * 86_400))
        try Self.checkSeconds(stopGrace, "--stop-grace", 1...86_400)
        guard parseRetention(keepSucceeded) != nil else {
            throw ValidationError("--keep-succeeded '\(keepSucceeded)' is not an age like 12h or 7d, or 'off'")
        }
        guard parseRetention(keepFailed) != nil else {
            throw ValidationError("--keep-failed '\(keepFailed)' is not an age like 12h or 30d, or 'off'")
        }
        guard parseBytes(minFree) != nil else { throw ValidationError("--min-free '\(minFree)' is not a size (e.g. 256M, 1G)") }
        guard parseBytes(dbReserve) != nil else { throw ValidationError("--db-reserve '\(dbReserve)' is not a size (e.g. 32M, 0)") }
    }

    /// A finite number of seconds in `range` (Duration and the database's milliseconds trap on
    /// larger ones).
    private static func checkSeconds(_ value: Double, _ name: String, _ range: ClosedRange<Double>) throws {
        guard range.contains(value) else {
            throw ValidationError("\(name) must be \(Int(range.lowerBound)) to \(Int(range.upperBound)) seconds (got \(value))")
        }
    }

    func run() async throws {
        umask(0o027)  // as the unit's UMask=: what griditd writes is never world-readable, in the foreground too
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let sink = DaemonLogHandler.detectSink()
        LoggingSystem.bootstrap { label in DaemonLogHandler(label: label, sink: sink, level: level) }
        let logger = Logger(label: "gridit.daemon")

        let userGroup = group ?? (Authorizer.gid(of: "gridit") != nil ? "gridit" : nil)
        var configuration = DaemonConfiguration(
            stateDirectory: absolute(stateDir), socketPath: absolute(socket), userGroup: userGroup,
            adminGroup: adminGroup ?? (Authorizer.gid(of: "gridit-admin") != nil ? "gridit-admin" : nil),
            socketGroup: socketGroup ?? userGroup)
        if let blasThreads { configuration.blasThreads = blasThreads }
        configuration.startPaused = startPaused
        configuration.maxQueued = maxQueued
        configuration.maxLength = maxLength
        configuration.defaultModel = defaultModel
        configuration.leaseDuration = lease
        configuration.stopTimeout = stopTimeout
        configuration.memoryBudget = parseBytes(memoryBudget) ?? configuration.memoryBudget
        configuration.maxBatchItems = maxBatch
        configuration.maxBatchJobs = maxBatchJobs
        configuration.modelKeepAlive = keepAlive
        configuration.maxQueuedPerUser = maxQueuedPerUser
        configuration.maxWorkPerUser = parseDuration(maxWorkPerUser) ?? configuration.maxWorkPerUser
        configuration.memberPriorities = memberPriorityMin...memberPriorityMax
        configuration.http.maxConnections = maxConnections
        configuration.http.maxConnectionsPerUser = maxConnectionsPerUser
        configuration.http.adminConnections = adminConnections
        configuration.http.headerTimeout = .seconds(headerTimeout)
        configuration.http.bodyTimeout = .seconds(bodyTimeout)
        configuration.http.idleTimeout = .seconds(idleTimeout)
        configuration.stopGrace = stopGrace
        configuration.minFreeBytes = Int64(parseBytes(minFree) ?? 0)
        configuration.databaseReserveBytes = Int64(parseBytes(dbReserve) ?? 0)
        configuration.keepSucceeded = parseRetention(keepSucceeded) ?? nil
        configuration.keepFailed = parseRetention(keepFailed) ?? nil
        configuration.initialize = `init`
        let worker = WorkerCommand.launch(
                stateDirectory: configuration.stateDirectory, blasThreads: configuration.blasThreads,
                memoryBudget: configuration.memoryBudget, maxBatch: configuration.maxBatchItems,
                keepAlive: configuration.modelKeepAlive, logLevel: logLevel)
        let sites = (siteRoots + (ProcessInfo.processInfo.environment["GRIDIT_SITE_ROOTS"] ?? "").split(separator: ":").map(String.init))
            .map(absolute)

        do {
            let faults = try FaultInjection(environment: ProcessInfo.processInfo.environment)
            let settings = configuration
            try await Daemon.run(configuration: configuration, logger: logger, faults: faults) { store in
                try Backend.components(
                    configuration: settings, jobs: store, siteRoots: sites, worker: worker, logger: logger)
            }
        } catch let error as StateError {
            logger.critical("\(error.message)")
            throw ExitCode(error.code == .locked ? 75 : error.code == .databaseLost ? 78 : 1)
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }

    /// An age, or `off` (.some(nil): retention off); nil when it is neither.
    private func parseRetention(_ text: String) -> TimeInterval?? {
        text == "off" ? .some(nil) : parseDuration(text).map { .some($0) }
    }

    private func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}

