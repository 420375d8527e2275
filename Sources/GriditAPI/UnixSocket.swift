// The one place that fills a `sockaddr_un` (griditctl's client, griditd's stale-socket check).
#if canImport(Glibc)
import Glibc
#endif

public enum UnixSocket {
    /// Connects `fd` to the socket at `path`; false with `errno` set on failure (ENAMETOOLONG
    /// when the path does not fit the 108 bytes of `sun_path`).
    public static func connect(_ fd: Int32, to path: String) -> Bool {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            errno = ENAMETOOLONG
            return false
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }
}
