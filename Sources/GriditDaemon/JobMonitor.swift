// In-memory state shared by the API and the worker: live step progress, stop requests, watchers
// and the worker's wake-up. The database stays the truth; this only makes it fast to see.

import Foundation
import GriditAPI
import GriditJobSpec
import Synchronization

public final class JobMonitor: Sendable {
    public enum Update: Sendable {
        /// The job's row changed (state, durable progress): re-read it.
        case changed
        case step(StepProgress)
        /// A `tick` period passed: re-read the row anyway (another host may have changed it
        /// without a notification reaching this one).
        case tick
    }

    private struct State {
        var live: [Int64: StepProgress] = [:]
        var stops: [Int64: StopReason] = [:]
        var watchers: [Int64: [UUID: AsyncStream<Update>.Continuation]] = [:]
        var running: Set<Int64> = []
    }

    private let state = Mutex(State())
    /// Waiters of `waitForWake`, and whether a wake came while nobody waited (it is kept, once).
    private let wakes = Mutex<(pending: Bool, waiters: [Waiter])>((false, []))

    public init() {}

    // MARK: Worker wake-up

    /// Tells the worker to look at the queue now (a submit, a resume, a retry).
    public func wake() {
        let waiters = wakes.withLock { w -> [Waiter] in
            if w.waiters.isEmpty { w.pending = true }
            defer { w.waiters = [] }
            return w.waiters
        }
        for waiter in waiters { waiter.finish() }
    }

    /// Waits for a `wake()` (or one that came since the last wait) or `timeout`, whichever comes first.
    /// True when woken before the timeout.
    @discardableResult
    func waitForWake(timeout: Duration) async -> Bool {
        let waiter = Waiter()
        let early = wakes.withLock { w -> Bool in
            if w.pending {
                w.pending = false
                return true
            }
            w.waiters.append(waiter)
            return false
        }
        if early { return true }
        let timedOut = StopFlag()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await waiter.wait() }
            group.addTask {
                // Cancelled: the wait ended first (or the caller's task was cancelled).
                do { try await Task.sleep(for: timeout) } catch { return }
                timedOut.set()
                waiter.finish()
            }
            await group.next()
            group.cancelAll()
        }
        wakes.withLock { w in w.waiters.removeAll { $0 === waiter } }
        return !timedOut.isSet
    }

    /// One `waitForWake`: finished by a wake, its timeout or cancellation, whichever is first.
    private final class Waiter: Sendable {
        private enum Phase {
            case idle
            case waiting(CheckedContinuation<Void, Never>)
            case done
        }
        private let phase = Mutex(Phase.idle)

        func wait() async {
            await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let done = phase.withLock { p -> Bool in
                        if case .done = p { return true }
                        p = .waiting(continuation)
                        return false
                    }
                    if done { continuation.resume() }
                }
            } onCancel: {
                finish()
            }
        }

        func finish() {
            let continuation = phase.withLock { p -> CheckedContinuation<Void, Never>? in
                defer { p = .done }
                if case .waiting(let c) = p { return c }
                return nil
            }
            continuation?.resume()
        }
    }

    // MARK: Running jobs

    func started(_ ids: [Int64]) {
        state.withLock { s in s.running.formUnion(ids) }
    }

    func finished(_ id: Int64) {
        let watchers = state.withLock { s -> [AsyncStream<Update>.Continuation] in
            s.running.remove(id)
            s.live[id] = nil
            s.stops[id] = nil
            return Array((s.watchers[id] ?? [:]).values)
        }
        for w in watchers { w.yield(.changed) }
    }

    public func live(_ id: Int64) -> StepProgress? { state.withLock { $0.live[id] } }

    public var runningIDs: [Int64] { state.withLock { $0.running.sorted() } }

    public func isRunning(_ id: Int64) -> Bool { state.withLock { $0.running.contains(id) } }

    func publish(step: StepProgress, for id: Int64) {
        let watchers = state.withLock { s -> [AsyncStream<Update>.Continuation] in
            s.live[id] = step
            return Array((s.watchers[id] ?? [:]).values)
        }
        for w in watchers { w.yield(.step(step)) }
    }

    /// The row of `id` changed; watchers re-read it.
    public func changed(_ id: Int64) {
        let watchers = state.withLock { Array(($0.watchers[id] ?? [:]).values) }
        for w in watchers { w.yield(.changed) }
    }

    // MARK: Stop requests

    /// Asks the engine to stop `id` at its next step boundary. The first reason wins, except
    /// that a lost lease overrides everything (nothing may be written then).
    func requestStop(_ id: Int64, _ reason: StopReason) {
        state.withLock { s in
            // Only for jobs this host runs: another host's run learns of a cancel from its row.
            guard s.running.contains(id) else { return }
            if s.stops[id] == nil || reason == .leaseLost { s.stops[id] = reason }
        }
    }

    func requestStopAll(_ reason: StopReason) {
        state.withLock { s in
            for id in s.running where s.stops[id] == nil { s.stops[id] = reason }
        }
    }

    func stopReason(_ id: Int64) -> StopReason? { state.withLock { $0.stops[id] } }

    // MARK: Watchers

    /// Updates about `id` until the stream's consumer goes away, and a `.tick` every `tick`.
    public func watch(_ id: Int64, tick: Duration? = nil) -> AsyncStream<Update> {
        let key = UUID()
        let (stream, continuation) = AsyncStream.makeStream(of: Update.self, bufferingPolicy: .bufferingNewest(64))
        let ticker = tick.map { period in
            Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: period)
                    continuation.yield(.tick)
                }
            }
        }
        continuation.onTermination = { [weak self] _ in
            ticker?.cancel()
            self?.state.withLock { s in
                s.watchers[id]?[key] = nil
                if s.watchers[id]?.isEmpty == true { s.watchers[id] = nil }
            }
        }
        state.withLock { s in s.watchers[id, default: [:]][key] = continuation }
        return stream
    }
}
