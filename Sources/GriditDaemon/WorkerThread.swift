// The inference thread. Swift's cooperative pool has one thread per core (two here); a
// multi-second matrix product on it would stall the socket and the queue, so the engine runs
// on a thread of its own and the async side only awaits its result.

import CProcess
import Foundation
import Synchronization

/// One long-lived OS thread that runs submitted closures in order. `@unchecked Sendable`: the
/// compute-thread bridge (style 3.4); `state` is only touched under `condition`.
final class WorkerThread: @unchecked Sendable {
    private struct State {
        var queue: [@Sendable () -> Void] = []
        var stopped = false
    }

    private let condition = NSCondition()
    private var state = State()

    init(name: String, stackSize: Int = 16 << 20) {
        let thread = Thread { [self] in
            // Named from inside: Linux threads inherit their creator's name (here a pool thread's).
            // The kernel's name (ps, gdb) directly: Foundation may hand out a stand-in `Thread`
            // for a thread it has not registered yet, whose name setter does not reach the kernel.
            gridit_set_process_name(name)  // PR_SET_NAME: the calling thread's name
            Thread.current.name = name
            self.loop()
        }
        // And from outside too: Foundation may not have registered the new thread yet when it
        // asks for `Thread.current` first, and then the name set inside goes to a stand-in.
        thread.name = name
        thread.stackSize = stackSize
        thread.start()
    }

    /// Runs `body` on the thread and returns its result. The caller's task is suspended, not
    /// blocked; cancelling it does not interrupt `body` (the engine polls `shouldStop` instead).
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            enqueue { continuation.resume(returning: body()) }
        }
    }

    /// Lets the thread exit after the work already queued.
    func stop() {
        condition.lock()
        state.stopped = true
        condition.signal()
        condition.unlock()
    }

    private func enqueue(_ work: @escaping @Sendable () -> Void) {
        condition.lock()
        state.queue.append(work)
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while state.queue.isEmpty && !state.stopped { condition.wait() }
            if state.queue.isEmpty {
                condition.unlock()
                return
            }
            let work = state.queue.removeFirst()
            condition.unlock()
            work()
        }
    }
}

extension WorkerThread {
    /// Runs `body` once on a thread of its own and returns its result: blocking file work
    /// (removing folders on a network filesystem) that must not hold a cooperative thread.
    static func once<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: body()) }
        }
    }
}
