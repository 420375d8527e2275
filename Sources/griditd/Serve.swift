// `griditd serve`: parse, set up logging, hand over to GriditDaemon. No logic lives here.
import ArgumentParser
import Foundation
import GriditDaemon
import GriditStore
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

    @Option(help: "Longest sequence a job may ask for, in frames.")
    var maxLength = 100_000

    @Option(help: "Model used when a submit names none.")
    var defaultModel = "moving-digits:latest"

    @Option(help: "Lease of a running job in seconds (heartbeats every third of it while it progresses).")
    var lease: Double = 120

    @Option(help: "Seconds a SIGTERM waits for the running job to checkpoint before griditd exits.")
    var stopTimeout: Double = 75

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func validate() throws {
        if let n = blasThreads, !(1...1024).contains(n) { throw ValidationError("--blas-threads must be 1...1024") }
        guard maxQueued >= 1 else { throw ValidationError("--max-queued must be at least 1") }
        guard maxLength >= 1 else { throw ValidationError("--max-length must be at least 1") }
        guard lease >= 5 else { throw ValidationError("--lease must be at least 5 seconds") }
        guard stopTimeout > 0 else { throw ValidationError("--stop-timeout must be positive") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'") }
    }

    func run() async throws {
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

        do {
            let faults = try FaultInjection(environment: ProcessInfo.processInfo.environment)
            // The engine (JobExecutor) and the model store (ModelCatalog) are built in
            // `components:` once their targets land; without them jobs are accepted and stay queued.
            try await Daemon.run(configuration: configuration, logger: logger, faults: faults)
        } catch let error as StoreError {
            logger.critical("\(error.message)")
            throw ExitCode(error.code == .locked ? 75 : 1)
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }

    private func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}
