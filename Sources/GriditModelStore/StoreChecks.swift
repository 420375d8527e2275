import CModelStore
import Foundation
import GriditJobSpec

#if canImport(Glibc)
import Glibc
#endif

/// Permission and filesystem checks of a state directory, each naming the path component at fault
/// and the fix. `griditd models check` prints them, `ModelStore` uses them to explain a failure,
/// and the daemon serves them to `griditctl doctor`.
public enum StoreChecks {
    /// Every check for `stateDirectory` (and, if given, importing `source` with `link`).
    public static func run(
        stateDirectory: String, siteRoots: [String] = [], source: String? = nil, link: LinkMode? = nil
    ) -> StoreCheckReport {
        var checks: [StoreCheck] = []
        if let problem = pathProblem(stateDirectory, needWrite: true) {
            checks.append(
                StoreCheck(
                    name: "state directory", status: .error, path: problem.path,
                    message: problem.message, fix: problem.fix))
        } else if !FileIdentity.exists(directory: stateDirectory) {
            checks.append(
                StoreCheck(
                    name: "state directory", status: .ok, path: stateDirectory,
                    message: "\(stateDirectory) does not exist yet; \(userDescription()) can create it"))
        } else {
            checks.append(
                StoreCheck(
                    name: "state directory", status: .ok, path: stateDirectory,
                    message: "\(stateDirectory) exists and \(userDescription()) can write it"))
            for sub in ["blobs/sha256", "ingest", "quarantine"] {
                let path = joinPath(stateDirectory, sub)
                guard FileManager.default.fileExists(atPath: path) else { continue }
                if let problem = pathProblem(path, needWrite: true) {
                    checks.append(
                        StoreCheck(
                            name: "store directory \(sub)", status: .error, path: problem.path,
                            message: problem.message, fix: problem.fix))
                }
            }
            if let problem = writeProblem(stateDirectory) {
                checks.append(
                    StoreCheck(
                        name: "state directory writable", status: .error, path: stateDirectory,
                        message: problem.message, fix: problem.hint))
            }
            checks += filesystemChecks(stateDirectory)
        }
        for site in siteRoots {
            if let problem = pathProblem(joinPath(site, "blobs/sha256"), needWrite: false) {
                checks.append(
                    StoreCheck(
                        name: "site root", status: .warning, path: problem.path,
                        message: problem.message, fix: problem.fix))
            } else {
                checks.append(
                    StoreCheck(name: "site root", status: .ok, path: site, message: "\(site) is readable"))
            }
        }
        if let source {
            checks += sourceChecks(source, stateDirectory: stateDirectory, link: link ?? .auto)
        }
        return StoreCheckReport(checks: checks)
    }

    struct PathProblem: Equatable {
        var path: String
        var message: String
        var fix: String
    }

    /// The first component of `path` this process cannot enter, the directory it cannot create
    /// the next component in, or `path` itself not being a writable (or readable) directory.
    static func pathProblem(_ path: String, needWrite: Bool) -> PathProblem? {
        let absolute = path.hasPrefix("/") ? path : joinPath(FileManager.default.currentDirectoryPath, path)
        let components = (absolute as NSString).standardizingPath.split(separator: "/").map(String.init)
        var current = "/"
        for (i, component) in ([""] + components).enumerated() {
            if i > 0 { current = joinPath(current, component) }
            guard let id = FileIdentity.of(path: current) else {
                let parent = (current as NSString).deletingLastPathComponent
                guard needWrite else {
                    return PathProblem(
                        path: current, message: "\(current) does not exist",
                        fix: "check the path, or mount the site root")
                }
                if access(parent, W_OK | X_OK) != 0 {
                    let code = errno
                    return PathProblem(
                        path: parent,
                        message:
                            "\(current) does not exist and \(userDescription()) cannot create it: \(parent) is \(describe(parent)) (\(String(cString: strerror(code))))",
                        fix: fixFor(missing: absolute))
                }
                return nil  // creatable
            }
            let isLast = i == components.count
            if !id.isDirectory {
                return PathProblem(
                    path: current, message: "\(current) is not a directory",
                    fix: "remove or rename \(current), or choose another --state-dir")
            }
            if access(current, X_OK) != 0 {
                let code = errno
                return PathProblem(
                    path: current,
                    message:
                        "\(userDescription()) cannot enter \(current): it is \(describe(current)) (\(String(cString: strerror(code))))",
                    fix:
                        "give search permission on \(current) (e.g. chmod o+x \(current)), or choose another --state-dir"
                )
            }
            if isLast {
                let mode = needWrite ? W_OK | X_OK : R_OK | X_OK
                if access(current, mode) != 0 {
                    let code = errno
                    let readOnlyFS = code == EROFS
                    return PathProblem(
                        path: current,
                        message:
                            "\(userDescription()) cannot \(needWrite ? "write" : "read") \(current): it is \(describe(current))"
                            + (readOnlyFS ? " on a read-only filesystem" : "")
                            + " (\(String(cString: strerror(code))))",
                        fix: readOnlyFS ? fixForReadOnly(current) : fixFor(owner: current, write: needWrite))
                }
            }
        }
        return nil
    }

    /// Creates and removes a file in `directory`: catches what `access` misses (read-only bind
    /// mounts under systemd's ProtectSystem=, full disks, odd filesystems).
    static func writeProblem(_ directory: String) -> ModelStoreError? {
        let probe = joinPath(directory, ".gridit-write-test-\(getpid())")
        let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let code = errno
            let fix = code == EROFS ? fixForReadOnly(directory) : fixFor(owner: directory, write: true)
            return ModelStoreError(
                code == ENOSPC ? .noSpace : .permission,
                "cannot create files in \(directory) (\(String(cString: strerror(code))))", hint: fix)
        }
        close(fd)
        unlink(probe)
        return nil
    }

    /// The error `ModelStore.init` throws when it cannot create `path`.
    static func explainFailure(creating path: String, stateDirectory: String) -> ModelStoreError {
        if let problem = pathProblem(path, needWrite: true) {
            return ModelStoreError(.permission, problem.message, hint: problem.fix)
        }
        return ModelStoreError(.io, "cannot create \(path)", hint: "check the state directory \(stateDirectory)")
    }

    static func filesystemChecks(_ stateDirectory: String) -> [StoreCheck] {
        var checks: [StoreCheck] = []
        let subs = ["ingest", "blobs/sha256", "quarantine"].map { joinPath(stateDirectory, $0) }
        let devices = subs.compactMap { p in FileIdentity.of(path: p).map { (p, $0.device) } }
        if Set(devices.map(\.1)).count > 1 {
            checks.append(
                StoreCheck(
                    name: "one filesystem", status: .error, path: stateDirectory,
                    message:
                        "ingest/, blobs/ and quarantine/ are on different filesystems (\(devices.map { "\($0.0): device \($0.1)" }.joined(separator: ", "))); publishing a blob is a link within one filesystem",
                    fix:
                        "move the whole state directory to the big disk (and point --state-dir, or StateDirectory= plus a bind mount, at it) instead of symlinking blobs/"
                ))
        }
        var type: Int64 = 0
        var available: UInt64 = 0
        if gridit_filesystem(stateDirectory, &type, &available) == 0 {
            let network: [Int64: String] = [
                0x6969: "NFS", 0xFF53_4D42: "CIFS/SMB", 0xFE53_4D42: "SMB2", 0x6573_5546: "FUSE",
                0x0102_1997: "9p",
            ]
            if let name = network[type] {
                checks.append(
                    StoreCheck(
                        name: "local filesystem", status: .warning, path: stateDirectory,
                        message:
                            "\(stateDirectory) is on \(name); SQLite's WAL mode needs a local disk for the database",
                        fix:
                            "keep the state directory on a local disk and share models through a read-only site root (--site-root)"
                    ))
            }
            let free = Int64(clamping: available)
            checks.append(
                StoreCheck(
                    name: "free space", status: free < 1 << 30 ? .warning : .ok, path: stateDirectory,
                    message: "\(formatBytes(free)) free on the filesystem of \(stateDirectory)",
                    fix: free < 1 << 30 ? "free space; `models gc` removes unreferenced blobs" : nil))
        }
        return checks
    }

    static func sourceChecks(_ source: String, stateDirectory: String, link: LinkMode) -> [StoreCheck] {
        let parent = (source as NSString).deletingLastPathComponent
        if let problem = pathProblem(parent.isEmpty ? "." : parent, needWrite: false) {
            return [
                StoreCheck(
                    name: "import source", status: .error, path: problem.path, message: problem.message,
                    fix: problem.fix)
            ]
        }
        guard access(source, R_OK) == 0, let id = FileIdentity.of(path: source) else {
            let code = errno
            if code == ENOENT {
                return [
                    StoreCheck(
                        name: "import source", status: .error, path: source,
                        message: "\(source) does not exist", fix: "check the path")
                ]
            }
            return [
                StoreCheck(
                    name: "import source", status: .error, path: source,
                    message: "\(userDescription()) cannot read \(source): \(String(cString: strerror(code)))",
                    fix: "check its permissions (\(describe(source))) and those of the directories above it")
            ]
        }
        var checks = [
            StoreCheck(name: "import source", status: .ok, path: source, message: "\(source) is readable")
        ]
        if link == .hardlink, let store = FileIdentity.of(path: stateDirectory), store.device != id.device {
            checks.append(
                StoreCheck(
                    name: "hardlink", status: .error, path: source,
                    message:
                        "\(source) is on another filesystem (device \(id.device)) than \(stateDirectory) (device \(store.device)): a hardlink is impossible",
                    fix: "use --link copy or auto, or move the file onto the store's filesystem first"))
        }
        return checks
    }

    // MARK: Wording

    static func userDescription() -> String {
        let uid = geteuid()
        if let pw = getpwuid(uid) { return "user \(String(cString: pw.pointee.pw_name)) (uid \(uid))" }
        return "uid \(uid)"
    }

    /// "owned by root:root, mode 0755".
    static func describe(_ path: String) -> String {
        var s = stat()
        guard stat(path, &s) == 0 else { return "not accessible" }
        let owner = getpwuid(s.st_uid).map { String(cString: $0.pointee.pw_name) } ?? String(s.st_uid)
        let group = getgrgid(s.st_gid).map { String(cString: $0.pointee.gr_name) } ?? String(s.st_gid)
        return "owned by \(owner):\(group), mode \(String(UInt32(s.st_mode) & 0o7777, radix: 8).leftPadded(4))"
    }

    static func fixFor(owner path: String, write: Bool) -> String {
        let user = getpwuid(geteuid()).map { String(cString: $0.pointee.pw_name) } ?? String(geteuid())
        return write
            ? "make \(path) writable by \(user) (chown -R \(user) \(path)); under systemd use StateDirectory=gridit for the default, or add ReadWritePaths=\(path) in a drop-in (systemctl edit griditd); or choose another --state-dir"
            : "make \(path) readable by \(user) (chmod -R a+rX \(path))"
    }

    static func fixFor(missing path: String) -> String {
        let user = getpwuid(geteuid()).map { String(cString: $0.pointee.pw_name) } ?? String(geteuid())
        return
            "create it as root: install -d -o \(user) \(path); under systemd StateDirectory=gridit creates /var/lib/gridit; or choose a --state-dir this user can create (e.g. ~/.local/share/gridit)"
    }

    static func fixForReadOnly(_ path: String) -> String {
        "\(path) is read-only here; under systemd (ProtectSystem=strict) add ReadWritePaths=\(path) in a drop-in (systemctl edit griditd), or remount it read-write"
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
