// Opening files someone else named (a pipeline folder handed to griditd, a checkpoint path)
// without trusting the name:
//
//   - nothing is ever opened for reading before its type is known: each name is first opened
//     with O_PATH (which touches neither a FIFO nor a device driver), fstat-ed, and only a
//     regular file is reopened for reading, through /proc/self/fd (the same inode, no race);
//   - names inside a folder are resolved one component at a time with O_NOFOLLOW: no absolute
//     path, no `..`, no symbolic link anywhere on the way, so nothing leads out of the folder;
//   - with a `FileReader` (the daemon's caller), every folder on the way must let that reader
//     search it and the file must let it read, by the owner/group/other mode bits — a daemon
//     that runs as root or as its own user never reads a file for someone who could not.
#if canImport(Glibc)
import Glibc
#endif

/// Linux's O_PATH (asm-generic: x86-64, arm64), which Glibc's module hides behind _GNU_SOURCE.
let O_PATH: Int32 = 0o10_000_000

/// The identity whose permissions a file opened on someone's behalf must grant (for griditd,
/// the caller's uid and groups from SO_PEERCRED and the user database).
public struct FileReader: Sendable, Hashable {
    public var uid: UInt32
    public var groups: Set<UInt32>

    public init(uid: UInt32, groups: Set<UInt32>) {
        self.uid = uid
        self.groups = groups
    }

    static let read: mode_t = 0o4, search: mode_t = 0o1

    /// Whether the mode bits of `status` give this reader `access` (read or search). ACLs are not
    /// consulted, so a file shared with the reader only through an ACL is refused, never the reverse.
    func may(_ access: mode_t, _ status: stat) -> Bool {
        if uid == 0 { return true }
        if status.st_uid == uid { return status.st_mode & (access << 6) != 0 }
        if groups.contains(status.st_gid) { return status.st_mode & (access << 3) != 0 }
        return status.st_mode & access != 0
    }
}

/// Why a name was refused; `message` names the path and `hint` the fix.
public struct SafeOpenError: Error, Sendable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        case notFound
        /// A FIFO, socket, device, or a folder where a file is expected (or the reverse).
        case wrongType
        case symbolicLink
        /// Absolute, or with a `..` component.
        case outsideFolder
        case permission
        /// Any other failed system call.
        case system(Int32)
    }

    public var reason: Reason
    public var path: String
    public var message: String
    public var hint: String

    public var description: String { "\(message). Fix: \(hint)" }

    /// A failed system call `name` on `path`.
    public static func call(_ name: String, _ path: String, _ code: Int32) -> SafeOpenError {
        let message = "\(name) failed for \(path): \(String(cString: strerror(code)))"
        switch code {
        case ENOENT, ENOTDIR:
            return SafeOpenError(reason: .notFound, path: path, message: message, hint: "check the path")
        case EACCES, EPERM:
            return SafeOpenError(
                reason: .permission, path: path, message: message,
                hint: "check the owner and mode of \(path) and of every folder above it")
        default:
            return SafeOpenError(reason: .system(code), path: path, message: message, hint: "check the file system")
        }
    }
}

/// A regular file open for reading, with the `stat` taken on that very descriptor. Closed on deinit.
public final class OpenedFile: @unchecked Sendable {
    public let fd: Int32
    public let status: stat
    /// The name it was opened by (for messages).
    public let path: String

    init(fd: Int32, status: stat, path: String) {
        self.fd = fd
        self.status = status
        self.path = path
    }

    deinit { close(fd) }

    public var size: Int { Int(status.st_size) }

    /// The whole file when it holds at most `limit` bytes (read up to `limit + 1`, so a file whose
    /// size stat does not tell, like those of /proc, is measured by reading); nil when larger.
    public func readAll(limit: Int) throws(SafeOpenError) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: limit + 1)
        var done = 0
        while done <= limit {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, limit + 1 - done, off_t(done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SafeOpenError.call("read", path, errno)
            }
            if n == 0 { break }
            done += n
        }
        return done > limit ? nil : Array(bytes[0..<done])
    }
}

/// A folder open (O_PATH) to resolve names beneath it. Closed on deinit.
public final class OpenFolder: @unchecked Sendable {
    let fd: Int32
    /// Its real path (no symbolic links), for messages.
    public let path: String
    let reader: FileReader?

    /// Opens the folder at `path`. Symbolic links in `path` are followed (whoever named it chose
    /// them), but the real path is then walked from `/` without following any, checking that
    /// `reader` may search each folder on it.
    public init(_ path: String, reader: FileReader?) throws(SafeOpenError) {
        let real = try SafeOpen.realPath(path)
        let root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { throw SafeOpenError.call("open", "/", errno) }
        var fd = root
        var walked = ""
        do throws(SafeOpenError) {
            try SafeOpen.check(fd, "/", reader: reader, folder: true)
            for component in real.split(separator: "/") {
                walked += "/" + component
                let next = try SafeOpen.node(String(component), in: fd, path: walked, reader: reader, folder: true)
                close(fd)
                fd = next
            }
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
        self.path = real
        self.reader = reader
    }

    deinit { close(fd) }

    /// Opens `name`, a path relative to this folder with no `..`, no symbolic link and no
    /// absolute start, as a regular file the reader may read.
    public func file(_ name: String) throws(SafeOpenError) -> OpenedFile {
        let display = path == "/" ? "/" + name : path + "/" + name
        func outside(_ why: String) -> SafeOpenError {
            SafeOpenError(
                reason: .outsideFolder, path: display, message: "'\(name)' \(why), outside the folder \(path)",
                hint: "name files by paths relative to the folder and keep them inside it (no absolute path, no '..')")
        }
        if name.hasPrefix("/") { throw outside("is an absolute path") }
        let components = name.split(separator: "/").filter { $0 != "." }.map(String.init)
        if components.contains("..") { throw outside("goes up with '..'") }
        guard let last = components.last else { throw outside("names no file") }
        var fd = dup(self.fd)
        guard fd >= 0 else { throw SafeOpenError.call("dup", path, errno) }
        defer { close(fd) }
        var walked = path == "/" ? "" : path
        for component in components.dropLast() {
            walked += "/" + component
            let next = try SafeOpen.node(component, in: fd, path: walked, reader: reader, folder: true)
            close(fd)
            fd = next
        }
        let node = try SafeOpen.node(last, in: fd, path: walked + "/" + last, reader: reader, folder: false)
        defer { close(node) }
        return try SafeOpen.reopen(node, path: display)
    }
}

public enum SafeOpen {
    /// `path` with every symbolic link, `.` and `..` resolved (nothing is opened).
    public static func realPath(_ path: String) throws(SafeOpenError) -> String {
        guard let resolved = realpath(path, nil) else { throw SafeOpenError.call("resolving", path, errno) }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Opens `path` (symbolic links followed) for reading when it is a regular file, without
    /// blocking on a FIFO or opening a device. For files a process reads for itself: the store's
    /// own blobs, or a checkpoint its user named on the command line.
    public static func file(atPath path: String) throws(SafeOpenError) -> OpenedFile {
        let node = open(path, O_PATH | O_CLOEXEC)
        guard node >= 0 else { throw SafeOpenError.call("open", path, errno) }
        defer { close(node) }
        try check(node, path, reader: nil, folder: false)
        return try reopen(node, path: path)
    }

    /// `name` in folder `dirfd` as an O_PATH descriptor, refused unless it is a folder (`folder`)
    /// or a regular file that `reader` may search or read. Symbolic links are refused.
    static func node(
        _ name: String, in dirfd: Int32, path: String, reader: FileReader?, folder: Bool
    )
        throws(SafeOpenError) -> Int32
    {
        let fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw SafeOpenError.call("open", path, errno) }
        do throws(SafeOpenError) {
            try check(fd, path, reader: reader, folder: folder)
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Type and permission of what `fd` refers to.
    static func check(_ fd: Int32, _ path: String, reader: FileReader?, folder: Bool) throws(SafeOpenError) {
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw SafeOpenError.call("fstat", path, errno) }
        let type = status.st_mode & S_IFMT
        if type == S_IFLNK {
            throw SafeOpenError(
                reason: .symbolicLink, path: path, message: "\(path) is a symbolic link",
                hint: "put the file itself inside the folder (a link could lead anywhere, so none is followed)")
        }
        guard type == (folder ? S_IFDIR : S_IFREG) else {
            throw SafeOpenError(
                reason: .wrongType, path: path,
                message: "\(path) is \(describe(type)), not \(folder ? "a folder" : "a regular file")",
                hint: folder
                    ? "name the folder that holds the files"
                    : "name a regular file (not a FIFO, socket, device or folder)")
        }
        if let reader, !reader.may(folder ? FileReader.search : FileReader.read, status) {
            let mode = String(status.st_mode & 0o7777, radix: 8)
            throw SafeOpenError(
                reason: .permission, path: path,
                message:
                    "uid \(reader.uid) may not \(folder ? "enter" : "read") \(path) (owner uid \(status.st_uid), group \(status.st_gid), mode 0\(mode)), so griditd will not \(folder ? "enter" : "read") it for them",
                hint: "import files you can read yourself (griditd reads them with your permissions)")
        }
    }

    /// A readable descriptor of the regular file `node` (O_PATH) refers to: the same inode,
    /// reopened through /proc/self/fd, so nothing can be swapped in between.
    static func reopen(_ node: Int32, path: String) throws(SafeOpenError) -> OpenedFile {
        var before = stat()
        guard fstat(node, &before) == 0 else { throw SafeOpenError.call("fstat", path, errno) }
        let fd = open("/proc/self/fd/\(node)", O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT {
                throw SafeOpenError(
                    reason: .system(code), path: path, message: "cannot reopen \(path): /proc is not mounted",
                    hint: "mount /proc (griditd reopens files through /proc/self/fd)")
            }
            throw SafeOpenError.call("open", path, code)
        }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_dev == before.st_dev, status.st_ino == before.st_ino,
            status.st_mode & S_IFMT == S_IFREG
        else {
            close(fd)
            throw SafeOpenError(
                reason: .wrongType, path: path, message: "\(path) changed while it was opened",
                hint: "leave the file alone while it is read")
        }
        return OpenedFile(fd: fd, status: status, path: path)
    }

    static func describe(_ type: mode_t) -> String {
        switch type {
        case S_IFIFO: return "a FIFO"
        case S_IFSOCK: return "a socket"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFDIR: return "a folder"
        case S_IFREG: return "a regular file"
        default: return "a special file"
        }
    }
}
