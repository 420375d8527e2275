// Start-up and shutdown of griditd: lock, database, crash recovery, socket, READY=1, services.

import CDispatch  // declares `struct stat` and `timespec` first once Hummingbird is a dependency
import Foundation
import GriditAPI
import GriditFaults
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

public struct DaemonError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The engine and the model store, built once griditd holds the state directory's lock and the
/// database is migrated (the model store shares that directory and database file).
public struct DaemonComponents: Sendable {
    public var engine: (any JobEngine)?
    public var catalog: (any ModelCatalog)?
    /// Their own long-lived loops (e.g. unloading idle models), run beside griditd's services.
    public var services: [any Service]

    public init(engine: (any JobEngine)? = nil, catalog: (any ModelCatalog)? = nil, services: [any Service] = []) {
        self.engine = engine
        self.catalog = catalog
        self.services = services
    }
}

public enum Daemon {
    /// Runs griditd until SIGTERM/SIGINT. Throws `DaemonError` (or the store's error) with a
    /// message for the operator when it cannot start. `components` runs after the lock is taken,
    /// the migrations are applied and orphaned jobs are recovered, before the socket opens.
    /// `jobs` gives the job queue when it lives elsewhere (PostgreSQL, migrated and serving),
    /// acting for this host's node (read from the state directory once it is locked); nil: the
    /// state directory's SQLite database holds it. The state database opens either way (the
    /// model store's tables).
    public static func run(
        configuration: DaemonConfiguration, logger: Logger, faults: FaultInjection = FaultInjection(),
        jobs: (@Sendable (NodeIdentity) -> any JobStore & NodeRegistry)? = nil,
        components: @Sendable (_ database: StateDatabase, _ jobs: any JobStore) async throws -> DaemonComponents = {
            _, _ in DaemonComponents()
        }
    ) async throws {
        let layout = configuration.layout
        try prepareStateDirectory(layout.root)
        let lock = try StateDirectoryLock(stateDirectory: layout.root)
        defer { lock.release() }
        if let shared = layout.sharedRoot { try checkSharedRoot(shared) }
        let notifier = SystemdNotifier()
        if faults.isActive {
            logger.warning("test faults are active (GRIDIT_TEST_FAULTS)", metadata: ["faults": "\(faults)"])
        }
        let (database, notes) = try StateDatabase.openOwned(
            path: layout.database, initialize: configuration.initialize,
            reserveBytes: configuration.databaseReserveBytes)
        if configuration.initialize {
            // Ids past the folders the state directory keeps: a new job must not take their frames.
            try StateBackup.continueJobIDs(
                database, stateDirectory: layout.root, outputLevels: JobSpec.maxOutputLevels)
        }
        let local = SQLiteJobStore(database: database)
        defer { try? local.close() }
        let node = try NodeIdentity.loadOrCreate(stateDirectory: layout.root)
        let shared = jobs?(node)
        let store: any JobStore = shared ?? local
        let nodes: any NodeRegistry = shared ?? SingleNodeRegistry(store: local)
        for note in notes { logger.warning("\(note)") }
        if let reserve = database.reserve, reserve.size > 0, !reserve.isHeld {
            logger.warning(
                "no room for the database's \(formatBytes(reserve.size)) reserve (\(reserve.path)); griditd makes it once there is"
            )
        }
        // Nothing is written under the shared root (and the host is not listed) before its mark
        // proves it is the cluster's.
        var sharedRootToken: String?
        if let shared = layout.sharedRoot { sharedRootToken = try await SharedRootMark.establish(shared, nodes: nodes) }
        try await nodes.registerNode(id: node.id, hostname: node.hostname, version: griditVersion, now: Date())
        // Under a shared root another host may be writing an output right now: only a partial
        // folder nobody touched for a lease is left over (its writer has been fenced since).
        Leftovers.remove(
            in: layout, partialOutputsUntouchedFor: layout.sharedRoot == nil ? nil : configuration.leaseDuration,
            logger: logger)
        for folder in [layout.work, layout.outputs, layout.tmp] {
            try StatePermissions.directory(folder, mode: StatePermissions.privateDirectory)
        }
        logger.notice("node \(node.id) (\(node.hostname))", metadata: ["node.id": "\(node.id)"])
        // This node's running jobs only, where the queue is shared.
        for job in try await store.recoverOrphanedJobs(now: Date()) {
            logger.warning(
                "requeued a job griditd was running when it stopped (killed, crashed or the machine went down); it resumes from its saved progress, not counted as a crash",
                metadata: ["job.id": "\(job.id)", "state": "\(job.state.rawValue)", "progress": "\(job.progress)"])
        }
        if configuration.startPaused {
            try await store.setPaused(true)
            logger.notice("queue paused at start (--start-paused); `griditctl queue resume` starts it")
        } else if try await store.isPaused() {
            logger.notice("queue is paused (persisted); `griditctl queue resume` starts it")
        }

        let built = try await components(database, store)
        let engine = built.engine, catalog = built.catalog
        var context = DaemonContext(
            configuration: configuration, store: store, engine: engine, catalog: catalog, notifier: notifier,
            faults: faults, logger: logger, database: database, node: node, nodes: nodes)
        context.singleHost = shared == nil
        if let shared = layout.sharedRoot, let sharedRootToken {
            context.sharedRootProbe = SharedRootProbe(root: shared, token: sharedRootToken)
        }
        let api = ControlAPI(context: context)
        let server = HTTPServer(
            limits: configuration.http,
            authorizer: Authorizer(userGroup: configuration.userGroup, adminGroup: configuration.adminGroup),
            logger: Logger(label: "gridit.api"), uploads: api.uploads, responder: api.router().buildResponder())

        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let listen: ListenSocket
        if let inherited = try SocketActivation.inheritedSocket() {
            listen = .inherited(fd: inherited.fd, path: inherited.path)
        } else {
            try prepareSocketPath(configuration.socketPath)
            listen = .path(configuration.socketPath)
        }
        let channel: NIOAsyncChannel<HTTPServer.AcceptedConnection, Never>
        do {
            channel = try await server.bind(listen, group: eventLoops)
        } catch {
            try? await eventLoops.shutdownGracefully()
            throw DaemonError(
                "cannot listen on \(configuration.socketPath): \(error); check that its folder exists and is writable")
        }
        switch listen {
        case .path(let path): try secureSocket(path, configuration)
        case .inherited(_, let path): try checkInheritedSocket(path: path, configuration)
        case .tcp: break
        }
        let socketDescription: String =
            switch listen {
            case .path(let p): p
            case .inherited(let fd, let p): "\(p ?? "?") (fd \(fd) from systemd)"
            case .tcp(let host, let port): "\(host):\(port)"
            }
        // The metrics listener: anyone who reaches the port reads metrics and health, nothing else.
        var observability: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let (host, port) = configuration.metricsHostPort {
            let metricsServer = HTTPServer(
                limits: configuration.http.metricsListener, authorizer: Authorizer(userGroup: nil, adminGroup: nil),
                logger: Logger(label: "gridit.metrics"), anonymous: true,
                responder: api.router(observability: true).buildResponder())
            let tcp: NIOAsyncChannel<HTTPServer.AcceptedConnection, Never>
            do {
                tcp = try await metricsServer.bind(.tcp(host: host, port: port), group: eventLoops)
            } catch {
                try? await eventLoops.shutdownGracefully()
                throw DaemonError("cannot listen on \(host):\(port) for metrics (--metrics-listen): \(error)")
            }
            logger.notice(
                "metrics listener on \(host):\(tcp.channel.localAddress?.port ?? port) (GET /metrics, /healthz, /readyz)",
                metadata: ["metrics.port": "\(tcp.channel.localAddress?.port ?? port)"])
            observability.append(.init(service: ControlSocketService(server: metricsServer, channel: tcp)))
        }
        logger.notice(
            "griditd \(griditVersion) ready",
            metadata: [
                "socket": "\(socketDescription)", "state_dir": "\(layout.root)", "pid": "\(getpid())",
                "engine": "\(engine != nil)", "model_store": "\(catalog != nil)",
            ])
        notifier.ready(status: "ready")
        await context.refreshStatus()

        // Other hosts' writes, as they commit (LISTEN/NOTIFY), where the shared queue tells them.
        var changes: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let feed = shared as? any JobChangeFeed {
            if feed.followsChanges {
                logger.notice("this host follows other hosts' queue changes (LISTEN/NOTIFY)")
                changes.append(.init(service: JobChangeService(feed: feed, monitor: context.monitor)))
            } else {
                logger.notice(
                    "this host polls the shared queue only (database-notify false), every \(configuration.pollInterval) s"
                )
            }
        }
        let deadline = StopDeadline(logger: logger)
        var groupConfiguration = ServiceGroupConfiguration(
            services: [
                .init(service: ControlSocketService(server: server, channel: channel)),
                .init(service: MaintenanceService(context: context)),
                .init(service: NodeHeartbeatService(context: context)),
            ] + changes + observability + built.services.map { .init(service: $0) } + [
                .init(service: WorkerService(context: context)),
                // Last: the first told of shutdown, so STOPPING=1 goes out before anything stops.
                .init(
                    service: StoppingNotifierService(
                        notifier: notifier, deadline: deadline, stopTimeout: configuration.stopTimeout)),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: Logger(label: "gridit.lifecycle"))
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(configuration.stopTimeout)
        // No cancellation limit: its end is a fatalError. StopDeadline ends such a stop instead.
        groupConfiguration.maximumCancellationDuration = nil
        let services = Task { try await ServiceGroup(configuration: groupConfiguration).run() }
        deadline.onSecondSignal { services.cancel() }
        try await withTaskCancellationHandler {
            try await services.value
        } onCancel: {
            services.cancel()
        }
        deadline.servicesEnded()

        try? await eventLoops.shutdownGracefully()
        if case .path(let path) = listen { unlink(path) }
        logger.notice("griditd stopped")
    }

    /// The shared root exists (griditd never makes it: a missing mount would otherwise become a
    /// local folder that no other host sees) and is a writable folder.
    private static func checkSharedRoot(_ root: String) throws {
        var st = stat()
        guard stat(root, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw DaemonError(
                "the shared root \(root) is not a folder; mount the shared filesystem there (every host "
                    + "mounts the same one) or fix --shared-root (docs/CLUSTER.md)")
        }
        guard access(root, W_OK | X_OK) == 0 else {
            throw DaemonError(
                "the shared root \(root) is not writable by uid \(getuid()); every host's griditd needs the same "
                    + "uid with write access there (docs/CLUSTER.md)")
        }
    }

    /// The state directory exists, is private (StatePermissions) and writable.
    private static func prepareStateDirectory(_ root: String) throws {
        do {
            try StatePermissions.directory(root, mode: StatePermissions.stateDirectory)
        } catch {
            throw DaemonError("the state directory: \(error.message)")
        }
        guard access(root, W_OK | X_OK) == 0 else {
            throw DaemonError(
                "the state directory \(root) is not writable by uid \(getuid()); fix its owner or pass --state-dir")
        }
    }

    /// The socket's folder exists; a stale socket file is removed, a live one is refused.
    private static func prepareSocketPath(_ path: String) throws {
        guard path.utf8.count < 108 else {
            throw DaemonError(
                "the socket path \(path) is \(path.utf8.count) bytes; Unix sockets allow 107. Use a shorter --socket")
        }
        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty && !FileManager.default.fileExists(atPath: folder) {
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            } catch {
                throw DaemonError("cannot create the socket folder \(folder): \(error.localizedDescription)")
            }
        }
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw DaemonError("\(path) exists and is not a socket; remove it or pass another --socket")
        }
        if socketAcceptsConnections(path) {
            throw DaemonError("another griditd is already listening on \(path); stop it or pass another --socket")
        }
    }

    static func socketAcceptsConnections(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return UnixSocket.connect(fd, to: path)
    }

    /// A socket anyone may connect to (`SocketMode=0666`, as the shipped unit has it) needs a
    /// group to check callers against: without one every local user would be a member.
    private static func checkInheritedSocket(path: String?, _ configuration: DaemonConfiguration) throws {
        var st = stat()
        // stat of the path: the socket file, not the inherited fd's inode.
        guard configuration.userGroup == nil, let path, stat(path, &st) == 0 else { return }
        if st.st_mode & 0o002 != 0 {
            throw DaemonError(
                "the socket \(path) lets anyone connect (mode \(String(st.st_mode & 0o777, radix: 8))), "
                    + "but griditd has no group to check callers against; create the 'gridit' group (systemd-sysusers) "
                    + "or pass --group")
        }
    }

    /// The socket mode (0666 when griditd checks every caller's groups itself, else 0660) and the
    /// users' group on a socket griditd bound itself.
    private static func secureSocket(_ path: String, _ configuration: DaemonConfiguration) throws {
        if let group = configuration.socketGroup {
            guard let gid = Authorizer.gid(of: group) else {
                throw DaemonError(
                    "the socket group '\(group)' does not exist; create it (systemd-sysusers) or pass --socket-group")
            }
            guard chown(path, uid_t.max, gid) == 0 else {
                throw DaemonError("chown of \(path) to group \(group) failed: \(String(cString: strerror(errno)))")
            }
        }
        guard chmod(path, configuration.socketMode) == 0 else {
            throw DaemonError("chmod of \(path) failed: \(String(cString: strerror(errno)))")
        }
    }
}

/// Serves the control socket until shutdown (it stops last, so clients can watch the worker drain).
struct ControlSocketService: Service {
    let server: HTTPServer
    let channel: NIOAsyncChannel<HTTPServer.AcceptedConnection, Never>

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await server.serve(channel) }
        } catch  where Task.isShuttingDownGracefully || error is CancellationError {
            // Shutdown closes the listening socket; that is the way out, not a failure.
        }
    }
}

extension ControlSocketService: CustomStringConvertible {
    /// What ServiceLifecycle logs of it (not the router's every route).
    var description: String { "ControlSocketService" }
}

/// Sends STOPPING=1 the moment shutdown begins.
struct StoppingNotifierService: Service {
    let notifier: SystemdNotifier
    let deadline: StopDeadline
    let stopTimeout: TimeInterval

    func run() async throws {
        try? await gracefulShutdown()
        deadline.stopStarted(stopTimeout: stopTimeout)
        notifier.stopping(status: "stopping: checkpointing the running job")
    }
}
