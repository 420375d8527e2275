import CBLAS
import CGriditKernels
import Glibc

// Linear layers (y = x · Wᵀ + b with PyTorch's (out, in) weight) on the backend of the CPU:
// gridit's AVX-512 GEMM (fp32, or bf16 with fp32 accumulation, Sources/CGriditKernels/gemm.c), or
// OpenBLAS on a fixed schedule of row blocks (`linearRows`). Both give bits that depend neither on
// the thread count nor on the batch. Naive twins: Tests/GriditTensorTests/NaiveKernels.swift.

/// Memory aligned to 64 bytes, owned, zero-filled.
public final class AlignedBuffer: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int

    public init(byteCount: Int) {
        self.byteCount = max(byteCount, 0)
        base = UnsafeMutableRawPointer.allocate(byteCount: max(self.byteCount, 64), alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: max(self.byteCount, 64))
    }

    deinit { base.deallocate() }
}

/// The threads and scratch memory that a run of kernels uses (one forward pass at a time): the
/// scratch is sized up front by its owner (a model workspace), so kernels never allocate.
public final class ComputeContext {
    /// Threads of the next kernels; may change between passes (scratch sized for fewer workers grows
    /// when it must).
    public var workers: Int { didSet { workers = max(1, workers) } }
    /// Workers of a pass when the caller does not say: the CPUs online.
    public static var defaultWorkers: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
    public let backend: KernelBackend
    public private(set) var scratch: AlignedBuffer

    public init(workers: Int, backend: KernelBackend = .current, scratchBytes: Int = 0) {
        self.workers = max(1, workers)
        self.backend = backend
        scratch = AlignedBuffer(byteCount: scratchBytes)
    }

    /// Scratch of at least `bytes`; grows (allocates) only when its owner did not reserve enough.
    @discardableResult
    public func reserve(scratchBytes bytes: Int) -> UnsafeMutableRawPointer {
        if scratch.byteCount < bytes { scratch = AlignedBuffer(byteCount: bytes) }
        return scratch.base
    }

    /// Scratch bytes of `linear` over `rows` rows of `inFeatures` values (either precision).
    public static func linearScratchBytes(rows M: Int, inFeatures K: Int, workers: Int, backend: KernelBackend) -> Int {
        backend.ownsGEMM ? gk_gemm_scratch_bytes(M, K, 0, 0, Int32(max(1, workers))) : 0
    }
}

/// A linear layer's weight (N, K) in PyTorch's (out, in) layout and bias (N), prepared once for a
/// precision: bf16 products read it packed into the GEMM's bf16 panels (made here, half the size of
/// the fp32 weight, from the fp32 weight or straight from a bf16 checkpoint's bits); fp32 products
/// read the tensor in place (borrowed from a mapped file, packed on the fly by every product), or a
/// packed fp32 copy made here with `packFP32` (more memory, no packing per product: worth it for
/// small models, whose products are short).
public struct LinearWeight: @unchecked Sendable {
    /// The float32 weight; nil for a layer made from bf16 bits (`init(bf16:...)`).
    public let weight: Tensor?
    /// The bf16 bits a layer was made from (`init(bf16:...)`), else nil.
    public let bf16Weight: BF16Tensor?
    public let bias: Tensor?
    /// The precision the products of this layer run in (bf16 only on a backend that has it).
    public let precision: Precision
    public let outFeatures: Int
    public let inFeatures: Int
    let packed: AlignedBuffer?

    public init(
        weight: Tensor, bias: Tensor?, precision: Precision = .fp32, backend: KernelBackend = .current,
        packFP32: Bool = false
    ) {
        (outFeatures, inFeatures) = Self.features(weight.shape, bias: bias)
        self.weight = weight
        self.bf16Weight = nil
        self.bias = bias
        self.precision = precision.effective(on: backend)
        if backend.ownsGEMM && (self.precision == .bf16 || packFP32) {
            let (N, K) = (weight.shape[0], weight.shape[1])
            let bf16: Int32 = self.precision == .bf16 ? 1 : 0
            let buffer = AlignedBuffer(byteCount: gk_packed_b_bytes(N, K, bf16))
            let rc = gk_pack_b(weight.pointer, K, N, K, bf16, buffer.base, 1)
            precondition(rc == 0, "LinearWeight: out of memory packing a \(weight.shape) weight")
            packed = buffer
        } else {
            packed = nil
        }
    }

    /// A bf16 layer straight from bf16 bits (a bf16 checkpoint): packed here with `pack` (the
    /// products of `linear`), else kept for a `FusedLinear` to copy. Needs a backend with bf16
    /// (`KernelBackend.hasBF16`); the products are those of `init(weight:...)` with the bits'
    /// float values, bit for bit.
    public init(bf16 weight: BF16Tensor, bias: Tensor?, backend: KernelBackend = .current, pack: Bool = true) {
        precondition(backend.hasBF16, "LinearWeight: bf16 bits need a backend with bf16 products, not \(backend)")
        (outFeatures, inFeatures) = Self.features(weight.shape, bias: bias)
        self.weight = nil
        self.bf16Weight = weight
        self.bias = bias
        precision = .bf16
        if pack {
            let buffer = AlignedBuffer(byteCount: gk_packed_b_bytes(outFeatures, inFeatures, 1))
            gk_pack_b_from_bf16(weight.pointer, inFeatures, outFeatures, inFeatures, buffer.base, 1)
            packed = buffer
        } else {
            packed = nil
        }
    }

    /// (out, in) of a weight of `shape`, checked against the bias.
    private static func features(_ shape: [Int], bias: Tensor?) -> (Int, Int) {
        precondition(shape.count == 2, "LinearWeight: weight must be (out, in), got \(shape)")
        if let bias { precondition(bias.count == shape[0], "LinearWeight: bias \(bias.shape) vs \(shape)") }
        return (shape[0], shape[1])
    }

    /// Bytes of the packed copy (0 when the products read `weight` in place).
    public var packedByteCount: Int { packed?.byteCount ?? 0 }

    /// Once the products read only the packed copy: hands the pages of the weight it was made
    /// from back to their mapped file (`PageReleasing`; the weight still reads right, from the
    /// file). Nothing for a weight the products read in place, or one this process owns.
    public func releaseSourcePages() {
        guard packed != nil else { return }
        weight?.releaseBorrowedPages()
        bf16Weight?.releasePages()
    }

    /// The float32 weight, for the products that read it in place (never a layer made from bf16 bits).
    var fp32Weight: Tensor {
        guard let weight else { preconditionFailure("LinearWeight: a layer made from bf16 bits has no fp32 weight") }
        return weight
    }
}

/// y (M, N) = x (M, K) · Wᵀ + b, then GELU (tanh form) when `gelu`. x: rows `ldx` apart (default K);
/// y: rows `ldy` apart (default N). `segment`: rows per sample, which only the OpenBLAS backend
/// uses (its row blocks never cross a sample). The caller reserves `linearScratchBytes`.
public func linear(
    _ x: UnsafePointer<Float>, rows M: Int, ldx: Int? = nil, _ w: LinearWeight, gelu: Bool = false,
    segment: Int, into y: UnsafeMutablePointer<Float>, ldy: Int? = nil, context: ComputeContext
) {
    let (N, K) = (w.outFeatures, w.inFeatures)
    let (ldx, ldy) = (ldx ?? K, ldy ?? N)
    guard M > 0 else { return }
    if context.backend.ownsGEMM {
        let bf16 = w.precision == .bf16
        var args = gk_gemm_args()
        args.M = M
        args.N = N
        args.K = K
        args.bf16 = bf16 ? 1 : 0
        args.a = x
        args.lda = ldx
        args.b = w.weight?.pointer  // unread when packed
        args.ldb = K
        args.b_packed = w.packed.map { UnsafeRawPointer($0.base) }
        args.c = y
        args.ldc = ldy
        args.bias_n = w.bias?.pointer
        args.gelu = gelu ? 1 : 0
        let scratch = context.reserve(scratchBytes: gk_gemm_scratch_bytes(M, K, args.bf16, 0, Int32(context.workers)))
        gk_gemm(&args, scratch, Int32(context.workers))
    } else {
        precondition(ldx == K && ldy == N, "linear: strided rows need the AVX-512 backend")
        BLAS.singleThreaded {
            linearRows(
                x, rows: M, segment: segment, weight: w.fp32Weight, bias: w.bias, workers: context.workers, into: y)
        }
        if gelu { geluTanh(y, count: M * N) }
    }
}

/// Several linear layers over the same few rows (per-sample vectors: the timestep MLP, every
/// adaLN projection of a DiT) as one product: layer i writes columns [offset_i, offset_i + N_i) of
/// y (M, Σ N_i). Each element is a fixed-order dot product, so its bits depend on nothing but x and
/// the weights. bf16: the weights are converted once, here.
public final class FusedLinear: @unchecked Sendable {
    public let layers: [LinearWeight]
    public let inFeatures: Int
    public let outFeatures: Int
    public let precision: Precision
    let segments: UnsafeMutablePointer<gk_small_segment>
    let bf16Weights: UnsafeMutablePointer<UInt16>?

    public init(_ layers: [LinearWeight], precision: Precision = .fp32, backend: KernelBackend = .current) {
        precondition(!layers.isEmpty, "FusedLinear: no layers")
        let K = layers[0].inFeatures
        precondition(layers.allSatisfy { $0.inFeatures == K }, "FusedLinear: layers take different input sizes")
        self.layers = layers
        inFeatures = K
        outFeatures = layers.reduce(0) { $0 + $1.outFeatures }
        self.precision = precision.effective(on: backend)
        segments = .allocate(capacity: layers.count)
        let bf16 = self.precision == .bf16
        bf16Weights = bf16 ? .allocate(capacity: outFeatures * K) : nil
        var offset = 0
        for (i, layer) in layers.enumerated() {
            let w: UnsafeRawPointer
            if let bf16Weights {
                let dst = bf16Weights + offset * K
                if let bits = layer.bf16Weight {
                    dst.update(from: bits.pointer, count: layer.outFeatures * K)
                } else {
                    gk_to_bf16(layer.fp32Weight.pointer, dst, layer.outFeatures * K)
                }
                w = UnsafeRawPointer(dst)
            } else {
                w = UnsafeRawPointer(layer.fp32Weight.pointer)
            }
            segments[i] = gk_small_segment(w: w, bias: layer.bias?.pointer, n: layer.outFeatures, y_offset: offset)
            offset += layer.outFeatures
        }
    }

    deinit {
        segments.deallocate()
        bf16Weights?.deallocate()
    }

    /// In bf16, once the weights are converted: hands the pages of the weights they were made
    /// from back to their mapped file (see `LinearWeight.releaseSourcePages`). In fp32 the products
    /// read the weights in place: nothing.
    public func releaseSourcePages() {
        guard bf16Weights != nil else { return }
        for layer in layers {
            layer.weight?.releaseBorrowedPages()
            layer.bf16Weight?.releasePages()
        }
    }

    /// Scratch bytes of `apply` over `rows` rows of `inFeatures` values (either precision).
    public static func scratchBytes(rows M: Int, inFeatures K: Int) -> Int { gk_linear_small_scratch_bytes(M, K, 1) }

    /// y (M, outFeatures) = every layer applied to x (M, inFeatures).
    public func apply(
        _ x: UnsafePointer<Float>, rows M: Int, into y: UnsafeMutablePointer<Float>, context: ComputeContext
    ) {
        guard M > 0 else { return }
        if context.backend.ownsGEMM {
            let bf16: Int32 = precision == .bf16 ? 1 : 0
            let scratch = context.reserve(scratchBytes: gk_linear_small_scratch_bytes(M, inFeatures, bf16))
            gk_linear_small(
                x, inFeatures, M, inFeatures, bf16, segments, layers.count, y, outFeatures, scratch,
                Int32(context.workers))
        } else {
            BLAS.singleThreaded {
                var offset = 0
                for layer in layers {
                    // One row per block, written with stride outFeatures into its columns.
                    for m in 0..<M {
                        linear(
                            x + m * inFeatures, rows: 1, weight: layer.fp32Weight, bias: layer.bias,
                            into: y + m * outFeatures + offset)
                    }
                    offset += layer.outFeatures
                }
            }
        }
    }
}
