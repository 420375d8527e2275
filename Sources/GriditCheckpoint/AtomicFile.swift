#if canImport(Glibc)
import Glibc
#endif

/// Writes a file all-or-nothing: into a temporary file in the destination's directory, then
/// `fsync` and `rename` over the destination (and a best-effort `fsync` of the directory).
/// A reader sees either the old file or the complete new one, never a partial write.
///
/// Usage: `try AtomicFileWriter.write(to: path) { out in try out.write(bytes) }`.
public final class AtomicFileWriter {
    public let path: String
    let temporaryPath: String
    private var fd: Int32
    private var renamed = false
    /// Bytes written so far.
    private(set) var offset = 0

    /// Runs `body` with a writer for `path`; on any error the temporary file is removed.
    public static func write(
        to path: String, _ body: (AtomicFileWriter) throws(CheckpointError) -> Void
    ) throws(CheckpointError) {
        let writer = try AtomicFileWriter(path: path)
        try body(writer)
        try writer.commit()
    }

    private init(path: String) throws(CheckpointError) {
        self.path = path
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        var template = Array("\(directory.isEmpty ? "/" : directory)/.\(name).tmp-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw CheckpointError.syscall("mkstemp in '\(directory)'", errno: errno, path: path, as: .writeFailed,
                                          hint: "check that the directory exists and is writable")
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        self.fd = fd
        self.temporaryPath = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // mkstemp creates 0600; checkpoints are shared read-only data.
        _ = fchmod(fd, 0o644)
    }

    /// Appends `bytes`, retrying short writes and EINTR.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw CheckpointError.syscall("write", errno: errno, path: path, as: .writeFailed,
                                              hint: "check free disk space")
            }
            done += n
        }
        offset += done
    }

    public func write(_ bytes: [UInt8]) throws(CheckpointError) {
        var failure: CheckpointError?
        bytes.withUnsafeBytes { raw in
            do throws(CheckpointError) { try write(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Appends `count` zero bytes.
    func writeZeros(_ count: Int) throws(CheckpointError) {
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

    private func commit() throws(CheckpointError) {
        guard fsync(fd) == 0 else {
            throw CheckpointError.syscall("fsync", errno: errno, path: path, as: .writeFailed)
        }
        let closed = close(fd)
        let closeErrno = errno
        fd = -1
        guard closed == 0 else {
            throw CheckpointError.syscall("close", errno: closeErrno, path: path, as: .writeFailed)
        }
        guard rename(temporaryPath, path) == 0 else {
            throw CheckpointError.syscall("rename to the destination", errno: errno, path: path, as: .writeFailed)
        }
        renamed = true
        // Make the rename itself durable; a failure here is not worth an error.
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let dirfd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            _ = fsync(dirfd)
            close(dirfd)
        }
    }

    /// An unfinished write (error in `body` or in `commit`) leaves nothing behind.
    deinit {
        if fd >= 0 { close(fd) }
        if !renamed { unlink(temporaryPath) }
    }
}
