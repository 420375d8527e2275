import GriditDiffusion
import GriditModels
import GriditTensor
import Testing

// Per-item batched denoising (seeds, schedules and known frames of their own), RePaint
// resampling schedules, guidance, and the bicubic condition against PyTorch.

@Test func itemsWithTheirOwnSeedsAndSchedulesAreBatchInvariant() throws {
    // Three items: different seeds, ids, samplers, step counts (so they leave the batch at
    // different rounds), one with known frames and one with resampling jumps. In one batch, in
    // another order, and each alone: identical bytes.
    let model = try tinyModel()
    let layout = GridLayout(k: 2, frameSize: 4, channels: 4)
    let known = Tensor((0..<layout.gridCount).map { Float($0 % 7) / 7 - 0.5 }, shape: layout.gridShape)
    func items() throws -> [DenoiseItem] {
        [
            try DenoiseItem(
                schedule: DenoiseSchedule(diffusion: try GaussianDiffusion(respacing: "6")), layout: layout,
                noise: NoiseStream(seed: 1, id: 4)),
            try DenoiseItem(
                schedule: DenoiseSchedule(diffusion: try GaussianDiffusion(respacing: "4"), kind: .ddim(eta: 0.5)),
                layout: layout, noise: NoiseStream(seed: 99, id: 0),
                known: KnownFrames(x0: known, positions: [0, 1], level: .previousStep)),
            try DenoiseItem(
                schedule: DenoiseSchedule(
                    diffusion: try GaussianDiffusion(respacing: "5"),
                    jumps: ResampleJumps(length: 2, count: 2)),
                layout: layout, noise: NoiseStream(seed: 1, id: 5)),
        ]
    }
    func run(_ items: [DenoiseItem], workers: Int) throws {
        try BatchDenoiser.run(items) { x, t, _ in
            try model.forward(
                x: x, t: t, workspace: DiTWorkspace(config: model.config, batch: x.shape[0], workers: workers))
        }
    }
    let batch = try items()
    try run(batch, workers: 2)
    let reversed = Array(try items().reversed())
    try run(reversed, workers: 3)
    for (i, item) in batch.enumerated() {
        let alone = try items()[i]
        try run([alone], workers: 1)
        #expect(item.x.toArray().map(\.bitPattern) == alone.x.toArray().map(\.bitPattern), "item \(i)")
        #expect(
            reversed[2 - i].x.toArray().map(\.bitPattern) == alone.x.toArray().map(\.bitPattern), "item \(i) reversed")
        #expect(item.isFinished)
    }
    // Known frames at the RePaint level: after the last step they are exactly the clean values.
    let frames = Tensor(zeros: [2] + layout.frameShape), want = Tensor(zeros: [2] + layout.frameShape)
    try layout.extract(from: batch[1].x, positions: 0..<2, into: frames)
    try layout.extract(from: known, positions: 0..<2, into: want)
    #expect(frames.toArray() == want.toArray())
}

@Test func droppingAnItemKeepsItsPositionAndTheOthersGoOn() throws {
    let layout = GridLayout(k: 1, frameSize: 2, channels: 4)
    let schedule = DenoiseSchedule(diffusion: try GaussianDiffusion(respacing: "10"))
    let a = try DenoiseItem(
        schedule: schedule, layout: layout, noise: NoiseStream(seed: 3, id: 0, stage: .superResolution))
    let b = try DenoiseItem(
        schedule: schedule, layout: layout, noise: NoiseStream(seed: 3, id: 1, stage: .superResolution))
    try BatchDenoiser.run([a, b], model: { x, t, _ in elementwiseModel(x, t) }) { i, transition in
        !(i == 0 && transition == .denoise(k: 6, visit: 0))
    }
    #expect(a.position == 4 && !a.isFinished && b.isFinished)
    // Resuming the dropped item from its position gives what an uninterrupted item gives.
    let fresh = try DenoiseItem(
        schedule: schedule, layout: layout, noise: NoiseStream(seed: 3, id: 0, stage: .superResolution))
    try BatchDenoiser.run([fresh], model: { x, t, _ in elementwiseModel(x, t) })
    let resumed = try DenoiseItem(
        schedule: schedule, layout: layout, noise: a.noise, x: a.x.copy(), position: a.position)
    try BatchDenoiser.run([resumed], model: { x, t, _ in elementwiseModel(x, t) })
    #expect(resumed.x.toArray() == fresh.x.toArray())
}

@Test func resamplingScheduleFollowsRePaint() {
    // 6 levels, jumps of 2 at levels 0 and 2 (multiples of 2 below 6 − 2), 2 passes over each span.
    let t = DenoiseSchedule.transitions(count: 6, jumps: ResampleJumps(length: 2, count: 2))
    let expected: [Transition] = [
        .denoise(k: 5, visit: 0), .denoise(k: 4, visit: 0), .denoise(k: 3, visit: 0),  // down to level 2
        .renoise(k: 3, visit: 0), .renoise(k: 4, visit: 0),  // back up to level 4
        .denoise(k: 4, visit: 1), .denoise(k: 3, visit: 1),  // level 2 again
        .denoise(k: 2, visit: 0), .denoise(k: 1, visit: 0),  // level 0
        .renoise(k: 1, visit: 0), .renoise(k: 2, visit: 0),
        .denoise(k: 2, visit: 1), .denoise(k: 1, visit: 1), .denoise(k: 0, visit: 0),
    ]
    #expect(t == expected)
    #expect(DenoiseSchedule.transitions(count: 4, jumps: nil) == (0..<4).reversed().map { .denoise(k: $0, visit: 0) })
    for count in [1, 2, 7, 50, 250] {
        for (j, r) in [(1, 2), (3, 1), (5, 3), (10, 4), (49, 2)] {
            let jumps = ResampleJumps(length: j, count: r)
            let list = DenoiseSchedule.transitions(count: count, jumps: jumps)
            let denoise = list.filter { if case .denoise = $0 { true } else { false } }.count
            #expect(DenoiseSchedule.evaluations(count: count, jumps: jumps) == denoise, "count \(count) j \(j) r \(r)")
            // The walk ends clean and never leaves 0 ..< count.
            var level = count - 1
            for step in list {
                switch step {
                case .denoise(let k, _):
                    #expect(k == level)
                    level -= 1
                case .renoise(let k, _):
                    #expect(k == level + 1 && k < count)
                    level += 1
                }
            }
            #expect(level == -1)
        }
    }
}

@Test func renoiseIsOneForwardStepWithItsOwnKey() throws {
    let d = try GaussianDiffusion(respacing: "3")
    let layout = GridLayout(k: 1, frameSize: 2, channels: 1)
    let schedule = DenoiseSchedule(diffusion: d, jumps: ResampleJumps(length: 1, count: 2))
    // Level 1 (after the first step) is a jump point: back up to level 2, then level 2 again.
    #expect(
        Array(schedule.transitions.prefix(3)) == [
            .denoise(k: 2, visit: 0), .renoise(k: 2, visit: 0), .denoise(k: 2, visit: 1),
        ])
    let x = Tensor([0.5, -0.25, 1, 2], shape: layout.gridShape)
    let item = try DenoiseItem(
        schedule: schedule, layout: layout, noise: NoiseStream(seed: 8, id: 2), x: x.copy(), position: 1)
    try item.applyRenoises(scratch: Tensor(zeros: layout.gridShape))
    #expect(item.position == 2 && item.next == .denoise(k: 2, visit: 1))
    let z = Tensor(zeros: layout.gridShape)
    layout.fillNoise(frame: 0, of: z, key: NoiseKey(seed: 8, purpose: .jump, grid: 2, step: 2, frame: 0))
    let a = Float((1 - d.betas[2]).squareRoot()), b = Float(d.betas[2].squareRoot())
    #expect(item.x.toArray() == zip(x.toArray(), z.toArray()).map { a * $0 + b * $1 })
}

@Test func guidanceMovesEpsilonAwayFromTheUnconditionalOnly() throws {
    let cond = Tensor([1, 2, 3, 4, 5, 6, 7, 8], shape: [1, 4, 1, 2])
    let uncond = Tensor([0, 0, 1, 1, 9, 9, 9, 9], shape: [1, 4, 1, 2])
    let out = Tensor(zeros: cond.shape)
    try classifierFreeGuidance(conditional: cond, unconditional: uncond, scale: 3, epsChannels: 2, into: out)
    // ε channels 0–1: u + 3(c − u); variance channels 2–3 from the conditional output.
    #expect(out.toArray() == [3, 6, 7, 10, 5, 6, 7, 8])
    try classifierFreeGuidance(conditional: cond, unconditional: uncond, scale: 1, epsChannels: 2, into: cond)
    #expect(cond.toArray() == [1, 2, 3, 4, 5, 6, 7, 8])
}

@Test(arguments: [2, 3, 4])
func bicubicMatchesPyTorch(scale: Int) throws {
    let x = try load("bicubic.in.npy")
    let want = try load("bicubic.x\(scale).npy")
    let out = Tensor(zeros: want.shape)
    resizeBicubic(x, into: out)
    expectClose(out, want, "bicubic ×\(scale)", tolerance: 1e-5)
}

@Test func temperatureScalesEveryNormalAnItemDraws() throws {
    let layout = GridLayout(k: 1, frameSize: 2, channels: 4)
    let schedule = DenoiseSchedule(diffusion: try GaussianDiffusion(respacing: "10"))  // DDPM: noise at every step
    func item(_ temperature: Float, id: Int = 0) throws -> DenoiseItem {
        try DenoiseItem(
            schedule: schedule, layout: layout,
            noise: NoiseStream(seed: 3, id: id, stage: .superResolution, temperature: temperature))
    }
    // x_T: exactly half at 0.5 (a power of two scales without rounding).
    #expect(try item(0.5).x.toArray() == (try item(1).x.toArray()).map { $0 * 0.5 })
    // At 0 the steps' noise is gone too: two noise ids end in the same bytes, which at 1 they do not.
    let cold = [try item(0), try item(0, id: 7)], warm = [try item(1), try item(1, id: 7)]
    try BatchDenoiser.run(cold + warm, model: { x, t, _ in elementwiseModel(x, t) })
    #expect(cold[0].x.toArray() == cold[1].x.toArray())
    #expect(warm[0].x.toArray() != warm[1].x.toArray())
}
