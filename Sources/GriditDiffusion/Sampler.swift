// Denoising loops over batches of items (grids or super-resolution frames) that each carry their
// own seed, noise ids, schedule, known frames and condition: DDPM or DDIM, RePaint-style
// replacement of known frames (or clean known frames for models trained with them), optional
// RePaint resampling jumps. An item's noise is keyed by its
// own (seed, id, step, position), so its bytes never depend on the batch it runs in, on thread
// counts or on where a run was resumed.

import GriditModels
import GriditTensor

/// Which reverse step the loop takes.
public enum SamplerKind: Sendable, Equatable {
    /// Ancestral DDPM (every official GriDiT pass).
    case ddpm
    /// DDIM with η (0 = deterministic).
    case ddim(eta: Float)
    /// DPM-Solver++(2M): a deterministic second-order multistep ODE solver (`dpmSolverStep`); known
    /// frames are replaced after every step at the new noise level (or clean).
    case dpmSolver2M
    /// SDE-DPM-Solver++(2M): the stochastic form of the same solver (diffusers' "sde-dpmsolver++",
    /// order 2, midpoint); each step draws fresh noise from the item's `.step` stream, as DDPM does.
    case dpmSolver2MSDE

    /// Whether a step depends on earlier model outputs (so a loop cannot resume mid-way).
    public var isMultistep: Bool { self == .dpmSolver2M || self == .dpmSolver2MSDE }
}

/// RePaint resampling (Lugmayr et al., "RePaint", CVPR 2022, §4.2): after the loop reaches a level
/// that is a multiple of `length` (and at least `length` below the top), it re-noises the sample
/// `length` levels back up with q(x_k | x_{k−1}) and denoises that span again, `count − 1` times, so
/// every span is traversed `count` times and the known and generated regions can harmonise.
/// `count` 1 is no resampling.
public struct ResampleJumps: Sendable, Equatable, Codable {
    public var length: Int
    public var count: Int

    public init(length: Int, count: Int) {
        self.length = length
        self.count = count
    }
}

/// One move of a denoising schedule between noise levels (level k = x_k, level −1 = clean).
public enum Transition: Sendable, Equatable {
    /// A model step at spaced step k: level k → k − 1. `visit` counts earlier passes through k.
    case denoise(k: Int, visit: Int)
    /// A forward step from level k − 1 back up to level k: x_k = sqrt(1 − β'_k)·x_{k−1} + sqrt(β'_k)·z.
    case renoise(k: Int, visit: Int)

    /// The noise-key step id of this transition: k + visit·count (k alone when never revisited).
    func noiseStep(count: Int) -> Int {
        switch self {
        case .denoise(let k, let v), .renoise(let k, let v): k + v * count
        }
    }
}

/// A whole schedule: the diffusion, the reverse step, the variance, what the model predicts and
/// the list of transitions.
public struct DenoiseSchedule: Sendable {
    public let diffusion: GaussianDiffusion
    public let kind: SamplerKind
    public let variance: VarianceType
    public let prediction: Prediction
    public let clipDenoised: Bool
    public let jumps: ResampleJumps?
    public let transitions: [Transition]

    public init(
        diffusion: GaussianDiffusion, kind: SamplerKind = .ddpm, variance: VarianceType = .learnedRange,
        prediction: Prediction = .epsilon, clipDenoised: Bool = false, jumps: ResampleJumps? = nil
    ) {
        self.diffusion = diffusion
        self.kind = kind
        self.variance = variance
        self.prediction = prediction
        self.clipDenoised = clipDenoised
        self.jumps = jumps
        self.transitions = Self.transitions(count: diffusion.count, jumps: jumps)
    }

    /// Model evaluations of one item over the whole schedule.
    public var modelEvaluations: Int { Self.evaluations(count: diffusion.count, jumps: jumps) }

    /// The transitions for `count` spaced steps: denoise count−1 … 0, with the RePaint jumps inserted.
    public static func transitions(count: Int, jumps: ResampleJumps?) -> [Transition] {
        precondition(count >= 1, "DenoiseSchedule: count must be >= 1")
        let j = jumps?.length ?? 1, extra = max(0, (jumps?.count ?? 1) - 1)
        var left = [Int: Int]()
        if extra > 0 && j >= 1 {
            for level in stride(from: 0, to: count - j, by: j) { left[level] = extra }
        }
        var visits = [Int](repeating: 0, count: count), renoiseVisits = visits
        var out: [Transition] = []
        var level = count - 1
        while level >= 0 {
            out.append(.denoise(k: level, visit: visits[level]))
            visits[level] += 1
            level -= 1
            if let n = left[level], n > 0 {
                left[level] = n - 1
                for _ in 0..<j {
                    level += 1
                    out.append(.renoise(k: level, visit: renoiseVisits[level]))
                    renoiseVisits[level] += 1
                }
            }
        }
        return out
    }

    /// Denoise transitions of `transitions(count:jumps:)`, without building the list.
    public static func evaluations(count: Int, jumps: ResampleJumps?) -> Int {
        guard let jumps, jumps.count > 1, jumps.length >= 1, count > jumps.length else { return count }
        let points = (count - jumps.length + jumps.length - 1) / jumps.length  // levels 0, j, 2j, … < count − j
        return count + points * (jumps.count - 1) * jumps.length
    }
}

/// Known frames of one grid, re-noised into x after each step.
///
/// With `.officialCurrentStep` they are replaced after every step except the last (k = 0), so the
/// final known cells are the model's reconstruction, as in the released code. With
/// `.previousStep` (correct RePaint) they are replaced after every step, the last one at ᾱ = 1,
/// so the finished grid holds the known frames exactly. With `.clean` they are the clean frames
/// from x_T on, at every step (and after every resampling jump).
public struct KnownFrames: @unchecked Sendable {
    /// A clean grid (C, K·S, K·S) holding the known frames at the positions where they land.
    public var x0: Tensor
    /// Grid positions that are known.
    public var positions: [Int]
    public var level: ReplacementLevel
    /// Where each known position reads its noise in the step's z (nil: the same position); see
    /// `GaussianDiffusion.replaceKnown`.
    public var noisePositions: [Int]?

    public init(
        x0: Tensor, positions: [Int], level: ReplacementLevel = .officialCurrentStep,
        noisePositions: [Int]? = nil
    ) {
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
    public static func copyingRows(
        _ rows: [(source: Tensor, sourceRow: Int, targetRow: Int)], layout: GridLayout,
        level: ReplacementLevel = .officialCurrentStep,
        officialNoiseCoupling: Bool = true
    ) throws -> KnownFrames {
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
        return KnownFrames(
            x0: x0, positions: positions, level: level,
            noisePositions: officialNoiseCoupling ? sources : nil)
    }
}

/// The noise identity of one item: its seed, its id and which family of purposes it draws from.
///
/// Stage-1 grids draw `.initial`, `.step`, `.jump` with `grid` = the grid's id in its run's plan and
/// `frame` = the grid position; stage-2 frames draw `.srInitial`, `.srStep`, `.srJump` with `grid` =
/// the frame's index in the sequence (0 for every frame with shared noise) and `frame` = 0. The
/// step id of a transition is k + visit·count (just k without resampling jumps).
public struct NoiseStream: Sendable, Hashable {
    public enum Stage: Sendable, Hashable { case grid, superResolution }

    public var seed: UInt64
    public var id: Int
    public var stage: Stage
    /// Scales every normal drawn (x_T and the steps' noise): below 1, samples keep closer to the
    /// model's most likely output. Items with known frames keep 1 (their replacement re-noises
    /// with these normals).
    public var temperature: Float

    public init(seed: UInt64, id: Int, stage: Stage = .grid, temperature: Float = 1) {
        precondition(id >= 0 && id < 1 << 24, "NoiseStream: id \(id) out of 0..<2^24")
        self.seed = seed
        self.id = id
        self.stage = stage
        self.temperature = temperature
    }

    enum Use { case initial, step, jump }

    func key(_ use: Use, step: Int, position: Int) -> NoiseKey {
        let purpose: NoisePurpose =
            switch (stage, use) {
            case (.grid, .initial): .initial
            case (.grid, .step): .step
            case (.grid, .jump): .jump
            case (.superResolution, .initial): .srInitial
            case (.superResolution, .step): .srStep
            case (.superResolution, .jump): .srJump
            }
        return NoiseKey(seed: seed, purpose: purpose, grid: id, step: step, frame: position)
    }

    /// Fills `x` (C, K·S, K·S) frame by frame with the normals of `use` at `step`.
    func fill(_ x: Tensor, layout: GridLayout, _ use: Use, step: Int) {
        for f in 0..<layout.framesPerGrid { layout.fillNoise(frame: f, of: x, key: key(use, step: step, position: f)) }
        if temperature != 1 {
            let p = x.mutablePointer
            for i in 0..<x.count { p[i] *= temperature }
        }
    }
}

/// One item of a batched denoising loop: a sample x (C, H, W) with its own schedule, noise,
/// known frames and position in the schedule. The item owns (or views) `x` and updates it in place.
///
/// A super-resolution frame is an item with a 1×1 layout (`GridLayout(k: 1, frameSize: H, …)`);
/// its condition is the caller's business (the model closure looks it up by item index).
public final class DenoiseItem {
    public let schedule: DenoiseSchedule
    public let layout: GridLayout
    public let noise: NoiseStream
    public let known: KnownFrames?
    /// The current sample, (C, K·S, K·S).
    public let x: Tensor
    /// Index of the next transition in `schedule.transitions`.
    public private(set) var position: Int
    /// Multistep solvers: x0 of the previous denoise step (nil before the first, after a jump).
    private var previousX0: Tensor?
    private var x0Scratch: Tensor?

    /// An item starting at transition `position` from `x` (a view is fine: it is updated in
    /// place), or from its own x_T when `x` is nil.
    public init(
        schedule: DenoiseSchedule, layout: GridLayout, noise: NoiseStream, known: KnownFrames? = nil,
        x: Tensor? = nil, position: Int = 0
    ) throws {
        if let x, x.shape != layout.gridShape {
            throw DiffusionError.shapeMismatch("item x \(x.shape), expected \(layout.gridShape)")
        }
        if let known {
            precondition(noise.temperature == 1, "DenoiseItem: known frames are re-noised at temperature 1")
            guard known.x0.shape == layout.gridShape else {
                throw DiffusionError.shapeMismatch("known x0 \(known.x0.shape), expected \(layout.gridShape)")
            }
            let sources = known.noisePositions ?? known.positions
            guard sources.count == known.positions.count,
                (known.positions + sources).allSatisfy({ (0..<layout.framesPerGrid).contains($0) })
            else {
                throw DiffusionError.shapeMismatch(
                    "known positions \(known.positions) invalid for \(layout.framesPerGrid)")
            }
        }
        guard (0...schedule.transitions.count).contains(position) else {
            throw DiffusionError.invalidStep(position, count: schedule.transitions.count)
        }
        if schedule.kind.isMultistep && position > 0 {
            throw DiffusionError.shapeMismatch(
                "a multistep solver keeps earlier model outputs; it cannot resume at step \(position)")
        }
        self.schedule = schedule
        self.layout = layout
        self.noise = noise
        self.known = known
        self.position = position
        if let x {
            self.x = x
        } else {
            self.x = Tensor(zeros: layout.gridShape)
            noise.fill(self.x, layout: layout, .initial, step: 0)
        }
        try replaceCleanKnown()  // x_T, or a resumed x that already holds them: the same bytes
    }

    /// With `.clean` known frames: sets them into x, as they are (else nothing).
    private func replaceCleanKnown() throws {
        guard let known, known.level == .clean else { return }
        try schedule.diffusion.replaceKnown(
            x: x, knownX0: known.x0, noise: known.x0, positions: known.positions,
            layout: layout, k: 0, level: .clean)
    }

    public var isFinished: Bool { position >= schedule.transitions.count }

    /// The transition the next `step` performs (always a denoise once `applyRenoises` ran).
    public var next: Transition? { isFinished ? nil : schedule.transitions[position] }

    /// The model's timestep input for the next step.
    public var modelTimestep: Float? {
        guard case .denoise(let k, _)? = next else { return nil }
        return schedule.diffusion.modelTimestep(k)
    }

    /// Performs the renoise transitions at the current position (none without jumps).
    public func applyRenoises(scratch z: Tensor) throws {
        let d = schedule.diffusion
        var renoised = false
        while case .renoise(let k, _)? = next {
            noise.fill(z, layout: layout, .jump, step: schedule.transitions[position].noiseStep(count: d.count))
            let a = Float((1 - d.betas[k]).squareRoot()), b = Float(d.betas[k].squareRoot())
            let xs = x.mutablePointer, zs = z.pointer
            for i in 0..<x.count { xs[i] = a * xs[i] + b * zs[i] }
            position += 1
            renoised = true
        }
        if renoised {
            previousX0 = nil  // the solver's history belongs to the other path
            try replaceCleanKnown()
        }
    }

    /// The denoise transition at the current position with `modelOutput` (1, Cout, H, W) computed
    /// on x, then the replacement of the known frames, then any renoise transitions that follow.
    /// `z` is scratch shaped like x. Returns the transition performed.
    @discardableResult
    public func step(modelOutput: Tensor, scratch z: Tensor) throws -> Transition {
        guard let transition = next, case .denoise(let k, _) = transition else {
            throw DiffusionError.shapeMismatch("step: item has no pending denoise transition")
        }
        let d = schedule.diffusion
        let x4 = x.reshaped([1] + x.shape)
        let needsNoise: Bool =
            switch schedule.kind {
            case .ddpm, .dpmSolver2MSDE: k != 0
            case .ddim(let eta): k != 0 && eta != 0
            case .dpmSolver2M: false
            }
        if needsNoise || (k != 0 && known != nil) {
            noise.fill(z, layout: layout, .step, step: transition.noiseStep(count: d.count))
        }
        let z4 = z.reshaped(x4.shape)
        switch schedule.kind {
        case .ddpm:
            try d.pSample(
                x: x4, modelOutput: modelOutput, k: k, noise: z4, into: x4, variance: schedule.variance,
                prediction: schedule.prediction, clipDenoised: schedule.clipDenoised)
        case .ddim(let eta):
            try d.ddimSample(
                x: x4, modelOutput: modelOutput, k: k, eta: eta, noise: z4, into: x4,
                variance: schedule.variance, prediction: schedule.prediction,
                clipDenoised: schedule.clipDenoised)
        case .dpmSolver2M, .dpmSolver2MSDE:
            let x0 = x0Scratch ?? Tensor(zeros: x4.shape)
            try d.dpmSolverStep(
                x: x4, modelOutput: modelOutput, k: k, previousX0: previousX0,
                noise: schedule.kind == .dpmSolver2MSDE && k != 0 ? z4 : nil, into: x4, predX0: x0,
                variance: schedule.variance, prediction: schedule.prediction)
            (previousX0, x0Scratch) = (x0, previousX0)
        }
        if let known {
            // A solver lands on the new noise level: the known frames go there too (the official
            // off-by-one level is a trait of the released DDPM code).
            let level = schedule.kind.isMultistep && known.level == .officialCurrentStep ? .previousStep : known.level
            if k != 0 || level != .officialCurrentStep {
                try d.replaceKnown(
                    x: x, knownX0: known.x0, noise: z, positions: known.positions,
                    noisePositions: known.noisePositions, layout: layout, k: k, level: level)
            }
        }
        position += 1
        try applyRenoises(scratch: z)
        return transition
    }
}

/// Runs items to the end of their schedules in lockstep rounds: each round is one model call over
/// every unfinished item (each at its own step), then each item steps, in index order.
public enum BatchDenoiser {
    /// `model(x (n, C, H, W), t (n original timesteps), items (the n item indices))` returns
    /// (n, Cout, H, W); it may batch as it likes but must treat rows independently. All items must
    /// share x's shape. `afterStep(item, transition)` runs after each item's step; return false to
    /// drop that item (it keeps its state and position), throw to abort the whole loop.
    public static func run(
        _ items: [DenoiseItem],
        model: (_ x: Tensor, _ t: [Float], _ items: [Int]) throws -> Tensor,
        afterStep: (_ item: Int, _ transition: Transition) throws -> Bool = { _, _ in true }
    ) throws {
        guard let first = items.first else { return }
        let shape = first.x.shape
        for item in items where item.x.shape != shape {
            throw DiffusionError.shapeMismatch("batch items of shapes \(shape) and \(item.x.shape)")
        }
        let inner = first.x.count
        let z = Tensor(zeros: shape)
        for item in items { try item.applyRenoises(scratch: z) }
        var active = items.indices.filter { !items[$0].isFinished }
        var batch = Tensor(zeros: [0] + shape)
        while !active.isEmpty {
            if batch.shape[0] != active.count { batch = Tensor(zeros: [active.count] + shape) }
            var t: [Float] = []
            for (row, i) in active.enumerated() {
                (batch.mutablePointer + row * inner).update(from: items[i].x.pointer, count: inner)
                t.append(items[i].modelTimestep!)
            }
            let out = try model(batch, t, active)
            guard out.rank == 4, out.shape[0] == active.count else {
                throw DiffusionError.shapeMismatch("model returned \(out.shape) for \(active.count) items")
            }
            var still: [Int] = []
            for (row, i) in active.enumerated() {
                let transition = try items[i].step(modelOutput: out.slice(row..<row + 1), scratch: z)
                if try afterStep(i, transition), !items[i].isFinished { still.append(i) }
            }
            active = still
        }
    }
}

/// The single-seed loop over a batch of grids (no jumps), a convenience over `BatchDenoiser`.
///
/// Noise streams (all from `seed`): x_T of grid g, frame f = `NoiseKey(.initial, grid: g, step: 0,
/// frame: f)`; the z of step k = `NoiseKey(.step, grid: g, step: k, frame: f)`. Replacement
/// re-noises the known frames with the step's own z, read at `KnownFrames.noisePositions` (the
/// official coupling: the source frame's z) or at the frames' own positions.
///
/// The model closure `(x (N, C, H, W), t: N original timesteps) → (N, Cout, H, W)` is, for a `DiT`,
/// `{ x, t in try dit.forward(x: x, t: t, workspace: ws) }`. The DiT's products run on a fixed
/// per-sample schedule, so a grid gets the same bytes in any batch and at any thread count.
public struct Sampler: Sendable {
    public let diffusion: GaussianDiffusion
    public let layout: GridLayout
    public var kind: SamplerKind
    public var variance: VarianceType
    public var prediction: Prediction
    public var clipDenoised: Bool
    public var seed: UInt64

    public init(
        diffusion: GaussianDiffusion, layout: GridLayout, seed: UInt64, kind: SamplerKind = .ddpm,
        variance: VarianceType = .learnedRange, prediction: Prediction = .epsilon, clipDenoised: Bool = false
    ) {
        self.diffusion = diffusion
        self.layout = layout
        self.seed = seed
        self.kind = kind
        self.variance = variance
        self.prediction = prediction
        self.clipDenoised = clipDenoised
    }

    /// Fills `into` (N, C, K·S, K·S) with the noise of `purpose` at `step` for grids `grids`.
    public func fillNoise(into: Tensor, grids: [Int], purpose: NoisePurpose, step: Int) throws {
        guard into.shape == [grids.count] + layout.gridShape else {
            throw DiffusionError.shapeMismatch("noise \(into.shape), expected \([grids.count] + layout.gridShape)")
        }
        for (i, g) in grids.enumerated() {
            let grid = into.slice(i..<i + 1).reshaped(layout.gridShape)
            for f in 0..<layout.framesPerGrid {
                layout.fillNoise(
                    frame: f, of: grid, key: NoiseKey(seed: seed, purpose: purpose, grid: g, step: step, frame: f))
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
    /// `onStep(k, x)` runs after every grid did step k (x = x_{k−1}); throw from it to cancel.
    /// Resuming with the x seen after step k and `start: k − 1` gives the same bytes as an
    /// uninterrupted run.
    public func denoise(
        _ x: Tensor, grids: [Int], known: [KnownFrames?]? = nil, from start: Int? = nil,
        model: (_ x: Tensor, _ t: [Float]) throws -> Tensor,
        onStep: (_ k: Int, _ x: Tensor) throws -> Void = { _, _ in }
    ) throws {
        let n = grids.count
        guard x.shape == [n] + layout.gridShape else {
            throw DiffusionError.shapeMismatch("x \(x.shape), expected \([n] + layout.gridShape)")
        }
        if let known, known.count != n {
            throw DiffusionError.shapeMismatch("\(known.count) known entries for \(n) grids")
        }
        let first = start ?? diffusion.count - 1
        guard (0..<diffusion.count).contains(first) else {
            throw DiffusionError.invalidStep(first, count: diffusion.count)
        }
        let schedule = DenoiseSchedule(
            diffusion: diffusion, kind: kind, variance: variance, prediction: prediction,
            clipDenoised: clipDenoised)
        let items = try grids.enumerated().map { i, g in
            try DenoiseItem(
                schedule: schedule, layout: layout, noise: NoiseStream(seed: seed, id: g),
                known: known?[i], x: x.slice(i..<i + 1).reshaped(layout.gridShape),
                position: diffusion.count - 1 - first)
        }
        try BatchDenoiser.run(items, model: { x, t, _ in try model(x, t) }) { i, transition in
            if i == n - 1, case .denoise(let k, _) = transition { try onStep(k, x) }
            return true
        }
    }

    /// x_T for `grids`, then the whole loop; returns x_0 (N, C, K·S, K·S).
    public func sample(
        grids: [Int], known: [KnownFrames?]? = nil,
        model: (_ x: Tensor, _ t: [Float]) throws -> Tensor,
        onStep: (_ k: Int, _ x: Tensor) throws -> Void = { _, _ in }
    ) throws -> Tensor {
        let x = try initialNoise(grids: grids)
        try denoise(x, grids: grids, known: known, model: model, onStep: onStep)
        return x
    }
}
