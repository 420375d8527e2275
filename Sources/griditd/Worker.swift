// `griditd worker`: the engine's worker process, which `griditd serve` starts itself (hidden;
// not for people). Parses, sets up logging, hands over to GriditBackend. No logic lives here.

import ArgumentParser
import Foundation
import GriditBackend
import GriditDaemon
import GriditEngine
import GriditFaults
import Logging

#if canImport(Glibc)
import Glibc
#endif

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "The engine's worker process; griditd serve starts it over a socketpair.",
        shouldDisplay: false)

    @Option(help: "griditd's pid: the worker exits if it is not its parent.") var parentPID: Int32
    @Option(help: "The state directory (test markers only; the worker opens no database).") var stateDir: String
    @Option(help: "Threads of the engine's matrix products.") var blasThreads: Int
    @Option(help: "Bytes of activations one batched forward may take.") var memoryBudget: Int
    @Option(help: "Most grids or frames in one batched forward.") var maxBatch: Int
    @Option(help: "Seconds a model stays loaded after its last job.") var keepAlive: Double
    @Option(help: "Log level.") var logLevel: String = "info"

    func run() throws {
        guard WorkerChild.detach(parentPID: parentPID) else { throw ExitCode(0) }  // griditd is gone already
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let sink = DaemonLogHandler.detectSink()
        LoggingSystem.bootstrap { label in DaemonLogHandler(label: label, sink: sink, level: level) }
        let logger = Logger(label: "gridit.worker")
        let faults = FaultInjection.current
        let status = Backend.runWorker(
            stateDirectory: stateDir,
            options: ExecutionOptions(threads: blasThreads, memoryBudget: memoryBudget, maxBatch: maxBatch),
            keepAlive: keepAlive, faults: faults, logger: logger)
        throw ExitCode(status)
    }

    /// The command line `griditd serve` starts its worker with.
    static func launch(
        stateDirectory: String, blasThreads: Int, memoryBudget: Int, maxBatch: Int, keepAlive: Double, logLevel: String
    ) -> WorkerLaunch {
        WorkerLaunch(arguments: [
            "worker", "--parent-pid", "\(getpid())", "--state-dir", stateDirectory, "--blas-threads", "\(blasThreads)",
            "--memory-budget", "\(memoryBudget)", "--max-batch", "\(maxBatch)", "--keep-alive", "\(keepAlive)",
            "--log-level", logLevel,
        ])
    }
}
