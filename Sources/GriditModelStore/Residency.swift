import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Page-cache residency and other processes' mappings of blobs.
enum Residency {
    static let pageSize = max(Int(sysconf(Int32(_SC_PAGESIZE))), 1)

    /// Bytes of the mapping `[base, base + size)` resident in memory (`mincore`).
    static func residentBytes(base: UnsafeRawPointer, size: Int) -> Int64 {
        guard size > 0 else { return 0 }
        let pages = (size + pageSize - 1) / pageSize
        var vector = [UInt8](repeating: 0, count: pages)
        let ok = vector.withUnsafeMutableBufferPointer { v in
            mincore(UnsafeMutableRawPointer(mutating: base), size, v.baseAddress) == 0
        }
        guard ok else { return 0 }
        let resident = vector.reduce(0) { $0 + Int($1 & 1) }
        return Int64(min(resident * pageSize, size))
    }

    /// Bytes of the file at `path` in the page cache: what any mapping of it has resident. Maps
    /// it briefly (mapping reads nothing). 0 when it cannot be mapped.
    static func residentBytes(path: String) -> Int64 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        guard let id = FileIdentity.of(fd: fd), id.isRegular, id.size > 0 else { return 0 }
        let size = Int(id.size)
        guard let base = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), base != MAP_FAILED else { return 0 }
        defer { munmap(base, size) }
        return residentBytes(base: UnsafeRawPointer(base), size: size)
    }

    /// Blobs under `blobsDirectory` that other processes map, from `/proc/<pid>/maps` (processes
    /// this user may not inspect are skipped).
    static func mappedByOtherProcesses(blobsDirectory: String) -> [Int32: Set<BlobDigest>] {
        let me = getpid()
        let prefix = blobsDirectory.hasSuffix("/") ? blobsDirectory : blobsDirectory + "/"
        var found: [Int32: Set<BlobDigest>] = [:]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry), pid != me, let bytes = FileBytes.read("/proc/\(entry)/maps") else { continue }
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                guard let slash = line.firstIndex(of: "/") else { continue }
                var path = String(line[slash...])
                if path.hasSuffix(" (deleted)") { continue }
                guard path.hasPrefix(prefix) else { continue }
                path.removeFirst(prefix.count)
                if let digest = BlobDigest("sha256:" + path) { found[pid, default: []].insert(digest) }
            }
        }
        return found
    }
}
