import Foundation
import GriditTensor
import Synchronization
import Testing

// The thread pool (Sources/CGriditKernels/pool.c) serves two callers at once: the engine runs its
// two stages side by side, each with its share of the threads.

/// Runs a job of two tasks that each wait until both have started: it completes only if a second
/// thread works on it (a job run serially on its caller would wait forever; the deadline is a
/// hang guard only). Returns whether it completed.
private func jobNeedingTwoThreads(while inside: (() -> Void)? = nil) -> Bool {
    let started = Atomic<Int>(0), completed = Atomic<Bool>(true)
    parallelItems(2, workers: 2) { item, _ in
        started.add(1, ordering: .sequentiallyConsistent)
        let deadline = Date().addingTimeInterval(60)
        while started.load(ordering: .sequentiallyConsistent) < 2 {
            if Date() > deadline {
                completed.store(false, ordering: .sequentiallyConsistent)
                return
            }
            usleep(100)
        }
        if item == 0 { inside?() }
    }
    return completed.load(ordering: .sequentiallyConsistent)
}

@Test func aSecondCallerGetsThreadsWhileTheFirstJobRuns() {
    #expect(jobNeedingTwoThreads())
    // While this job's first task runs (the first pool is held), another thread's job that needs
    // two threads must still get them: the second pool.
    let other = Atomic<Int>(0)  // 0 running, 1 completed, 2 stuck
    let outer = jobNeedingTwoThreads {
        let thread = Thread { other.store(jobNeedingTwoThreads() ? 1 : 2, ordering: .sequentiallyConsistent) }
        thread.start()
        let deadline = Date().addingTimeInterval(120)
        while other.load(ordering: .sequentiallyConsistent) == 0 && Date() < deadline { usleep(1000) }
    }
    #expect(outer)
    #expect(other.load(ordering: .sequentiallyConsistent) == 1, "the second caller's job did not get a second thread")
}
