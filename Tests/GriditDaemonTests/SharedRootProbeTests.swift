import Foundation
import Synchronization
import Testing

@testable import GriditDaemon

@Suite("the shared root's probe")
struct SharedRootProbeTests {
    /// Blocks its callers until opened, as a statvfs on a hard mount whose server is away.
    final class Gate: Sendable {
        private let open = Mutex(false)
        func pass() { while !open.withLock({ $0 }) { usleep(1_000) } }
        func openIt() { open.withLock { $0 = true } }
    }

    @Test(
        "a probe that hangs reads as unavailable after its timeout, and no second one starts while it hangs; once it answers, reads measure again"
    )
    func hangingProbe() async throws {
        let gate = Gate()
        let calls = Mutex(0)
        let probe = SharedRootProbe(root: "/srv/gridit", timeout: .milliseconds(200)) {
            calls.withLock { $0 += 1 }
            gate.pass()
            return .init(free: 42, problem: nil)
        }
        let first = await probe.read()
        #expect(first.free == nil)
        #expect(first.problem?.hasPrefix("the shared root /srv/gridit has not answered for ") == true, "\(first)")
        let second = await probe.read()
        #expect(second.problem?.hasPrefix("the shared root /srv/gridit has not answered for ") == true, "\(second)")
        #expect(calls.withLock { $0 } == 1, "a second probe started while the first hung")

        gate.openIt()
        let deadline = Date().addingTimeInterval(60)
        var reading = await probe.read()
        while reading != .init(free: 42, problem: nil) && Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
            reading = await probe.read()
        }
        #expect(reading == .init(free: 42, problem: nil))
        #expect(calls.withLock { $0 } >= 2)
    }
}
