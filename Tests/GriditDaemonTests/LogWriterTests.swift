import Foundation
import Synchronization
import Testing

@testable import GriditDaemon

@Suite("the log's writer thread")
struct LogWriterTests {
    /// A log that takes nothing until opened, as journald with a full queue.
    final class BlockedLog: Sendable {
        private let state = Mutex((open: false, entered: false, written: [String]()))
        var entered: Bool { state.withLock { $0.entered } }
        var written: [String] { state.withLock { $0.written } }
        func open() { state.withLock { $0.open = true } }
        func write(_ text: String) {
            state.withLock { $0.entered = true }
            while !state.withLock({ $0.open }) { usleep(1_000) }
            state.withLock { $0.written.append(text) }
        }
    }

    @Test(
        "a log that blocks never blocks the caller: entries past the capacity are dropped and counted, the rest written in order"
    )
    func blockedLog() async throws {
        let log = BlockedLog()
        let writer = LogWriter(capacity: 3, droppedNotice: { n in { log.write("dropped \(n)") } }) { $0() }
        writer.submit { log.write("0") }
        let deadline = Date().addingTimeInterval(60)
        while !log.entered && Date() < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(log.entered)
        // The writer is held in entry 0: these return at once; 3 wait, 7 are dropped.
        for i in 1...10 { writer.submit { log.write("\(i)") } }
        #expect(log.written.isEmpty)
        log.open()
        writer.flush(timeout: 60)
        #expect(log.written == ["0", "1", "2", "3", "dropped 7"])
        writer.submit { log.write("11") }
        writer.flush(timeout: 60)
        #expect(log.written.last == "11")
    }
}
