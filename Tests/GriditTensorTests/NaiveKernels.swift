import Foundation
import GriditTensor

// Naive twins of the optimized kernels: plain loops in double precision, written straight from the
// definitions, as the reference that the optimized kernels are checked against.

enum Naive {
    /// y (M, N) = x (M, K) · wᵀ (w: (N, K)) + b
    static func linear(_ x: [Float], _ w: [Float], _ b: [Float]?, M: Int, N: Int, K: Int) -> [Float] {
        var y = [Float](repeating: 0, count: M * N)
        for m in 0..<M {
            for n in 0..<N {
                var acc = Double(b?[n] ?? 0)
                for k in 0..<K { acc += Double(x[m * K + k]) * Double(w[n * K + k]) }
                y[m * N + n] = Float(acc)
            }
        }
        return y
    }

    /// The value bf16 keeps of x: round to nearest even on the 16 high bits.
    static func bf16(_ x: Float) -> Float {
        let u = x.bitPattern
        let rounded = (u &+ 0x7FFF &+ ((u >> 16) & 1)) & 0xFFFF_0000
        return Float(bitPattern: rounded)
    }

    /// Group norm of (N, C, plane) in double, optionally followed by SiLU.
    static func groupNorm(
        _ x: [Float], N: Int, C: Int, plane: Int, groups G: Int, weight: [Float], bias: [Float],
        eps: Double, silu: Bool
    ) -> [Float] {
        var out = x
        let per = C / G
        for n in 0..<N {
            for g in 0..<G {
                let range = ((n * C + g * per) * plane)..<((n * C + (g + 1) * per) * plane)
                let v = range.map { Double(x[$0]) }
                let mean = v.reduce(0, +) / Double(v.count)
                let variance = v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(v.count)
                for i in range {
                    let c = i / plane % C
                    var y = (Double(x[i]) - mean) / (variance + eps).squareRoot() * Double(weight[c]) + Double(bias[c])
                    if silu { y = y / (1 + exp(-y)) }
                    out[i] = Float(y)
                }
            }
        }
        return out
    }

    /// x[t, d] + gate[d] * y[t, d]
    static func gateResidual(_ x: [Float], _ y: [Float], _ gate: [Float], D: Int) -> [Float] {
        (0..<x.count).map { Float(Double(x[$0]) + Double(gate[$0 % D]) * Double(y[$0])) }
    }

    static func layerNormModulate(
        _ x: [Float], T: Int, D: Int, eps: Double, shift: [Float]?, scale: [Float]?
    ) -> [Float] {
        var out = x
        for t in 0..<T {
            let row = (0..<D).map { Double(x[t * D + $0]) }
            let mean = row.reduce(0, +) / Double(D)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(D)
            for d in 0..<D {
                var v = (row[d] - mean) / (variance + eps).squareRoot()
                if let shift, let scale { v = v * (1 + Double(scale[d])) + Double(shift[d]) }
                out[t * D + d] = Float(v)
            }
        }
        return out
    }

    static func gelu(_ x: [Float]) -> [Float] {
        x.map { v in
            let d = Double(v)
            return Float(0.5 * d * (1 + tanh((2 / Double.pi).squareRoot() * (d + 0.044715 * d * d * d))))
        }
    }

    static func silu(_ x: [Float]) -> [Float] { x.map { Float(Double($0) / (1 + exp(-Double($0)))) } }

    /// qkv (N, T, 3D) -> (N, T, D), per head softmax(q kᵀ/sqrt(HD)) v.
    /// bf16: q · scale (in float), k, v and the softmax's weights rounded to bf16, the weights the
    /// kernel's way (chunks of `chunk` keys, each chunk's relative to the running max, the sums of
    /// the unrounded weights); everything else in double.
    static func attention(
        _ qkv: [Float], N: Int, T: Int, D: Int, NH: Int, bf16 rounded: Bool = false, chunk: Int = 512
    ) -> [Float] {
        let HD = D / NH
        let scale = 1 / Float(HD).squareRoot()
        var out = [Float](repeating: 0, count: N * T * D)
        for n in 0..<N {
            for h in 0..<NH {
                func at(_ t: Int, _ part: Int, _ i: Int) -> Double {
                    let x = qkv[(n * T + t) * 3 * D + part * D + h * HD + i]
                    return Double(rounded ? bf16(part == 0 ? x * scale : x) : x)
                }
                for i in 0..<T {
                    let s = (0..<T).map { j in
                        (0..<HD).reduce(0.0) { $0 + at(i, 0, $1) * at(j, 1, $1) }
                            / (rounded ? 1 : Double(HD).squareRoot())
                    }
                    var (m, l) = (-Double.infinity, 0.0)
                    var o = [Double](repeating: 0, count: HD)
                    for c0 in stride(from: 0, to: T, by: rounded ? chunk : T) {
                        let keys = c0..<min(T, c0 + (rounded ? chunk : T))
                        let mx = max(m, s[keys].max()!)
                        let alpha = exp(m - mx)
                        l *= alpha
                        for d in 0..<HD { o[d] *= alpha }
                        for j in keys {
                            let p = exp(s[j] - mx)
                            l += p
                            let w = rounded ? Double(bf16(Float(p))) : p
                            for d in 0..<HD { o[d] += w * at(j, 2, d) }
                        }
                        m = mx
                    }
                    for d in 0..<HD { out[(n * T + i) * D + h * HD + d] = Float(o[d] / l) }
                }
            }
        }
        return out
    }

    /// Conv2d with kernel = stride = P: x (N, C, H, W), w (D, C, P, P) -> tokens (N, T, D), row-major patches.
    static func patchEmbed(
        _ x: [Float], _ w: [Float], _ b: [Float], N: Int, C: Int, H: Int, W: Int, P: Int, D: Int
    ) -> [Float] {
        let (h, wd) = (H / P, W / P)
        var out = [Float](repeating: 0, count: N * h * wd * D)
        for n in 0..<N {
            for i in 0..<h {
                for j in 0..<wd {
                    for o in 0..<D {
                        var acc = Double(b[o])
                        for c in 0..<C {
                            for pi in 0..<P {
                                for pj in 0..<P {
                                    acc +=
                                        Double(x[((n * C + c) * H + i * P + pi) * W + j * P + pj])
                                        * Double(w[((o * C + c) * P + pi) * P + pj])
                                }
                            }
                        }
                        out[((n * h + i) * wd + j) * D + o] = Float(acc)
                    }
                }
            }
        }
        return out
    }

    /// tokens (N, h*w, P*P*C) with vector layout (pi, pj, c) -> (N, C, h*P, w*P)
    static func unpatchify(_ tok: [Float], N: Int, h: Int, w: Int, P: Int, C: Int) -> [Float] {
        var out = [Float](repeating: 0, count: N * C * h * P * w * P)
        for n in 0..<N {
            for c in 0..<C {
                for y in 0..<(h * P) {
                    for x in 0..<(w * P) {
                        let token = (y / P) * w + x / P
                        out[((n * C + c) * h * P + y) * w * P + x] =
                            tok[((n * h * w) + token) * P * P * C + ((y % P) * P + x % P) * C + c]
                    }
                }
            }
        }
        return out
    }
}

/// Deterministic test data: a linear congruential stream mapped to [-1, 1).
func testValues(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var s = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return (0..<count).map { _ in
        s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return (Float(s >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
}

/// Largest absolute difference; prints it so test logs show how close each kernel came.
func maxAbsDiff(_ a: [Float], _ b: [Float], _ label: String) -> Float {
    precondition(a.count == b.count, "\(label): \(a.count) vs \(b.count) values")
    let d = zip(a, b).map { abs($0 - $1) }.max() ?? 0
    print("\(label): max |diff| = \(d)")
    return d
}
