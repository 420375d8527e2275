import CGriditKernels
import Foundation
import GriditTensor
import Testing

// The linear-layer products on every backend this CPU has (OpenBLAS always; gridit's AVX-512 GEMM
// in fp32 and bf16 where supported) against the naive twin, on odd shapes, and the bit-identity
// properties the product relies on: a row's result does not depend on the thread count nor on the
// other rows of the call (the batch).

/// The OpenBLAS fallback, and this CPU's best backend.
let backends = Array(Set([KernelBackend.openBLAS, .current])).sorted()

struct ProductCase: CustomTestStringConvertible, Sendable {
    let backend: KernelBackend
    let precision: Precision
    var testDescription: String { "\(backend) \(precision)" }
}

let productCases: [ProductCase] = backends.flatMap { b in
    Precision.allCases.filter { $0.effective(on: b) == $0 }.map { ProductCase(backend: b, precision: $0) }
}

/// The naive product on the values the kernel sees: bf16-rounded inputs for bf16, then GELU.
func naiveLinear(
    _ x: [Float], _ w: [Float], _ b: [Float]?, M: Int, N: Int, K: Int, precision: Precision,
    gelu: Bool
) -> [Float] {
    let (xs, ws) = precision == .bf16 ? (x.map(Naive.bf16), w.map(Naive.bf16)) : (x, w)
    let y = Naive.linear(xs, ws, b, M: M, N: N, K: K)
    return gelu ? Naive.gelu(y) : y
}

func runLinear(
    _ x: [Float], rows M: Int, _ w: LinearWeight, gelu: Bool = false, segment: Int? = nil,
    workers: Int, backend: KernelBackend
) -> [Float] {
    let y = Tensor(zeros: [M, w.outFeatures])
    let ctx = ComputeContext(workers: workers, backend: backend)
    linear(x, rows: M, w, gelu: gelu, segment: segment ?? M, into: y.mutablePointer, context: ctx)
    return y.toArray()
}

@Test(arguments: productCases)
func linearLayerMatchesNaive(_ c: ProductCase) {
    // Odd sizes around the kernel's tile (8 x 48) and k-block (256 / 512) edges.
    for (M, N, K) in [(1, 1, 1), (7, 13, 5), (33, 17, 70), (3, 65, 129), (8, 48, 256), (17, 97, 513), (9, 50, 1030)] {
        let x = testValues(M * K, seed: 31, scale: 2), w = testValues(N * K, seed: 32), b = testValues(N, seed: 33)
        let layer = LinearWeight(
            weight: Tensor(w, shape: [N, K]), bias: Tensor(b, shape: [N]), precision: c.precision,
            backend: c.backend)
        #expect(layer.precision == c.precision)
        for gelu in [false, true] {
            let y = runLinear(x, rows: M, layer, gelu: gelu, workers: 2, backend: c.backend)
            let ref = naiveLinear(x, w, b, M: M, N: N, K: K, precision: c.precision, gelu: gelu)
            // fp32 accumulation of K products of values up to 2: rounding grows like sqrt(K).
            let tol = 2e-6 * Float(K).squareRoot() * 4
            #expect(maxAbsDiff(y, ref, "\(c) linear \(M)x\(N)x\(K) gelu \(gelu)") <= tol)
        }
    }
}

@Test(arguments: productCases)
func linearLayerBitsIgnoreThreadsAndOtherRows(_ c: ProductCase) {
    // 3 samples of 37 rows: sample 1 alone, at 1 thread, must give the bytes it gets inside the
    // batch at 3 threads (on the OpenBLAS backend through its per-sample row blocks).
    let (T, N, K) = (37, 101, 300)
    let x = testValues(3 * T * K, seed: 34), w = testValues(N * K, seed: 35), b = testValues(N, seed: 36)
    let layer = LinearWeight(
        weight: Tensor(w, shape: [N, K]), bias: Tensor(b, shape: [N]), precision: c.precision,
        backend: c.backend)
    let batch = runLinear(x, rows: 3 * T, layer, segment: T, workers: 3, backend: c.backend)
    let alone = runLinear(Array(x[(T * K)..<(2 * T * K)]), rows: T, layer, segment: T, workers: 1, backend: c.backend)
    #expect(Array(batch[(T * N)..<(2 * T * N)]).map(\.bitPattern) == alone.map(\.bitPattern))
    let two = runLinear(x, rows: 3 * T, layer, segment: T, workers: 2, backend: c.backend)
    #expect(two.map(\.bitPattern) == batch.map(\.bitPattern))
}

@Test(arguments: productCases)
func fusedLinearMatchesNaiveAndIgnoresRowCount(_ c: ProductCase) {
    // Three layers (output widths 5, 33, 64) over the same 6 rows of K = 45, as one product.
    let (M, K) = (6, 45)
    let widths = [5, 33, 64]
    let x = testValues(M * K, seed: 37, scale: 2)
    let raw = widths.enumerated().map { i, n in
        (testValues(n * K, seed: 40 + UInt64(i)), testValues(n, seed: 50 + UInt64(i)))
    }
    let layers = zip(widths, raw).map { n, wb in
        LinearWeight(weight: Tensor(wb.0, shape: [n, K]), bias: Tensor(wb.1, shape: [n]), backend: c.backend)
    }
    let fused = FusedLinear(layers, precision: c.precision, backend: c.backend)
    #expect(fused.outFeatures == 102 && fused.precision == c.precision)
    let ctx = ComputeContext(workers: 2, backend: c.backend)
    let y = Tensor(zeros: [M, fused.outFeatures])
    fused.apply(x, rows: M, into: y.mutablePointer, context: ctx)
    var offset = 0
    for (n, wb) in zip(widths, raw) {
        let ref = naiveLinear(x, wb.0, wb.1, M: M, N: n, K: K, precision: c.precision, gelu: false)
        let got = (0..<M).flatMap { m in
            y.toArray()[(m * fused.outFeatures + offset)..<(m * fused.outFeatures + offset + n)]
        }
        #expect(maxAbsDiff(got, ref, "\(c) fused layer of width \(n)") <= 2e-5)
        offset += n
    }
    // Row 4 alone gives the bytes it gets among 6 rows.
    let one = Tensor(zeros: [1, fused.outFeatures])
    let single = ComputeContext(workers: 1, backend: c.backend)
    fused.apply(Array(x[(4 * K)..<(5 * K)]), rows: 1, into: one.mutablePointer, context: single)
    #expect(
        Array(y.toArray()[(4 * fused.outFeatures)..<(5 * fused.outFeatures)]).map(\.bitPattern)
            == one.toArray().map(\.bitPattern))
}

@Test func bf16RoundingIsNearestEven() {
    // Exact halfway cases round to the even neighbour; the rest to the nearest.
    let cases: [(UInt32, UInt32)] = [
        (0x3F80_8000, 0x3F80_0000), (0x3F81_8000, 0x3F82_0000), (0x3F80_8001, 0x3F81_0000), (0x3F80_7FFF, 0x3F80_0000),
        (0xBF80_C000, 0xBF81_0000), (0x0000_0000, 0x0000_0000),
    ]
    for (input, expected) in cases {
        #expect(Naive.bf16(Float(bitPattern: input)).bitPattern == expected)
    }
}

@Test func precisionFallsBackWithoutBF16() {
    #expect(Precision.bf16.effective(on: .openBLAS) == .fp32)
    #expect(Precision.bf16.effective(on: .avx512) == .fp32)
    #expect(Precision.bf16.effective(on: .avx512BF16) == .bf16)
    #expect(Precision.fp32.effective(on: .avx512BF16) == .fp32)
    let layer = LinearWeight(weight: Tensor(zeros: [2, 3]), bias: nil, precision: .bf16, backend: .openBLAS)
    #expect(layer.precision == .fp32)
}

/// bf16 bit patterns held by an owner, as a bf16 checkpoint's mapping lends them.
final class BitsOwner {
    let bits: [UInt16]
    init(_ values: [Float]) { bits = values.map { UInt16(truncatingIfNeeded: Naive.bf16($0).bitPattern >> 16) } }
}

@Test(.enabled(if: KernelBackend.current.hasBF16, "bf16 bits are packed only where bf16 products run"))
func layersFromBF16BitsGiveTheBitsOfTheirFloatValues() {
    // Packed from the bits straight into the GEMM's bf16 panels, or copied by a FusedLinear: the
    // same products as the layer made from the float values (odd K, N past a 48-column panel).
    for (M, N, K) in [(3, 13, 5), (9, 50, 129), (17, 97, 1030)] {
        let x = testValues(M * K, seed: 41, scale: 2), w = testValues(N * K, seed: 42), b = testValues(N, seed: 43)
        let owner = BitsOwner(w)
        let fromFloats = LinearWeight(
            weight: Tensor(w, shape: [N, K]), bias: Tensor(b, shape: [N]), precision: .bf16, backend: .current)
        owner.bits.withUnsafeBufferPointer { bits in
            let bf16 = BF16Tensor(borrowing: bits.baseAddress!, shape: [N, K], owner: owner)
            let fromBits = LinearWeight(bf16: bf16, bias: Tensor(b, shape: [N]), backend: .current)
            #expect(fromBits.precision == .bf16 && fromBits.weight == nil)
            #expect(fromBits.packedByteCount == fromFloats.packedByteCount)
            let expected = runLinear(x, rows: M, fromFloats, workers: 2, backend: .current)
            #expect(runLinear(x, rows: M, fromBits, workers: 2, backend: .current) == expected, "\(M)x\(N)x\(K)")

            let ctx = ComputeContext(
                workers: 2, backend: .current, scratchBytes: FusedLinear.scratchBytes(rows: M, inFeatures: K))
            func fused(_ layer: LinearWeight) -> [Float] {
                let y = Tensor(zeros: [M, N])
                FusedLinear([layer], precision: .bf16).apply(x, rows: M, into: y.mutablePointer, context: ctx)
                return y.toArray()
            }
            let unpacked = LinearWeight(bf16: bf16, bias: Tensor(b, shape: [N]), backend: .current, pack: false)
            #expect(unpacked.packedByteCount == 0)
            #expect(
                fused(unpacked) == fused(LinearWeight(weight: Tensor(w, shape: [N, K]), bias: Tensor(b, shape: [N]))))
        }
    }
}

@Test(.enabled(if: gk_isa() >= GK_ISA_AVX512BF16))
func bf16ProductsOnFMAsGiveTheBitsOfVDPBF16PS() {
    // The FMA form (widened operands, each pair's odd k first, DAZ|FTZ) against VDPBF16PS itself,
    // with B pre-packed and not, biases and GELU; row 0 against column 0 sums products below the
    // normal range, which VDPBF16PS flushes to zero. Run on every CPU with VDPBF16PS, not only
    // where the FMA form is the default (Intel): that AMD's VDPBF16PS (Zen 4) gives these bits
    // too is what lets the bf16 products give the same bits on either vendor's CPUs.
    for (M, N, K) in [(1, 1, 1), (7, 13, 5), (33, 17, 70), (17, 97, 513), (100, 300, 777)] {
        var x = testValues(M * K, seed: 60, scale: 2), w = testValues(N * K, seed: 61)
        let b = testValues(N, seed: 62)
        for k in 0..<K {
            x[k] *= 1e-30
            w[k] *= 1e-9
        }
        let packed = UnsafeMutableRawPointer.allocate(byteCount: max(1, gk_packed_b_bytes(N, K, 1)), alignment: 64)
        defer { packed.deallocate() }
        #expect(gk_pack_b(w, K, N, K, 1, packed, 2) == 0)
        func run(_ kernel: Int32, packedB: Bool, bias: Bool, gelu: Bool, workers: Int32) -> [UInt32] {
            var y = [Float](repeating: 0, count: M * N)
            let bytes = gk_gemm_scratch_bytes(M, K, 1, 0, workers)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes), alignment: 64)
            defer { scratch.deallocate() }
            x.withUnsafeBufferPointer { xp in
                w.withUnsafeBufferPointer { wp in
                    b.withUnsafeBufferPointer { bp in
                        y.withUnsafeMutableBufferPointer { yp in
                            var g = gk_gemm_args()
                            (g.M, g.N, g.K, g.bf16, g.bf16_kernel) = (M, N, K, 1, kernel)
                            (g.a, g.lda, g.b, g.ldb) = (xp.baseAddress, K, wp.baseAddress, K)
                            g.b_packed = packedB ? UnsafeRawPointer(packed) : nil
                            (g.c, g.ldc, g.gelu) = (yp.baseAddress, N, gelu ? 1 : 0)
                            g.bias_n = bias ? bp.baseAddress : nil
                            gk_gemm(&g, scratch, workers)
                        }
                    }
                }
            }
            return y.map(\.bitPattern)
        }
        for (bias, gelu) in [(false, false), (true, true)] {
            let reference = run(Int32(GK_BF16_DPBF16), packedB: true, bias: bias, gelu: gelu, workers: 2)
            #expect(run(Int32(GK_BF16_FMA), packedB: true, bias: bias, gelu: gelu, workers: 2) == reference)
            #expect(run(Int32(GK_BF16_FMA), packedB: false, bias: bias, gelu: gelu, workers: 1) == reference)
            #expect(run(Int32(GK_BF16_AUTO), packedB: true, bias: bias, gelu: gelu, workers: 3) == reference)
        }
    }
}

@Test(.enabled(if: gk_isa() >= GK_ISA_AVX512BF16))
func bf16ProductsBelowTheNormalRangeAddedToASmallNormalSum() {
    // The corner the test above leaves out: products below the normal range (2^-130) added to a
    // running sum that is a normal number (2^-126). VDPBF16PS keeps them (only a denormal result is
    // flushed), and so must the FMA form: 2^-126 + 6 · 2^-130 either way.
    let K = 8
    var x = [Float](repeating: 0, count: K), w = [Float](repeating: 0, count: K)
    (x[0], w[0]) = (Float(bitPattern: 0x2000_0000), Float(bitPattern: 0x2000_0000))  // 2^-63 · 2^-63 = 2^-126
    for k in 2..<K { (x[k], w[k]) = (Float(bitPattern: 0x1C80_0000), Float(bitPattern: 0x2180_0000)) }  // 2^-70 · 2^-60
    func run(_ kernel: Int32) -> UInt32 {
        var y: Float = 0
        let scratch = UnsafeMutableRawPointer.allocate(
            byteCount: max(1, gk_gemm_scratch_bytes(1, K, 1, 0, 1)), alignment: 64)
        defer { scratch.deallocate() }
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                withUnsafeMutablePointer(to: &y) { yp in
                    var g = gk_gemm_args()
                    (g.M, g.N, g.K, g.bf16, g.bf16_kernel) = (1, 1, K, 1, kernel)
                    (g.a, g.lda, g.b, g.ldb, g.c, g.ldc) = (xp.baseAddress, K, wp.baseAddress, K, yp, 1)
                    gk_gemm(&g, scratch, 1)
                }
            }
        }
        return y.bitPattern
    }
    let dp = run(Int32(GK_BF16_DPBF16)), fma = run(Int32(GK_BF16_FMA))
    print("sum \(Float(bitPattern: dp)) (VDPBF16PS) vs \(Float(bitPattern: fma)) (FMA form); product \(x[2] * w[2])")
    #expect(dp == fma)
}
