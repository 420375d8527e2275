import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The modes of what griditd keeps in its state directory, whatever the umask it was started
/// with: the directory is `0750` (its group may look, the design's `gridit` group under
/// systemd); the database and the job folders inside are griditd's alone, so no user reads
/// another's parameters or frames on disk (members fetch their own through the socket).
public enum StatePermissions {
    public static let stateDirectory: mode_t = 0o750
    /// `work/`, `outputs/`, `tmp/`.
    public static let privateDirectory: mode_t = 0o700
    /// The database and its `-wal` and `-shm` files (SQLite gives those the database's mode).
    public static let database: mode_t = 0o600

    /// Creates the folder `path` (and its missing parents) with `mode`, or takes from an existing
    /// one every permission bit `mode` lacks. Never adds a bit: a stricter folder stays stricter.
    public static func directory(_ path: String, mode: mode_t) throws(StateError) {
        if mkdir(path, mode) == 0 {
            _ = chmod(path, mode)  // mkdir's mode went through the umask
            return
        }
        let err = errno
        if err == ENOENT {
            do {
                try FileManager.default.createDirectory(
                    atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            } catch {
                throw StateError(
                    .io, "cannot create \(path): \(error.localizedDescription); create it or choose another --state-dir"
                )
            }
            return try directory(path, mode: mode)
        }
        guard err == EEXIST else {
            throw StateError(
                .io, "cannot create \(path): \(String(cString: strerror(err))); create it or choose another --state-dir"
            )
        }
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            throw StateError(.io, "\(path) exists and is not a folder; remove it or choose another --state-dir")
        }
        restrict(path, st, keeping: mode | S_ISGID)  // a setgid folder keeps handing down its group
    }

    /// Takes from the existing file `path` every permission bit `mode` lacks (nothing if missing).
    public static func file(_ path: String, mode: mode_t) {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return }
        restrict(path, st, keeping: mode)
    }

    /// Only the owner (or root) may chmod; anyone else leaves the mode as it is.
    private static func restrict(_ path: String, _ st: stat, keeping bits: mode_t) {
        let current = st.st_mode & 0o7777
        let wanted = current & bits
        if wanted != current, st.st_uid == geteuid() || geteuid() == 0 { _ = chmod(path, wanted) }
    }
}
