import GriditCheckpoint
import GriditDiffusion
import Testing

@Test func respacing250IsRoundedUniformGrid() throws {
    let t = try GaussianDiffusion.spacedTimesteps("250")
    #expect(t == (0..<250).map { Int((Double($0) * 999 / 249).rounded()) })
    #expect(t.prefix(3) == [0, 4, 8] && t.last == 999)
    #expect(try GaussianDiffusion.spacedTimesteps("50").count == 50)
    #expect(try GaussianDiffusion.spacedTimesteps("1000") == Array(0..<1000))
    #expect(try GaussianDiffusion.spacedTimesteps("1") == [0])
}

@Test func ddimRespacingUsesSmallestStrideGivingN() throws {
    #expect(try GaussianDiffusion.spacedTimesteps("ddim50") == Array(stride(from: 0, to: 1000, by: 20)))
    #expect(try GaussianDiffusion.spacedTimesteps("ddim250") == Array(stride(from: 0, to: 1000, by: 4)))
    // 1000 // 7 = 142 gives 8 steps; the reference searches strides and takes 143 (7 steps).
    #expect(try GaussianDiffusion.spacedTimesteps("ddim7") == Array(stride(from: 0, to: 1000, by: 143)))
}

@Test func diffusersSpacings() throws {
    // set_timesteps of diffusers' schedulers, T = 1000 (ascending here; the last step goes to x0).
    #expect(try GaussianDiffusion.spacedTimesteps("linspace6") == [166, 333, 500, 666, 832, 999])
    #expect(try GaussianDiffusion.spacedTimesteps("leading6") == [142, 284, 426, 568, 710, 852])
    #expect(try GaussianDiffusion.spacedTimesteps("trailing6") == [166, 332, 499, 666, 832, 999])
    #expect(try GaussianDiffusion.spacedTimesteps("trailing1000") == Array(0..<1000))
    #expect(throws: DiffusionError.self) { try GaussianDiffusion.spacedTimesteps("leading1000") }  // ratio 0
}

@Test(arguments: [
    "0", "1001", "ddim0", "ddim600", "ddim", "ddimx", "abc", "", "  ", "-3", "10,,5", "2.5", "trailing0",
    "linspace", "leadingx",
])
func badRespacingSpecsThrow(spec: String) {
    #expect(throws: DiffusionError.self) { try GaussianDiffusion(respacing: spec) }
}

@Test func errorsNameTheSpec() {
    do {
        _ = try GaussianDiffusion(respacing: "ddim600")
        Issue.record("expected an error")
    } catch {
        #expect("\(error)".contains("ddim600"))
    }
}

@Test(arguments: ["250", "ddim50"])
func scheduleMatchesReference(spec: String) throws {
    let d = try GaussianDiffusion(respacing: spec)
    let map = try NPYArray(path: fixture("sched.\(spec).timestep_map.npy")).integers()
    #expect(d.timestepMap == map)
    let pairs: [(String, [Double])] = [
        ("betas", d.betas), ("alphas_cumprod", d.alphasCumprod), ("coef1", d.posteriorMeanCoef1),
        ("coef2", d.posteriorMeanCoef2), ("logvar_clipped", d.posteriorLogVarianceClipped),
        ("posterior_variance", d.posteriorVariance),
    ]
    for (name, mine) in pairs {
        let want = try loadDoubles("sched.\(spec).\(name).npy")
        #expect(mine.count == want.count, "\(name): \(mine.count) vs \(want.count)")
        let rel = zip(mine, want).map { a, b in b == 0 ? abs(a) : abs(a - b) / abs(b) }.max() ?? .infinity
        print("schedule \(spec) \(name): max relative diff = \(rel)")
        #expect(rel <= 1e-12, "\(spec) \(name): relative diff \(rel)")
    }
}

@Test func spacedScheduleKnownValues() throws {
    let d = try GaussianDiffusion(respacing: "250")
    #expect(d.count == 250)
    #expect(abs(d.betas[0] - 1e-4) < 1e-15)
    #expect(abs(d.betas[249] - 0.0775) < 1e-3)
    #expect(abs(d.alphasCumprod[249] - 4.0358e-5) < 1e-8)
    #expect(d.alphasCumprodPrev[0] == 1)
    #expect(d.posteriorLogVarianceClipped[0] == d.posteriorLogVarianceClipped[1])
    #expect(d.modelTimestep(249) == 999)
    // The unspaced schedule reproduces the linear betas.
    let full = try GaussianDiffusion(respacing: "1000")
    let linear = GaussianDiffusion.linearBetas()
    #expect(linear[0] == 1e-4 && linear[999] == 0.02)
    #expect(zip(full.betas, linear).allSatisfy { abs($0 - $1) <= 1e-15 })
}
