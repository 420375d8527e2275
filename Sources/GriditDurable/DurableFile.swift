// The one way gridit writes a file that must survive a crash whole or not at all: a temporary
// file in the destination's folder, fsync, rename over the destination, fsync of the folder. A
// reader sees the old file or the complete new one, never a partial write. No Foundation (it is
// linked into griditctl as into griditd).
#if canImport(Glibc)
import Glibc
#endif

/// A failed system call of a durable write.
public struct DurableFileError: Error, Hashable, Sendable, CustomStringConvertible {
    /// `mkstemp in '<dir>'`, `write`, `fsync`, `close`, `rename`.
    public var call: String
    public var errno: Int32
    /// The destination.
    public var path: String

    public var description: String { "\(call) '\(path)': \(String(cString: strerror(errno)))" }
    /// ENOSPC or EDQUOT: the filesystem is full.
    public var isDiskFull: Bool { errno == ENOSPC || errno == EDQUOT }
}

/// A file being written durably; `Failure` is the caller's error type, which the writer's own
/// failures are turned into (`failure`), so that the body throws one type.
///
/// Usage: `try DurableFile.write(to: path, failure: { MyError($0) }) { out in try out.write(bytes) }`.
public final class DurableFile<Failure: Error> {
    public let path: String
    let temporaryPath: String
    private let failure: (DurableFileError) -> Failure
    private var fd: Int32
    private var renamed = false
    /// Bytes written so far through `write`.
    public private(set) var offset = 0

    /// The temporary file's descriptor, for a writer that needs one (libarchive); bytes written
    /// through it are not counted in `offset`.
    public var fileDescriptor: Int32 { fd }

    /// Runs `body` with a writer for `path`, then makes the file durable and puts it in place. On
    /// any error nothing is left behind (the temporary file is removed).
    public static func write(
        to path: String, permissions: mode_t = 0o644, failure: @escaping (DurableFileError) -> Failure,
        _ body: (DurableFile) throws(Failure) -> Void
    ) throws(Failure) {
        let writer = try DurableFile(path: path, permissions: permissions, failure: failure)
        try body(writer)
        try writer.commit()
    }

    /// `bytes` as the whole content of `path`.
    public static func write(
        _ bytes: [UInt8], to path: String, permissions: mode_t = 0o644,
        failure: @escaping (DurableFileError) -> Failure
    ) throws(Failure) {
        try write(to: path, permissions: permissions, failure: failure) { (out) throws(Failure) in try out.write(bytes)
        }
    }

    private init(path: String, permissions: mode_t, failure: @escaping (DurableFileError) -> Failure) throws(Failure) {
        self.path = path
        self.failure = failure
        let directory = Self.directory(of: path)
        let name = path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? path
        var template = Array("\(directory)/.\(name).tmp-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw failure(DurableFileError(call: "mkstemp in '\(directory)'", errno: errno, path: path))
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        self.fd = fd
        self.temporaryPath = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        _ = fchmod(fd, permissions)  // mkstemp creates 0600
    }

    /// Appends `bytes`, retrying short writes and EINTR.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(Failure) {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw failure(DurableFileError(call: "write", errno: errno, path: path))
            }
            done += n
        }
        offset += done
    }

    public func write(_ bytes: [UInt8]) throws(Failure) {
        var failed: Failure?
        bytes.withUnsafeBytes { raw in
            do throws(Failure) { try write(raw) } catch { failed = error }
        }
        if let failed { throw failed }
    }

    /// Appends `count` zero bytes.
    public func writeZeros(_ count: Int) throws(Failure) {
        guard count > 0 else { return }
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: min(count, 1 << 16), alignment: 1)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        var left = count
        while left > 0 {
            let n = min(left, zeros.count)
            try write(UnsafeRawBufferPointer(rebasing: zeros[0..<n]))
            left -= n
        }
    }

    private func commit() throws(Failure) {
        guard fsync(fd) == 0 else { throw failure(DurableFileError(call: "fsync", errno: errno, path: path)) }
        let closed = close(fd)
        let closeErrno = errno
        fd = -1
        guard closed == 0 else { throw failure(DurableFileError(call: "close", errno: closeErrno, path: path)) }
        guard rename(temporaryPath, path) == 0 else {
            throw failure(DurableFileError(call: "rename to the destination", errno: errno, path: path))
        }
        renamed = true
        DurableFiles.syncDirectory(Self.directory(of: path))
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let directory = String(path[..<slash])
        return directory.isEmpty ? "/" : directory
    }

    /// An unfinished write (an error in `body` or in `commit`) leaves nothing behind.
    deinit {
        if fd >= 0 { close(fd) }
        if !renamed { unlink(temporaryPath) }
    }
}

/// The rest of durability: renames and creations made to last.
public enum DurableFiles {
    /// Whether `name`, in a folder, is the temporary file of a durable write of `target` (a name
    /// in the same folder) whose writer was killed before it finished.
    public static func isTemporary(_ name: String, of target: String) -> Bool {
        name.hasPrefix(".\(target).tmp-")
    }

    /// Whether `name` is the temporary file of a durable write of any name.
    public static func isTemporary(_ name: String) -> Bool {
        name.hasPrefix(".") && name.contains(".tmp-")
    }

    /// Best-effort fsync of a directory: makes the renames, links and creations in it durable.
    public static func syncDirectory(_ path: String) {
        let fd = open(path.isEmpty ? "." : path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    /// `rename(from, to)`, then an fsync of `to`'s directory.
    public static func rename(_ from: String, to: String) throws(DurableFileError) {
        guard Glibc.rename(from, to) == 0 else { throw DurableFileError(call: "rename", errno: errno, path: to) }
        syncDirectory(DurableFile<DurableFileError>.directory(of: to))
    }
}
