import GriditCheckpoint
import GriditDiffusion
import GriditModels
import GriditTensor
import Testing

/// A batch-invariant stand-in model: ε = 0.3·x + 0.01·t/1000, v = tanh-free clamp of x/4.
func elementwiseModel(_ x: Tensor, _ t: [Float]) -> Tensor {
    let n = x.shape[0], inner = x.count / n
    let out = Tensor(zeros: [n, 2 * x.shape[1]] + x.shape.dropFirst(2))
    for b in 0..<n {
        for i in 0..<inner {
            let xi = x.pointer[b * inner + i]
            out.mutablePointer[2 * b * inner + i] = 0.3 * xi + 0.01 * t[b] / 1000
            out.mutablePointer[(2 * b + 1) * inner + i] = min(max(xi / 4, -1), 1)
        }
    }
    return out
}

@Test(arguments: [SamplerKind.ddpm, .ddim(eta: 0), .ddim(eta: 1), .dpmSolver2M, .dpmSolver2MSDE])
func batchOfGridsEqualsEachGridAlone(kind: SamplerKind) throws {
    let layout = GridLayout(k: 2, frameSize: 4, channels: 4)
    let sampler = Sampler(diffusion: try GaussianDiffusion(respacing: "20"), layout: layout, seed: 45, kind: kind)
    let batch = try sampler.sample(grids: [3, 8, 5], model: elementwiseModel)
    for (i, g) in [3, 8, 5].enumerated() {
        let alone = try sampler.sample(grids: [g], model: elementwiseModel)
        #expect(batch.slice(i..<i + 1).toArray() == alone.toArray(), "grid \(g)")
    }
    #expect(batch.toArray().allSatisfy { $0.isFinite })
}

@Test func tinyDiTBatchMatchesSingleGrids() throws {
    // The DiT's products run on a fixed per-sample schedule (GriditTensor.linearRows), so a grid
    // sampled inside a batch gets the same bytes as sampled alone, at any thread count.
    let model = try tinyModel()
    let layout = GridLayout(k: 2, frameSize: 4, channels: 4)
    let sampler = Sampler(diffusion: try GaussianDiffusion(respacing: "10"), layout: layout, seed: 1)
    func run(_ grids: [Int], workers: Int) throws -> [UInt32] {
        let ws = DiTWorkspace(config: model.config, batch: grids.count, workers: workers)
        let x = try sampler.sample(grids: grids, model: { x, t in try model.forward(x: x, t: t, workspace: ws) })
        return x.toArray().map(\.bitPattern)
    }
    let batch = try run([0, 1], workers: 2)
    let half = batch.count / 2
    #expect(try run([0], workers: 1) == Array(batch[..<half]))
    #expect(try run([1], workers: 3) == Array(batch[half...]))
}

struct Stop: Error {}

@Test func resumeGivesSameBytesAndCallbackCancels() throws {
    let layout = GridLayout(k: 2, frameSize: 2, channels: 4)
    let sampler = Sampler(diffusion: try GaussianDiffusion(respacing: "30"), layout: layout, seed: 9)
    let known = Tensor([Float](repeating: 0.5, count: layout.gridCount), shape: layout.gridShape)
    let kf: [KnownFrames?] = [KnownFrames(x0: known, positions: [0, 1]), nil]
    var seen: [Int] = []
    let full = try sampler.sample(grids: [0, 1], known: kf, model: elementwiseModel) { k, _ in seen.append(k) }
    #expect(seen == Array((0..<30).reversed()))

    // Cancel after step 12, then resume from the state seen there.
    var snapshot: Tensor?
    let x = try sampler.initialNoise(grids: [0, 1])
    #expect(throws: Stop.self) {
        try sampler.denoise(x, grids: [0, 1], known: kf, model: elementwiseModel) { k, x in
            if k == 12 {
                snapshot = x.copy()
                throw Stop()
            }
        }
    }
    let resumed = try #require(snapshot)
    try sampler.denoise(resumed, grids: [0, 1], known: kf, from: 11, model: elementwiseModel)
    #expect(resumed.toArray() == full.toArray())
}

@Test func replacementPinsKnownFramesNearTheirValues() throws {
    // With the RePaint level, after step 1 the known frames are at ᾱ'_0 ≈ 1, so x_0 keeps them
    // close to the clean values while the free frames move.
    let layout = GridLayout(k: 2, frameSize: 2, channels: 1)
    let sampler = Sampler(diffusion: try GaussianDiffusion(respacing: "25"), layout: layout, seed: 3)
    let clean = Tensor([Float](repeating: 0.8, count: layout.gridCount), shape: layout.gridShape)
    let out = try sampler.sample(
        grids: [0], known: [KnownFrames(x0: clean, positions: [0, 1], level: .previousStep)],
        model: elementwiseModel)
    let frames = Tensor(zeros: [4] + layout.frameShape)
    try layout.extract(from: out.reshaped(layout.gridShape), positions: 0..<4, into: frames)
    let v = frames.toArray()
    #expect(v[0..<8].allSatisfy { abs($0 - 0.8) < 0.1 }, "known: \(Array(v[0..<8]))")
}

@Test(arguments: [("loop_ddpm", SamplerKind.ddpm), ("loop_ddim", .ddim(eta: 0))])
func wholeLoopMatchesReference(name: String, kind: SamplerKind) throws {
    // 10 steps, grids 3 and 7; grid 7's row 0 is the previous grid's row 1 (official replacement,
    // noise read at the source row). The reference draws the same Philox streams in Python.
    let model = try tinyModel()
    let layout = GridLayout(k: 2, frameSize: 4, channels: 4)
    let sampler = Sampler(diffusion: try GaussianDiffusion(respacing: "10"), layout: layout, seed: 45, kind: kind)
    let xT = try sampler.initialNoise(grids: [3, 7])
    let wantXT = try load("loop.xT.npy")
    expectClose(xT, wantXT, "\(name) x_T", tolerance: 1e-6)  // 0 when both use the same libm
    let prev = try load("loop.prev.npy")
    let known = try KnownFrames.copyingRows([(prev, 1, 0)], layout: layout)
    #expect(known.positions == [0, 1] && known.noisePositions == [2, 3])
    let ws = DiTWorkspace(config: model.config, batch: 2, workers: 1)
    try sampler.denoise(xT, grids: [3, 7], known: [nil, known]) { x, t in
        try model.forward(x: x, t: t, workspace: ws)
    }
    let want = try load("\(name).x0.npy")
    let scale = want.toArray().map { abs($0) }.max()!
    // x0 of this random tiny model reaches ~660, so the bound is relative to that scale.
    let d = expectClose(xT, want, "\(name) x_0", tolerance: 1e-5 * scale)
    print("\(name): max |diff| / max |x0| = \(d / scale)")
}

@Test func cleanContextWithVPredictionMatchesReference() throws {
    // The same 10-step DDPM loop, the model's output read as v, and grid 7's row 0 the previous
    // grid's row 1 as it is, from x_T on and after every step (gridit's clean context).
    let model = try tinyModel()
    let layout = GridLayout(k: 2, frameSize: 4, channels: 4)
    let sampler = Sampler(diffusion: try GaussianDiffusion(respacing: "10"), layout: layout, seed: 45, prediction: .v)
    let prev = try load("loop.prev.npy")
    let known = try KnownFrames.copyingRows([(prev, 1, 0)], layout: layout, level: .clean, officialNoiseCoupling: false)
    let ws = DiTWorkspace(config: model.config, batch: 2, workers: 1)
    var firstInput: Tensor?
    let x = try sampler.sample(grids: [3, 7], known: [nil, known]) { x, t in
        if firstInput == nil { firstInput = x.copy() }
        return try model.forward(x: x, t: t, workspace: ws)
    }
    // The model saw the clean frames already at x_T.
    let rows = Tensor(zeros: [2] + layout.frameShape), wantRows = Tensor(zeros: [2] + layout.frameShape)
    try layout.extract(from: firstInput!.slice(1..<2).reshaped(layout.gridShape), positions: 0..<2, into: rows)
    try layout.extract(from: prev, positions: 2..<4, into: wantRows)
    #expect(rows.toArray() == wantRows.toArray())
    let want = try load("loop_clean_v.x0.npy")
    let scale = want.toArray().map { abs($0) }.max()!
    expectClose(x, want, "loop_clean_v x_0", tolerance: 1e-5 * scale)
}

@Test func officialRowCouplingReadsNoiseFromSourceFrames() throws {
    let d = try GaussianDiffusion(respacing: "10")
    let layout = GridLayout(k: 2, frameSize: 1, channels: 1)
    let x = Tensor(zeros: layout.gridShape)
    let x0 = Tensor(zeros: layout.gridShape)
    let z = Tensor([1, 2, 3, 4], shape: layout.gridShape)
    try d.replaceKnown(
        x: x, knownX0: x0, noise: z, positions: [0, 1], noisePositions: [2, 3], layout: layout,
        k: 5, level: .officialCurrentStep)
    let b = Float((1 - d.alphasCumprod[5]).squareRoot())
    #expect(x.toArray() == [3 * b, 4 * b, 0, 0])
}

@Test(arguments: [
    ("linspace6", Prediction.epsilon), ("leading6", .epsilon), ("trailing6", .epsilon), ("trailing20", .epsilon),
    ("trailing6", .v),
])
func dpmSolverMatchesDiffusers(spec: String, prediction: Prediction) throws {
    // diffusers' DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint, final sigma 0) on the
    // same model outputs, step by step (tools/reference/make_pipeline_fixtures.py, make_dpm).
    try checkAgainstDiffusers(
        name: "dpm_\(prediction == .v ? "v_" : "")\(spec)", spec: spec, kind: .dpmSolver2M, prediction: prediction,
        noiseSeed: 1)
}

@Test(arguments: [("trailing6", Prediction.epsilon), ("trailing20", .epsilon), ("trailing6", .v)])
func sdeDpmSolverMatchesDiffusers(spec: String, prediction: Prediction) throws {
    // The same scheduler as "sde-dpmsolver++" (make_dpm_sde), given as variance_noise the z that
    // the items draw here from their own Philox streams (seed 5, grid ids 0 and 1).
    try checkAgainstDiffusers(
        name: "dpm_sde_\(prediction == .v ? "v_" : "")\(spec)", spec: spec, kind: .dpmSolver2MSDE,
        prediction: prediction, noiseSeed: 5)
}

/// Runs two items from dpm.xT.npy through `kind` on the tiny model and compares the sample after
/// every step with `name`.xs.npy.
func checkAgainstDiffusers(
    name: String, spec: String, kind: SamplerKind, prediction: Prediction, noiseSeed: UInt64
) throws {
    let d = try GaussianDiffusion(respacing: spec)
    let steps = "dpm_\(prediction == .v ? "v_" : "")\(spec).t.npy"
    #expect(d.timestepMap.reversed() == (try NPYArray(path: fixture(steps)).integers()), "\(name) timesteps")
    let model = try tinyModel()
    let layout = GridLayout(k: 2, frameSize: 4, channels: 4)
    let schedule = DenoiseSchedule(diffusion: d, kind: kind, prediction: prediction)
    let xT = try load("dpm.xT.npy")
    let items = try (0..<2).map { i in
        try DenoiseItem(
            schedule: schedule, layout: layout, noise: NoiseStream(seed: noiseSeed, id: i),
            x: xT.slice(i..<i + 1).reshaped(layout.gridShape).copy())
    }
    let want = try load("\(name).xs.npy")
    let per = xT.count
    let scale = want.toArray().map { abs($0) }.max()!
    let ws = DiTWorkspace(config: model.config, batch: 2, workers: 1)
    var worst: Float = 0
    try BatchDenoiser.run(items, model: { x, t, _ in try model.forward(x: x, t: t, workspace: ws) }) { i, transition in
        guard case .denoise(let k, _) = transition else { return true }
        let step = d.count - 1 - k
        let expected = want.toArray()[(step * per + i * per / 2)..<(step * per + (i + 1) * per / 2)]
        worst = max(worst, zip(items[i].x.toArray(), expected).map { abs($0 - $1) }.max()!)
        return true
    }
    // diffusers runs its coefficients in float32 from float32 betas; relative to the sample's scale.
    print("\(name): max |diff| / max |x| over every step = \(worst / scale) (tolerance 1e-5)")
    #expect(worst <= 1e-5 * scale)
}

@Test(arguments: [SamplerKind.dpmSolver2M, .dpmSolver2MSDE])
func dpmSolverKeepsKnownFramesAndCannotResumeMidway(kind: SamplerKind) throws {
    let layout = GridLayout(k: 2, frameSize: 2, channels: 1)
    let d = try GaussianDiffusion(respacing: "trailing5")
    let schedule = DenoiseSchedule(diffusion: d, kind: kind, variance: .fixedLarge)
    let clean = Tensor([Float](repeating: 0.5, count: layout.gridCount), shape: layout.gridShape)
    for level in [ReplacementLevel.previousStep, .clean, .officialCurrentStep] {
        let item = try DenoiseItem(
            schedule: schedule, layout: layout, noise: NoiseStream(seed: 3, id: 0),
            known: KnownFrames(x0: clean, positions: [0, 1], level: level))
        try BatchDenoiser.run([item], model: { x, _, _ in Tensor(zeros: x.shape) })
        // every level ends with the known frames as they are (official's level moves to the new one)
        let out = item.x.toArray()
        #expect(out[0..<2] == [0.5, 0.5] && out[4..<6] == [0.5, 0.5], "\(level): \(out)")
    }
    #expect(throws: DiffusionError.self) {
        try DenoiseItem(schedule: schedule, layout: layout, noise: NoiseStream(seed: 3, id: 0), position: 2)
    }
}

@Test func sdeDpmSolverDrawsItsStepNoise() throws {
    // From the same x_T, the SDE solver's result depends on the step noise (its seed), the ODE's does not.
    let layout = GridLayout(k: 2, frameSize: 2, channels: 1)
    let d = try GaussianDiffusion(respacing: "trailing8")
    let xT = try Sampler(diffusion: d, layout: layout, seed: 1).initialNoise(grids: [0]).reshaped(layout.gridShape)
    func run(_ kind: SamplerKind, seed: UInt64) throws -> [Float] {
        let item = try DenoiseItem(
            schedule: DenoiseSchedule(diffusion: d, kind: kind), layout: layout,
            noise: NoiseStream(seed: seed, id: 0), x: xT.copy())
        try BatchDenoiser.run([item], model: { x, t, _ in elementwiseModel(x, t) })
        return item.x.toArray()
    }
    #expect(try run(.dpmSolver2M, seed: 2) == run(.dpmSolver2M, seed: 3))
    let sde = try run(.dpmSolver2MSDE, seed: 2)
    #expect(try sde == run(.dpmSolver2MSDE, seed: 2))
    #expect(try sde != run(.dpmSolver2MSDE, seed: 3))
    #expect(try sde != run(.dpmSolver2M, seed: 2))
}
