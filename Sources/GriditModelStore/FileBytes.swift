import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Whole-file reads with open/read, for files griditd reads on every request (`status`,
/// `models ps`).
///
/// Not `Data(contentsOf:)`, `String(contentsOfFile:)` or `FileManager.contents(atPath:)`: on
/// Linux, swift-foundation reads a file whose size stats as 0 into a 4 KiB buffer it mallocs,
/// and never frees that buffer when the file turns out empty. `/proc/<pid>/maps` of every kernel
/// thread and zombie is such a file, so scanning /proc leaked ~4 KiB per such process per call
/// (issue 16: ~245 KB per `GET /v1/status`).
enum FileBytes {
    /// The bytes of the regular file at `path`, at most `limit` of them; nil when it cannot be
    /// opened or read, or is not a regular file (a FIFO or device is never waited on).
    static func read(_ path: String, limit: Int = 16 << 20) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let identity = FileIdentity.of(fd: fd), identity.isRegular else { return nil }
        var bytes: [UInt8] = []
        while bytes.count < limit {
            var n = 0
            let chunk = [UInt8](unsafeUninitializedCapacity: min(64 * 1024, limit - bytes.count)) { buffer, count in
                n = Glibc.read(fd, buffer.baseAddress, buffer.count)
                count = max(n, 0)
            }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { break }
            bytes += chunk
        }
        return bytes
    }
}
