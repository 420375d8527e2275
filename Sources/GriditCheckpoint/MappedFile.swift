import GriditTensor

#if canImport(Glibc)
import Glibc
#endif

/// A whole file mapped read-only (`PROT_READ`, `MAP_SHARED`) into memory.
///
/// Mapping reads nothing: pages come in from the page cache when first touched, so a 2.7 GB
/// checkpoint costs almost no resident memory until a tensor is used, and several processes
/// mapping one file share its pages. The mapping lives until the last reference goes (`deinit`
/// unmaps), which is why borrowed tensors keep their `MappedFile` as storage owner.
///
/// The file must not be truncated or rewritten while mapped: touching a page past a shrunken end
/// raises SIGBUS. Checkpoints are published by atomic rename (see `SafetensorsWriter`), which
/// replaces the directory entry and leaves mapped files intact.
///
/// `@unchecked Sendable`: every field is immutable after `init` and the memory is read-only.
public final class MappedFile: PageReleasing, @unchecked Sendable {
    /// Best-effort access-pattern hints (`posix_madvise`); failures are ignored.
    public enum Advice: Sendable {
        case normal, sequential, random, willNeed, dontNeed

        var value: Int32 {
            switch self {
            case .normal: return POSIX_MADV_NORMAL
            case .sequential: return POSIX_MADV_SEQUENTIAL
            case .random: return POSIX_MADV_RANDOM
            case .willNeed: return POSIX_MADV_WILLNEED
            case .dontNeed: return POSIX_MADV_DONTNEED
            }
        }
    }

    /// First byte of the mapping; page-aligned.
    public let base: UnsafeRawPointer
    /// Length of the file and of the mapping, in bytes (> 0).
    public let size: Int
    public let path: String

    /// Opens and maps `path`. `advice`, if given, is applied to the whole mapping (best effort).
    ///
    /// Throws `CheckpointError` `.fileNotFound`, `.unreadable` (permissions, not a regular file —
    /// a FIFO or device is refused without being opened for reading —, `mmap` failure; the
    /// message names the call and the errno text) or `.empty`.
    public init(path: String, advice: Advice? = nil) throws(CheckpointError) {
        self.path = path
        // Type-checked before reading: a FIFO or device named as a checkpoint is refused, never waited on.
        let file: OpenedFile
        do { file = try SafeOpen.file(atPath: path) } catch {
            throw CheckpointError(
                code: error.reason == .notFound ? .fileNotFound : .unreadable, path: path, message: error.message,
                hint: error.hint)
        }
        // The mapping keeps its own reference to the file; the descriptor closes with `file`.
        let info = file.status
        guard info.st_size > 0 else {
            // mmap of 0 bytes fails with EINVAL; say what is actually wrong.
            throw CheckpointError(
                code: .empty, path: path, message: "the file is empty (0 bytes)",
                hint: Hints.incomplete)
        }
        guard let size = Int(exactly: info.st_size) else {
            throw CheckpointError(code: .unreadable, path: path, message: "file size \(info.st_size) does not fit")
        }
        let mapped = mmap(nil, size, PROT_READ, MAP_SHARED, file.fd, 0)
        guard let mapped, mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw CheckpointError.syscall(
                "mmap", errno: errno, path: path, as: .unreadable,
                hint: "check free address space and vm.max_map_count")
        }
        self.base = UnsafeRawPointer(mapped)
        self.size = size
        if let advice { self.advise(advice) }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), size)
    }

    /// The mapped bytes.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    /// Hints the kernel about `range` (default: the whole file); widened to whole pages.
    /// Returns false if the hint was refused; that is never an error.
    @discardableResult
    public func advise(_ advice: Advice, range: Range<Int>? = nil) -> Bool {
        let range = (range ?? 0..<size).clamped(to: 0..<size)
        guard !range.isEmpty else { return true }
        let page = max(Int(sysconf(Int32(_SC_PAGESIZE))), 1)
        let start = range.lowerBound / page * page
        let result = posix_madvise(
            UnsafeMutableRawPointer(mutating: base + start), range.upperBound - start,
            advice.value)
        return result == 0
    }

    /// Drops this process's page-table entries for the whole pages inside the range
    /// (`madvise(MADV_DONTNEED)`; `posix_madvise`'s DONTNEED is a no-op in glibc): they stop
    /// counting as resident memory here, stay in the page cache for other users of the file, and
    /// the next read of them faults the same bytes back in (the mapping is read-only and shared,
    /// so nothing can be lost). Used once a model holds a packed copy of a weight. Returns false
    /// when nothing was dropped (no whole page inside, or the kernel refused).
    @discardableResult
    public func releasePages(in range: Range<Int>) -> Bool {
        let range = range.clamped(to: 0..<size)
        let page = max(Int(sysconf(Int32(_SC_PAGESIZE))), 1)
        let start = (range.lowerBound + page - 1) / page * page
        let end = range.upperBound == size ? size : range.upperBound / page * page
        guard start < end else { return false }
        return madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED) == 0
    }

    public func releasePages(_ start: UnsafeRawPointer, byteCount: Int) {
        let offset = start - base
        guard offset >= 0, byteCount > 0, offset < size else { return }
        releasePages(in: offset..<min(size, offset + byteCount))
    }
}
