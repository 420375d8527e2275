/// Memory lent to tensors by an owner that can hand pages back to the kernel (a read-only file
/// mapping): after `releasePages`, the range reads the same as before, re-read from the file on
/// the next touch, but stops counting as this process's resident memory until then.
public protocol PageReleasing: AnyObject {
    /// Drops the whole pages inside `start ..< start + byteCount` from this process (best effort).
    func releasePages(_ start: UnsafeRawPointer, byteCount: Int)
}

/// A bfloat16 tensor as a checkpoint stores it: bit patterns (the upper 16 bits of a float32),
/// row-major, borrowed read-only from `owner` (a mapping). The bf16 layers read it once at load,
/// straight into their packed layout, with no float32 copy.
public struct BF16Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let pointer: UnsafePointer<UInt16>
    let owner: AnyObject

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }

    /// Borrows `shape`'s elements at `pointer` (2-byte aligned); `owner` keeps them alive.
    public init(borrowing pointer: UnsafePointer<UInt16>, shape: [Int], owner: AnyObject) {
        precondition(shape.allSatisfy { $0 >= 0 }, "BF16Tensor: negative dim in \(shape)")
        self.pointer = pointer
        self.shape = shape
        self.owner = owner
    }

    /// The same elements under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> BF16Tensor {
        precondition(newShape.reduce(1, *) == count, "reshaped: \(shape) -> \(newShape) changes the count")
        return BF16Tensor(borrowing: pointer, shape: newShape, owner: owner)
    }

    /// Hands the pages of these elements back to their owner's file (see `PageReleasing`).
    public func releasePages() {
        (owner as? any PageReleasing)?.releasePages(UnsafeRawPointer(pointer), byteCount: count * 2)
    }
}

extension Tensor {
    /// For a tensor borrowed from a mapping: hands its pages back (see `PageReleasing`) once a
    /// packed copy has replaced it; reading it later re-reads the file. Owned tensors: nothing.
    public func releaseBorrowedPages() {
        guard let owner = storage.owner as? any PageReleasing else { return }
        owner.releasePages(UnsafeRawPointer(pointer), byteCount: count * MemoryLayout<Float>.stride)
    }
}

extension TensorSource {
    public func bfloat16(named name: String) throws -> BF16Tensor? { nil }
}
