// `result(within:)`: `status` answers without a shared database that does not answer in time.

import Foundation
import GriditJobQueue
import Testing

@testable import GriditDaemon

@Suite("result(within:)")
struct DeadlineTests {
    struct Refused: Error, Equatable {}

    @Test("a body in time gives its value or its error; a late one gives nil and is cancelled, not waited for")
    func deadline() async throws {
        #expect(try await result(within: .seconds(600)) { () async throws(Refused) in 7 }?.get() == 7)
        let refused = await result(within: .seconds(600)) { () async throws(Refused) -> Int in throw Refused() }
        #expect(throws: Refused.self) { try refused?.get() }
        // A body that ignores its cancellation (as a statement waiting for a connection may):
        // the caller goes on; the body learns it was cancelled when it looks.
        let (cancelled, saw) = AsyncStream.makeStream(of: Bool.self)
        let late = await result(within: .milliseconds(50)) { () async throws(Refused) -> Int in
            while !Task.isCancelled { usleep(10_000) }
            saw.yield(true)
            return 1
        }
        #expect(late == nil)
        var seen = cancelled.makeAsyncIterator()
        #expect(await seen.next() == true)
    }
}
