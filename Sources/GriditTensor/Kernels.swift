import CBLAS
import CGriditKernels
import Glibc

// Kernels over contiguous float32 tensors. Output is passed last (`into:`) and is overwritten.
// Every kernel here has a naive twin in Tests/GriditTensorTests/NaiveKernels.swift.

public enum BLAS {
    /// Runs `body`, whose OpenBLAS calls must each run on the calling thread.
    ///
    /// The fallback products spread single-threaded OpenBLAS calls over gridit's workers (OpenBLAS'
    /// own partitioning would change the result bits), and two passes may run at once (the
    /// engine's two lanes). OpenBLAS' thread count is one process-wide setting, so it is set to 1
    /// once, before the first such call, and never changed.
    public static func singleThreaded<T>(_ body: () throws -> T) rethrows -> T {
        _ = oneThread
        return try body()
    }

    private static let oneThread: Void = openblas_set_num_threads(1)
}

/// y = x · Wᵀ + b (PyTorch `nn.Linear`), with W in PyTorch's (out, in) layout used in place.
/// x: (M, K) rows; weight: (N, K); bias: (N) or nil; y: (M, N).
public func linear(
    _ x: UnsafePointer<Float>, rows M: Int, weight: Tensor, bias: Tensor?,
    into y: UnsafeMutablePointer<Float>
) {
    precondition(weight.rank == 2, "linear: weight must be (out, in), got \(weight.shape)")
    let N = weight.shape[0], K = weight.shape[1]
    var beta: Float = 0
    if let bias {
        precondition(bias.count == N, "linear: bias \(bias.shape) vs weight \(weight.shape)")
        gk_fill_rows(y, bias.pointer, M, N)
        beta = 1
    }
    cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(N), Int32(K),
        1, x, Int32(K), weight.pointer, Int32(K), beta, y, Int32(N))
}

/// Rows per work item of `linearRows` for samples of `segment` rows: a function of the sample size
/// only, so the work items of a sample never depend on the batch it is in or on the thread count.
/// Larger blocks re-pack each weight matrix less often; 128 keeps two blocks for 256-token models.
/// Changing this changes output bits: outputs are reproducible for a given value.
public func linearRowBlock(segment: Int) -> Int { segment <= 512 ? 128 : 256 }

/// `linear` over `M` rows made of samples of `segment` rows each, as a fixed schedule of
/// single-threaded products: each sample is cut into blocks of `linearRowBlock(segment:)` rows
/// (never crossing a sample boundary), and the blocks are spread over `workers` threads.
///
/// Why: OpenBLAS' result bits depend on how a product is partitioned (its own threading, and the
/// row count of a call). Here every block is the same call whatever the batch composition and
/// the worker count, so a sample's output is bit-identical in any batch, at any thread count.
/// The fallback of `linear` on CPUs without AVX-512; call with OpenBLAS at one thread
/// (`BLAS.singleThreaded`).
public func linearRows(
    _ x: UnsafePointer<Float>, rows M: Int, segment: Int, weight: Tensor, bias: Tensor?,
    workers: Int, into y: UnsafeMutablePointer<Float>
) {
    precondition(segment > 0 && M % segment == 0, "linearRows: \(M) rows are not whole samples of \(segment)")
    let N = weight.shape[0], K = weight.shape[1]
    let rowBlock = linearRowBlock(segment: segment)
    let blocksPerSample = (segment + rowBlock - 1) / rowBlock
    let items = M / segment * blocksPerSample
    parallelItems(items, workers: workers) { item, _ in
        let (sample, block) = (item / blocksPerSample, item % blocksPerSample)
        let r0 = sample * segment + block * rowBlock
        let rows = min(rowBlock, segment - block * rowBlock)
        linear(x + r0 * K, rows: rows, weight: weight, bias: bias, into: y + r0 * N)
    }
}

/// Runs `body(item, worker)` for items 0..<count on up to `workers` threads of gridit's thread pool
/// (the caller included; Sources/CGriditKernels/pool.c) and returns when all are done. Items are
/// handed out dynamically, so a schedule built on it must fix its items independently of `workers`
/// and of the order they run in; `worker` (< workers) indexes per-thread scratch.
public func parallelItems(_ count: Int, workers: Int, _ body: (_ item: Int, _ worker: Int) -> Void) {
    guard count > 0 else { return }
    if workers <= 1 || count == 1 {
        for item in 0..<count { body(item, 0) }
        return
    }
    withoutActuallyEscaping(body) { body in
        var closure = body
        withUnsafeMutablePointer(to: &closure) { ctx in
            gk_parallel_for(
                count, Int32(workers),
                { ctx, item, worker in
                    let body = ctx!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee
                    body(Int(item), Int(worker))
                }, ctx)
        }
    }
}

/// Tensor form of `linear`: x (..., K) -> y (..., N), rows = every leading dim.
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, into y: Tensor) {
    let K = weight.shape[1]
    precondition(x.shape.last == K, "linear: x \(x.shape) vs weight \(weight.shape)")
    precondition(y.count == x.count / K * weight.shape[0], "linear: y \(y.shape) wrong for x \(x.shape)")
    linear(x.pointer, rows: x.count / K, weight: weight, bias: bias, into: y.mutablePointer)
}

/// GELU, tanh approximation, in place.
public func geluTanh(_ x: UnsafeMutablePointer<Float>, count n: Int) { gk_gelu_tanh(x, n) }

/// SiLU: out = x * sigmoid(x). out may alias x.
public func silu(_ x: UnsafePointer<Float>, count n: Int, into out: UnsafeMutablePointer<Float>) {
    gk_silu(out, x, n)
}

/// out = exp(x) by the polynomial the softmax, SiLU and GELU kernels share (max rel. error ~2e-7).
public func exponential(_ x: UnsafePointer<Float>, count n: Int, into out: UnsafeMutablePointer<Float>) {
    gk_exp(out, x, n)
}

/// The DiT's per-row passes over a batch, on `workers` threads. For sample n, with
/// m = mod + n · modStride (each sample's modulation vectors, at the given offsets):
/// y nil: h = norm(x) · (1 + m[scale...]) + m[shift...]; else first x += m[gate...] ⊙ y.
/// x, y, h: (N, T, D).
public func modulatedNormRows(
    _ x: UnsafeMutablePointer<Float>, residual y: UnsafePointer<Float>?, batch N: Int,
    tokens T: Int, dim D: Int, mod: UnsafePointer<Float>, modStride: Int, gate: Int = 0,
    shift: Int, scale: Int, eps: Float = 1e-6, workers: Int,
    into h: UnsafeMutablePointer<Float>
) {
    gk_residual_layernorm_modulate_batch(x, y, h, N, T, D, mod, modStride, gate, shift, scale, eps, Int32(workers))
}

/// Floats of scratch that `attention` needs for these shapes and `workers` threads (`bf16`: also
/// for bf16 attention, which keeps a rounded copy of K and V).
public func attentionScratchCount(
    batch N: Int, tokens T: Int, dim D: Int, heads NH: Int, workers: Int, bf16: Bool = false
) -> Int {
    gk_attention_scratch_floats(N, T, D, NH, Int32(max(1, workers)), bf16 ? 1 : 0)
}

/// Multi-head self-attention over packed projections: qkv (N, T, 3D) laid out [q | k | v] per
/// token, each (NH, HD) head-major within D (timm's layout); out: (N, T, D), heads concatenated.
public func selfAttention(
    qkv: UnsafePointer<Float>, batch N: Int, tokens T: Int, dim D: Int, heads NH: Int, bf16: Bool = false,
    workers: Int, scratch: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>
) {
    attention(
        q: qkv, k: qkv + D, v: qkv + 2 * D, rowStride: 3 * D, batch: N, tokens: T, dim: D, heads: NH, bf16: bf16,
        workers: workers, scratch: scratch, into: out)
}

/// softmax(q kᵀ / sqrt(HD)) v for each (batch element, head), with an online softmax over blocks
/// of keys (Sources/CGriditKernels/attention.c): no more than a tile of the T x T scores exists.
/// q, k, v: (N, T, D) views whose token rows are `rowStride` floats apart (D for separate tensors,
/// 3D inside a packed qkv); scratch: `attentionScratchCount` floats; out: (N, T, D).
/// Work items are (n, head, tile of query rows) over `workers` threads; a row's arithmetic does not
/// depend on the split, so the result is the same for every worker count and batch.
/// `bf16`: q, k, v and the softmax's weights rounded to bf16, products accumulated in fp32 (the same
/// bits on VDPBF16PS and on FMAs; scratch counted with `bf16: true`).
public func attention(
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, rowStride ld: Int,
    batch N: Int, tokens T: Int, dim D: Int, heads NH: Int, bf16: Bool = false, workers: Int,
    scratch: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>
) {
    precondition(D % NH == 0, "attention: dim \(D) not divisible by heads \(NH)")
    gk_attention(q, k, v, ld, N, T, D, NH, out, D, scratch, Int32(max(1, workers)), bf16 ? 1 : 0, Int32(GK_BF16_AUTO))
}

/// Patchify (im2col for a conv with kernel = stride = P): x (N, C, H, W) -> patches (N*T, C*P*P),
/// T = (H/P)(W/P) in row-major patch order; each row is ordered (c, pi, pj) like the flattened
/// (D, C, P, P) conv weight, so the patch embedding is `linear(patches, weight (D, C*P*P))`.
/// patches: (N*T, C*P*P).
public func patchify(_ x: Tensor, patch P: Int, into patches: UnsafeMutablePointer<Float>) {
    precondition(x.rank == 4, "patchify: x must be (N, C, H, W), got \(x.shape)")
    let (N, C, H, W) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    precondition(H % P == 0 && W % P == 0, "patchify: \(H)x\(W) not divisible by patch \(P)")
    let (h, w) = (H / P, W / P)
    let K = C * P * P
    let src = x.pointer
    for n in 0..<N {
        for i in 0..<h {
            for j in 0..<w {
                let row = patches + ((n * h + i) * w + j) * K
                for c in 0..<C {
                    for pi in 0..<P {
                        let s = src + ((n * C + c) * H + i * P + pi) * W + j * P
                        (row + (c * P + pi) * P).update(from: s, count: P)
                    }
                }
            }
        }
    }
}

/// Inverse of patchify for the model output: tokens (N, T, P*P*C) -> image (N, C, H, W) with
/// H = h*P, W = w*P; each token's vector is laid out (pi, pj, c), channel fastest.
public func unpatchify(
    _ tokens: UnsafePointer<Float>, batch N: Int, gridH h: Int, gridW w: Int, patch P: Int,
    channels C: Int, into out: UnsafeMutablePointer<Float>
) {
    let H = h * P, W = w * P
    for n in 0..<N {
        for i in 0..<h {
            for j in 0..<w {
                let tok = tokens + ((n * h + i) * w + j) * P * P * C
                for pi in 0..<P {
                    for pj in 0..<P {
                        let v = tok + (pi * P + pj) * C
                        for c in 0..<C {
                            out[((n * C + c) * H + i * P + pi) * W + j * P + pj] = v[c]
                        }
                    }
                }
            }
        }
    }
}

/// Sinusoidal timestep embedding: for each t, [cos(t·f_i), sin(t·f_i)] with
/// f_i = exp(-ln(maxPeriod)·i/half), i < half = dim/2 (cos first). Computed in double.
/// out: (N, dim).
public func timestepEmbedding(
    _ t: [Float], dim: Int = 256, maxPeriod: Double = 10000,
    into out: UnsafeMutablePointer<Float>
) {
    let half = dim / 2
    for (n, tv) in t.enumerated() {
        let row = out + n * dim
        for i in 0..<half {
            let arg = Double(tv) * exp(-log(maxPeriod) * Double(i) / Double(half))
            row[i] = Float(cos(arg))
            row[half + i] = Float(sin(arg))
        }
        if dim % 2 == 1 { row[dim - 1] = 0 }
    }
}

/// 2-D sin-cos position embedding of a (gridH, gridW) patch grid: token (r, c) gets
/// [emb_{D/2}(c), emb_{D/2}(r)] (the first half encodes the column), where
/// emb_d(p) = [sin(p·ω_i), cos(p·ω_i)], ω_i = 10000^(-i/(d/2)), i < d/2. Returns (T, D).
public func sinCosPositionEmbedding2D(dim D: Int, gridH: Int, gridW: Int) -> Tensor {
    precondition(D % 4 == 0, "sinCosPositionEmbedding2D: dim \(D) must be divisible by 4")
    let out = Tensor(zeros: [gridH * gridW, D])
    let p = out.mutablePointer
    let quarter = D / 4
    for r in 0..<gridH {
        for c in 0..<gridW {
            let row = p + (r * gridW + c) * D
            for (base, pos) in [(0, c), (D / 2, r)] {
                for i in 0..<quarter {
                    let omega = 1 / pow(10000.0, Double(i) / Double(quarter))
                    row[base + i] = Float(sin(Double(pos) * omega))
                    row[base + quarter + i] = Float(cos(Double(pos) * omega))
                }
            }
        }
    }
    return out
}
