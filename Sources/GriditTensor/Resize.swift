// Bicubic resizing, the stage-2 condition: PyTorch `F.interpolate(mode="bicubic",
// align_corners=False)` (Keys' cubic with a = −0.75, source indices clamped at the edges), so the
// training tools and the engine produce the same condition. Naive twin:
// Tests/GriditTensorTests/ResizeTests.swift.

import Glibc

/// Taps of one output coordinate: four edge-clamped source indices and their weights.
struct CubicTaps {
    var index: (Int, Int, Int, Int)
    var weight: (Float, Float, Float, Float)

    /// Output coordinate `o` of `outSize` from `inSize` source samples, computed in float as PyTorch
    /// does: src = (in/out)·(o + ½) − ½ (no clamp at 0), i = min(⌊src⌋, in − 1),
    /// t = clamp(src − i, 0, 1), weights W(t + 1), W(t), W(1 − t), W(2 − t).
    init(output o: Int, outSize: Int, inSize: Int) {
        let a: Float = -0.75
        let scale = Float(inSize) / Float(outSize)
        let real = scale * (Float(o) + 0.5) - 0.5
        let i = min(Int(floorf(real)), inSize - 1)
        let t = min(max(real - Float(i), 0), 1)
        // |x| <= 1: ((a + 2)x − (a + 3))x² + 1;  1 < |x| < 2: ((ax − 5a)x + 8a)x − 4a.
        func near(_ x: Float) -> Float { ((a + 2) * x - (a + 3)) * x * x + 1 }
        func far(_ x: Float) -> Float { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
        func clamp(_ j: Int) -> Int { min(max(j, 0), inSize - 1) }
        index = (clamp(i - 1), clamp(i), clamp(i + 1), clamp(i + 2))
        weight = (far(t + 1), near(t), near(1 - t), far(2 - t))
    }

    @inline(__always)
    func apply(_ p: UnsafePointer<Float>, stride s: Int) -> Float {
        p[index.0 * s] * weight.0 + p[index.1 * s] * weight.1 + p[index.2 * s] * weight.2 + p[index.3 * s] * weight.3
    }
}

/// Bicubic resize of every plane: x (N, C, H, W) → out (N, C, H', W') (sizes from `out`).
///
/// Separable: each source row is interpolated along W first, then the rows along H, which is the
/// same arithmetic, in the same order, as PyTorch's per-pixel loop (4 row interpolations, then 1
/// column interpolation), since a row's interpolation does not depend on the output row.
public func resizeBicubic(_ x: Tensor, into out: Tensor) {
    precondition(
        x.rank == 4 && out.rank == 4 && x.shape[0] == out.shape[0] && x.shape[1] == out.shape[1],
        "resizeBicubic: x \(x.shape) -> out \(out.shape)")
    let (N, C, H, W) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (OH, OW) = (out.shape[2], out.shape[3])
    precondition(H >= 1 && W >= 1 && OH >= 1 && OW >= 1, "resizeBicubic: empty plane \(x.shape) -> \(out.shape)")
    let columns = (0..<OW).map { CubicTaps(output: $0, outSize: OW, inSize: W) }
    let rows = (0..<OH).map { CubicTaps(output: $0, outSize: OH, inSize: H) }
    let wide = UnsafeMutablePointer<Float>.allocate(capacity: H * OW)  // (H, W') of one plane
    defer { wide.deallocate() }
    for plane in 0..<(N * C) {
        let src = x.pointer + plane * H * W, dst = out.mutablePointer + plane * OH * OW
        for y in 0..<H {
            for (ox, taps) in columns.enumerated() { wide[y * OW + ox] = taps.apply(src + y * W, stride: 1) }
        }
        for (oy, taps) in rows.enumerated() {
            for ox in 0..<OW { dst[oy * OW + ox] = taps.apply(wide + ox, stride: OW) }
        }
    }
}
