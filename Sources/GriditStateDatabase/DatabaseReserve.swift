import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Space set aside for the job database on its own filesystem: `<stateDir>/jobs.sqlite.reserve`,
/// a file of `size` allocated bytes. When a write finds the filesystem full, `release()` deletes
/// it, so SQLite has room to record outcomes, pauses and cancels while an operator frees space;
/// `ensure` makes it again once there is room.
public final class DatabaseReserve: Sendable {
    public static let fileName = "jobs.sqlite.reserve"

    public let path: String
    public let size: Int64
    private let released = Mutex<Date?>(nil)

    public init(path: String, size: Int64) {
        self.path = path
        self.size = size
    }

    /// Whether the reserve file is there, whole.
    public var isHeld: Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG && Int64(st.st_blocks) * 512 >= size
    }

    /// When a full filesystem made `release()` delete it (nil: never, or made again since).
    public var releasedAt: Date? { released.withLock { $0 } }

    /// Makes the reserve if it is missing and the filesystem keeps at least `keepFree` bytes
    /// free besides it. True when it is held afterwards.
    @discardableResult
    public func ensure(keepFree: Int64) -> Bool {
        guard size > 0 else { return true }
        if isHeld {
            released.withLock { $0 = nil }
            return true
        }
        var fs = statvfs()
        let directory = (path as NSString).deletingLastPathComponent
        guard statvfs(directory, &fs) == 0, Int64(fs.f_bavail) * Int64(fs.f_frsize) - size >= keepFree else {
            return false
        }
        let temporary = path + ".tmp"
        let fd = open(temporary, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return false }
        // Allocated blocks, not a sparse file: they are what a full disk gives back.
        let ok = posix_fallocate(fd, 0, off_t(size)) == 0 && fsync(fd) == 0
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            unlink(temporary)
            return false
        }
        released.withLock { $0 = nil }
        return true
    }

    /// Deletes the reserve; true if that freed space (it was there).
    @discardableResult
    public func release() -> Bool {
        guard size > 0, unlink(path) == 0 else { return false }
        released.withLock { $0 = Date() }
        return true
    }
}
