// `griditd serve`: parse, resolve the settings, set up logging, hand over to GriditDaemon. No
// logic lives here: the settings' rules are GriditDaemon's (`DaemonSettings`).

import ArgumentParser
import Foundation
import GriditAPI
import GriditBackend
import GriditDaemon
import GriditFaults
import GriditJobQueue
import GriditJobStorePostgres
import GriditStateDatabase
import Logging

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon in the foreground (systemd: Type=notify, socket activation).",
        discussion: """
            Without systemd, griditd binds --socket itself, logs to stderr and runs until SIGTERM or Ctrl-C. Under systemd it adopts the socket of griditd.socket, reports READY/STATUS/WATCHDOG and logs to the journal with JOB_ID=, STAGE= fields.

            Every setting is a flag, an environment variable GRIDIT_<NAME> and a line GRIDIT_<NAME>=value of the config file (--config, GRIDIT_CONFIG, default /etc/gridit/griditd.conf): flags win over the environment, the environment over the file, the file over the defaults. `griditd config show` prints what is in effect and where each value comes from.
            """)

    @OptionGroup var settings: SettingFlags

    @Flag(
        help:
            "Accept the state directory's job database as it is, or create an empty one, although its identity marker says the database griditd created there is gone (deleted, replaced, its WAL lost)."
    )
    var `init` = false

    func run() async throws {
        umask(0o027)  // as the unit's UMask=: what griditd writes is never world-readable, in the foreground too
        var configuration = try await settings.resolve().configuration
        configuration.initialize = `init`
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        let sink = DaemonLogHandler.detectSink()
        LoggingSystem.bootstrap { label in DaemonLogHandler(label: label, sink: sink, level: level) }
        let logger = Logger(label: "gridit.daemon")

        let worker = WorkerCommand.launch(
            stateDirectory: configuration.stateDirectory, blasThreads: configuration.blasThreads,
            memoryBudget: configuration.memoryBudget, maxBatch: configuration.maxBatchItems,
            keepAlive: configuration.modelKeepAlive, logLevel: configuration.logLevel)
        do {
            let faults = try FaultInjection(environment: ProcessInfo.processInfo.environment)
            let settings = configuration
            let components: @Sendable (StateDatabase, any JobStore) async throws -> DaemonComponents = {
                database, jobs in
                try Backend.components(
                    configuration: settings, database: database, jobs: jobs, siteRoots: settings.siteRoots,
                    worker: worker, logger: logger)
            }
            if let location = try PostgresLocation.configured(url: configuration.databaseURL) {
                let jobs = PostgresJobStore(
                    location: location, logger: Logger(label: "gridit.postgres"),
                    notifications: configuration.databaseNotify)
                try await jobs.withRunningPool {
                    let applied = try await jobs.migrate()
                    logger.notice(
                        "job queue on PostgreSQL",
                        metadata: ["database": "\(location)", "migrated": "\(applied.joined(separator: ","))"])
                    try await Daemon.run(
                        configuration: configuration, logger: logger, faults: faults,
                        jobs: { node in
                            jobs.acting(for: UUID(uuidString: node.id)!, outputRoot: settings.sharedRoot)
                        }, components: components)
                }
            } else {
                try await Daemon.run(
                    configuration: configuration, logger: logger, faults: faults, components: components)
            }
        } catch let error as StateError {
            logger.critical("\(error.message)")
            throw ExitCode(error.code == .locked ? 75 : error.code == .databaseLost ? 78 : 1)
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }
}

/// The settings as flags, shared by `serve` and `config show`. Every one is optional: a flag
/// given wins, one not given leaves the environment, the config file and the default.
struct SettingFlags: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The config file (default: \(DaemonSettings.defaultConfigFile); env GRIDIT_CONFIG).", valueName: "path"))
    var config: String?

    @Option(help: help("state-dir")) var stateDir: String?
    @Option(help: help("database", "url")) var database: String?
    @Flag(inversion: .prefixedNo, help: help("database-notify")) var databaseNotify: Bool?
    @Option(help: help("poll-interval", "seconds")) var pollInterval: String?
    @Option(help: help("shared-root", "dir")) var sharedRoot: String?
    @Option(help: help("socket")) var socket: String?
    @Option(help: help("group")) var group: String?
    @Option(help: help("admin-group")) var adminGroup: String?
    @Option(help: help("socket-group")) var socketGroup: String?
    @Option(help: help("blas-threads", "n")) var blasThreads: String?
    @Flag(inversion: .prefixedNo, help: help("start-paused")) var startPaused: Bool?
    @Option(help: help("max-queued", "n")) var maxQueued: String?
    @Option(help: help("max-queued-per-user", "n")) var maxQueuedPerUser: String?
    @Option(help: help("max-jobs-per-user", "n")) var maxJobsPerUser: String?
    @Option(help: help("max-work-per-user", "duration")) var maxWorkPerUser: String?
    @Option(parsing: .unconditional, help: help("member-priority-min", "n")) var memberPriorityMin: String?
    @Option(parsing: .unconditional, help: help("member-priority-max", "n")) var memberPriorityMax: String?
    @Option(help: help("max-connections", "n")) var maxConnections: String?
    @Option(help: help("max-connections-per-user", "n")) var maxConnectionsPerUser: String?
    @Option(help: help("admin-connections", "n")) var adminConnections: String?
    @Option(help: help("header-timeout", "seconds")) var headerTimeout: String?
    @Option(help: help("body-timeout", "seconds")) var bodyTimeout: String?
    @Option(help: help("idle-timeout", "seconds")) var idleTimeout: String?
    @Option(help: help("max-length", "frames")) var maxLength: String?
    @Option(help: help("default-model", "ref")) var defaultModel: String?
    @Option(name: .customLong("site-root"), help: help("site-roots", "dir")) var siteRoots: [String] = []
    @Option(help: help("memory-budget", "size")) var memoryBudget: String?
    @Option(help: help("max-batch", "n")) var maxBatch: String?
    @Option(help: help("max-batch-jobs", "n")) var maxBatchJobs: String?
    @Option(help: help("keep-alive", "seconds")) var keepAlive: String?
    @Option(help: help("lease", "seconds")) var lease: String?
    @Option(help: help("stop-timeout", "seconds")) var stopTimeout: String?
    @Option(help: help("stop-grace", "seconds")) var stopGrace: String?
    @Option(help: help("events-keepalive", "seconds")) var eventsKeepalive: String?
    @Option(help: help("min-free", "size")) var minFree: String?
    @Option(help: help("db-reserve", "size")) var dbReserve: String?
    @Option(help: help("keep-succeeded", "age|off")) var keepSucceeded: String?
    @Option(help: help("keep-failed", "age|off")) var keepFailed: String?
    @Option(help: help("max-job-time", "duration|off")) var maxJobTime: String?
    @Option(help: help("metrics-listen", "host:port")) var metricsListen: String?
    @Option(help: help("log-level", "level")) var logLevel: String?

    /// The flags given, by setting key.
    var given: [String: String] {
        let values: [String: String?] = [
            "state-dir": stateDir, "database": database, "database-notify": databaseNotify.map { "\($0)" },
            "poll-interval": pollInterval, "shared-root": sharedRoot, "socket": socket, "group": group,
            "admin-group": adminGroup,
            "socket-group": socketGroup,
            "blas-threads": blasThreads, "start-paused": startPaused.map { "\($0)" }, "max-queued": maxQueued,
            "max-queued-per-user": maxQueuedPerUser, "max-jobs-per-user": maxJobsPerUser,
            "max-work-per-user": maxWorkPerUser, "max-job-time": maxJobTime,
            "member-priority-min": memberPriorityMin, "member-priority-max": memberPriorityMax,
            "max-connections": maxConnections, "max-connections-per-user": maxConnectionsPerUser,
            "admin-connections": adminConnections, "header-timeout": headerTimeout, "body-timeout": bodyTimeout,
            "idle-timeout": idleTimeout, "max-length": maxLength, "default-model": defaultModel,
            "site-roots": siteRoots.isEmpty ? nil : siteRoots.joined(separator: ":"), "memory-budget": memoryBudget,
            "max-batch": maxBatch, "max-batch-jobs": maxBatchJobs, "keep-alive": keepAlive, "lease": lease,
            "stop-timeout": stopTimeout, "stop-grace": stopGrace,
            "events-keepalive": eventsKeepalive, "min-free": minFree, "db-reserve": dbReserve,
            "keep-succeeded": keepSucceeded, "keep-failed": keepFailed, "metrics-listen": metricsListen,
            "log-level": logLevel,
        ]
        return values.compactMapValues { $0 }
    }

    /// Flags, environment, config file and defaults; a bad value exits 78 (EX_CONFIG), naming it.
    func resolve() async throws -> ResolvedSettings {
        // site-root paths are taken relative to the working directory, as state-dir's are.
        var flags = given
        if !siteRoots.isEmpty {
            flags["site-roots"] = siteRoots.map {
                $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0
            }
            .joined(separator: ":")
        }
        do {
            return try await DaemonSettings.resolve(
                flags: flags, environment: ProcessInfo.processInfo.environment, configFile: config)
        } catch {
            FileHandle.standardError.write(Data("griditd: \(error.message)\n".utf8))
            throw ExitCode(78)
        }
    }

    private static func help(_ key: String, _ valueName: String? = nil) -> ArgumentHelp {
        ArgumentHelp(DaemonSettings.help(key), valueName: valueName)
    }
}
