// The engine worker's side (`griditd worker`, started by griditd only): runs the batches griditd
// sends on the engine, one at a time, and sends the engine's hooks back as they happen. It
// opens no database and holds no lease: griditd records everything. It dies with griditd.

import CProcess
import Foundation
import GriditAPI
import GriditFaults
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public enum WorkerChild {
    /// First thing in the worker process: die with griditd (PR_SET_PDEATHSIG, and a check that
    /// griditd did not die before that), leave griditd's signals to griditd (SIGTERM, Ctrl-C:
    /// griditd stops the worker itself), and be the OOM killer's first choice rather than
    /// griditd. (griditd's other descriptors were closed before this program ran: `WorkerLaunch`.)
    /// False if griditd is gone.
    public static func detach(parentPID: Int32) -> Bool {
        guard gridit_die_with_parent(SIGKILL) == 0, getppid() == parentPID else { return false }
        gridit_set_process_name("griditd-worker")  // not "exe" (it runs /proc/self/exe)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { signal(s, SIG_IGN) }
        try? "1000\n".write(toFile: "/proc/self/oom_score_adj", atomically: false, encoding: .utf8)
        return true
    }

    /// Serves griditd on `fd` until it says exit or goes away. `idle` runs about every second
    /// between batches (unloading idle models); `models` encodes what is loaded, sent after each
    /// batch and whenever `idle` says something changed. Returns the exit status.
    public static func serve(
        fd: Int32 = WorkerLaunch.channelDescriptor, engine: any JobEngine, faults: FaultInjection,
        stateDirectory: String, idle: @escaping @Sendable () -> Bool = { false },
        models: @escaping @Sendable () -> Data? = { nil }, logger: Logger
    ) -> Int32 {
        let channel = WorkerChannel(fd: fd)
        let inbox = Inbox()
        let reader = Thread {
            while let request = channel.receive(WorkerRequest.self) { inbox.post(request) }
            inbox.post(.exit)  // griditd is gone (PDEATHSIG ends us anyway)
        }
        reader.name = "gridit-worker-channel"
        reader.start()
        @Sendable func send(_ event: WorkerEvent) { try? channel.send(event) }
        send(.ready(pid: getpid()))
        if let data = models() { send(.models(data)) }

        while true {
            guard
                let batch = inbox.nextBatch(tick: 1.0, idle: { if idle(), let data = models() { send(.models(data)) } })
            else {
                logger.info("engine worker exiting")
                return 0
            }
            let checkCrash: @Sendable ([ExecutionItem]) -> Void = { items in
                for item in items where faults.crashEngine.contains(item.jobID) {
                    logger.critical("test fault: crashing the engine worker on job \(item.jobID)")
                    abort()
                }
            }
            checkCrash(batch.items)
            let loadReported = StopFlag()  // set once: the loaded model was reported
            let hooks = ExecutionHooks(
                admit: {
                    send(.admit)
                    let items = inbox.admitted()
                    checkCrash(items)
                    return items
                },
                finished: { id, outcome in send(.finished(jobID: id, outcome: outcome)) },
                durable: { id, progress in send(.durable(jobID: id, progress: progress)) },
                step: { id, progress in
                    // The batch's model is loaded by its first step: ps and gc see it from then on.
                    if !loadReported.isSet, let data = models() {
                        loadReported.set()
                        send(.models(data))
                    }
                    if let pause = faults.pauseAt, pause.matches(progress) {
                        PausePoint.hold("job \(id) paused at \(pause)", stateDirectory: stateDirectory)
                    }
                    send(.step(jobID: id, progress: progress))
                },
                shouldStop: { id in inbox.stopReason(id) },
                working: { id in send(.working(jobID: id)) })
            engine.execute(batch, hooks: hooks)
            inbox.batchEnded()
            send(.done)
            if let data = models() { send(.models(data)) }
        }
    }

    /// Requests from griditd, as the channel thread receives them.
    private final class Inbox: @unchecked Sendable {
        // @unchecked: `state` is only touched under `condition`.
        private struct State {
            var batches: [ExecutionBatch] = []
            var admitted: [[ExecutionItem]] = []
            var stops: [Int64: StopReason] = [:]
            var exit = false
        }
        private let condition = NSCondition()
        private var state = State()

        func post(_ request: WorkerRequest) {
            condition.lock()
            switch request {
            case .run(let batch): state.batches.append(batch)
            case .admitted(let items): state.admitted.append(items)
            case .stop(let id, let reason): state.stops[id] = reason
            case .exit: state.exit = true
            }
            condition.broadcast()
            condition.unlock()
        }

        /// The next batch; nil once griditd says exit. Calls `idle` about every `tick` seconds while waiting.
        func nextBatch(tick: TimeInterval, idle: () -> Void) -> ExecutionBatch? {
            while true {
                condition.lock()
                if !state.batches.isEmpty {
                    defer { condition.unlock() }
                    return state.batches.removeFirst()
                }
                if state.exit {
                    condition.unlock()
                    return nil
                }
                _ = condition.wait(until: Date().addingTimeInterval(tick))
                let waiting = state.batches.isEmpty && !state.exit
                condition.unlock()
                if waiting { idle() }
            }
        }

        /// griditd's answer to the admit just sent (none if griditd is gone).
        func admitted() -> [ExecutionItem] {
            condition.lock()
            defer { condition.unlock() }
            while state.admitted.isEmpty && !state.exit { condition.wait() }
            return state.admitted.isEmpty ? [] : state.admitted.removeFirst()
        }

        func stopReason(_ id: Int64) -> StopReason? {
            condition.lock()
            defer { condition.unlock() }
            return state.stops[id] ?? (state.exit ? .shutdown : nil)
        }

        func batchEnded() {
            condition.lock()
            state.stops = [:]
            condition.unlock()
        }
    }
}
