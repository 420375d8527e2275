import Foundation
import GriditTestSupport
import Testing

@Suite("tests that block run off the cooperative pool", .offPool)
struct OffPoolTests {
    @Test("eight tasks that each block until all eight have started all start (CI's cooperative pool has two threads)")
    func blockingTasksDoNotWaitForOneAnother() async {
        let barrier = Barrier(parties: 8)
        await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<barrier.parties {
                group.addTask { barrier.arriveAndWait(timeout: 60) }
            }
            for await allStarted in group {
                #expect(allStarted, "a blocked task held a thread the others needed")
            }
        }
        #expect(barrier.onPoolThreads == [true], "a task ran on a thread that is not the pool's")
    }

    /// Blocks each caller until `parties` have arrived, or `timeout` seconds pass (then false).
    final class Barrier: @unchecked Sendable {
        let parties: Int
        private let condition = NSCondition()
        private var arrived = 0  // guarded by `condition`
        private(set) var onPoolThreads: Set<Bool> = []  // guarded by `condition`

        init(parties: Int) { self.parties = parties }

        func arriveAndWait(timeout: TimeInterval) -> Bool {
            condition.lock()
            defer { condition.unlock() }
            arrived += 1
            onPoolThreads.insert(GrowingThreadPool.onPoolThread)
            condition.broadcast()
            let deadline = Date().addingTimeInterval(timeout)
            while arrived < parties, condition.wait(until: deadline) {}
            return arrived == parties
        }
    }
}
