import Testing

@testable import GriditJobStorePostgres

// The bound on waiting for a pool to close (`withRunningPool`): a task that never ends is not
// awaited past the limit; one that ends is seen to.
@Suite("pool closing")
struct PoolClosingTests {
    @Test("a task that ends in time is finished; one that never ends is left after the limit")
    func finishedWithin() async {
        let quick = Task {}
        #expect(await PostgresJobStore.finished(quick, within: .seconds(600)))
        // Ends in an hour: only the limit answers.
        let stuck = Task { _ = try? await Task.sleep(for: .seconds(3600)) }
        #expect(await PostgresJobStore.finished(stuck, within: .milliseconds(50)) == false)
        stuck.cancel()
    }
}
