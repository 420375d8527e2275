// griditd's side of the engine worker: the engine runs in a child process (the same executable,
// `griditd worker`) so that griditd can tell an engine crash from its own death. griditd keeps
// the database, the leases and every job state; the worker only computes and writes the jobs'
// work and output folders. When the worker dies, its exit says why, and only a death the jobs
// caused (a crash signal, an abnormal exit, the OOM killer, a stall) counts against them.

import Foundation
import GriditAPI
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public final class WorkerSupervisor: Sendable {
    public struct Settings: Sendable {
        public var launch: WorkerLaunch
        /// A running batch that reports no step for this long is stalled (a hang, a stopped
        /// process): the worker is killed and the crash counts against its jobs.
        public var stallTimeout: TimeInterval
        /// A job asked to stop (cancel, shutdown, lost lease) that is still running after this:
        /// the worker is killed, and its other jobs are requeued without a crash.
        public var stopGrace: TimeInterval
        /// How long a new worker may take to say it is ready.
        public var startTimeout: TimeInterval

        public init(
            launch: WorkerLaunch, stallTimeout: TimeInterval, stopGrace: TimeInterval, startTimeout: TimeInterval = 60
        ) {
            self.launch = launch
            self.stallTimeout = stallTimeout
            self.stopGrace = stopGrace
            self.startTimeout = startTimeout
        }
    }

    let settings: Settings
    let logger: Logger
    /// Called (on the reader thread) with each report of what the worker has loaded.
    let onModels: @Sendable (Data?) -> Void

    private struct State {
        var child: Child?
        var starts = 0
        var running = false
        var lastExit: String?
        /// griditd is stopping: the worker's end is expected.
        var stopping = false
    }
    private let state = Mutex(State())

    public init(settings: Settings, logger: Logger, onModels: @escaping @Sendable (Data?) -> Void = { _ in }) {
        self.settings = settings
        self.logger = logger
        self.onModels = onModels
    }

    public var info: EngineWorkerInfo {
        state.withLock { s in
            EngineWorkerInfo(
                pid: s.child?.pid, state: s.child == nil ? "stopped" : (s.running ? "running" : "idle"),
                starts: s.starts,
                lastExit: s.lastExit)
        }
    }

    // MARK: - Running a batch

    /// Runs `batch` in the worker (starting one if none runs) and relays its hooks; blocks the
    /// calling thread (griditd's inference thread) until every job is reported. Must be called
    /// from one long-lived thread: the worker dies with the thread that started it.
    public func execute(_ batch: ExecutionBatch, hooks: ExecutionHooks) {
        let oomBefore = OOMKills.count()
        let child: Child
        do {
            child = try currentChild()
        } catch {
            // Killed from outside while it started: nothing to hold against the jobs. Anything
            // else (a binary that cannot run, no memory to start in) uses attempts, so that the
            // jobs fail with the reason instead of starting workers forever.
            let message = "the engine worker could not start: \(error.message)"
            let outside = error.exit.map { !judge($0, killed: nil, oomBefore: oomBefore).counted } ?? false
            let outcome: ExecutionOutcome =
                outside
                ? .crashed(WorkerCrash(counted: false, message: message)) : .failed(JobFailure(.transient, message))
            for item in batch.items + hooks.admit() { hooks.finished(item.jobID, outcome) }
            return
        }
        var inFlight = Set(batch.items.map(\.jobID))
        var stopsSent: [Int64: (reason: StopReason, at: ContinuousClock.Instant)] = [:]
        var killed: Kill?
        var lastSign = ContinuousClock.now
        var lastLook = ContinuousClock.now
        state.withLock { $0.running = true }
        defer { state.withLock { $0.running = false } }
        try? child.channel.send(WorkerRequest.run(batch))

        while true {
            switch child.mailbox.next(timeout: 0.25) {
            case .event(.admit):
                lastSign = .now
                let items = hooks.admit()
                inFlight.formUnion(items.map(\.jobID))
                try? child.channel.send(WorkerRequest.admitted(items))
            case .event(.finished(let id, let outcome)):
                lastSign = .now
                inFlight.remove(id)
                stopsSent[id] = nil
                hooks.finished(id, outcome)
            case .event(.durable(let id, let progress)):
                lastSign = .now
                hooks.durable(id, progress)
            case .event(.step(let id, let progress)):
                lastSign = .now
                hooks.step(id, progress)
            case .event(.working(let id)):
                lastSign = .now
                hooks.working(id)
            case .event(.done):
                return
            case .event(.ready), .event(.models):
                break
            case .ended(let exit):
                let verdict = judge(exit, killed: killed, oomBefore: oomBefore)
                let jobs = inFlight.sorted()
                let ended =
                    "\(verdict.message) while it ran job\(jobs.count == 1 ? "" : "s") "
                    + jobs.map(String.init).joined(separator: ", ")
                state.withLock { $0.lastExit = ended }
                logger.error(
                    "the engine worker died: \(ended)",
                    metadata: ["pid": "\(child.pid)", "counted": "\(verdict.counted)"])
                for id in jobs {
                    // A job asked to stop was going to stop anyway: its stop reason decides.
                    if stopsSent[id] != nil {
                        hooks.finished(id, .interrupted)
                    } else {
                        hooks.finished(id, .crashed(WorkerCrash(counted: verdict.counted, message: verdict.message)))
                    }
                }
                return
            case nil:
                break
            }
            // Stop requests go to the worker; one that is not honoured in time ends the worker.
            let now = ContinuousClock.now
            if now - lastLook > .seconds(2) {
                // griditd itself did not run meanwhile (SIGSTOP, a suspended machine): what the
                // worker did then is not known yet, so its clocks start again.
                lastSign = now
                for id in stopsSent.keys { stopsSent[id]?.at = now }
            }
            lastLook = now
            for id in inFlight.sorted() where stopsSent[id] == nil {
                if let reason = hooks.shouldStop(id) {
                    stopsSent[id] = (reason, now)
                    try? child.channel.send(WorkerRequest.stop(jobID: id, reason: reason))
                }
            }
            guard killed == nil else { continue }
            if let late = stopsSent.filter({
                inFlight.contains($0.key) && now - $0.value.at > .seconds(settings.stopGrace)
            })
            .min(by: { $0.key < $1.key }) {
                killed = .toStop(job: late.key, reason: late.value.reason)
            } else if now - lastSign > .seconds(settings.stallTimeout) {
                killed = .stalled
            }
            if let killed {
                logger.warning("killing the engine worker: \(killed)", metadata: ["pid": "\(child.pid)"])
                child.kill()
            }
        }
    }

    /// Why the supervisor killed the worker itself.
    private enum Kill: CustomStringConvertible {
        case toStop(job: Int64, reason: StopReason)
        case stalled

        var description: String {
            switch self {
            case .toStop(let job, let reason): "job \(job) did not stop (\(reason.rawValue)) in time"
            case .stalled: "it made no progress in time (stalled or stopped)"
            }
        }
    }

    /// Whether the jobs a dead worker was running caused its death, and how to say it.
    private func judge(_ exit: WorkerExit, killed: Kill?, oomBefore: Int?) -> (counted: Bool, message: String) {
        switch killed {
        case .toStop(let job, let reason):
            return (
                false,
                "the engine worker was killed because job \(job) did not stop (\(reason.rawValue)) within "
                    + "\(Int(settings.stopGrace)) s; requeued without counting a crash"
            )
        case .stalled:
            return (
                true,
                "the engine made no progress for \(Int(settings.stallTimeout)) s (hung or stopped); its worker was killed"
            )
        case nil:
            break
        }
        if exit.isCrashSignal { return (true, "the engine crashed (its worker was \(exit))") }
        if exit.signal == SIGKILL {
            switch (oomBefore, OOMKills.count()) {
            case (let before?, let after?) where after > before:
                return (true, "the engine worker was killed by the kernel's OOM killer (out of memory)")
            case (_?, _?):
                return (
                    false,
                    "the engine worker was killed from outside (SIGKILL, not the OOM killer); requeued without counting a crash"
                )
            default:
                return (true, "the engine worker was killed by SIGKILL (the OOM killer cannot be ruled out here)")
            }
        }
        if exit.signal != 0 {
            return (false, "the engine worker was \(exit) from outside; requeued without counting a crash")
        }
        return (true, "the engine worker \(exit) in the middle of a batch")
    }

    // MARK: - The process

    /// A running worker: its pid, griditd's end of the socketpair and what its reader received.
    private final class Child: Sendable {
        let pid: pid_t
        let channel: WorkerChannel
        let mailbox = Mailbox()
        /// Set once reaped: its pid may then be another process's.
        private let reaped = Mutex(false)

        init(pid: pid_t, channel: WorkerChannel) {
            self.pid = pid
            self.channel = channel
        }

        /// SIGKILL, unless the worker was reaped already.
        func kill() { reaped.withLock { if !$0 { _ = Glibc.kill(pid, SIGKILL) } } }

        /// Waits until the worker has exited, then reaps it: a `kill` meanwhile still reaches it.
        func reap() -> Int32 {
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
            return reaped.withLock { done in
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                done = true
                return status
            }
        }
    }

    private struct StartFailure: Error {
        var message: String
        /// How the new worker ended, when it did.
        var exit: WorkerExit?
    }

    /// The worker, started (and waited for) if none runs.
    private func currentChild() throws(StartFailure) -> Child {
        if let child = state.withLock({ $0.child }) { return child }
        let pid: pid_t
        let channel: WorkerChannel
        do { (pid, channel) = try settings.launch.spawn() } catch { throw StartFailure(message: error.message) }
        let child = Child(pid: pid, channel: channel)
        let starts = state.withLock { s in
            s.child = child
            s.starts += 1
            return s.starts
        }
        startReader(child)
        let deadline = ContinuousClock.now + .seconds(settings.startTimeout)
        while ContinuousClock.now < deadline {
            switch child.mailbox.next(timeout: 0.25) {
            case .event(.ready):
                logger.info("engine worker started", metadata: ["pid": "\(pid)", "starts": "\(starts)"])
                return child
            case .ended(let exit):
                throw StartFailure(message: "it \(exit) before it was ready (its log lines are above)", exit: exit)
            default:
                continue
            }
        }
        child.kill()
        throw StartFailure(message: "it did not get ready within \(Int(settings.startTimeout)) s and was killed")
    }

    /// Reads the worker's events until it is gone, then reaps it. Models reports go straight
    /// to `onModels`; everything else waits in the mailbox for the batch being run.
    private func startReader(_ child: Child) {
        let thread = Thread { [self] in
            while let event = child.channel.receive(WorkerEvent.self) {
                if case .models(let data) = event { onModels(data) } else { child.mailbox.post(.event(event)) }
            }
            child.channel.close()
            let exit = WorkerExit(status: child.reap())
            child.channel.release()
            let unexpected = state.withLock { s -> Bool in
                if s.child === child { s.child = nil }
                if !s.running { s.lastExit = "\(exit)" }
                return !s.running && !s.stopping
            }
            onModels(nil)  // nothing it loaded is loaded any more
            if unexpected && !(exit.signal == 0 && exit.code == 0) {
                logger.warning(
                    "the engine worker \(exit) while idle; the next batch starts a new one",
                    metadata: ["pid": "\(child.pid)"])
            }
            child.mailbox.post(.ended(exit))
        }
        thread.name = "gridit-worker-reader"
        thread.start()
    }

    /// Ends the worker (griditd is stopping): asks it to exit, kills it if it does not.
    public func shutdown() {
        guard
            let child = state.withLock({ s in
                s.stopping = true
                return s.child
            })
        else { return }
        try? child.channel.send(WorkerRequest.exit)
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            if case .ended = child.mailbox.next(timeout: 0.1) { return }
        }
        child.kill()
    }
}

/// What the reader thread hands to the supervisor.
enum WorkerMail: Sendable {
    case event(WorkerEvent)
    case ended(WorkerExit)
}

/// A queue the reader fills and the supervisor drains, with a timed wait.
final class Mailbox: @unchecked Sendable {
    // @unchecked: `items` is only touched under `condition`.
    private let condition = NSCondition()
    private var items: [WorkerMail] = []

    func post(_ mail: WorkerMail) {
        condition.lock()
        items.append(mail)
        condition.signal()
        condition.unlock()
    }

    /// The oldest mail, waiting at most `timeout` seconds for one.
    func next(timeout: TimeInterval) -> WorkerMail? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(timeout)
        while items.isEmpty {
            guard condition.wait(until: deadline) else { break }
        }
        return items.isEmpty ? nil : items.removeFirst()
    }
}
