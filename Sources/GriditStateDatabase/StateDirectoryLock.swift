import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The single-writer lock of a griditd state directory: an exclusive `flock` on
/// `<stateDir>/griditd.lock`, which holds the owner's PID as text.
///
/// `flock` belongs to the open file description, so the lock is released when the process
/// exits (even on `kill -9`) and a second `acquire` fails even inside the same process. Keep the
/// returned value alive for as long as the process writes to the state directory; `release()`
/// (or deinit) drops the lock.
public final class StateDirectoryLock: Sendable {
    public let path: String
    private let descriptor: Mutex<Int32?>

    /// Creates the lock file if needed and locks it without waiting. Throws `locked`, naming
    /// the PID of the holder and the path, when another process (or open) holds it.
    public init(stateDirectory: String) throws(StateError) {
        let path = (stateDirectory as NSString).appendingPathComponent("griditd.lock")
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let err = errno
            throw StateError(
                .io,
                "open \(path) failed: \(String(cString: strerror(err))); check that the state directory exists and is writable"
            )
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let err = errno
            let holder = Self.readPID(fd)
            close(fd)
            if err == EWOULDBLOCK {
                let pid = holder.map(String.init) ?? "unknown"
                throw StateError(
                    .locked,
                    "another griditd (pid \(pid)) is using \(stateDirectory) (lock \(path)); stop it or use a different --state-dir"
                )
            }
            throw StateError(.io, "flock \(path) failed: \(String(cString: strerror(err)))")
        }
        let text = "\(getpid())\n"
        let ok =
            ftruncate(fd, 0) == 0
            && text.utf8CString.withUnsafeBufferPointer { buf in
                pwrite(fd, buf.baseAddress, buf.count - 1, 0) == buf.count - 1
            }
            && fsync(fd) == 0
        guard ok else {
            let err = errno
            close(fd)
            throw StateError(.io, "writing the pid to \(path) failed: \(String(cString: strerror(err)))")
        }
        descriptor = Mutex(fd)
    }

    /// Unlocks and closes the file (the stale PID text stays; the lock, not the text, is the
    /// truth). Idempotent.
    public func release() {
        descriptor.withLock { fd in
            if let open = fd {
                flock(open, LOCK_UN)
                close(open)
                fd = nil
            }
        }
    }

    deinit { release() }

    private static func readPID(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 31, 0) }
        guard n > 0 else { return nil }
        let text = String(decoding: buffer[0..<n], as: UTF8.self)
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
