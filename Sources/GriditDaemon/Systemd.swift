// The daemon's side of systemd, through libsystemd: readiness and status (sd_notify), the
// watchdog, and socket activation (sd_listen_fds). Outside systemd every call is a no-op.

import CSystemd
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public final class SystemdNotifier: Sendable {
    /// True when `$NOTIFY_SOCKET` is set (Type=notify).
    public let isEnabled: Bool
    /// Half the unit's WatchdogSec, or nil when the watchdog is off.
    public let watchdogInterval: Duration?
    private let lastStatus = Mutex("")

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        isEnabled = environment["NOTIFY_SOCKET"] != nil
        var usec: UInt64 = 0
        if sd_watchdog_enabled(0, &usec) > 0, usec > 0 {
            watchdogInterval = .microseconds(Int64(usec / 2))
        } else {
            watchdogInterval = nil
        }
    }

    /// READY=1 with a first status: after migrations, crash recovery and the socket bind.
    public func ready(status: String) { send("READY=1\nSTATUS=\(status)") }

    /// STATUS= for `systemctl status griditd`; repeated identical lines are not re-sent.
    public func status(_ text: String) {
        let changed = lastStatus.withLock { last in
            guard last != text else { return false }
            last = text
            return true
        }
        if changed { send("STATUS=\(text)") }
    }

    public func stopping(status: String) { send("STOPPING=1\nSTATUS=\(status)") }

    /// WATCHDOG=1. Sent by the worker loop itself (idle polls and engine steps), so that a hung
    /// step stops the pings and systemd restarts the daemon.
    public func watchdog() {
        if watchdogInterval != nil { send("WATCHDOG=1") }
    }

    private func send(_ state: String) {
        guard isEnabled else { return }
        _ = sd_notify(0, state)
    }
}

public enum SocketActivation {
    /// The first of the sockets systemd passed (LISTEN_FDS), if it is a listening Unix stream
    /// socket; nil when griditd was not socket-activated. Throws for a passed socket of the
    /// wrong kind, with a message that names the unit setting to fix.
    public static func inheritedSocket() throws -> (fd: Int32, path: String?)? {
        let count = sd_listen_fds(1)  // 1: unset LISTEN_* so child processes do not inherit them
        guard count > 0 else { return nil }
        let fd = SD_LISTEN_FDS_START
        guard sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 else {
            throw SocketActivationError(
                message: "systemd passed \(count) socket(s) but fd \(fd) is not a listening Unix stream socket; "
                    + "griditd.socket must use ListenStream=/run/gridit/griditd.sock")
        }
        return (fd, boundPath(fd))
    }

    /// The filesystem path a Unix socket is bound to.
    static func boundPath(_ fd: Int32) -> String? {
        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let ok = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { return nil }
        return withUnsafeBytes(of: address.sun_path) { raw in
            let bytes = raw.prefix(while: { $0 != 0 })
            return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
        }
    }
}

public struct SocketActivationError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
