// A whole denoising loop over a batch of grids: DDPM or DDIM, optional RePaint replacement of
// known frames, noise keyed per (grid, step, frame) so that every grid's bytes are independent of
// the batch it runs in, of thread counts and of resuming at a step.
import GriditTensor

/// Which reverse step the loop takes.
public enum SamplerKind: Sendable, Equatable {
    /// Ancestral DDPM (every official GriDiT pass).
    case ddpm
    /// DDIM with η (0 = deterministic).
    case ddim(eta: Float)
}

/// Known frames of one grid, re-noised into x after each step (except the last, k = 0).
public struct KnownFrames: @unchecked Sendable {
    /// A clean grid (C, K·S, K·S) holding the known frames at the positions where they land.
    public var x0: Tensor
    /// Grid positions that are known.
    public var positions: [Int]
    public var level: ReplacementLevel
    /// Where each known position reads its noise in the step's z (nil: the same position); see
    /// `GaussianDiffusion.replaceKnown`.
    public var noisePositions: [Int]?

    public init(x0: Tensor, positions: [Int], level: ReplacementLevel = .officialCurrentStep,
                noisePositions: [Int]? = nil) {
        self.x0 = x0
        self.positions = positions
        self.level = level
        self.noisePositions = noisePositions
    }

    /// Known frames copied row by row from other grids: `rows[i]` copies grid row `sourceRow` of
    /// `source` (C, K·S, K·S) into grid row `targetRow`. With `officialNoiseCoupling`, each copied
    /// frame is re-noised with the z of its source position (what the official samplers do);
    /// otherwise with the z of its own position.
    ///
    /// Official three-row extension (K = 4): rows 1, 2, 3 of the previous grid → rows 0, 1, 2.
    /// Official in-betweening: row 3 of G_k → row 0 and row 3 of G_{k+1} → row 3.
    public static func copyingRows(_ rows: [(source: Tensor, sourceRow: Int, targetRow: Int)], layout: GridLayout,
                                   level: ReplacementLevel = .officialCurrentStep,
                                   officialNoiseCoupling: Bool = true) throws -> KnownFrames {
        let x0 = Tensor(zeros: layout.gridShape)
        var positions: [Int] = [], sources: [Int] = []
        let frames = Tensor(zeros: [layout.k] + layout.frameShape)
        for (source, sourceRow, targetRow) in rows {
            guard (0..<layout.k).contains(sourceRow), (0..<layout.k).contains(targetRow) else {
                throw DiffusionError.shapeMismatch("grid rows \(sourceRow) -> \(targetRow) outside 0..<\(layout.k)")
            }
            let from = layout.frames(inGridRow: sourceRow), to = layout.frames(inGridRow: targetRow)
            try layout.extract(from: source, positions: from, into: frames)
            try layout.place(frames: frames, into: x0, firstPosition: to.lowerBound)
            positions += to
            sources += from
        }
        return KnownFrames(x0: x0, positions: positions, level: level,
                           noisePositions: officialNoiseCoupling ? sources : nil)
    }
}

/// The denoising loop. The model is a closure `(x (N, C, H, W), t: N original timesteps) →
/// (N, Cout, H, W)`; for a `DiT`: `{ x, t in try dit.forward(x: x, t: t, workspace: ws) }`.
///
/// Noise streams (all from `seed`): x_T of grid g, frame f = `NoiseKey(.initial, grid: g, step: 0,
/// frame: f)`; the z of step k = `NoiseKey(.step, grid: g, step: k, frame: f)`. Replacement
/// re-noises the known frames with the step's own z, read at `KnownFrames.noisePositions` (the
/// official coupling: the source frame's z) or at the frames' own positions.
///
/// Batch invariance: the noise bytes of a grid never depend on the batch. The DiT forward itself is
/// not guaranteed bitwise batch-invariant (GEMM blocking may depend on N; up to ~6e-7 was seen on
/// one tiny forward), so a batched loop matches single-grid runs to float32 rounding, not always
/// bytes; calling the model one grid at a time inside the closure gives identical bytes.
public struct Sampler: Sendable {
    public let diffusion: GaussianDiffusion
    public let layout: GridLayout
    public var kind: SamplerKind
    public var variance: VarianceType
    public var clipDenoised: Bool
    public var seed: UInt64

    public init(diffusion: GaussianDiffusion, layout: GridLayout, seed: UInt64, kind: SamplerKind = .ddpm,
                variance: VarianceType = .learnedRange, clipDenoised: Bool = false) {
        self.diffusion = diffusion
        self.layout = layout
        self.seed = seed
        self.kind = kind
        self.variance = variance
        self.clipDenoised = clipDenoised
    }

    /// Fills `into` (N, C, K·S, K·S) with the noise of `purpose` at `step` for grids `grids`.
    public func fillNoise(into: Tensor, grids: [Int], purpose: NoisePurpose, step: Int) throws {
        guard into.shape == [grids.count] + layout.gridShape else {
            throw DiffusionError.shapeMismatch("noise \(into.shape), expected \([grids.count] + layout.gridShape)")
        }
        for (i, g) in grids.enumerated() {
            let grid = into.slice(i ..< i + 1).reshaped(layout.gridShape)
            for f in 0..<layout.framesPerGrid {
                layout.fillNoise(frame: f, of: grid, key: NoiseKey(seed: seed, purpose: purpose, grid: g, step: step, frame: f))
            }
        }
    }

    /// x_T for grids `grids`: (N, C, K·S, K·S).
    public func initialNoise(grids: [Int]) throws -> Tensor {
        let x = Tensor(zeros: [grids.count] + layout.gridShape)
        try fillNoise(into: x, grids: grids, purpose: .initial, step: 0)
        return x
    }

    /// Denoises `x` (N, C, K·S, K·S) in place from spaced step `start` down to 0.
    /// `grids[i]` is the noise id of batch item i; `known[i]` (if any) its known frames.
    /// `onStep(k, x)` runs after step k (x = x_{k−1}); throw from it to cancel. Resuming with the
    /// x seen after step k and `start: k − 1` gives the same bytes as an uninterrupted run.
    public func denoise(_ x: Tensor, grids: [Int], known: [KnownFrames?]? = nil, from start: Int? = nil,
                        model: (_ x: Tensor, _ t: [Float]) throws -> Tensor,
                        onStep: (_ k: Int, _ x: Tensor) throws -> Void = { _, _ in }) throws {
        let n = grids.count
        guard x.shape == [n] + layout.gridShape else {
            throw DiffusionError.shapeMismatch("x \(x.shape), expected \([n] + layout.gridShape)")
        }
        if let known {
            guard known.count == n else { throw DiffusionError.shapeMismatch("\(known.count) known entries for \(n) grids") }
            for case let kf? in known where kf.x0.shape != layout.gridShape {
                throw DiffusionError.shapeMismatch("known x0 \(kf.x0.shape), expected \(layout.gridShape)")
            }
        }
        let first = start ?? diffusion.count - 1
        guard (0..<diffusion.count).contains(first) else { throw DiffusionError.invalidStep(first, count: diffusion.count) }
        let z = Tensor(zeros: x.shape)
        var t = [Float](repeating: 0, count: n)
        for k in stride(from: first, through: 0, by: -1) {
            for i in 0..<n { t[i] = diffusion.modelTimestep(k) }
            let out = try model(x, t)
            let needsNoise: Bool = switch kind {
            case .ddpm: k != 0
            case .ddim(let eta): k != 0 && eta != 0
            }
            if needsNoise || (k != 0 && known != nil) {
                try fillNoise(into: z, grids: grids, purpose: .step, step: k)
            }
            switch kind {
            case .ddpm:
                try diffusion.pSample(x: x, modelOutput: out, k: k, noise: z, into: x,
                                      variance: variance, clipDenoised: clipDenoised)
            case .ddim(let eta):
                try diffusion.ddimSample(x: x, modelOutput: out, k: k, eta: eta, noise: z, into: x,
                                         variance: variance, clipDenoised: clipDenoised)
            }
            if k != 0, let known {
                for (i, kf) in known.enumerated() {
                    guard let kf else { continue }
                    let xi = x.slice(i ..< i + 1).reshaped(layout.gridShape)
                    let zi = z.slice(i ..< i + 1).reshaped(layout.gridShape)
                    try diffusion.replaceKnown(x: xi, knownX0: kf.x0, noise: zi, positions: kf.positions,
                                               noisePositions: kf.noisePositions, layout: layout, k: k,
                                               level: kf.level)
                }
            }
            try onStep(k, x)
        }
    }

    /// x_T for `grids`, then the whole loop; returns x_0 (N, C, K·S, K·S).
    public func sample(grids: [Int], known: [KnownFrames?]? = nil,
                       model: (_ x: Tensor, _ t: [Float]) throws -> Tensor,
                       onStep: (_ k: Int, _ x: Tensor) throws -> Void = { _, _ in }) throws -> Tensor {
        let x = try initialNoise(grids: grids)
        try denoise(x, grids: grids, known: known, model: model, onStep: onStep)
        return x
    }
}
