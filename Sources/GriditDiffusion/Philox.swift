// Counter-based randomness: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers:
// as easy as 1, 2, 3", SC 2011) and standard normals keyed by position.
//
// The noise for (seed, purpose, grid, step, frame) is a pure function of those numbers: no state
// is carried between draws, so batch composition, thread count and resuming never change bytes.

import Glibc

/// The Philox4x32 bijection with 10 rounds: 128-bit counter × 64-bit key → 128 random bits.
public enum Philox4x32 {
    static let m0: UInt32 = 0xD251_1F53
    static let m1: UInt32 = 0xCD9E_8D57
    static let w0: UInt32 = 0x9E37_79B9  // golden ratio
    static let w1: UInt32 = 0xBB67_AE85  // sqrt(3) - 1

    /// Philox4x32-10 of `counter` under `key`.
    @inline(__always)
    public static func block(
        counter: (UInt32, UInt32, UInt32, UInt32), key: (UInt32, UInt32)
    )
        -> (UInt32, UInt32, UInt32, UInt32)
    {
        var c = counter
        var k = key
        for round in 0..<10 {
            if round > 0 {
                k.0 &+= w0
                k.1 &+= w1
            }
            let p0 = UInt64(m0) &* UInt64(c.0)
            let p1 = UInt64(m1) &* UInt64(c.2)
            c = (
                UInt32(truncatingIfNeeded: p1 >> 32) ^ c.1 ^ k.0, UInt32(truncatingIfNeeded: p1),
                UInt32(truncatingIfNeeded: p0 >> 32) ^ c.3 ^ k.1, UInt32(truncatingIfNeeded: p0)
            )
        }
        return c
    }
}

/// What a stream of noise is for; part of its key, so streams of different purposes never overlap.
public enum NoisePurpose: UInt8, Sendable {
    /// x_T, the starting noise of a grid.
    case initial = 0
    /// z of an ancestral (or DDIM η > 0) step.
    case step = 1
    /// Noise used to re-noise the known frames (when not shared with the step noise).
    case replacement = 2
    /// Anything else a caller needs.
    case other = 3
    /// z of a RePaint resampling jump, q(x_k | x_{k−1}) (stage 1).
    case jump = 4
    /// ε of a VAE posterior sample z = mean + exp(logvar/2)·ε of a stage-1 context grid.
    case posterior = 5
    /// x_T, step z and jump z of a stage-2 (super-resolution) frame; `grid` is the frame index.
    case srInitial = 6
    case srStep = 7
    case srJump = 8
    /// ε of the VAE posterior sample of a stage-2 condition.
    case srPosterior = 9
}

/// The identity of one noise stream: a seed and a small tuple of position ids.
///
/// Mapping onto Philox: key = (seed low 32 bits, seed high 32 bits); counter =
/// (block index, frame, step, purpose << 24 | grid). `grid` must be < 2^24.
/// Within a stream, normal number i comes from block i / 2 (two normals per block).
public struct NoiseKey: Hashable, Sendable {
    public var seed: UInt64
    public var purpose: NoisePurpose
    public var grid: UInt32
    public var step: UInt32
    public var frame: UInt32

    public init(seed: UInt64, purpose: NoisePurpose, grid: Int = 0, step: Int = 0, frame: Int = 0) {
        precondition(grid >= 0 && grid < 1 << 24, "NoiseKey: grid \(grid) out of 0..<2^24")
        precondition(step >= 0 && step <= Int(UInt32.max), "NoiseKey: step \(step) out of range")
        precondition(frame >= 0 && frame <= Int(UInt32.max), "NoiseKey: frame \(frame) out of range")
        self.seed = seed
        self.purpose = purpose
        self.grid = UInt32(grid)
        self.step = UInt32(step)
        self.frame = UInt32(frame)
    }

    /// The 4 × 32 random bits of block `index` of this stream.
    @inline(__always)
    public func bits(block index: UInt32) -> (UInt32, UInt32, UInt32, UInt32) {
        Philox4x32.block(
            counter: (index, frame, step, UInt32(purpose.rawValue) << 24 | grid),
            key: (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32)))
    }

    /// The two standard normals of block `index` (Box–Muller in Double).
    /// Uniforms from 53 bits: u1 ∈ (0, 1] (from words 0–1), u2 ∈ [0, 1) (words 2–3);
    /// r = sqrt(−2 ln u1); returns (r cos 2πu2, r sin 2πu2).
    @inline(__always)
    public func normalPair(block index: UInt32) -> (Double, Double) {
        let b = bits(block: index)
        let a = (UInt64(b.0) << 32 | UInt64(b.1)) >> 11
        let c = (UInt64(b.2) << 32 | UInt64(b.3)) >> 11
        let u1 = (Double(a) + 1) * 0x1p-53
        let u2 = Double(c) * 0x1p-53
        let r = (-2 * Glibc.log(u1)).squareRoot()
        let angle = 2 * Double.pi * u2
        return (r * Glibc.cos(angle), r * Glibc.sin(angle))
    }

    /// Normal number `index` of this stream, as Float.
    public func normal(at index: Int) -> Float {
        let pair = normalPair(block: UInt32(index / 2))
        return Float(index % 2 == 0 ? pair.0 : pair.1)
    }

    /// Writes normals start ..< start + count of this stream to `into[0 ..< count]`.
    public func fillNormal(into: UnsafeMutablePointer<Float>, count: Int, start: Int = 0) {
        precondition(
            start >= 0 && count >= 0 && (start + count + 1) / 2 <= Int(UInt32.max),
            "fillNormal: range \(start)..<\(start + count) out of the stream")
        var i = 0
        var index = start
        if index % 2 == 1 && count > 0 {
            into[0] = Float(normalPair(block: UInt32(index / 2)).1)
            i = 1
            index += 1
        }
        while i + 1 < count {
            let pair = normalPair(block: UInt32(index / 2))
            into[i] = Float(pair.0)
            into[i + 1] = Float(pair.1)
            i += 2
            index += 2
        }
        if i < count { into[i] = Float(normalPair(block: UInt32(index / 2)).0) }
    }
}
