import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A SHA-256 content digest, written `sha256:<64 lower-case hex>` (OCI style).
public struct BlobDigest: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// The 64 hex digits.
    public let hex: String

    /// Parses `sha256:<64 hex>` (upper-case hex is accepted and lowered); nil otherwise.
    public init?(_ text: String) {
        guard text.hasPrefix("sha256:") else { return nil }
        let hex = text.dropFirst(7).lowercased()
        guard hex.utf8.count == 64, hex.utf8.allSatisfy(Self.isHexDigit) else { return nil }
        self.hex = hex
    }

    init(hex: String) {
        precondition(hex.utf8.count == 64 && hex.utf8.allSatisfy(Self.isHexDigit), "BlobDigest: bad hex \(hex)")
        self.hex = hex
    }

    /// The digest of `bytes`.
    public init<D: DataProtocol>(of bytes: D) {
        self.init(hex: Self.hexString(SHA256.hash(data: bytes)))
    }

    public var description: String { "sha256:" + hex }
    /// The first 12 hex digits, as `list` shows them.
    public var short: String { String(hex.prefix(12)) }

    public static func < (a: BlobDigest, b: BlobDigest) -> Bool { a.hex < b.hex }

    static func isHexDigit(_ c: UInt8) -> Bool {
        (48...57).contains(c) || (97...102).contains(c) || (65...70).contains(c)
    }

    static func hexString(_ digest: SHA256.Digest) -> String {
        digest.map { byte in
            let s = String(byte, radix: 16)
            return byte < 16 ? "0" + s : s
        }.joined()
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let text = try c.decode(String.self)
        guard let d = BlobDigest(text) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "'\(text)' is not a sha256:<64 hex> digest")
        }
        self = d
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// Streaming SHA-256 with a byte count.
struct DigestStream {
    private var hasher = SHA256()
    private(set) var count: Int64 = 0

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        hasher.update(bufferPointer: bytes)
        count += Int64(bytes.count)
    }

    func finalize() -> BlobDigest { BlobDigest(hex: BlobDigest.hexString(hasher.finalize())) }
}

/// Bytes per read while hashing or copying.
let ioChunkSize = 1 << 20

/// Hashes the whole file open at `fd` from offset 0 with `pread` (the descriptor's offset is
/// untouched). `progress` gets the bytes done after each chunk.
func hashFile(
    fd: Int32, path: String, progress: ((Int64) -> Void)? = nil
) throws(ModelStoreError) -> (BlobDigest, Int64) {
    var stream = DigestStream()
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ioChunkSize, alignment: 4096)
    defer { buffer.deallocate() }
    var offset: off_t = 0
    while true {
        let n = pread(fd, buffer.baseAddress, buffer.count, offset)
        if n < 0 {
            if errno == EINTR { continue }
            throw posixError("read", path: path, errno: errno)
        }
        if n == 0 { break }
        stream.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        offset += off_t(n)
        progress?(stream.count)
    }
    return (stream.finalize(), stream.count)
}

/// Hashes the file at `path`.
func hashFile(path: String, progress: ((Int64) -> Void)? = nil) throws(ModelStoreError) -> (BlobDigest, Int64) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw posixError("open", path: path, errno: errno) }
    defer { close(fd) }
    return try hashFile(fd: fd, path: path, progress: progress)
}

/// A failed system call as a `ModelStoreError` whose code and hint fit the errno.
func posixError(_ call: String, path: String, errno code: Int32, hint: String? = nil) -> ModelStoreError {
    let text = String(cString: strerror(code))
    let message = "\(call) \(path) failed: \(text)"
    switch code {
    case EACCES, EPERM:
        return ModelStoreError(
            .permission, message,
            hint: hint
                ?? "check the owner and mode of \(path) and of every directory above it (griditd models check names the one that denies access)"
        )
    case EROFS:
        return ModelStoreError(
            .permission, message + " (read-only filesystem)",
            hint: hint
                ?? "under systemd with ProtectSystem=strict add the directory to ReadWritePaths= in a drop-in, or remount it read-write"
        )
    case ENOSPC, EDQUOT:
        return ModelStoreError(
            .noSpace, message, hint: hint ?? "free space on the filesystem of \(path), then run `models gc`")
    case ENOENT, ENOTDIR:
        return ModelStoreError(.notFound, message, hint: hint ?? "check the path")
    case EXDEV:
        return ModelStoreError(
            .crossDevice, message, hint: hint ?? "use --link copy (or auto), or keep the file on the store's filesystem"
        )
    default:
        return ModelStoreError(.io, message, hint: hint)
    }
}

/// `stat` fields the store compares.
struct FileIdentity: Equatable, Sendable {
    var size: Int64
    var device: UInt64
    var inode: UInt64
    var mtimeNs: Int64
    var ctimeNs: Int64
    var mode: UInt32
    var owner: UInt32 = 0
    var isRegular: Bool { mode & S_IFMT == S_IFREG }
    var isDirectory: Bool { mode & S_IFMT == S_IFDIR }

    init(size: Int64, device: UInt64, inode: UInt64, mtimeNs: Int64, ctimeNs: Int64, mode: UInt32) {
        self.size = size
        self.device = device
        self.inode = inode
        self.mtimeNs = mtimeNs
        self.ctimeNs = ctimeNs
        self.mode = mode
    }

    init(_ s: stat) {
        size = Int64(s.st_size)
        device = UInt64(s.st_dev)
        inode = UInt64(s.st_ino)
        mtimeNs = Int64(s.st_mtim.tv_sec) * 1_000_000_000 + Int64(s.st_mtim.tv_nsec)
        ctimeNs = Int64(s.st_ctim.tv_sec) * 1_000_000_000 + Int64(s.st_ctim.tv_nsec)
        mode = UInt32(s.st_mode)
        owner = UInt32(s.st_uid)
    }

    static func of(path: String) -> FileIdentity? {
        var s = stat()
        return stat(path, &s) == 0 ? FileIdentity(s) : nil
    }

    static func of(fd: Int32) -> FileIdentity? {
        var s = stat()
        return fstat(fd, &s) == 0 ? FileIdentity(s) : nil
    }
}

func joinPath(_ a: String, _ b: String) -> String { (a as NSString).appendingPathComponent(b) }
