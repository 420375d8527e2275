import Foundation
import GriditTensor
import Synchronization
import Testing

// The thread pool (Sources/CGriditKernels/pool.c) serves two callers at once: the engine runs its
// two stages side by side, each with its share of the threads.

/// Runs a job of two tasks that each wait (up to `patience` seconds) until both have started; true
/// if they did, that is if a second thread took one (a job run serially on its caller cannot).
private func jobGotTwoThreads(patience: TimeInterval, while inside: (() -> Void)? = nil) -> Bool {
    let started = Atomic<Int>(0), both = Atomic<Bool>(true)
    parallelItems(2, workers: 2) { item, _ in
        started.add(1, ordering: .sequentiallyConsistent)
        let deadline = Date().addingTimeInterval(patience)
        while started.load(ordering: .sequentiallyConsistent) < 2 {
            if Date() > deadline {
                both.store(false, ordering: .sequentiallyConsistent)
                return
            }
            usleep(100)
        }
        if item == 0 { inside?() }
    }
    return both.load(ordering: .sequentiallyConsistent)
}

@Test func aSecondCallerGetsThreadsWhileTheFirstJobRuns() {
    // While a job's first task runs (its pool held), another thread's job must still get a second
    // thread: the second pool. Tests run in parallel and may hold a pool at any moment, so a try
    // that finds none free (its job then runs serially) is tried again; without a second pool every
    // try fails.
    let deadline = Date().addingTimeInterval(120)
    var tries = 0, succeeded = false
    while !succeeded && Date() < deadline {
        tries += 1
        let inner = Atomic<Int>(0)  // 0 running, 1 got two threads, 2 ran serially
        let outer = jobGotTwoThreads(patience: 2) {
            let thread = Thread {
                inner.store(jobGotTwoThreads(patience: 2) ? 1 : 2, ordering: .sequentiallyConsistent)
            }
            thread.start()
            while inner.load(ordering: .sequentiallyConsistent) == 0 { usleep(1000) }
        }
        succeeded = outer && inner.load(ordering: .sequentiallyConsistent) == 1
    }
    #expect(succeeded, "no try in \(tries) gave the second caller's job a second thread")
}

@Test func everyTaskRunsOnceWhenJobsInARowAskForDifferentWorkerCounts() {
    // A thread one job leaves out must not take part in the next before it starts (pool.c keeps
    // a job's number and worker count in one word): it would run tasks twice, or count itself
    // done twice so that a call returns while a task still runs. Jobs alternate between 2 and 8
    // workers while busy threads oversubscribe the machine, which widens that window; every task
    // counts its runs, checked when its call returns. A stress test: a race it misses in one run
    // is rare, not excluded.
    let spinning = Atomic<Bool>(true)
    var busy: [Thread] = []
    for _ in 0..<4 {
        let thread = Thread {
            var x = 0.0
            while spinning.load(ordering: .relaxed) { x += 1 }
            _ = x
        }
        thread.start()
        busy.append(thread)
    }
    defer { spinning.store(false, ordering: .relaxed) }
    let tasks = 16
    let runs = Mutex([Int](repeating: 0, count: tasks))
    var wrong: [String] = []
    for job in 0..<5_000 where wrong.count < 5 {
        runs.withLock { $0 = [Int](repeating: 0, count: tasks) }
        parallelItems(tasks, workers: job % 2 == 0 ? 2 : 8) { item, _ in runs.withLock { $0[item] += 1 } }
        let counts = runs.withLock { $0 }
        if counts != [Int](repeating: 1, count: tasks) { wrong.append("job \(job): \(counts)") }
    }
    #expect(wrong.isEmpty, "\(wrong)")
}
