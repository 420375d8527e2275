// `.offPool`: a suite trait for tests that block a thread (a child process waited for, a
// blocking socket client, a `usleep` poll).
//
// Swift's cooperative pool is as wide as the machine has cores: two on CI. A blocking test holds
// one of those threads for its whole run, so two of them stall every async test in the process;
// a `WorkerService` test's 180 s wall-clock deadline passed that way on a loaded machine while its
// four scripted jobs needed milliseconds. Tests with this trait run on threads of their own, a
// few tests at a time (as many as the cooperative pool let run before), so the pool stays free.

import Foundation
import Synchronization
import Testing

public struct OffPool: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> OffPool? {
        test.isSuite ? nil : self
    }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // The preference every time: a test case may run in a task that did not inherit it.
        // The slot once: a suite's trait reaches its nested suites' tests too.
        if OffPool.inside {
            return try await withTaskExecutorPreference(GrowingThreadPool.shared) { try await function() }
        }
        await OffPool.slots.acquire()
        defer { OffPool.slots.release() }
        try await OffPool.$inside.withValue(true) {
            try await withTaskExecutorPreference(GrowingThreadPool.shared) { try await function() }
        }
    }

    @TaskLocal static var inside = false

    /// How many such tests run at once: the load they put on the machine stays what it was.
    static let slots = AsyncSlots(2)
}

extension Trait where Self == OffPool {
    /// Runs each test of the suite off Swift's cooperative pool (see `OffPool`).
    public static var offPool: OffPool { OffPool() }
}

/// A task executor that runs each job on a thread of its pool and starts another thread whenever
/// jobs wait and no thread is idle: a job that blocks never holds up the others.
public final class GrowingThreadPool: TaskExecutor, @unchecked Sendable {
    public static let shared = GrowingThreadPool()

    /// Whether the calling thread is one of the pool's.
    public static var onPoolThread: Bool { Thread.current.threadDictionary[marker] != nil }
    private static let marker = "gridit.GrowingThreadPool"

    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []  // guarded by `condition`
    private var idle = 0  // guarded by `condition`

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        let grow = jobs.count > idle
        condition.signal()
        condition.unlock()
        if grow {
            Thread.detachNewThread { [self] in
                Thread.current.threadDictionary[Self.marker] = true
                work()
            }
        }
    }

    private func work() {
        let executor = asUnownedTaskExecutor()
        condition.lock()
        while true {
            while jobs.isEmpty {
                idle += 1
                condition.wait()
                idle -= 1
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: executor)
            condition.lock()
        }
    }
}

/// A counting semaphore for tasks: `acquire` suspends (holding no thread) until a slot is free.
final class AsyncSlots: Sendable {
    private struct State {
        var free: Int
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(free: count)) }

    func acquire() async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { s -> Bool in
                if s.free > 0 {
                    s.free -= 1
                    return true
                }
                s.waiting.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty {
                s.free += 1
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }
}
