import GriditDiffusion
import GriditModels
import GriditTensor
import Testing

// One reverse step against the PyTorch reference (tools/reference/diffusion_reference.py).

struct StepCase: Sendable, CustomStringConvertible {
    let name: String, spec: String, k: Int
    var description: String { name }
}

let stepCases = [
    StepCase(name: "ddpm250_k249", spec: "250", k: 249), StepCase(name: "ddpm250_k120", spec: "250", k: 120),
    StepCase(name: "ddpm250_k0", spec: "250", k: 0), StepCase(name: "ddim50_k25", spec: "ddim50", k: 25),
]

@Test(arguments: stepCases)
func stepMatchesReference(_ c: StepCase) throws {
    let d = try GaussianDiffusion(respacing: c.spec)
    let x = try load("\(c.name).x.npy"), z = try load("\(c.name).z.npy")
    let modelOut = try load("\(c.name).out.npy")
    let shape = x.shape

    // The tiny model at t = timestepMap[k] reproduces the stored output.
    let model = try tinyModel()
    let ws = DiTWorkspace(config: model.config, batch: shape[0], workers: 1)
    let t = [Float](repeating: d.modelTimestep(c.k), count: shape[0])
    expectClose(try model.forward(x: x, t: t, workspace: ws), modelOut, "\(c.name) model output")

    let x0 = Tensor(zeros: shape), mean = Tensor(zeros: shape), logVar = Tensor(zeros: shape)
    try d.pMeanVariance(x: x, modelOutput: modelOut, k: c.k, predX0: x0, mean: mean, logVariance: logVar)
    expectClose(x0, try load("\(c.name).x0.npy"), "\(c.name) x0")
    expectClose(mean, try load("\(c.name).mean.npy"), "\(c.name) mean")
    expectClose(logVar, try load("\(c.name).logvar.npy"), "\(c.name) log variance")

    let next = Tensor(zeros: shape)
    try d.pSample(x: x, modelOutput: modelOut, k: c.k, noise: z, into: next)
    let ddpm = try load("\(c.name).ddpm.npy")
    expectClose(next, ddpm, "\(c.name) DDPM step")

    // In place (into: x) gives the same bytes.
    let inPlace = x.copy()
    try d.pSample(x: inPlace, modelOutput: modelOut, k: c.k, noise: z, into: inPlace)
    #expect(inPlace.toArray() == next.toArray())

    // Fixed variances with an epsilon-only output.
    let eps = Tensor(zeros: shape)
    for n in 0..<shape[0] {
        let inner = x.count / shape[0]
        eps.mutablePointer.advanced(by: n * inner).update(from: modelOut.pointer + 2 * n * inner, count: inner)
    }
    for (variance, file) in [(VarianceType.fixedLarge, "fixed_large"), (.fixedSmall, "fixed_small")] {
        try d.pSample(x: x, modelOutput: eps, k: c.k, noise: z, into: next, variance: variance)
        expectClose(next, try load("\(c.name).\(file).npy"), "\(c.name) \(file)")
    }

    // Replacement of grid row 0 (positions 0, 1 of a 2×2 grid of 4×4 frames) at both levels.
    let layout = GridLayout(k: 2, frameSize: 4, channels: 4)
    let known = try load("\(c.name).known.npy")
    for (level, file) in [
        (ReplacementLevel.officialCurrentStep, "replace_official"), (.previousStep, "replace_previous"),
    ] {
        let y = ddpm.copy()
        try d.replaceKnown(x: y, knownX0: known, noise: z, positions: [0, 1], layout: layout, k: c.k, level: level)
        expectClose(y, try load("\(c.name).\(file).npy"), "\(c.name) \(file)")
    }

    if c.spec.hasPrefix("ddim") {
        for (eta, file) in [(Float(0), "ddim_eta0"), (1, "ddim_eta1")] {
            try d.ddimSample(x: x, modelOutput: modelOut, k: c.k, eta: eta, noise: z, into: next)
            expectClose(next, try load("\(c.name).\(file).npy"), "\(c.name) \(file)")
        }
        try d.ddimSample(x: x, modelOutput: modelOut, k: c.k, eta: 1, noise: z, into: next, prediction: .v)
        expectClose(next, try load("\(c.name).v_ddim_eta1.npy"), "\(c.name) v DDIM")
    }

    // The same output read as a v-prediction.
    try d.pMeanVariance(
        x: x, modelOutput: modelOut, k: c.k, prediction: .v, predX0: x0, mean: mean, logVariance: logVar)
    expectClose(x0, try load("\(c.name).v_x0.npy"), "\(c.name) v x0")
    try d.pSample(x: x, modelOutput: modelOut, k: c.k, noise: z, into: next, prediction: .v)
    expectClose(next, try load("\(c.name).v_ddpm.npy"), "\(c.name) v DDPM step")
}

@Test func stepsRejectBadShapesAndSteps() throws {
    let d = try GaussianDiffusion(respacing: "50")
    let x = Tensor(zeros: [1, 4, 8, 8])
    let learned = Tensor(zeros: [1, 8, 8, 8])
    #expect(throws: DiffusionError.self) {
        try d.pSample(x: x, modelOutput: x, k: 3, noise: x, into: x)  // C channels for learned range
    }
    #expect(throws: DiffusionError.self) {
        try d.pSample(x: x, modelOutput: learned, k: 50, noise: x, into: x)
    }
    #expect(throws: DiffusionError.self) {
        try d.pSample(x: x, modelOutput: learned, k: 3, noise: nil, into: x)
    }
    // k = 0 needs no noise.
    try d.pSample(x: x, modelOutput: learned, k: 0, noise: nil, into: x)
    try d.ddimSample(x: x, modelOutput: learned, k: 3, eta: 0, noise: nil, into: x)
}

@Test func clipDenoisedClampsX0() throws {
    let d = try GaussianDiffusion(respacing: "50")
    let x = Tensor([5, -5, 0.5, 0], shape: [1, 1, 2, 2])
    let out = Tensor([-3, 3, 0, 0, 0, 0, 0, 0], shape: [1, 2, 2, 2])
    let x0 = Tensor(zeros: x.shape), mean = Tensor(zeros: x.shape), lv = Tensor(zeros: x.shape)
    try d.pMeanVariance(x: x, modelOutput: out, k: 10, clipDenoised: true, predX0: x0, mean: mean, logVariance: lv)
    #expect(x0.toArray().allSatisfy { (-1...1).contains($0) })
    #expect(x0.toArray()[0] == 1 && x0.toArray()[1] == -1)
}
