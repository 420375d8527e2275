import CBLAS
import CGriditKernels
import Glibc

// Image kernels of the VAE over (N, C, H, W) tensors: 2-D convolution as a GEMM with the PyTorch
// (Cout, Cin, KH, KW) weight in place, group norm (optionally fused with SiLU), nearest 2x
// upsampling. On AVX-512 the convolution is gridit's GEMM with the im2col matrix packed straight
// from the image (never materialised); elsewhere im2col + OpenBLAS on a fixed schedule of
// single-threaded products. Either way the bits depend neither on the batch nor on the threads.

/// Zero padding of a convolution's input: rows added on top/bottom, columns on left/right.
public struct ConvPadding: Equatable, Sendable {
    public var top, left, bottom, right: Int
    public init(top: Int, left: Int, bottom: Int, right: Int) {
        (self.top, self.left, self.bottom, self.right) = (top, left, bottom, right)
    }
    /// `p` on every side (PyTorch `padding=p`).
    public static func same(_ p: Int) -> ConvPadding { ConvPadding(top: p, left: p, bottom: p, right: p) }
    /// diffusers' encoder downsample: `F.pad(x, (0, 1, 0, 1))` (right and bottom only), then padding 0.
    public static let downsample = ConvPadding(top: 0, left: 0, bottom: 1, right: 1)
}

/// Output size of a convolution along one axis.
public func convOutputSize(_ size: Int, kernel: Int, stride: Int, padBefore: Int, padAfter: Int) -> Int {
    (size + padBefore + padAfter - kernel) / stride + 1
}

/// Floats of im2col scratch per GEMM tile: a tile is a run of whole output rows whose columns
/// (Cin*KH*KW, rows*Wo) stay within this budget (at least one row), 8M floats = 32 MB.
public let convColumnBudget = 8 << 20

/// A convolution's weight (Cout, Cin, KH, KW) and bias (Cout), prepared once for a precision:
/// fp32 products read the tensor in place; bf16 products read it packed into the GEMM's panels.
/// With bf16 and an even Cin the product runs over k = (ki, kj, c) (`acceptsPairs`): the weight is packed
/// as (Cout, KH, KW, Cin) and each call converts its input once into bf16 channel pairs
/// (`gk_conv_pairs`), so the GEMM's im2col panels are plain 32-bit moves from that copy.
public struct ConvWeight: @unchecked Sendable {
    public let weight: Tensor
    public let bias: Tensor?
    public let precision: Precision
    let packed: AlignedBuffer?
    /// bf16 with an even Cin: the product runs on channel pairs (`ChannelPairs`).
    public let acceptsPairs: Bool

    public init(weight: Tensor, bias: Tensor?, precision: Precision = .fp32, backend: KernelBackend = .current) {
        precondition(weight.rank == 4, "ConvWeight: weight must be (Cout, Cin, KH, KW), got \(weight.shape)")
        if let bias { precondition(bias.count == weight.shape[0], "ConvWeight: bias \(bias.shape) vs \(weight.shape)") }
        self.weight = weight
        self.bias = bias
        self.precision = precision.effective(on: backend)
        if self.precision == .bf16 {
            let (M, K) = (weight.shape[0], weight.count / weight.shape[0])
            let (Cin, taps) = (weight.shape[1], weight.shape[2] * weight.shape[3])
            acceptsPairs = Cin % 2 == 0
            var source = weight
            if acceptsPairs {
                // (Cout, Cin, KH, KW) -> (Cout, KH, KW, Cin)
                source = Tensor(zeros: weight.shape)
                let (src, dst) = (weight.pointer, source.mutablePointer)
                for o in 0..<M {
                    for c in 0..<Cin {
                        for t in 0..<taps { dst[o * K + t * Cin + c] = src[o * K + c * taps + t] }
                    }
                }
            }
            let buffer = AlignedBuffer(byteCount: gk_packed_a_bytes(M, K, 1))
            precondition(gk_pack_a(source.pointer, K, M, K, 1, buffer.base, 1) == 0, "ConvWeight: out of memory")
            packed = buffer
        } else {
            packed = nil
            acceptsPairs = false
        }
    }

    /// Scratch bytes of `conv2d` with this weight on `context`.
    public func scratchBytes(context: ComputeContext) -> Int {
        guard context.backend.ownsGEMM else { return 0 }
        let (M, K) = (weight.shape[0], weight.count / weight.shape[0])
        return gk_gemm_scratch_bytes(M, K, precision == .bf16 ? 1 : 0, packed == nil ? 0 : 1, Int32(context.workers))
    }
}

/// 2-D convolution (cross-correlation, like `torch.nn.functional.conv2d`).
/// x: (N, Cin, H, W); w: (Cout, Cin, KH, KW) weight, (Cout) bias; out: (N, Cout, Ho, Wo).
/// With `accumulate` the result is added to `out` (a fused residual), else `out` is overwritten.
/// Per sample, out (Cout, Ho·Wo) = weight (Cout, Cin·KH·KW) · im2col(x), the GEMM packing the
/// im2col columns it needs straight from x (or from x's bf16 channel pairs, see `ConvWeight`).
public func conv2d(
    _ x: Tensor, _ w: ConvWeight, stride: Int = 1, padding: ConvPadding, into out: Tensor,
    accumulate: Bool = false, context: ComputeContext
) {
    guard context.backend.ownsGEMM else {
        conv2dBLAS(
            x, weight: w.weight, bias: w.bias, stride: stride, padding: padding, into: out,
            accumulate: accumulate, workers: context.workers)
        return
    }
    precondition(x.rank == 4, "conv2d: x \(x.shape)")
    gemmConv(
        x.shape, image: x.pointer, pairs: nil, w, stride: stride, padding: padding, into: out,
        accumulate: accumulate, context: context)
}

/// `conv2d` of the image whose bf16 channel pairs `x` holds (filled by `groupNorm(_:...into:)`):
/// the same bits as `conv2d` of that image. Needs `w.acceptsPairs`.
public func conv2d(
    _ x: ChannelPairs, _ w: ConvWeight, stride: Int = 1, padding: ConvPadding, into out: Tensor,
    accumulate: Bool = false, context: ComputeContext
) {
    precondition(w.acceptsPairs && context.backend.ownsGEMM, "conv2d: channel pairs need a bf16 weight with even Cin")
    gemmConv(
        x.shape, image: nil, pairs: UnsafePointer(x.pointer), w, stride: stride, padding: padding, into: out,
        accumulate: accumulate, context: context)
}

/// The sizes of a convolution of an input of `shape` (N, Cin, H, W) by `weight` (Cout, Cin, KH, KW)
/// into `out`, checked: every form of `conv2d` starts here.
private func convShape(
    _ shape: [Int], weight: Tensor, stride: Int, padding: ConvPadding, out: Tensor
)
    -> (N: Int, Cin: Int, H: Int, W: Int, Cout: Int, KH: Int, KW: Int, Ho: Int, Wo: Int)
{
    precondition(shape.count == 4 && weight.rank == 4, "conv2d: x \(shape), weight \(weight.shape)")
    let (N, Cin, H, W) = (shape[0], shape[1], shape[2], shape[3])
    let (Cout, KH, KW) = (weight.shape[0], weight.shape[2], weight.shape[3])
    precondition(weight.shape[1] == Cin, "conv2d: weight \(weight.shape) vs input channels \(Cin)")
    precondition(stride >= 1, "conv2d: stride \(stride)")
    let Ho = convOutputSize(H, kernel: KH, stride: stride, padBefore: padding.top, padAfter: padding.bottom)
    let Wo = convOutputSize(W, kernel: KW, stride: stride, padBefore: padding.left, padAfter: padding.right)
    precondition(Ho >= 1 && Wo >= 1, "conv2d: empty output for input \(shape), kernel \(KH)x\(KW)")
    precondition(out.shape == [N, Cout, Ho, Wo], "conv2d: out \(out.shape), expected \([N, Cout, Ho, Wo])")
    return (N, Cin, H, W, Cout, KH, KW, Ho, Wo)
}

/// The GEMM form of `conv2d` on an fp32 image, or (`pairs`) on its channel-pair copy.
private func gemmConv(
    _ shape: [Int], image: UnsafePointer<Float>?, pairs: UnsafePointer<UInt16>?, _ w: ConvWeight,
    stride: Int, padding: ConvPadding, into out: Tensor, accumulate: Bool, context: ComputeContext
) {
    let weight = w.weight
    let (N, Cin, H, W, Cout, KH, KW, Ho, Wo) = convShape(
        shape, weight: weight, stride: stride, padding: padding,
        out: out)
    let K = Cin * KH * KW
    var geometry = gk_conv_geometry(
        C: Cin, H: H, W: W, KH: KH, KW: KW, stride: stride, pad_top: padding.top,
        pad_left: padding.left, Ho: Ho, Wo: Wo)
    // An fp32 image with a channel-pair weight is converted one sample at a time into scratch.
    let gemmBytes = (w.scratchBytes(context: context) + 63) / 64 * 64
    let convert = pairs == nil && w.acceptsPairs
    let scratch = context.reserve(scratchBytes: gemmBytes + (convert ? Cin * H * W * 2 : 0))
    let sampleCopy = convert ? (scratch + gemmBytes).assumingMemoryBound(to: UInt16.self) : nil
    withUnsafePointer(to: &geometry) { geometry in
        for n in 0..<N {
            var args = gk_gemm_args()
            if let sampleCopy, let image {
                gk_conv_pairs(image + n * Cin * H * W, Cin, H * W, sampleCopy, Int32(context.workers))
                args.b_pairs = UnsafePointer(sampleCopy)
            } else if let pairs {
                args.b_pairs = pairs + n * Cin * H * W
            } else {
                args.b = image! + n * Cin * H * W
            }
            args.M = Cout
            args.N = Ho * Wo
            args.K = K
            args.bf16 = w.precision == .bf16 ? 1 : 0
            if let packed = w.packed { args.a_packed = UnsafeRawPointer(packed.base) } else { args.a = weight.pointer }
            args.lda = K
            args.conv = geometry
            args.c = out.mutablePointer + n * Cout * Ho * Wo
            args.ldc = Ho * Wo
            args.bias_m = w.bias?.pointer
            args.accumulate = accumulate ? 1 : 0
            gk_gemm(&args, scratch, Int32(context.workers))
        }
    }
}

/// bf16 channel pairs (N, C/2, H, W, 2) of an (N, C, H, W) image, C even: the input form of bf16
/// convolutions (`ConvWeight`), written directly by `groupNorm(_:...into:)` so a normalised
/// activation needs no fp32 copy. The buffer grows to the largest image it held and is reused.
public final class ChannelPairs: @unchecked Sendable {
    public private(set) var shape: [Int] = [0, 0, 0, 0]
    private var buffer = AlignedBuffer(byteCount: 0)

    public init() {}

    var pointer: UnsafeMutablePointer<UInt16> { buffer.base.assumingMemoryBound(to: UInt16.self) }

    /// Sets the image shape (N, C, H, W) (C even), growing the buffer when needed.
    func resize(_ shape: [Int]) {
        precondition(shape.count == 4 && shape[1] % 2 == 0, "ChannelPairs: shape \(shape) needs an even C")
        let bytes = shape.reduce(1, *) * 2
        if buffer.byteCount < bytes { buffer = AlignedBuffer(byteCount: bytes) }
        self.shape = shape
    }

    /// The pairs as fp32 values (N, C, H, W) (tests).
    public func toTensor() -> Tensor {
        let (N, C, plane) = (shape[0], shape[1], shape[2] * shape[3])
        let t = Tensor(zeros: shape)
        for n in 0..<N {
            for c in 0..<C {
                for i in 0..<plane {
                    let bits = UInt32(pointer[((n * C + c) / 2 * plane + i) * 2 + c % 2]) << 16
                    t.mutablePointer[(n * C + c) * plane + i] = Float(bitPattern: bits)
                }
            }
        }
        return t
    }
}

/// The OpenBLAS form of `conv2d` (the fallback on CPUs without AVX-512): 1x1 convolutions with
/// stride 1 and no padding multiply the input in place (no im2col); others run in tiles of whole
/// output rows whose im2col columns fit `columnBudget` floats, one single-threaded product each.
public func conv2dBLAS(
    _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: ConvPadding,
    into out: Tensor, accumulate: Bool = false, columnBudget: Int = convColumnBudget, workers: Int = 1
) {
    let (N, Cin, H, W, Cout, KH, KW, Ho, Wo) = convShape(
        x.shape, weight: weight, stride: stride, padding: padding,
        out: out)
    if let bias { precondition(bias.count == Cout, "conv2d: bias \(bias.shape) vs \(Cout) channels") }
    let K = Cin * KH * KW
    let plane = Ho * Wo
    let o = out.mutablePointer
    // Bias first, so the GEMM always accumulates (beta = 1).
    for n in 0..<N {
        for c in 0..<Cout {
            let row = o + (n * Cout + c) * plane
            let b = bias.map { $0.pointer[c] } ?? 0
            if accumulate {
                if b != 0 { for i in 0..<plane { row[i] += b } }
            } else {
                row.update(repeating: b, count: plane)
            }
        }
    }
    let pointwise = KH == 1 && KW == 1 && stride == 1 && padding == .same(0)
    let tileRows = pointwise ? Ho : max(1, min(Ho, columnBudget / max(1, K * Wo)))
    // Work items are (sample, tile of output rows); the tiling depends only on the layer's shape,
    // and each item is one single-threaded product, so the output bits do not depend on the batch
    // or on `workers` (the same scheme as `linearRows`).
    let tilesPerSample = (Ho + tileRows - 1) / tileRows
    let items = N * tilesPerSample
    let workers = max(1, min(workers, items))
    let cols = pointwise ? nil : UnsafeMutablePointer<Float>.allocate(capacity: workers * K * tileRows * Wo)
    defer { cols?.deallocate() }
    let src = x.pointer
    BLAS.singleThreaded {
        parallelItems(items, workers: workers) { item, worker in
            let (n, r0) = (item / tilesPerSample, item % tilesPerSample * tileRows)
            let xs = src + n * Cin * H * W
            let os = o + n * Cout * plane
            let rows = min(tileRows, Ho - r0)
            let cw = rows * Wo
            var b = xs
            if let cols {
                let scratch = cols + worker * K * tileRows * Wo
                im2col(
                    xs, channels: Cin, height: H, width: W, kernelH: KH, kernelW: KW, stride: stride,
                    padTop: padding.top, padLeft: padding.left, outRow0: r0, outRows: rows, outW: Wo, into: scratch)
                b = UnsafePointer(scratch)
            }
            // out[:, r0*Wo ..< (r0+rows)*Wo] (Cout, cw) += weight (Cout, K) · cols (K, cw)
            cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(Cout), Int32(cw), Int32(K),
                1, weight.pointer, Int32(K), b, Int32(cw), 1, os + r0 * Wo, Int32(plane))
        }
    }
}

/// Allocating form of `conv2d`.
public func conv2d(
    _ x: Tensor, _ w: ConvWeight, stride: Int = 1, padding: ConvPadding, context: ComputeContext
) -> Tensor {
    let out = Tensor(zeros: convOutputShape(x.shape, weight: w.weight.shape, stride: stride, padding: padding))
    conv2d(x, w, stride: stride, padding: padding, into: out, context: context)
    return out
}

/// (N, Cout, Ho, Wo) of a convolution of an (N, Cin, H, W) input with a (Cout, Cin, KH, KW) weight.
public func convOutputShape(_ x: [Int], weight: [Int], stride: Int = 1, padding: ConvPadding) -> [Int] {
    [
        x[0], weight[0],
        convOutputSize(x[2], kernel: weight[2], stride: stride, padBefore: padding.top, padAfter: padding.bottom),
        convOutputSize(x[3], kernel: weight[3], stride: stride, padBefore: padding.left, padAfter: padding.right),
    ]
}

/// im2col of one sample (C, H, W) for output rows [outRow0, outRow0 + outRows): cols is
/// (C*KH*KW, outRows*outW), row (c, ki, kj) in the order of the flattened weight; zeros outside.
func im2col(
    _ x: UnsafePointer<Float>, channels C: Int, height H: Int, width W: Int, kernelH KH: Int, kernelW KW: Int,
    stride S: Int, padTop: Int, padLeft: Int, outRow0: Int, outRows: Int, outW Wo: Int,
    into cols: UnsafeMutablePointer<Float>
) {
    let cw = outRows * Wo
    for c in 0..<C {
        let plane = x + c * H * W
        for ki in 0..<KH {
            for kj in 0..<KW {
                let row = cols + ((c * KH + ki) * KW + kj) * cw
                for r in 0..<outRows {
                    let dst = row + r * Wo
                    let iy = (outRow0 + r) * S + ki - padTop
                    if iy < 0 || iy >= H {
                        dst.update(repeating: 0, count: Wo)
                        continue
                    }
                    let line = plane + iy * W
                    if S == 1 {
                        // ix = ox + kj - padLeft: copy the in-range span, zero the edges.
                        let shift = kj - padLeft
                        let lo = max(0, -shift), hi = min(Wo, W - shift)
                        if lo > 0 { dst.update(repeating: 0, count: min(lo, Wo)) }
                        if hi > lo { (dst + lo).update(from: line + lo + shift, count: hi - lo) }
                        if hi < Wo { (dst + max(hi, 0)).update(repeating: 0, count: Wo - max(hi, 0)) }
                    } else {
                        for ox in 0..<Wo {
                            let ix = ox * S + kj - padLeft
                            dst[ox] = ix >= 0 && ix < W ? line[ix] : 0
                        }
                    }
                }
            }
        }
    }
}

/// Group norm (`torch.nn.GroupNorm`): per sample and group of C/G channels, normalise by the
/// group's mean and (biased) variance, then `* weight[c] + bias[c]`; optionally SiLU after.
/// x, out: (N, C, H, W) (out may alias x). Items (sample, group) run on `workers` threads.
public func groupNorm(
    _ x: Tensor, groups G: Int, weight: Tensor, bias: Tensor, eps: Float = 1e-6,
    silu fuseSiLU: Bool = false, into out: Tensor, workers: Int = 1
) {
    precondition(x.rank == 4 && out.shape == x.shape, "groupNorm: x \(x.shape), out \(out.shape)")
    let (N, C) = (x.shape[0], x.shape[1])
    let plane = x.shape[2] * x.shape[3]
    precondition(G > 0 && C % G == 0, "groupNorm: \(C) channels not divisible by \(G) groups")
    precondition(
        weight.count == C && bias.count == C, "groupNorm: affine \(weight.shape)/\(bias.shape) vs \(C) channels")
    let (src, dst, w, b) = (x.pointer, out.mutablePointer, weight.pointer, bias.pointer)
    groupItems(N: N, C: C, groups: G, plane: plane, workers: workers) { base, c0, per in
        gk_group_norm(src + base, dst + base, per, plane, w + c0, b + c0, eps, fuseSiLU ? 1 : 0)
    }
}

/// Runs `body(offset of the group's first value, its first channel, channels per group)` for every
/// (sample, group) of an (N, C, H, W) tensor on `workers` threads.
private func groupItems(N: Int, C: Int, groups G: Int, plane: Int, workers: Int, _ body: (Int, Int, Int) -> Void) {
    let per = C / G
    parallelItems(N * G, workers: workers) { item, _ in
        let (n, g) = (item / G, item % G)
        body((n * C + g * per) * plane, g * per, per)
    }
}

/// `groupNorm` written as bf16 channel pairs for a bf16 convolution: the same bits as `groupNorm`
/// into an fp32 tensor, then rounded to bf16. Needs AVX512_BF16 and an even C / G.
public func groupNorm(
    _ x: Tensor, groups G: Int, weight: Tensor, bias: Tensor, eps: Float = 1e-6,
    silu fuseSiLU: Bool = false, into out: ChannelPairs, workers: Int = 1
) {
    precondition(x.rank == 4, "groupNorm: x \(x.shape)")
    let (N, C) = (x.shape[0], x.shape[1])
    let plane = x.shape[2] * x.shape[3]
    precondition(
        G > 0 && C % G == 0 && (C / G) % 2 == 0, "groupNorm: \(C) channels in \(G) groups, pairs need an even group")
    precondition(
        weight.count == C && bias.count == C, "groupNorm: affine \(weight.shape)/\(bias.shape) vs \(C) channels")
    precondition(KernelBackend.current == .avx512BF16, "groupNorm into channel pairs needs AVX512_BF16")
    out.resize(x.shape)
    let (src, dst, w, b) = (x.pointer, out.pointer, weight.pointer, bias.pointer)
    groupItems(N: N, C: C, groups: G, plane: plane, workers: workers) { base, c0, per in
        // A pair image's sample n, channel c (c even) starts at the same element offset as in fp32.
        gk_group_norm_pairs(src + base, dst + base, per, plane, w + c0, b + c0, eps, fuseSiLU ? 1 : 0)
    }
}

/// Nearest-neighbour 2x upsampling (`F.interpolate(scale_factor=2, mode="nearest")`).
/// x: (N, C, H, W) -> out: (N, C, 2H, 2W).
public func upsampleNearest2x(_ x: Tensor, into out: Tensor) {
    precondition(x.rank == 4, "upsampleNearest2x: x \(x.shape)")
    let (N, C, H, W) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    precondition(out.shape == [N, C, 2 * H, 2 * W], "upsampleNearest2x: out \(out.shape) for x \(x.shape)")
    let (src, dst) = (x.pointer, out.mutablePointer)
    for p in 0..<(N * C) {
        let s = src + p * H * W, d = dst + p * 4 * H * W
        for y in 0..<H {
            let row = d + 2 * y * 2 * W
            for xx in 0..<W {
                let v = s[y * W + xx]
                row[2 * xx] = v
                row[2 * xx + 1] = v
            }
            (row + 2 * W).update(from: row, count: 2 * W)
        }
    }
}

/// `upsampleNearest2x` written as bf16 channel pairs (N, C, 2H, 2W) for a bf16 convolution: the
/// upsampled image rounded to bf16, bit for bit. Needs AVX512_BF16 and an even C.
public func upsampleNearest2x(_ x: Tensor, into out: ChannelPairs, workers: Int = 1) {
    precondition(x.rank == 4, "upsampleNearest2x: x \(x.shape)")
    precondition(KernelBackend.current == .avx512BF16, "upsampling into channel pairs needs AVX512_BF16")
    let (N, C, H, W) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    out.resize([N, C, 2 * H, 2 * W])
    for n in 0..<N {
        gk_upsample2x_pairs(x.pointer + n * C * H * W, C, H, W, out.pointer + n * C * 4 * H * W, Int32(workers))
    }
}

/// (C, T) <-> (T, C) transpose of one sample: src (rows, cols) -> dst (cols, rows).
public func transpose2D(_ src: UnsafePointer<Float>, rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        for c in 0..<cols { dst[c * rows + r] = src[r * cols + c] }
    }
}
