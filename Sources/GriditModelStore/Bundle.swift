// Single-file bundles (`models export` / `models import`): a POSIX tar (pax where needed) read and
// written with libarchive, holding exactly
//
//   gridit-bundle.json      {"format": "gridit.bundle.v1", "manifest": "sha256:…", "tags": ["name:tag"]}
//   blobs/sha256/<hex>      the manifest and every blob it lists
//
// Reading never creates a path from an entry name: each accepted entry is streamed into a new
// ingest file and hashed, and must hash to its name. Links, devices, directories other than
// blobs/ and blobs/sha256/, absolute or `..` paths, duplicates and unknown names are refused
// before anything is published. Export writes fixed metadata (mtime 0, root-owned, mode 0444),
// so one version always gives the same bundle bytes.

import CModelStore
import Foundation
import GriditCheckpoint
import GriditDiffusion

#if canImport(Glibc)
import Glibc
#endif

struct BundleIndex: Codable, Equatable {
    static let format = "gridit.bundle.v1"
    static let entryName = "gridit-bundle.json"

    var format: String
    var manifest: BlobDigest
    var tags: [String]
}

private let regularFile: UInt32 = 0o100000
private let directoryType: UInt32 = 0o040000
private let symlinkType: UInt32 = 0o120000

enum BundleReader {
    /// The most blobs a bundle can need: its manifest and one per file role of a pipeline.
    static let maxBlobs = 1 + PipelineSpec.FileRole.allCases.count

    struct Contents {
        var index: BundleIndex
        var blobs: [BlobDigest: IngestFile]
    }

    /// Reads the whole bundle `source` (a regular file opened by `OpenFolder`) into ingest files
    /// of `root`, checking every entry.
    static func read(
        _ source: OpenedFile, into root: StoreRoot, progress: ((String, Int64) -> Void)? = nil
    )
        throws(ModelStoreError) -> Contents
    {
        let path = source.path
        func bad(_ why: String) -> ModelStoreError {
            ModelStoreError(
                .invalidInput, "bundle \(path): \(why); nothing was imported",
                hint: "use a bundle written by `griditd models export` / `griditctl models export`")
        }
        // libarchive reads from the descriptor's position (it does not close it).
        let fd = source.fd
        guard lseek(fd, 0, SEEK_SET) == 0 else { throw posixError("seek", path: path, errno: errno) }
        let tar = try TarReader(fd: fd, bad: bad)
        let a = tar.archive
        func archiveMessage() -> String { tar.message }

        var index: BundleIndex?
        var blobs: [BlobDigest: IngestFile] = [:]
        var seen = Set<String>()
        while let entry = try tar.next() {
            let (raw, name, isDirectory) = try TarEntry.check(entry, holds: "bundles", bad: bad)
            if isDirectory {
                let dir = name.hasSuffix("/") ? String(name.dropLast()) : name
                guard ["", ".", "blobs", "blobs/sha256"].contains(dir) else {
                    throw bad("unexpected directory '\(raw)'")
                }
                continue
            }
            guard seen.insert(name).inserted else { throw bad("entry '\(raw)' appears twice") }

            if name == BundleIndex.entryName {
                let bytes = try readSmall(a, limit: 1 << 20) { bad("\(raw): \($0)") }
                do {
                    index = try JSONDecoder().decode(BundleIndex.self, from: Data(bytes))
                } catch {
                    throw bad("\(BundleIndex.entryName) is not a bundle index")
                }
                guard index!.format == BundleIndex.format else {
                    throw bad("format '\(index!.format)'; this griditd reads \(BundleIndex.format)")
                }
            } else if name.hasPrefix("blobs/sha256/"), let digest = BlobDigest("sha256:" + name.dropFirst(13)),
                digest.hex == String(name.dropFirst(13))
            {
                // Each blob stays an open file until the import ends: a bundle of thousands would
                // take griditd's descriptors before the manifest could refuse the extra ones.
                guard blobs.count < maxBlobs else {
                    throw bad("it holds more than \(maxBlobs) blobs (a manifest and one per file of a pipeline)")
                }
                let file = try IngestFile.fromStream(into: root, progress: progress.map { p in { p(name, $0) } }) {
                    buffer throws(ModelStoreError) in
                    let n = archive_read_data(a, buffer.baseAddress, buffer.count)
                    guard n >= 0 else {
                        throw bad("reading '\(raw)' failed (\(archiveMessage())); the bundle is truncated or corrupt")
                    }
                    return n
                }
                guard file.digest == digest else {
                    throw ModelStoreError(
                        .digestMismatch,
                        "bundle \(path): '\(raw)' hashes to \(file.digest), not to its name; the bundle is corrupt; nothing was imported",
                        hint: "copy or export the bundle again")
                }
                blobs[digest] = file
            } else {
                throw bad(
                    "unexpected entry '\(raw)' (a bundle holds \(BundleIndex.entryName) and blobs/sha256/<64 hex>)")
            }
        }
        guard let index else { throw bad("it has no \(BundleIndex.entryName)") }
        return Contents(index: index, blobs: blobs)
    }

    private static func readSmall(
        _ a: OpaquePointer, limit: Int, bad: (String) -> ModelStoreError
    ) throws(ModelStoreError) -> [UInt8] {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = buffer.withUnsafeMutableBytes { archive_read_data(a, $0.baseAddress, $0.count) }
            guard n >= 0 else { throw bad("unreadable data") }
            if n == 0 { return bytes }
            bytes += buffer[0..<n]
            guard bytes.count <= limit else { throw bad("larger than \(limit) bytes") }
        }
    }
}

/// A tar read entry by entry with libarchive, from a descriptor's position (not closed here).
final class TarReader {
    let archive: OpaquePointer
    private let bad: (String) -> ModelStoreError

    init(fd: Int32, bad: @escaping (String) -> ModelStoreError) throws(ModelStoreError) {
        guard let a = archive_read_new() else { throw ModelStoreError(.io, "libarchive: out of memory") }
        archive_read_support_format_tar(a)
        archive = a
        self.bad = bad
        guard archive_read_open_fd(a, fd, ioChunkSize) == ARCHIVE_OK else { throw bad("not a tar (\(message))") }
    }

    deinit { archive_read_free(archive) }

    var message: String { archive_error_string(archive).map { String(cString: $0) } ?? "unknown error" }

    /// The next entry's header; nil at the end.
    func next() throws(ModelStoreError) -> OpaquePointer? {
        var entry: OpaquePointer?
        let status = archive_read_next_header(archive, &entry)
        if status == ARCHIVE_EOF { return nil }
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let entry else {
            throw bad("unreadable tar header (\(message)); the file is truncated or not a tar")
        }
        return entry
    }
}

/// The checks every tar entry griditd reads passes (bundles, streamed pipeline folders): a
/// relative name without `..`, and a regular file or a directory, never a link or a device.
enum TarEntry {
    /// The entry's name as written, without leading `./`, and whether it is a directory.
    static func check(
        _ entry: OpaquePointer, holds what: String, bad: (String) -> ModelStoreError
    ) throws(ModelStoreError) -> (raw: String, name: String, isDirectory: Bool) {
        guard let cName = archive_entry_pathname(entry) else { throw bad("an entry has no name") }
        let raw = String(cString: cName)
        var name = raw
        while name.hasPrefix("./") { name.removeFirst(2) }
        if name.hasPrefix("/") { throw bad("entry '\(raw)' has an absolute path") }
        if name.split(separator: "/").contains("..") {
            throw bad("entry '\(raw)' has a '..' path that escapes the \(what.dropLast())")
        }
        if let target = archive_entry_hardlink(entry) {
            throw bad(
                "entry '\(raw)' is a hard link (to '\(String(cString: target))'); \(what) hold regular files only")
        }
        let type = UInt32(archive_entry_filetype(entry))
        if type == symlinkType || archive_entry_symlink(entry) != nil {
            throw bad("entry '\(raw)' is a symbolic link; \(what) hold regular files only")
        }
        if type == directoryType { return (raw, name, true) }
        guard type == regularFile else {
            throw bad(
                "entry '\(raw)' is a device, FIFO or socket (type \(String(type, radix: 8))); \(what) hold regular files only"
            )
        }
        return (raw, name, false)
    }
}

/// A bundle's bytes in pieces, for a file or an HTTP answer alike: `next()` gives the next
/// piece (an entry's header, or up to `ioChunkSize` of a blob), nil after the end. Every blob
/// is opened at the start, so a gc meanwhile cannot take one away however slowly the pieces are
/// read; a blob whose bytes do not hash to its digest ends it with `digestMismatch` (the caller
/// quarantines it). Used by one thread or task at a time.
public final class BundleStream: @unchecked Sendable {
    /// One file of the bundle: its entry name and the blob file holding it.
    struct Item {
        var digest: BlobDigest
        var path: String
    }

    let index: BundleIndex
    let name: String
    private let archive: OpaquePointer
    /// The index entry's bytes, then each blob's open file, size and digest.
    private var indexBytes: [UInt8]?
    private var blobs: [(item: Item, fd: Int32, size: Int64)] = []
    /// The blob being written, and how far.
    private var position = 0
    private var current: (offset: Int64, stream: DigestStream)?
    private var closed = false
    /// What libarchive has handed out since the last `next()`.
    fileprivate var output: [UInt8] = []
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ioChunkSize, alignment: 4096)

    /// `name` is what errors call the bundle (its path, or "the download").
    init(index: BundleIndex, items: [Item], name: String) throws(ModelStoreError) {
        self.index = index
        self.name = name
        guard let a = archive_write_new() else {
            buffer.deallocate()
            throw ModelStoreError(.io, "libarchive: out of memory")
        }
        archive = a
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        indexBytes = Array(try! e.encode(index))  // strings only: cannot fail
        for item in items {
            let fd = open(item.path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw posixError("open", path: item.path, errno: errno) }
            guard let id = FileIdentity.of(fd: fd) else {
                let code = errno
                close(fd)
                throw posixError("fstat", path: item.path, errno: code)
            }
            blobs.append((item, fd, id.size))
        }
        archive_write_set_format_pax_restricted(a)
        archive_write_set_bytes_in_last_block(a, 1)
        let opened = archive_write_open2(
            a, Unmanaged.passUnretained(self).toOpaque(), nil,
            { _, me, bytes, count in
                guard let me, let bytes else { return -1 }
                let stream = Unmanaged<BundleStream>.fromOpaque(me).takeUnretainedValue()
                stream.output.append(contentsOf: UnsafeRawBufferPointer(start: bytes, count: count))
                return la_ssize_t(count)
            }, nil, nil)
        guard opened == ARCHIVE_OK else { throw failure("open") }
    }

    deinit {
        // Not flushed: an export ended early is abandoned, not finished.
        if !closed { archive_write_fail(archive) }
        archive_write_free(archive)
        for blob in blobs { close(blob.fd) }
        buffer.deallocate()
    }

    var items: [Item] { blobs.map(\.item) }

    public func next() throws(ModelStoreError) -> [UInt8]? {
        while output.isEmpty {
            guard !closed else { return nil }
            try step()
        }
        defer { output.removeAll(keepingCapacity: true) }
        return output
    }

    /// Feeds libarchive the next entry header or chunk (it hands out whole blocks as they fill).
    private func step() throws(ModelStoreError) {
        if let bytes = indexBytes {
            indexBytes = nil
            try header(BundleIndex.entryName, size: Int64(bytes.count))
            var failed: ModelStoreError?
            bytes.withUnsafeBytes { b in
                do throws(ModelStoreError) { try data(b, BundleIndex.entryName) } catch { failed = error }
            }
            if let failed { throw failed }
            return
        }
        guard position < blobs.count else {
            closed = true
            guard archive_write_close(archive) == ARCHIVE_OK else { throw failure("close") }
            return
        }
        let (item, fd, size) = blobs[position]
        let entryName = "blobs/sha256/\(item.digest.hex)"
        guard var (offset, stream) = current else {
            try header(entryName, size: size)
            current = (0, DigestStream())
            return
        }
        guard offset < size else {
            current = nil
            position += 1
            let actual = stream.finalize()
            guard actual == item.digest else {
                throw ModelStoreError(.digestMismatch, "blob \(item.digest) at \(item.path) hashes to \(actual)")
            }
            return
        }
        let n = pread(fd, buffer.baseAddress, min(buffer.count, Int(size - offset)), off_t(offset))
        if n < 0, errno == EINTR { return }
        guard n > 0 else { throw posixError("read", path: item.path, errno: n < 0 ? errno : EIO) }
        let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
        stream.update(chunk)
        try data(chunk, entryName)
        offset += Int64(n)
        current = (offset, stream)
    }

    private func failure(_ what: String) -> ModelStoreError {
        let message = archive_error_string(archive).map { String(cString: $0) } ?? "unknown error"
        let code = archive_errno(archive)
        if code == ENOSPC || code == EDQUOT { return posixError("writing the bundle", path: name, errno: code) }
        return ModelStoreError(.io, "writing the bundle \(name): \(what): \(message)")
    }

    private func header(_ entryName: String, size: Int64) throws(ModelStoreError) {
        guard let e = archive_entry_new() else { throw ModelStoreError(.io, "libarchive: out of memory") }
        defer { archive_entry_free(e) }
        archive_entry_set_pathname(e, entryName)
        archive_entry_set_filetype(e, regularFile)
        archive_entry_set_perm(e, 0o444)
        archive_entry_set_size(e, size)
        archive_entry_set_mtime(e, 0, 0)
        guard archive_write_header(archive, e) == ARCHIVE_OK else { throw failure("header of \(entryName)") }
    }

    private func data(_ bytes: UnsafeRawBufferPointer, _ entryName: String) throws(ModelStoreError) {
        var done = 0
        while done < bytes.count {
            let n = archive_write_data(archive, bytes.baseAddress! + done, bytes.count - done)
            guard n > 0 else { throw failure("data of \(entryName)") }
            done += n
        }
    }
}
