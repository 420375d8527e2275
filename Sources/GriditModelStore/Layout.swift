// On-disk layout of a store root (the state directory, or a read-only site root):
//
//   blobs/sha256/<hex>   immutable content (mode 0444), named by its SHA-256; pipeline manifests,
//                        model configs and safetensors weights alike
//   ingest/<uuid>.partial  files being imported: flock-ed by the importing process while it
//                        lives, so gc removes only those of dead importers
//   quarantine/<hex>.<ms>  blobs whose content stopped matching their name, kept for inspection
//   refs.json            the root's tags (NAME:TAG -> manifest digest), rewritten after every tag
//                        change, so that the root can serve as another machine's site root
//   jobs.sqlite          (writable root only) the state database: tags, history, manifests
//
// A blob appears under its name only complete and durable: it is written to ingest/, fsynced,
// made read-only, linked to blobs/sha256/<hex> (link, not rename, so an existing blob is never
// replaced) and the directory fsynced.

import CModelStore
import Foundation
import GriditCheckpoint
import GriditDurable
import GriditFaults
import GriditJobSpec

#if canImport(Glibc)
import Glibc
#endif

/// One store root.
struct StoreRoot: Sendable {
    let path: String
    let writable: Bool

    var blobsDirectory: String { joinPath(path, "blobs/sha256") }
    var ingestDirectory: String { joinPath(path, "ingest") }
    /// The cluster origin's tags (`ModelStore.originTagPath`).
    var tagsDirectory: String { joinPath(path, "tags") }
    var quarantineDirectory: String { joinPath(path, "quarantine") }
    var refsPath: String { joinPath(path, "refs.json") }

    func blobPath(_ digest: BlobDigest) -> String { joinPath(blobsDirectory, digest.hex) }

    /// The blob's file if it exists here as a regular file.
    func existingBlob(_ digest: BlobDigest) -> (path: String, identity: FileIdentity)? {
        let path = blobPath(digest)
        guard let id = FileIdentity.of(path: path), id.isRegular else { return nil }
        return (path, id)
    }

    /// Digests of every blob file (names that are not 64 hex digits are ignored).
    func blobDigests() -> [BlobDigest] {
        ((try? FileManager.default.contentsOfDirectory(atPath: blobsDirectory)) ?? [])
            .compactMap { BlobDigest("sha256:" + $0) }
            .filter { $0.hex == $0.hex.lowercased() }
            .sorted()
    }

    /// Moves a bad blob to quarantine/ (same filesystem: a rename). Returns the new path.
    func quarantine(_ digest: BlobDigest, now: Date) throws(ModelStoreError) -> String {
        let destination = joinPath(quarantineDirectory, "\(digest.hex).\(Int64(now.timeIntervalSince1970 * 1000))")
        guard rename(blobPath(digest), destination) == 0 else {
            throw posixError("moving the bad blob to quarantine: rename", path: blobPath(digest), errno: errno)
        }
        DurableFiles.syncDirectory(blobsDirectory)
        DurableFiles.syncDirectory(quarantineDirectory)
        return destination
    }
}

/// A file being imported: a temporary file in ingest/ that holds the content (its own copy, a
/// reflink, or a hardlink of the source), hashed once, locked against gc while this object lives,
/// and removed on deinit unless published.
final class IngestFile {
    enum Method: String { case reflink, hardlink, copy }

    let root: StoreRoot
    let path: String
    let method: Method
    let digest: BlobDigest
    let size: Int64
    /// Bytes written into the store (copies only).
    let bytesWritten: Int64
    /// The file's stat when its content hashed to `digest`; after `publish`, its stat under the
    /// blob's name (what the catalog records as "hashed right").
    private(set) var identity: FileIdentity
    private let fd: Int32
    private var consumed = false

    private init(
        root: StoreRoot, path: String, fd: Int32, method: Method, digest: BlobDigest, size: Int64,
        bytesWritten: Int64
    ) throws(ModelStoreError) {
        guard let identity = FileIdentity.of(fd: fd) else { throw posixError("fstat", path: path, errno: errno) }
        self.root = root
        self.path = path
        self.fd = fd
        self.method = method
        self.digest = digest
        self.size = size
        self.bytesWritten = bytesWritten
        self.identity = identity
    }

    deinit {
        close(fd)
        if !consumed { unlink(path) }
    }

    /// Creates `ingest/<uuid>.partial`, exclusively, locked.
    private static func createTemporary(in root: StoreRoot) throws(ModelStoreError) -> (String, Int32) {
        let path = joinPath(root.ingestDirectory, UUID().uuidString.lowercased() + ".partial")
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw posixError("creating a temporary file: open", path: path, errno: errno) }
        _ = flock(fd, LOCK_EX)
        return (path, fd)
    }

    /// Imports the regular file `source` (opened by `OpenFolder`) with `mode`: `auto` reflinks
    /// where the filesystem can and copies otherwise, so the stored blob never shares its bytes
    /// with a file someone may still write; `hardlink` only when asked. The source's mode and
    /// owner are never changed.
    static func fromFile(
        _ source: OpenedFile, into root: StoreRoot, mode: LinkMode, progress: ((Int64, Int64) -> Void)? = nil
    ) throws(ModelStoreError) -> IngestFile {
        let id = FileIdentity(source.status)
        let sourceTotal = id.size
        let report = progress.map { p in { (done: Int64) in p(done, sourceTotal) } }

        var lastError: ModelStoreError?
        let tries: [Method] =
            switch mode {
            case .auto: [.reflink, .copy]
            case .reflink: [.reflink]
            case .hardlink: [.hardlink]
            case .copy: [.copy]
            }
        for method in tries {
            do {
                switch method {
                case .reflink: return try reflink(source.fd, source: source.path, into: root, progress: report)
                case .hardlink:
                    return try hardlink(source.fd, source: source.path, identity: id, into: root, progress: report)
                case .copy: return try copy(source.fd, source: source.path, size: id.size, into: root, progress: report)
                }
            } catch {
                lastError = error
            }
        }
        throw lastError!
    }

    private static func reflink(
        _ src: Int32, source: String, into root: StoreRoot, progress: ((Int64) -> Void)?
    ) throws(ModelStoreError) -> IngestFile {
        let (path, fd) = try createTemporary(in: root)
        guard gridit_ficlone(fd, src) == 0 else {
            let code = errno
            close(fd)
            unlink(path)
            throw posixError(
                "reflink (FICLONE) into", path: root.ingestDirectory, errno: code,
                hint: "this filesystem cannot clone files; use --link auto or copy")
        }
        return try adopt(fd, path: path, method: .reflink, into: root) { () throws(ModelStoreError) in
            try finish(fd, path: path)
            // The clone's own bytes are hashed: the digest is that of what is stored.
            let (digest, size) = try hashFile(fd: fd, path: path, progress: progress)
            return (digest, size, 0)
        }
    }

    private static func hardlink(
        _ src: Int32, source: String, identity: FileIdentity, into root: StoreRoot, progress: ((Int64) -> Void)?
    ) throws(ModelStoreError) -> IngestFile {
        if let store = FileIdentity.of(path: root.ingestDirectory), store.device != identity.device {
            throw ModelStoreError(
                .crossDevice,
                "cannot hardlink \(source): it is on another filesystem (device \(identity.device)) than the store's \(root.ingestDirectory) (device \(store.device))",
                hint: "use --link copy or --link auto, or put the file on the store's filesystem first")
        }
        let path = joinPath(root.ingestDirectory, UUID().uuidString.lowercased() + ".partial")
        // Link the very inode opened (not whatever the path names by now).
        guard linkat(AT_FDCWD, "/proc/self/fd/\(src)", AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0 else {
            throw posixError(
                "hardlink \(source) into", path: root.ingestDirectory, errno: errno,
                hint: errno == EPERM
                    ? "the kernel refuses links to files this user does not own (fs.protected_hardlinks); use --link copy"
                    : nil)
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            unlink(path)
            throw posixError("open", path: path, errno: code)
        }
        _ = flock(fd, LOCK_EX)
        return try adopt(fd, path: path, method: .hardlink, into: root) { () throws(ModelStoreError) in
            let (digest, size) = try hashFile(fd: fd, path: path, progress: progress)
            return (digest, size, 0)
        }
    }

    private static func copy(
        _ src: Int32, source: String, size: Int64, into root: StoreRoot, progress: ((Int64) -> Void)?
    ) throws(ModelStoreError) -> IngestFile {
        try requireSpace(size, in: root.ingestDirectory)
        var offset: off_t = 0
        return try fromStream(into: root, progress: progress) { buffer throws(ModelStoreError) in
            while true {
                let n = pread(src, buffer.baseAddress, buffer.count, offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw posixError("read", path: source, errno: errno)
                }
                offset += off_t(n)
                return n
            }
        }
    }

    /// Fills a new temporary file from `read` (which fills its buffer and returns the byte count,
    /// 0 at the end), hashing on the way, and reads the file back to check what it holds.
    static func fromStream(
        into root: StoreRoot, progress: ((Int64) -> Void)? = nil,
        read: (UnsafeMutableRawBufferPointer) throws(ModelStoreError) -> Int
    ) throws(ModelStoreError) -> IngestFile {
        let (path, fd) = try createTemporary(in: root)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ioChunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        return try adopt(fd, path: path, method: .copy, into: root) { () throws(ModelStoreError) in
            var stream = DigestStream()
            while true {
                let n = try read(buffer)
                if n == 0 { break }
                let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
                try writeAll(fd, chunk, path: path)
                stream.update(chunk)
                progress?(stream.count)
                if stream.count >= Int64(ioChunkSize) {
                    FaultInjection.current.pause(at: "import.copying", stateDirectory: root.path)
                }
            }
            try finish(fd, path: path)
            // What was hashed is what was handed to write(); reading the copy back proves the
            // filesystem stored exactly that.
            let digest = stream.finalize()
            let (stored, _) = try hashFile(fd: fd, path: path)
            guard stored == digest else {
                throw ModelStoreError(
                    .io, "the copy \(path) reads back as \(stored), not the \(digest) written",
                    hint: "check the disk of the store (dmesg, smartctl), then import again")
            }
            return (digest, stream.count, stream.count)
        }
    }

    /// Makes the temporary file `fd` at `path` an `IngestFile` once `content` has filled and
    /// hashed it (its digest, size and the bytes written into the store); when anything fails,
    /// the file is closed and removed.
    private static func adopt(
        _ fd: Int32, path: String, method: Method, into root: StoreRoot,
        _ content: () throws(ModelStoreError) -> (digest: BlobDigest, size: Int64, bytesWritten: Int64)
    ) throws(ModelStoreError) -> IngestFile {
        do throws(ModelStoreError) {
            let (digest, size, bytesWritten) = try content()
            return try IngestFile(
                root: root, path: path, fd: fd, method: method, digest: digest, size: size, bytesWritten: bytesWritten)
        } catch {
            close(fd)
            unlink(path)
            throw error
        }
    }

    /// A small in-memory blob (a manifest).
    static func fromBytes(_ bytes: [UInt8], into root: StoreRoot) throws(ModelStoreError) -> IngestFile {
        var done = false
        return try fromStream(into: root) { buffer throws(ModelStoreError) in
            guard !done else { return 0 }
            precondition(bytes.count <= buffer.count, "manifest larger than one chunk")
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            done = true
            return bytes.count
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(ModelStoreError) {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError("write", path: path, errno: errno)
            }
            done += n
        }
    }

    /// fsync and mode 0444: the content is final.
    private static func finish(_ fd: Int32, path: String) throws(ModelStoreError) {
        guard fsync(fd) == 0 else { throw posixError("fsync", path: path, errno: errno) }
        guard fchmod(fd, 0o444) == 0 else { throw posixError("chmod", path: path, errno: errno) }
    }

    enum PublishOutcome { case added, alreadyPresent }

    /// Links the content to `blobs/sha256/<hex>` unless a blob of that name exists (identical
    /// content by construction; the caller checks it is intact). Removes the temporary file.
    /// `replacing`: renames it over whatever holds the name (a copy found corrupt), atomically.
    func publish(replacing: Bool = false) throws(ModelStoreError) -> PublishOutcome {
        let destination = root.blobPath(digest)
        let outcome: PublishOutcome
        if replacing {
            guard rename(path, destination) == 0 else {
                throw posixError("publishing the blob: rename to", path: destination, errno: errno)
            }
            DurableFiles.syncDirectory(root.blobsDirectory)
            outcome = .added
        } else if link(path, destination) == 0 {
            DurableFiles.syncDirectory(root.blobsDirectory)
            outcome = .added
        } else if errno == EEXIST {
            outcome = .alreadyPresent
        } else {
            throw posixError("publishing the blob: link to", path: destination, errno: errno)
        }
        if !replacing { unlink(path) }
        consumed = true
        // Linking changes the ctime; any other change means a hardlinked source was written
        // after it was hashed, and the blob would hold bytes that are not its name's.
        guard let now = FileIdentity.of(fd: fd) else { throw posixError("fstat", path: destination, errno: errno) }
        guard now.size == identity.size, now.mtimeNs == identity.mtimeNs else {
            if outcome == .added { unlink(destination) }
            throw ModelStoreError(
                .invalidInput, "the source of \(digest) changed while it was imported; nothing was stored for it",
                hint: "import again when nothing writes the file (or use --link copy)")
        }
        identity = now
        return outcome
    }

    /// Drops the temporary file now (also what deinit does).
    func discard() {
        guard !consumed else { return }
        unlink(path)
        consumed = true
    }
}

/// Throws `noSpace` when the filesystem of `directory` has fewer than `bytes` free.
func requireSpace(_ bytes: Int64, in directory: String) throws(ModelStoreError) {
    var s = statvfs()
    guard statvfs(directory, &s) == 0 else { return }
    let free = Int64(s.f_bavail) * Int64(s.f_frsize)
    if free < bytes {
        throw ModelStoreError(
            .noSpace,
            "importing needs \(formatBytes(bytes)) but the filesystem of \(directory) has \(formatBytes(free)) free",
            hint:
                "free space (griditd models gc removes unreferenced blobs), or use --link hardlink from the same filesystem"
        )
    }
}
