// Shape legend, used in every signature of this module and the ones above it:
//   N  batch            T  tokens             D  hidden size (channels of a token)
//   C  image channels   H, W  spatial size    P  patch size
//   NH attention heads  HD head dim (D / NH)  F  frequency dim of the timestep embedding
// Tensors are float32, row-major and contiguous; `shape` lists dims outermost first.

/// Where a tensor's floats live: memory this process owns, or read-only memory that belongs to
/// someone else (a mapped checkpoint file) and is kept alive by `owner`.
///
/// `@unchecked Sendable`: borrowed storage is immutable; owned storage is only written by the one
/// task that holds the activations (see `Tensor`).
public final class TensorStorage: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Float>
    public let count: Int
    /// False for storage that points into a read-only mapping: writing there would fault.
    public let isWritable: Bool
    let owner: AnyObject?
    private let ownsMemory: Bool

    /// Zero-filled memory aligned to 64 bytes (one cache line, one AVX-512 register).
    public init(zeros count: Int) {
        precondition(count >= 0, "TensorStorage: negative count \(count)")
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        self.base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        self.isWritable = true
        self.owner = nil
        self.ownsMemory = true
    }

    /// Borrows `count` floats at `pointer`, read-only; `owner` (e.g. the mapping) outlives them.
    public init(borrowing pointer: UnsafePointer<Float>, count: Int, owner: AnyObject) {
        self.base = UnsafeMutablePointer(mutating: pointer)
        self.count = count
        self.isWritable = false
        self.owner = owner
        self.ownsMemory = false
    }

    deinit {
        if ownsMemory { UnsafeMutableRawPointer(base).deallocate() }
    }
}

/// A float32 tensor: a shape over a contiguous run of a `TensorStorage`.
///
/// Weights are borrowed from mapped files and immutable; activations are owned, allocated once per
/// shape by a workspace and overwritten in place by kernels (`into:` arguments).
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let storage: TensorStorage
    /// Element offset of this tensor's first float inside `storage`.
    public let offset: Int

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }

    public init(storage: TensorStorage, shape: [Int], offset: Int = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dim in \(shape)")
        precondition(
            offset >= 0 && offset + shape.reduce(1, *) <= storage.count,
            "Tensor: shape \(shape) at offset \(offset) exceeds storage of \(storage.count)")
        self.storage = storage
        self.shape = shape
        self.offset = offset
    }

    /// A new owned tensor filled with zeros.
    public init(zeros shape: [Int]) {
        self.init(storage: TensorStorage(zeros: shape.reduce(1, *)), shape: shape)
    }

    /// A new owned tensor holding `values` (count must match the shape).
    public init(_ values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "Tensor: \(values.count) values for shape \(shape)")
        self.init(zeros: shape)
        values.withUnsafeBufferPointer { src in
            if let s = src.baseAddress { storage.base.update(from: s, count: values.count) }
        }
    }

    /// Read-only pointer to the first element.
    public var pointer: UnsafePointer<Float> { UnsafePointer(storage.base + offset) }

    /// Writable pointer to the first element; traps on borrowed (mapped, read-only) storage.
    public var mutablePointer: UnsafeMutablePointer<Float> {
        precondition(storage.isWritable, "Tensor: writing into read-only (mapped) storage")
        return storage.base + offset
    }

    public var isBorrowed: Bool { !storage.isWritable }

    /// The same elements under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "reshaped: \(shape) -> \(newShape) changes the count")
        return Tensor(storage: storage, shape: newShape, offset: offset)
    }

    /// Rows `range` of the outermost dimension, sharing storage.
    public func slice(_ range: Range<Int>) -> Tensor {
        precondition(
            rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0],
            "slice: \(range) out of \(shape)")
        let inner = shape.dropFirst().reduce(1, *)
        return Tensor(
            storage: storage, shape: [range.count] + shape.dropFirst(), offset: offset + range.lowerBound * inner)
    }

    /// Copies the elements into an array (tests, output files).
    public func toArray() -> [Float] {
        Array(UnsafeBufferPointer(start: pointer, count: count))
    }

    /// A fresh owned copy of this tensor.
    public func copy() -> Tensor {
        let out = Tensor(zeros: shape)
        out.mutablePointer.update(from: pointer, count: count)
        return out
    }
}

/// "Give me tensor `name`": implemented by checkpoint readers and by in-memory maps in tests,
/// so models bind weights without knowing any file format.
public protocol TensorSource {
    /// Every tensor name the source holds.
    var tensorNames: [String] { get }
    /// The shape of tensor `name`, or nil if absent.
    func shape(of name: String) -> [Int]?
    /// Tensor `name` as float32; borrowed when the source can lend its memory.
    func tensor(named name: String) throws -> Tensor
    /// Tensor `name`'s bfloat16 bits, borrowed, when the source stores it as bfloat16; nil
    /// otherwise (default), and the float32 `tensor(named:)` serves it.
    func bfloat16(named name: String) throws -> BF16Tensor?
}

/// An in-memory `TensorSource` (tests, random-weight benchmarks).
public struct TensorDictionary: TensorSource {
    public var tensors: [String: Tensor]
    public init(_ tensors: [String: Tensor] = [:]) { self.tensors = tensors }
    public var tensorNames: [String] { tensors.keys.sorted() }
    public func shape(of name: String) -> [Int]? { tensors[name]?.shape }
    public func tensor(named name: String) throws -> Tensor {
        guard let t = tensors[name] else { throw TensorSourceError.missing(name) }
        return t
    }
}

public enum TensorSourceError: Error, CustomStringConvertible, Equatable {
    case missing(String)
    public var description: String {
        switch self {
        case .missing(let name): return "tensor '\(name)' is not in the source"
        }
    }
}
