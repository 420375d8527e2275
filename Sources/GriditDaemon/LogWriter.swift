import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Writes log entries on a thread of its own, so that logging never blocks the caller. journald
/// blocks its writers while its queue is full (a slow disk, another service flooding it): on one
/// of Swift's cooperative threads, or the thread that renews leases, that stalled griditd itself.
/// At most `capacity` entries wait; past that an entry is dropped and counted, and once the
/// writer catches up it says how many went. `flush` (at exit) waits for the rest, briefly.
final class LogWriter: Sendable {
    /// The process's writer (`DaemonLogHandler`); flushed at exit.
    static let shared: LogWriter = {
        let writer = LogWriter(capacity: 10_000) { $0() }
        atexit { LogWriter.shared.flush(timeout: 2) }
        return writer
    }()

    /// An entry: the write itself, formatted on the caller's thread.
    typealias Entry = @Sendable () -> Void

    private struct State {
        var queue: [Entry] = []
        var dropped = 0
        var writing = false
    }
    private let state = Mutex(State())
    private let wake = NSCondition()  // signalled on every submit (its lock guards nothing else)
    private let capacity: Int
    private let write: @Sendable (@escaping Entry) -> Void
    private let droppedNotice: @Sendable (Int) -> Entry

    /// `write` performs an entry (the tests' writer can block); `droppedNotice` makes the entry
    /// that reports `n` dropped ones.
    init(
        capacity: Int, droppedNotice: @escaping @Sendable (Int) -> Entry = LogWriter.stderrNotice,
        write: @escaping @Sendable (@escaping Entry) -> Void
    ) {
        self.capacity = capacity
        self.write = write
        self.droppedNotice = droppedNotice
        Thread.detachNewThread { [self] in run() }
    }

    /// Queues `entry`, or drops it when `capacity` entries wait already. Never blocks on the writes.
    func submit(_ entry: @escaping Entry) {
        let queued = state.withLock { s -> Bool in
            guard s.queue.count < capacity else {
                s.dropped += 1
                return false
            }
            s.queue.append(entry)
            return true
        }
        if queued {
            wake.lock()
            wake.signal()
            wake.unlock()
        }
    }

    /// Waits until every queued entry is written, at most `timeout` seconds.
    func flush(timeout: TimeInterval) {
        let deadline = Date().addingTimeInterval(timeout)
        while state.withLock({ !$0.queue.isEmpty || $0.writing }) && Date() < deadline { usleep(1_000) }
    }

    private func run() {
        while true {
            let (entries, dropped) = state.withLock { s -> ([Entry], Int) in
                defer {
                    s.queue.removeAll(keepingCapacity: true)
                    s.dropped = 0
                }
                s.writing = !s.queue.isEmpty || s.dropped > 0
                return (s.queue, s.dropped)
            }
            if entries.isEmpty && dropped == 0 {
                wake.lock()
                if state.withLock({ $0.queue.isEmpty }) { wake.wait(until: Date().addingTimeInterval(1)) }
                wake.unlock()
                continue
            }
            for entry in entries { write(entry) }
            if dropped > 0 { write(droppedNotice(dropped)) }
            state.withLock { $0.writing = false }
        }
    }

    static let stderrNotice: @Sendable (Int) -> Entry = { count in
        {
            let line = "griditd: \(count) log entries were dropped: the log did not take them as fast as they came\n"
            _ = line.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
        }
    }
}
