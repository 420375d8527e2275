import CBLAS
import CGriditKernels
import Dispatch
import Glibc

// Kernels over contiguous float32 tensors. Output is passed last (`into:`) and is overwritten.
// Every kernel here has a naive twin in Tests/GriditTensorTests/NaiveKernels.swift.

public enum BLAS {
    /// Threads OpenBLAS uses for one product. Set explicitly: never left implicit.
    public static func setThreadCount(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var threadCount: Int { Int(openblas_get_num_threads()) }

    /// Runs `body` holding the process-wide compute lock, with OpenBLAS set to `threads` threads.
    ///
    /// OpenBLAS' thread count is one global setting. A forward pass changes it (attention runs
    /// single-threaded products on several workers) and relies on it, so passes hold this lock:
    /// two passes at once would only fight over the same cores anyway. The lock is recursive, so
    /// kernels that need it can take it again inside a pass.
    public static func exclusive<T>(threads: Int, _ body: () throws -> T) rethrows -> T {
        computeLock.lock()
        defer { computeLock.unlock() }
        let saved = threadCount
        if saved != threads { setThreadCount(threads) }
        defer { if saved != threads { setThreadCount(saved) } }
        return try body()
    }

    private static let computeLock = RecursiveMutex()
}

/// A recursive pthread mutex (GriditTensor does not link Foundation).
final class RecursiveMutex: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_settype(&attr, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(mutex, &attr)
        pthread_mutexattr_destroy(&attr)
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }
}

/// y = x · Wᵀ + b (PyTorch `nn.Linear`), with W in PyTorch's (out, in) layout used in place.
/// x: (M, K) rows; weight: (N, K); bias: (N) or nil; y: (M, N).
public func linear(_ x: UnsafePointer<Float>, rows M: Int, weight: Tensor, bias: Tensor?,
                   into y: UnsafeMutablePointer<Float>) {
    precondition(weight.rank == 2, "linear: weight must be (out, in), got \(weight.shape)")
    let N = weight.shape[0], K = weight.shape[1]
    var beta: Float = 0
    if let bias {
        precondition(bias.count == N, "linear: bias \(bias.shape) vs weight \(weight.shape)")
        gk_fill_rows(y, bias.pointer, M, N)
        beta = 1
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(N), Int32(K),
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
/// Call with OpenBLAS at one thread (`BLAS.exclusive(threads: 1)`).
public func linearRows(_ x: UnsafePointer<Float>, rows M: Int, segment: Int, weight: Tensor, bias: Tensor?,
                       workers: Int, into y: UnsafeMutablePointer<Float>) {
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

/// Runs `body(item, worker)` for items 0..<count, item i on worker i % workers, on
/// min(workers, count) threads; returns when all are done. The schedules built on it (row blocks,
/// attention tiles, convolution tiles) fix their items independently of `workers`, so their
/// results do not depend on it; `worker` indexes per-thread scratch.
public func parallelItems(_ count: Int, workers: Int, _ body: (_ item: Int, _ worker: Int) -> Void) {
    let workers = max(1, min(workers, count))
    guard workers > 1 else {
        for item in 0..<count { body(item, 0) }
        return
    }
    withoutActuallyEscaping(body) { body in
        // Items write disjoint outputs; the body only has to outlive this call, which it does.
        nonisolated(unsafe) let body = body
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            var item = worker
            while item < count {
                body(item, worker)
                item += workers
            }
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

/// Layer norm without affine over the last dim, then `x*(1+scale)+shift` when given.
/// x, out: (T, D); shift, scale: pointers to (D) or nil.
public func layerNormModulate(_ x: UnsafePointer<Float>, rows T: Int, dim D: Int, eps: Float = 1e-6,
                              shift: UnsafePointer<Float>?, scale: UnsafePointer<Float>?,
                              into out: UnsafeMutablePointer<Float>) {
    gk_layernorm_modulate(out, x, shift, scale, T, D, eps)
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

/// Row-wise softmax of `scale * x`, in place. x: (rows, cols) with row stride `ld`.
public func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ld: Int? = nil, scale: Float = 1) {
    gk_softmax_rows(x, rows, cols, ld ?? cols, scale)
}

/// x += gate ⊙ y, gate broadcast over rows. x, y: (T, D); gate: (D).
public func gateResidual(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, gate: UnsafePointer<Float>,
                         rows T: Int, dim D: Int) {
    gk_gate_residual(x, y, gate, T, D)
}

/// Query rows per attention tile: a (rows, T) block of scores stays in L2 (96 x 1024 floats = 384 KB
/// of the 512 KB L2 measured on). Changing it changes output bits.
public let attentionRowTile = 96

/// Floats of scratch that the attention kernels need for `workers` threads over T tokens.
public func attentionScratchCount(tokens T: Int, workers: Int) -> Int { max(1, workers) * attentionRowTile * (T + 1) }

/// Multi-head self-attention over packed projections: qkv (N, T, 3D) laid out [q | k | v] per
/// token, each (NH, HD) head-major within D (timm's layout); out: (N, T, D), heads concatenated.
public func selfAttention(qkv: UnsafePointer<Float>, batch N: Int, tokens T: Int, dim D: Int, heads NH: Int,
                          workers: Int, scores: Tensor, into out: UnsafeMutablePointer<Float>) {
    attention(q: qkv, k: qkv + D, v: qkv + 2 * D, rowStride: 3 * D, batch: N, tokens: T, dim: D, heads: NH,
              workers: workers, scores: scores, into: out)
}

/// softmax(q kᵀ / sqrt(HD)) v for each (batch element, head). q, k, v: (N, T, D) views whose
/// token rows are `rowStride` floats apart (D for separate tensors, 3D inside a packed qkv);
/// scores: scratch of at least `attentionScratchCount(tokens:workers:)` floats; out: (N, T, D).
///
/// Work items are (n, head, tile of `attentionRowTile` query rows), spread over `workers` threads,
/// each running single-threaded GEMMs: the products are thin (K = HD), which OpenBLAS splits across
/// threads poorly, and a tile's scores stay in cache between the two products and the softmax.
/// Every item writes its own rows and columns of `out`, and its arithmetic does not depend on the
/// split, so the result is the same for every worker count.
public func attention(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, rowStride ld: Int,
                      batch N: Int, tokens T: Int, dim D: Int, heads NH: Int, workers: Int, scores: Tensor,
                      into out: UnsafeMutablePointer<Float>) {
    precondition(D % NH == 0, "attention: dim \(D) not divisible by heads \(NH)")
    precondition(scores.count >= attentionScratchCount(tokens: T, workers: workers),
                 "attention: scratch of \(scores.count) floats, need \(attentionScratchCount(tokens: T, workers: workers))")
    let HD = D / NH
    let scale = 1 / Float(HD).squareRoot()
    let tiles = (T + attentionRowTile - 1) / attentionRowTile
    let scratch = scores.mutablePointer
    BLAS.exclusive(threads: 1) {
        parallelItems(N * NH * tiles, workers: workers) { item, worker in
            let (n, h, tile) = (item / (NH * tiles), item / tiles % NH, item % tiles)
            let s = scratch + worker * attentionRowTile * (T + 1)
            let sums = s + attentionRowTile * T
            let r0 = tile * attentionRowTile
            let rows = min(attentionRowTile, T - r0)
            let head = n * T * ld + h * HD
            // scores (rows, T) = q[r0 ..< r0+rows] (rows, HD) · kᵀ
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(T), Int32(HD),
                        1, q + head + r0 * ld, Int32(ld), k + head, Int32(ld), 0, s, Int32(T))
            // Unnormalised softmax; its row sums divide the (rows, HD) output, not the (rows, T) scores.
            gk_softmax_rows_unnormalized(s, rows, T, T, scale, sums)
            // out[n, r0 ..< r0+rows, h*HD ..< (h+1)*HD] (rows, HD) = scores (rows, T) · v (T, HD)
            let o = out + (n * T + r0) * D + h * HD
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(HD), Int32(T),
                        1, s, Int32(T), v + head, Int32(ld), 0, o, Int32(D))
            gk_divide_rows(o, sums, rows, HD, D)
        }
    }
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
public func unpatchify(_ tokens: UnsafePointer<Float>, batch N: Int, gridH h: Int, gridW w: Int, patch P: Int,
                       channels C: Int, into out: UnsafeMutablePointer<Float>) {
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
public func timestepEmbedding(_ t: [Float], dim: Int = 256, maxPeriod: Double = 10000,
                              into out: UnsafeMutablePointer<Float>) {
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
