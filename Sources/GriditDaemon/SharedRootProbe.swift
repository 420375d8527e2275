import Foundation
import Synchronization

/// Reads the shared root's free space and mark on a thread of its own, within a time limit.
/// On a hard network mount whose server is away, statvfs and reads block in the kernel until
/// it is back: on a cooperative thread that would stop the maintenance loop (lease reaping,
/// retention, status) and take one of a few threads from the rest of griditd. A probe that
/// has not answered within `timeout` reads as the shared root being unavailable, and no second
/// probe starts while it hangs.
final class SharedRootProbe: Sendable {
    struct Reading: Sendable, Equatable {
        var free: Int64?
        /// Why no job may start (nil: the root holds this cluster's mark and answers).
        var problem: String?
    }

    let root: String
    let timeout: Duration
    private let measure: @Sendable () -> Reading
    /// When the probe now running began (nil: none runs).
    private let running = Mutex<ContinuousClock.Instant?>(nil)

    init(root: String, timeout: Duration = .seconds(10), measure: @escaping @Sendable () -> Reading) {
        self.root = root
        self.timeout = timeout
        self.measure = measure
    }

    /// The shared root of a cluster whose mark holds `token`.
    convenience init(root: String, token: String) {
        self.init(root: root) {
            Reading(free: DaemonContext.freeBytes(on: root), problem: SharedRootMark.check(root, token: token))
        }
    }

    func read() async -> Reading {
        let hangingSince = running.withLock { since -> ContinuousClock.Instant? in
            if let since { return since }
            since = .now
            return nil
        }
        if let hangingSince { return unavailable(since: hangingSince) }
        let started = ContinuousClock.now
        return await withCheckedContinuation { continuation in
            let answer = Answer(continuation)
            let timer = Task { [self] in
                do { try await Task.sleep(for: timeout) } catch { return }
                answer.give(unavailable(since: started))
            }
            Thread.detachNewThread { [self] in
                let reading = measure()
                running.withLock { $0 = nil }
                timer.cancel()
                answer.give(reading)
            }
        }
    }

    /// The first of the probe and its timer to answer resumes the read.
    private final class Answer: Sendable {
        private let continuation: Mutex<CheckedContinuation<Reading, Never>?>
        init(_ continuation: CheckedContinuation<Reading, Never>) { self.continuation = Mutex(continuation) }
        func give(_ reading: Reading) { continuation.withLock { $0.take() }?.resume(returning: reading) }
    }

    private func unavailable(since: ContinuousClock.Instant) -> Reading {
        let seconds = (ContinuousClock.now - since).components.seconds
        return Reading(
            free: nil,
            problem: "the shared root \(root) has not answered for \(seconds) s (a network mount whose server is away?)"
        )
    }
}
