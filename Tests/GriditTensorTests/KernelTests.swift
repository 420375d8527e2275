import CGriditKernels
import Foundation
import GriditTensor
import Testing

// Each optimized kernel against its naive twin, on odd shapes (not multiples of any vector width).

@Test(arguments: [(1, 1, 1), (7, 13, 5), (33, 17, 70), (3, 65, 129)])
func linearMatchesNaive(shape: (Int, Int, Int)) {
    let (M, N, K) = shape
    let x = testValues(M * K, seed: 1), w = testValues(N * K, seed: 2), b = testValues(N, seed: 3)
    let y = Tensor(zeros: [M, N])
    linear(Tensor(x, shape: [M, K]), weight: Tensor(w, shape: [N, K]), bias: Tensor(b, shape: [N]), into: y)
    #expect(maxAbsDiff(y.toArray(), Naive.linear(x, w, b, M: M, N: N, K: K), "linear \(shape)") <= 1e-5)
    let y0 = Tensor(zeros: [M, N])
    linear(Tensor(x, shape: [M, K]), weight: Tensor(w, shape: [N, K]), bias: nil, into: y0)
    #expect(maxAbsDiff(y0.toArray(), Naive.linear(x, w, nil, M: M, N: N, K: K), "linear no bias \(shape)") <= 1e-5)
}

/// The DiT's row passes over a batch: N samples of T rows, each with its own modulation vectors at
/// offsets of a (N, W) mod matrix; with and without the gated residual.
@Test(arguments: [(1, 1, 4), (2, 70, 12), (3, 5, 1152), (2, 130, 37)])
func modulatedNormRowsMatchNaive(shape: (Int, Int, Int)) {
    let (N, T, D) = shape
    let W = 5 * D + 3  // gate at 1, shift at D + 2, scale at 3D + 3 (offsets not multiples of anything)
    let (gate, shift, scale) = (1, D + 2, 3 * D + 3)
    let x = testValues(N * T * D, seed: 4, scale: 3).map { $0 + 0.5 }, y = testValues(N * T * D, seed: 24)
    let mod = testValues(N * W, seed: 5)
    for withResidual in [false, true] {
        let xs = Tensor(x, shape: [N, T, D]), h = Tensor(zeros: [N, T, D])
        y.withUnsafeBufferPointer { yp in
            modulatedNormRows(
                xs.mutablePointer, residual: withResidual ? yp.baseAddress : nil, batch: N, tokens: T,
                dim: D, mod: mod, modStride: W, gate: gate, shift: shift, scale: scale, workers: 2,
                into: h.mutablePointer)
        }
        var refX: [Float] = [], refH: [Float] = []
        for n in 0..<N {
            let rows = Array(x[(n * T * D)..<((n + 1) * T * D)])
            let m = Array(mod[(n * W)..<((n + 1) * W)])
            let g = Array(m[gate..<(gate + D)]), sh = Array(m[shift..<(shift + D)]), sc = Array(m[scale..<(scale + D)])
            let xr = withResidual ? Naive.gateResidual(rows, Array(y[(n * T * D)..<((n + 1) * T * D)]), g, D: D) : rows
            refX += xr
            refH += Naive.layerNormModulate(xr, T: T, D: D, eps: 1e-6, shift: sh, scale: sc)
        }
        #expect(maxAbsDiff(xs.toArray(), refX, "residual \(shape)") <= 1e-6)
        #expect(maxAbsDiff(h.toArray(), refH, "modulated norm \(shape) residual \(withResidual)") <= 1e-5)
    }
}

@Test func layerNormOfConstantRowIsTheShift() {
    // Variance 0: the eps keeps it finite, and the result is exactly the shift.
    let D = 9
    let x = [Float](repeating: 7, count: D), mod = testValues(2 * D, seed: 1)
    let xs = Tensor(x, shape: [1, 1, D]), h = Tensor(zeros: [1, 1, D])
    modulatedNormRows(
        xs.mutablePointer, residual: nil, batch: 1, tokens: 1, dim: D, mod: mod, modStride: 2 * D,
        shift: 0, scale: D, workers: 1, into: h.mutablePointer)
    #expect(h.toArray() == Array(mod[0..<D]))
}

@Test func geluAndSiluMatchNaive() {
    // Wide range, odd count, including values where tanh/exp saturate.
    let x = testValues(1001, seed: 7, scale: 12) + [0, -0.0, 1e-8, -30, 30, 88, -88, 100, -100]
    let g = Tensor(x, shape: [x.count])
    geluTanh(g.mutablePointer, count: x.count)
    #expect(maxAbsDiff(g.toArray(), Naive.gelu(x), "gelu") <= 2e-6 * 100)
    let relErr = zip(g.toArray(), Naive.gelu(x)).map { abs($0 - $1) / max(1, abs($1)) }.max()!
    #expect(relErr <= 1e-6)
    let s = Tensor(zeros: [x.count])
    silu(x, count: x.count, into: s.mutablePointer)
    let sRel = zip(s.toArray(), Naive.silu(x)).map { abs($0 - $1) / max(1, abs($1)) }.max()!
    print("silu: max rel diff = \(sRel)")
    #expect(sRel <= 1e-6)
}

@Test(arguments: [(1, 5, 12, 3, 1), (2, 17, 40, 4, 2), (3, 9, 24, 2, 4), (1, 33, 72, 1, 3), (1, 150, 16, 2, 2)])
func attentionMatchesNaive(shape: (Int, Int, Int, Int, Int)) {
    let (N, T, D, NH, workers) = shape
    let qkv = testValues(N * T * 3 * D, seed: 9, scale: 2)
    let out = runAttention(qkv, N: N, T: T, D: D, NH: NH, workers: workers)
    #expect(maxAbsDiff(out, Naive.attention(qkv, N: N, T: T, D: D, NH: NH), "attention \(shape)") <= 1e-5)
}

func runAttention(
    _ qkv: [Float], N: Int, T: Int, D: Int, NH: Int, workers: Int, bf16: Bool = false,
    kernel: Int32 = Int32(GK_BF16_AUTO)
) -> [Float] {
    var out = [Float](repeating: 0, count: N * T * D)
    var scratch = [Float](
        repeating: 0, count: attentionScratchCount(batch: N, tokens: T, dim: D, heads: NH, workers: workers, bf16: bf16)
    )
    qkv.withUnsafeBufferPointer { p in
        let q = p.baseAddress!
        gk_attention(
            q, q + D, q + 2 * D, 3 * D, N, T, D, NH, &out, D, &scratch, Int32(workers), bf16 ? 1 : 0, kernel)
    }
    return out
}

@Test func attentionOfLongSequencesMatchesNaive() {
    // Several query tiles, a partial last tile and a partial last register tile of keys; large
    // scores, far from 0 after the scale.
    let (N, T, D, NH) = (1, 150, 32, 2)
    let qkv = testValues(N * T * 3 * D, seed: 21, scale: 3)
    let out = runAttention(qkv, N: N, T: T, D: D, NH: NH, workers: 2)
    #expect(maxAbsDiff(out, Naive.attention(qkv, N: N, T: T, D: D, NH: NH), "attention T=150") <= 1e-5)
}

/// The kernel takes up to 512 keys in one softmax chunk: 512 is one chunk, 513 a second chunk of
/// one key, 700 a second chunk that ends inside a register tile. Large scores so the running
/// maximum changes between chunks; head dim 20 is not a multiple of the vector width.
@Test(arguments: [512, 513, 700])
func attentionAcrossSoftmaxChunksMatchesNaive(tokens T: Int) {
    let (N, D, NH) = (1, 20, 1)
    let qkv = testValues(N * T * 3 * D, seed: 23, scale: 3)
    let out = runAttention(qkv, N: N, T: T, D: D, NH: NH, workers: 2)
    #expect(maxAbsDiff(out, Naive.attention(qkv, N: N, T: T, D: D, NH: NH), "attention T=\(T)") <= 1e-5)
}

@Test(arguments: [false, true])
func attentionOfASampleIsTheSameInAnyBatch(bf16: Bool) {
    let (T, D, NH) = (70, 24, 3)
    let qkv = testValues(3 * T * 3 * D, seed: 22)
    let batch = runAttention(qkv, N: 3, T: T, D: D, NH: NH, workers: 2, bf16: bf16)
    let second = runAttention(
        Array(qkv[(T * 3 * D)..<(2 * T * 3 * D)]), N: 1, T: T, D: D, NH: NH, workers: 1, bf16: bf16)
    #expect(Array(batch[(T * D)..<(2 * T * D)]).map(\.bitPattern) == second.map(\.bitPattern))
}

@Test(arguments: [false, true])
func attentionIsIdenticalForEveryWorkerCount(bf16: Bool) {
    let (N, T, D, NH) = (2, 19, 24, 3)
    let qkv = testValues(N * T * 3 * D, seed: 10)
    let results = [1, 2, 5].map { runAttention(qkv, N: N, T: T, D: D, NH: NH, workers: $0, bf16: bf16) }
    #expect(results[0].map(\.bitPattern) == results[1].map(\.bitPattern))
    #expect(results[1].map(\.bitPattern) == results[2].map(\.bitPattern))
}

/// bf16 attention against its naive twin (the same roundings, sums in double): what is left is
/// the fp32 sums and exp, far below the bf16 roundings' own effect (the distance to fp32 attention,
/// printed too). A weight that the fp32 exp puts on the other side of a bf16 rounding than the
/// double one moves an output by about 2⁻⁹ of a weight's share, about 1/T here: the tolerance is
/// 2e-3 / T. Odd head dims and key counts pad a pair; 700 and 701 keys take two softmax chunks.
@Test(arguments: [(1, 5, 12, 3), (2, 17, 42, 2), (1, 33, 72, 1), (1, 150, 64, 2), (1, 700, 20, 1), (1, 701, 20, 1)])
func bf16AttentionMatchesNaive(shape: (Int, Int, Int, Int)) {
    let (N, T, D, NH) = shape
    let qkv = testValues(N * T * 3 * D, seed: 24)
    let out = runAttention(qkv, N: N, T: T, D: D, NH: NH, workers: 2, bf16: true)
    let twin = maxAbsDiff(out, Naive.attention(qkv, N: N, T: T, D: D, NH: NH, bf16: true), "bf16 twin \(shape)")
    let fp32 = maxAbsDiff(out, Naive.attention(qkv, N: N, T: T, D: D, NH: NH), "bf16 against fp32 \(shape)")
    #expect(twin <= 2e-3 / Float(T))
    #expect(fp32 > 10 * twin)
}

/// The FMA form (rounded fp32 operands, each pair's odd element first, DAZ|FTZ) against VDPBF16PS,
/// bit for bit: odd and even head dims and key counts, two softmax chunks (the second ending on an
/// odd key), operands whose products (q, k) or values (v) are below the normal range, which
/// VDPBF16PS reads and flushes as 0, and a second chunk whose scores are hundreds larger, so that
/// the first chunk's sums are rescaled by exp(−87.3) (the exponential's clamp), many of them to
/// below the normal range, where both forms flush them before their products.
@Test(.enabled(if: gk_isa() >= GK_ISA_AVX512BF16))
func bf16AttentionOnFMAsGivesTheBitsOfVDPBF16PS() {
    for (N, T, D, NH) in [
        (1, 5, 12, 3), (2, 17, 42, 2), (1, 150, 64, 2), (1, 700, 20, 1), (1, 701, 20, 1), (3, 64, 96, 3),
    ] {
        for tiny in [nil, 1, 2, 3] as [Int?] {
            var qkv = testValues(N * T * 3 * D, seed: 25, scale: 3)
            if let part = tiny, part < 3 {  // 1: k near the normal range's end (products below it); 2: v below it
                for i in qkv.indices where (i / D) % 3 == part && i % 3 == 0 {
                    qkv[i] *= part == 1 ? 1e-38 : Float.leastNormalMagnitude / 16
                }
            }
            if tiny == 3 {  // keys past the first chunk (512) 100 times larger
                for i in qkv.indices where (i / D) % 3 == 1 && (i / (3 * D)) % T >= 512 { qkv[i] *= 100 }
            }
            let dp = runAttention(qkv, N: N, T: T, D: D, NH: NH, workers: 2, bf16: true, kernel: Int32(GK_BF16_DPBF16))
            let fma = runAttention(qkv, N: N, T: T, D: D, NH: NH, workers: 2, bf16: true, kernel: Int32(GK_BF16_FMA))
            #expect(
                dp.map(\.bitPattern) == fma.map(\.bitPattern), "\((N, T, D, NH)), tiny part \(String(describing: tiny))"
            )
        }
    }
}

/// The DiT's patch embedding: patchify, then a linear layer over the flattened (D, C, P, P) weight.
func patchEmbed(
    _ x: Tensor, patch P: Int, weight: Tensor, bias: Tensor,
    patches: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>
) {
    patchify(x, patch: P, into: patches)
    let rows = x.shape[0] * (x.shape[2] / P) * (x.shape[3] / P)
    linear(
        patches, rows: rows, weight: weight.reshaped([weight.shape[0], weight.count / weight.shape[0]]), bias: bias,
        into: out)
}

@Test(arguments: [(1, 3, 6, 6, 2, 5), (2, 4, 8, 8, 4, 7), (1, 8, 16, 16, 8, 3), (2, 1, 4, 12, 2, 6)])
func patchEmbedMatchesNaive(shape: (Int, Int, Int, Int, Int, Int)) {
    let (N, C, H, W, P, D) = shape
    let x = testValues(N * C * H * W, seed: 11), w = testValues(D * C * P * P, seed: 12), b = testValues(D, seed: 13)
    let T = (H / P) * (W / P)
    let out = Tensor(zeros: [N, T, D]), patches = Tensor(zeros: [N * T, C * P * P])
    patchEmbed(
        Tensor(x, shape: [N, C, H, W]), patch: P, weight: Tensor(w, shape: [D, C, P, P]),
        bias: Tensor(b, shape: [D]), patches: patches.mutablePointer, into: out.mutablePointer)
    let ref = Naive.patchEmbed(x, w, b, N: N, C: C, H: H, W: W, P: P, D: D)
    #expect(maxAbsDiff(out.toArray(), ref, "patchEmbed \(shape)") <= 1e-5)
}

@Test(arguments: [(1, 2, 3, 2, 5), (2, 4, 4, 4, 3), (1, 1, 2, 8, 8)])
func unpatchifyMatchesNaive(shape: (Int, Int, Int, Int, Int)) {
    let (N, h, w, P, C) = shape
    let tok = testValues(N * h * w * P * P * C, seed: 14)
    let out = Tensor(zeros: [N, C, h * P, w * P])
    unpatchify(tok, batch: N, gridH: h, gridW: w, patch: P, channels: C, into: out.mutablePointer)
    #expect(out.toArray() == Naive.unpatchify(tok, N: N, h: h, w: w, P: P, C: C))
}

@Test func patchEmbedThenUnpatchifyOrderAgree() {
    // With an identity projection, patchify followed by unpatchify must give back the image when the
    // token vector order (c, pi, pj) is converted to (pi, pj, c): a check that both use row-major patches.
    let (N, C, S, P) = (1, 2, 4, 2)
    let D = C * P * P
    var eye = [Float](repeating: 0, count: D * D)
    for i in 0..<D { eye[i * D + i] = 1 }
    let x = testValues(N * C * S * S, seed: 15)
    let T = (S / P) * (S / P)
    let tokens = Tensor(zeros: [N, T, D]), patches = Tensor(zeros: [N * T, D])
    patchEmbed(
        Tensor(x, shape: [N, C, S, S]), patch: P, weight: Tensor(eye, shape: [D, C, P, P]),
        bias: Tensor(zeros: [D]), patches: patches.mutablePointer, into: tokens.mutablePointer)
    var reordered = [Float](repeating: 0, count: N * T * D)  // (c, pi, pj) -> (pi, pj, c)
    let tk = tokens.toArray()
    for t in 0..<T {
        for c in 0..<C { for q in 0..<(P * P) { reordered[t * D + q * C + c] = tk[t * D + c * P * P + q] } }
    }
    let back = Tensor(zeros: [N, C, S, S])
    unpatchify(reordered, batch: N, gridH: S / P, gridW: S / P, patch: P, channels: C, into: back.mutablePointer)
    #expect(back.toArray() == x)
}

@Test func expPolynomialIsAccurate() {
    let x = testValues(4097, seed: 16, scale: 87)
    let out = [Float](unsafeUninitializedCapacity: x.count) { buf, n in
        exponential(x, count: x.count, into: buf.baseAddress!)
        n = x.count
    }
    let rel = zip(out, x).map { abs(Double($0) - exp(Double($1))) / exp(Double($1)) }.max()!
    print("exp: max rel diff = \(rel)")
    #expect(rel <= 5e-7)
}

@Test func timestepEmbeddingIsCosFirst() {
    let out = Tensor(zeros: [2, 256])
    timestepEmbedding([0, 999], into: out.mutablePointer)
    let v = out.toArray()
    #expect(v[0..<128].allSatisfy { $0 == 1 } && v[128..<256].allSatisfy { $0 == 0 })  // t = 0: cos = 1, sin = 0
    // Frequency i = 1 at t = 999: cos(999 * exp(-ln(1e4)/128)).
    let f1 = exp(-log(10000.0) / 128)
    #expect(abs(Double(v[256 + 1]) - cos(999 * f1)) < 1e-7)
    #expect(abs(Double(v[256 + 129]) - sin(999 * f1)) < 1e-7)
}

@Test func positionEmbeddingFirstHalfEncodesColumn() {
    let pe = sinCosPositionEmbedding2D(dim: 8, gridH: 3, gridW: 2).toArray()  // (6, 8)
    // Token (r=2, c=1) is index 5: first half from column 1, second half from row 2.
    // d = 4 per half: [sin(p), sin(p/100), cos(p), cos(p/100)] with ω = 10000^(-i/2).
    let expected: [Double] = [sin(1), sin(0.01), cos(1), cos(0.01), sin(2), sin(0.02), cos(2), cos(0.02)]
    let got = Array(pe[40..<48]).map(Double.init)
    #expect(zip(got, expected).allSatisfy { abs($0 - $1) < 1e-7 })
}

@Test func tensorViewsShareStorage() {
    let t = Tensor((0..<12).map(Float.init), shape: [3, 4])
    let s = t.slice(1..<3).reshaped([8])
    #expect(s.toArray() == (4..<12).map(Float.init))
    s.mutablePointer[0] = 99
    #expect(t.toArray()[4] == 99)
    #expect(!t.isBorrowed)
}
