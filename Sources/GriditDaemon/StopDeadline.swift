import Dispatch
import Foundation
import Logging
import Synchronization

/// The end of a stop that outlasts its limit. Some steps do not look at stops (a model copy
/// from a hung shared mount, an import's hashing, an engine worker that is starting), and
/// ServiceLifecycle would end such a stop in `fatalError`, a core dump. Instead griditd logs why
/// and exits with status 1: `--stop-timeout` plus `cancelGrace` after the first SIGTERM/SIGINT,
/// or `cancelGrace` after a second one (Ctrl-C twice means now). Jobs still
/// running keep their leases and are taken back as after a crash: by this host when it starts
/// again, by another host once the lease ends. The watch runs on a thread of its own and
/// signals are read by a dispatch source, so a stalled cooperative pool cannot hold it up.
final class StopDeadline: Sendable {
    /// How long cancelled work gets to end (ServiceLifecycle's cancellation limit before).
    static let cancelGrace: Duration = .seconds(5)

    private struct Armed {
        var at: ContinuousClock.Instant
        var why: String
    }
    private let armed = Mutex<Armed?>(nil)
    /// Kept: a source that goes away stops reading its signal.
    private let signals = Mutex<[SignalSource]>([])
    private struct SignalSource: @unchecked Sendable { let source: any DispatchSourceSignal }
    private let secondSignal = Mutex<(@Sendable () -> Void)?>(nil)
    private let logger: Logger

    init(logger: Logger) { self.logger = logger }

    /// What a second stop signal does besides arming the exit: cancel the services.
    func onSecondSignal(_ action: sending @escaping @Sendable () -> Void) {
        secondSignal.withLock { $0 = action }
    }

    /// From the first stop signal: the stop may take `stopTimeout` and the cancellation after it
    /// `cancelGrace`; a later SIGTERM or SIGINT leaves `cancelGrace`.
    func stopStarted(stopTimeout: TimeInterval) {
        arm(
            after: .milliseconds(Int64(stopTimeout * 1000)) + Self.cancelGrace,
            "stopping took longer than --stop-timeout (\(Int(stopTimeout)) s) and \(Self.cancelGrace) more")
        // ServiceLifecycle already ignores both signals (SIG_IGN), which dispatch sources need.
        let sources = [SIGTERM, SIGINT].map { number in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in
                logger.warning("a second stop signal: cancelling what is left, exiting within \(Self.cancelGrace)")
                arm(after: Self.cancelGrace, "a second stop signal, and \(Self.cancelGrace) passed")
                secondSignal.withLock { $0 }?()
            }
            source.resume()
            return SignalSource(source: source)
        }
        signals.withLock { $0 += sources }
        logger.notice(
            "stopping: running jobs checkpoint and go back to the queue within --stop-timeout (\(Int(stopTimeout)) s); a second SIGTERM or SIGINT stops sooner"
        )
    }

    /// The services have ended (the stop went as it should): what is left, closing the database
    /// and connections, gets `limit` of its own, whatever was armed before.
    func servicesEnded(limit: Duration = .seconds(15)) {
        armed.withLock { armed in
            guard armed != nil else { return }  // no stop signal: nothing armed
            armed = Armed(at: .now + limit, why: "closing the database and connections took longer than \(limit)")
        }
    }

    /// Exits `after` from now unless an earlier exit is armed.
    func arm(after: Duration, _ why: String) {
        let at = ContinuousClock.now + after
        let first = armed.withLock { armed -> Bool in
            if let earlier = armed, earlier.at <= at { return false }
            defer { armed = Armed(at: at, why: why) }
            return armed == nil
        }
        if first { Thread.detachNewThread { [self] in watch() } }
    }

    private func watch() {
        while true {
            let now = armed.withLock { $0! }
            let left = now.at - .now
            if left <= .zero {
                logger.critical(
                    "exiting: \(now.why); running jobs are taken back after their lease, or when griditd starts again")
                LogWriter.shared.flush(timeout: 2)
                fflush(nil)
                _exit(1)
            }
            Thread.sleep(forTimeInterval: min(0.2, Double(left.components.seconds) + 0.01))
        }
    }
}
