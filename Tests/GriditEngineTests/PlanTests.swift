import GriditDiffusion
import GriditEngine
import GriditJobSpec
import GriditModels
import Testing

// Plan arithmetic: pure functions of the configuration and the settings.

func configuration(
    k: Int, frame: Int = 4, channels: Int = 1, scale: Int? = 2, classes: Int = 0,
    vae: AutoencoderKLConfiguration? = nil, steps: String = "10"
) -> PipelineConfiguration {
    let f = vae?.downsampleFactor ?? 1
    let c = vae?.latentChannels ?? channels
    let s1 = DiTConfiguration(depth: 1, hidden: 16, input: k * frame / f, channels: c, classes: classes)
    let s2 = scale.map { DiTConfiguration(depth: 1, hidden: 16, input: frame * $0 / f, channels: c, condition: c) }
    let spec = PipelineSpec(
        grid: .init(k: k, frameSize: frame, channels: channels), stage1: .init(config: "/s1.json", weights: "/s1.st"),
        stage2: scale.map { .init(config: "/s2.json", weights: "/s2.st", scale: $0) },
        vae: vae.map { _ in .init(config: "/v.json", weights: "/v.st") },
        defaults: .init(steps: steps, srSteps: "5", contextRows: 1))
    return PipelineConfiguration(spec: spec, stage1: s1, stage2: s2, vae: vae)
}

extension DiTConfiguration {
    init(depth: Int, hidden: Int, input: Int, channels: Int, classes: Int = 0, condition: Int = 0) {
        self.init(
            depth: depth, hiddenSize: hidden, numHeads: 2, patchSize: 1, inputSize: input, inChannels: channels,
            numClasses: classes, conditionChannels: condition)
    }
}

func plan(_ p: PipelineConfiguration, _ r: JobSpec) throws -> SequencePlan {
    try SequencePlan(settings: try r.settings(for: p), pipeline: p)
}

@Test(arguments: [2, 3, 4, 5, 8])
func griditPlansGiveExactlyLFramesWithContextFromEarlierFrames(k: Int) throws {
    let p = configuration(k: k)
    let kk = k * k
    for c in 1..<k {
        for length in [1, 2, kk - 1, kk, kk + 1, kk + (k - c) * k, kk + (k - c) * k + 1, 3 * kk + 5, 200] {
            let pl = try plan(p, JobSpec(length: length, parameters: .init(seed: 0, contextRows: c)))
            let per = (k - c) * k
            #expect(pl.frames == length)
            #expect(pl.grids == (length <= kk ? 1 : 1 + (length - kk + per - 1) / per), "k \(k) c \(c) L \(length)")
            var owner = [Int](repeating: -1, count: length)
            var next = 0
            for g in 0..<pl.grids {
                let grid = pl.grid(g)
                if g == 0 {
                    #expect(grid.role == .initial && grid.known.isEmpty)
                } else {
                    #expect(grid.role == .extension)
                    // At least c rows of context; the cells are a prefix of the grid, the new ones follow.
                    #expect(grid.known.count >= c * k && grid.known.count + grid.outputs.count == kk)
                    #expect(grid.known.map(\.position) == Array(0..<grid.known.count))
                    // The known frames are the frames just before this grid's first new frame, in order.
                    let first = grid.outputs[0].frame
                    for (j, cell) in grid.known.enumerated() {
                        #expect(cell.source == pl.source(ofFrame: first - grid.known.count + j))
                        #expect(cell.source.grid < g)
                    }
                }
                for out in grid.outputs {
                    #expect(out.frame == next, "frames come out in order")
                    next += 1
                    owner[out.frame] = g
                    #expect(pl.source(ofFrame: out.frame) == FrameRef(grid: g, position: out.position))
                }
            }
            #expect(next == length && owner.allSatisfy { $0 >= 0 })
        }
    }
}

@Test func officialPlanReproducesTheReferenceAssembly() throws {
    let p = configuration(k: 4, scale: nil)
    // N = ((L − 8) // 12) + 1 and 16 + 8N frames: the Makefile's L = 64 gives 56 frames.
    for (length, n) in [(1, 0), (7, 0), (8, 1), (19, 1), (20, 2), (64, 5), (100, 8)] {
        let pl = try plan(p, JobSpec(length: length, parameters: .init(seed: 0, mode: .official)))
        #expect(pl.officialExtensions == n && pl.frames == 16 + 8 * n && pl.grids == 2 * n + 1, "L \(length)")
    }
    let pl = try plan(p, JobSpec(length: 64, parameters: .init(seed: 0, mode: .official)))
    // G_0[0..15] ++ Σ_k ( I_k[row 2, cols 0..3] ++ G_{k+1}[row 3, cols 0..3] ); I_k has id N + 1 + k.
    var expected = (0..<16).map { FrameRef(grid: 0, position: $0) }
    for k in 0..<5 {
        expected += (8..<12).map { FrameRef(grid: 6 + k, position: $0) }
        expected += (12..<16).map { FrameRef(grid: k + 1, position: $0) }
    }
    #expect((0..<pl.frames).map { pl.source(ofFrame: $0) } == expected)
    // Extension G_{k+1}: rows 0..2 from rows 1..3 of G_k; in-between I_k: row 0 from G_k row 3, row 3 from G_{k+1} row 3.
    let g3 = pl.grid(3)
    #expect(g3.role == .extension && g3.dependencies == [2])
    #expect(g3.known.map(\.position) == Array(0..<12) && g3.known.map(\.source.position) == Array(4..<16))
    let i2 = pl.grid(8)
    #expect(i2.role == .inBetween && i2.dependencies == [2, 3])
    #expect(i2.known.map(\.position) == Array(0..<4) + Array(12..<16))
    #expect(
        i2.known.map(\.source) == (12..<16).map { FrameRef(grid: 2, position: $0) }
            + (12..<16).map { FrameRef(grid: 3, position: $0) })
    #expect(i2.outputs.map(\.position) == Array(8..<12) && i2.outputs.map(\.frame) == Array(32..<36))
}

@Test func evaluationCountsFollowTheSettings() throws {
    let p = configuration(k: 4, steps: "50")
    let a = try plan(p, JobSpec(length: 128, parameters: .init(seed: 1, contextRows: 2)))
    // 1 + ceil(112 / 8) = 15 grids × 50 steps; 128 frames × 5 SR steps.
    #expect(a.grids == 15 && a.stage1.evaluations == 750 && a.stage2?.evaluations == 640)
    #expect(a.stage1.flops == 750 * p.stage1.flopsPerForward(batch: 1))
    let b = try plan(
        p, JobSpec(length: 128, parameters: .init(seed: 1, contextRows: 2, noSR: true, jumpLength: 10, jumpCount: 3)))
    // Jump points 0, 10, 20, 30 (below 50 − 10), each span walked twice more: 50 + 4·2·10 = 130.
    #expect(b.stage1.evaluationsPerItem == 130 && b.stage1.evaluations == 15 * 130 && b.stage2 == nil)
    #expect(b.outputFrameSize == 4 && a.outputFrameSize == 8)
    let guided = configuration(k: 2, scale: nil, classes: 3)
    let g = try plan(guided, JobSpec(length: 4, parameters: .init(seed: 1, classLabel: 0, cfgScale: 4)))
    #expect(g.stage1.rowsPerEvaluation == 2 && g.stage1.evaluations == 20)
    let unguided = try plan(guided, JobSpec(length: 4, parameters: .init(seed: 1, classLabel: 0, cfgScale: 1)))
    #expect(unguided.stage1.rowsPerEvaluation == 1 && unguided.stage1.evaluations == 10)
    // Autoguidance counts the guide model's own operations (here a smaller one).
    let auto = try pipeline("pixel_guide").configuration
    let a2 = try plan(auto, JobSpec(length: 20, parameters: .init(seed: 1)))
    let (main, weak) = (auto.stage1.flopsPerForward(batch: 1), auto.guide!.flopsPerForward(batch: 1))
    #expect(weak < main && a2.stage1.rowsPerEvaluation == 2)
    #expect(a2.stage1.flops == Double(a2.grids * 4) * (main + weak))
    // ... and so does the time estimate: at 1 FLOP/ns each row costs its own model's operations.
    let nominal = CostModel.nominal(auto, gflops: 1)
    #expect(abs(a2.estimatedSeconds(nominal) - a2.stage1.flops / 1e9) < 1e-12 * a2.stage1.flops)
    // In a guidance interval only its steps add a guide row: of "4"'s timesteps 0, 333, 666 and 999,
    // [500, 999] holds two; with jumps, each visit of a level counts.
    let high = GuidanceInterval(lower: 500, upper: 999)
    let a3 = try plan(auto, JobSpec(length: 20, parameters: .init(seed: 1, steps: "4", cfgInterval: high)))
    #expect(a3.stage1.evaluationsPerItem == 4 && a3.stage1.guidedEvaluationsPerItem == 2)
    #expect(a3.stage1.evaluations == a3.grids * 6 && a3.stage1.flops == Double(a3.grids) * (4 * main + 2 * weak))
    #expect(abs(a3.estimatedSeconds(nominal) - a3.stage1.flops / 1e9) < 1e-12 * a3.stage1.flops)
    #expect(a3.render(cost: nominal).contains("(4 steps, guided at 2 of them: 2 rows each)"))
    let low = GuidanceInterval(lower: 0, upper: 400)
    let jumps = try plan(
        auto, JobSpec(length: 20, parameters: .init(seed: 1, steps: "4", jumpLength: 1, jumpCount: 2, cfgInterval: low))
    )
    // Levels 3 2 1 0 with a jump back at levels 0, 1, 2: 1 and 0 (t 333 and 0) are each visited twice.
    let visits = DenoiseSchedule.transitions(count: 4, jumps: ResampleJumps(length: 1, count: 2)).filter {
        if case .denoise(let k, _) = $0 { k <= 1 } else { false }
    }
    #expect(jumps.stage1.guidedEvaluationsPerItem == visits.count && visits.count > 2)

    let vae = AutoencoderKLConfiguration(
        inChannels: 1, outChannels: 1, latentChannels: 2, blockOutChannels: [4, 8],
        layersPerBlock: 1, normNumGroups: 2)
    let latent = configuration(k: 4, frame: 8, vae: vae)
    let o = try plan(latent, JobSpec(length: 20, parameters: .init(seed: 1, mode: .official)))
    // N = 2: 5 grids decoded once; contexts encoded after the 8-bit round trip: N (extensions) + 2N (in-betweens).
    #expect(o.vae.gridDecodes == 5 && o.vae.gridEncodes == 6 && o.vae.frameEncodes == 32 && o.vae.frameDecodes == 32)
    #expect(o.vae.flops > o.vae.gridFlops && o.vae.gridFlops > 0)

    let text = a.render(cost: CostModel.nominal(p))
    #expect(
        text.contains("128 frames") && text.contains("grids: 15") && text.contains("750 model evaluations")
            && text.contains("640 model evaluations"), "\(text)")
    let seconds = a.estimatedSeconds(CostModel.nominal(p, gflops: 1))
    #expect(abs(seconds - a.flops / 1e9) < 1e-9 * max(1, seconds))
}
