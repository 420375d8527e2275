import Foundation
import GriditTensor
import Testing

// Convolutions (gridit's GEMM with implicit im2col, and the OpenBLAS im2col fallback) and group
// norm against direct loops in double.

/// Direct convolution: x (N, Cin, H, W), w (Cout, Cin, KH, KW) -> (N, Cout, Ho, Wo).
func naiveConv(
    _ x: [Float], _ w: [Float], _ b: [Float], N: Int, Cin: Int, H: Int, W: Int, Cout: Int, K: Int,
    stride: Int, pad: ConvPadding, bf16: Bool = false
) -> (values: [Float], Ho: Int, Wo: Int) {
    let round: (Float) -> Float = { bf16 ? Naive.bf16($0) : $0 }
    let Ho = convOutputSize(H, kernel: K, stride: stride, padBefore: pad.top, padAfter: pad.bottom)
    let Wo = convOutputSize(W, kernel: K, stride: stride, padBefore: pad.left, padAfter: pad.right)
    var out = [Float](repeating: 0, count: N * Cout * Ho * Wo)
    for n in 0..<N {
        for co in 0..<Cout {
            for oy in 0..<Ho {
                for ox in 0..<Wo {
                    var s = Double(b[co])
                    for ci in 0..<Cin {
                        for ki in 0..<K {
                            for kj in 0..<K {
                                let iy = oy * stride + ki - pad.top, ix = ox * stride + kj - pad.left
                                if iy >= 0 && iy < H && ix >= 0 && ix < W {
                                    s +=
                                        Double(round(x[((n * Cin + ci) * H + iy) * W + ix]))
                                        * Double(round(w[((co * Cin + ci) * K + ki) * K + kj]))
                                }
                            }
                        }
                    }
                    out[((n * Cout + co) * Ho + oy) * Wo + ox] = Float(s)
                }
            }
        }
    }
    return (out, Ho, Wo)
}

@Test(arguments: productCases)
func convolutionMatchesNaive(_ c: ProductCase) {
    // Stride 1 and 2, the encoder's asymmetric downsample padding, 1x1, and an output row
    // (Wo = 53) longer than one 48-column tile, so tiles straddle output rows; odd and even Cin
    // (bf16: the im2col and the channel-pair paths), and Cin = 58 (K = 522 > one bf16 k block of
    // 512, which ends inside a tap) at stride 1 and 2.
    let configs: [(Int, Int, Int, Int, Int, Int, Int, ConvPadding)] = [
        (2, 3, 7, 6, 5, 3, 1, .same(1)), (2, 3, 7, 6, 5, 3, 2, .downsample), (1, 4, 9, 8, 3, 3, 2, .same(1)),
        (2, 5, 6, 7, 9, 1, 1, .same(0)), (1, 2, 5, 53, 4, 3, 1, .same(1)), (2, 58, 5, 7, 9, 3, 1, .same(1)),
        (1, 58, 7, 6, 5, 3, 2, .downsample), (1, 6, 4, 50, 3, 1, 1, .same(0)),
    ]
    for (N, Cin, H, W, Cout, K, stride, pad) in configs {
        let x = testValues(N * Cin * H * W, seed: 61), w = testValues(Cout * Cin * K * K, seed: 62),
            b = testValues(Cout, seed: 63)
        let weight = ConvWeight(
            weight: Tensor(w, shape: [Cout, Cin, K, K]), bias: Tensor(b, shape: [Cout]),
            precision: c.precision, backend: c.backend)
        let ref = naiveConv(
            x, w, b, N: N, Cin: Cin, H: H, W: W, Cout: Cout, K: K, stride: stride, pad: pad,
            bf16: c.precision == .bf16)
        let ctx = ComputeContext(workers: 2, backend: c.backend)
        let out = conv2d(Tensor(x, shape: [N, Cin, H, W]), weight, stride: stride, padding: pad, context: ctx)
        #expect(out.shape == [N, Cout, ref.Ho, ref.Wo])
        // fp32 accumulation: the rounding error grows with the length of the dot products.
        let tolerance = 1e-5 * max(1, Float(Cin * K * K) / 100)
        #expect(maxAbsDiff(out.toArray(), ref.values, "\(c) conv \(Cin)->\(Cout) k\(K) s\(stride) \(pad)") <= tolerance)
        // Accumulating into an existing output adds the convolution to it.
        let base = Tensor(testValues(out.count, seed: 64), shape: out.shape)
        let sum = base.copy()
        conv2d(
            Tensor(x, shape: [N, Cin, H, W]), weight, stride: stride, padding: pad, into: sum, accumulate: true,
            context: ctx)
        let expected = zip(base.toArray(), ref.values).map { $0 + $1 }
        #expect(maxAbsDiff(sum.toArray(), expected, "\(c) conv accumulate") <= tolerance)
    }
}

@Test func blasConvolutionTilesMatchNaive() {
    // The fallback's row tiling (a column budget of 1 gives one output row per tile).
    let (N, Cin, H, W, Cout) = (2, 3, 7, 6, 5)
    let x = testValues(N * Cin * H * W, seed: 65), w = testValues(Cout * Cin * 9, seed: 66),
        b = testValues(Cout, seed: 67)
    for (stride, pad) in [(1, ConvPadding.same(1)), (2, ConvPadding.downsample)] {
        let ref = naiveConv(x, w, b, N: N, Cin: Cin, H: H, W: W, Cout: Cout, K: 3, stride: stride, pad: pad)
        let out = Tensor(zeros: [N, Cout, ref.Ho, ref.Wo])
        conv2dBLAS(
            Tensor(x, shape: [N, Cin, H, W]), weight: Tensor(w, shape: [Cout, Cin, 3, 3]),
            bias: Tensor(b, shape: [Cout]),
            stride: stride, padding: pad, into: out, columnBudget: 1, workers: 2)
        #expect(maxAbsDiff(out.toArray(), ref.values, "BLAS conv tiled s\(stride)") <= 1e-5)
    }
}

@Test(arguments: productCases)
func convolutionBitsIgnoreThreadsAndBatch(_ c: ProductCase) {
    let (Cin, H, W, Cout) = (6, 11, 13, 7)
    let x = testValues(3 * Cin * H * W, seed: 68), w = testValues(Cout * Cin * 9, seed: 69)
    let weight = ConvWeight(
        weight: Tensor(w, shape: [Cout, Cin, 3, 3]), bias: nil, precision: c.precision, backend: c.backend)
    let batch = conv2d(
        Tensor(x, shape: [3, Cin, H, W]), weight, padding: .same(1),
        context: ComputeContext(workers: 3, backend: c.backend)
    ).toArray()
    let alone = conv2d(
        Tensor(Array(x[(Cin * H * W)..<(2 * Cin * H * W)]), shape: [1, Cin, H, W]), weight,
        padding: .same(1), context: ComputeContext(workers: 1, backend: c.backend)
    ).toArray()
    #expect(Array(batch[(Cout * H * W)..<(2 * Cout * H * W)]).map(\.bitPattern) == alone.map(\.bitPattern))
}

@Test(arguments: [false, true])
func groupNormMatchesNaive(silu: Bool) {
    let (N, C, H, W, G) = (2, 6, 5, 7, 3)
    let x = testValues(N * C * H * W, seed: 70, scale: 3).map { $0 + 0.7 }
    let weight = testValues(C, seed: 71), bias = testValues(C, seed: 72)
    let out = Tensor(zeros: [N, C, H, W])
    groupNorm(
        Tensor(x, shape: [N, C, H, W]), groups: G, weight: Tensor(weight, shape: [C]), bias: Tensor(bias, shape: [C]),
        silu: silu, into: out, workers: 2)
    let ref = Naive.groupNorm(x, N: N, C: C, plane: H * W, groups: G, weight: weight, bias: bias, eps: 1e-6, silu: silu)
    #expect(maxAbsDiff(out.toArray(), ref, "groupNorm silu \(silu)") <= 1e-5)
}

@Test(arguments: [false, true])
func groupNormIntoChannelPairsIsRoundedGroupNorm(silu: Bool) {
    guard KernelBackend.current == .avx512BF16 else { return }
    // 3 groups of 4 channels (pairs within a group), a plane longer than the kernel's 512-value chunk.
    let (N, C, H, W, G) = (2, 12, 9, 61, 3)
    let x = Tensor(testValues(N * C * H * W, seed: 73, scale: 3).map { $0 + 0.7 }, shape: [N, C, H, W])
    let weight = Tensor(testValues(C, seed: 74), shape: [C]), bias = Tensor(testValues(C, seed: 75), shape: [C])
    let full = Tensor(zeros: x.shape)
    groupNorm(x, groups: G, weight: weight, bias: bias, silu: silu, into: full, workers: 2)
    let pairs = ChannelPairs()
    groupNorm(x, groups: G, weight: weight, bias: bias, silu: silu, into: pairs, workers: 3)
    #expect(pairs.shape == x.shape)
    #expect(pairs.toTensor().toArray().map(\.bitPattern) == full.toArray().map { Naive.bf16($0).bitPattern })
    // A bf16 convolution of the pairs has the bits of the convolution of the fp32 image.
    let w = ConvWeight(
        weight: Tensor(testValues(5 * C * 9, seed: 76), shape: [5, C, 3, 3]),
        bias: Tensor(testValues(5, seed: 77), shape: [5]), precision: .bf16)
    #expect(w.acceptsPairs)
    let ctx = ComputeContext(workers: 2)
    let direct = conv2d(full, w, padding: .same(1), context: ctx)
    let viaPairs = Tensor(zeros: direct.shape)
    conv2d(pairs, w, padding: .same(1), into: viaPairs, context: ctx)
    #expect(viaPairs.toArray().map(\.bitPattern) == direct.toArray().map(\.bitPattern))
}

@Test func upsampleIntoChannelPairsIsRoundedUpsample() {
    guard KernelBackend.current == .avx512BF16 else { return }
    // A row (W = 261) longer than the kernel's 256-value chunk, and an odd remainder.
    let (N, C, H, W) = (2, 4, 3, 261)
    let x = Tensor(testValues(N * C * H * W, seed: 78, scale: 2), shape: [N, C, H, W])
    let up = Tensor(zeros: [N, C, 2 * H, 2 * W])
    upsampleNearest2x(x, into: up)
    let pairs = ChannelPairs()
    upsampleNearest2x(x, into: pairs, workers: 3)
    #expect(pairs.shape == up.shape)
    #expect(pairs.toTensor().toArray().map(\.bitPattern) == up.toArray().map { Naive.bf16($0).bitPattern })
}
