import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditEngine
import GriditImage
import GriditJobSpec
import GriditTensor
import GriditTestSupport
import Testing

// Whole sequences against the independent PyTorch reference (tools/reference/engine_reference.py,
// float64): the same frames in the same order, the same stage-1 grids. The engine runs float32,
// so 8-bit frames may differ by one level where a value sits on a rounding boundary, and grids
// agree to float32 rounding relative to their scale (random tiny models reach |x| ≈ 1000).

struct ReferenceCase: Sendable, CustomStringConvertible {
    let name: String, folder: String
    let request: JobSpec
    var description: String { name }
}

let referenceCases = [
    ReferenceCase(
        name: "pixel_gridit", folder: "pixel",
        request: JobSpec(
            length: 21,
            parameters: .init(
                seed: 5, mode: .gridit, sampler: .ddpm, steps: "4", srSampler: .ddim, srSteps: "3", eta: 0,
                contextRows: 1))),
    ReferenceCase(
        name: "pixel_official", folder: "pixel",
        request: JobSpec(
            length: 20, parameters: .init(seed: 3, mode: .official, sampler: .ddpm, steps: "4", noSR: true))),
    ReferenceCase(
        name: "latent_gridit", folder: "latent",
        request: JobSpec(
            length: 12,
            parameters: .init(
                seed: 11, mode: .gridit, sampler: .ddim, steps: "3", srSampler: .ddim, srSteps: "2", eta: 0,
                contextRows: 1))),
    ReferenceCase(
        name: "latent_official", folder: "latent",
        request: JobSpec(
            length: 10, parameters: .init(seed: 2, mode: .official, sampler: .ddpm, steps: "3", noSR: true))),
    ReferenceCase(
        name: "classcond_guided", folder: "classcond",
        request: JobSpec(
            length: 6,
            parameters: .init(seed: 9, sampler: .ddpm, steps: "4", contextRows: 1, classLabel: 1, cfgScale: 3))),
    ReferenceCase(
        name: "pixel_jumps", folder: "pixel",
        request: JobSpec(
            length: 20,
            parameters: .init(
                seed: 4, sampler: .ddpm, steps: "6", contextRows: 2, noSR: true, jumpLength: 2, jumpCount: 2))),
    // v-predicting stages, clean context rows (the pipeline's defaults).
    ReferenceCase(name: "pixel_v_clean", folder: "pixel_v", request: JobSpec(length: 20, parameters: .init(seed: 6))),
    // Autoguidance by a smaller guide model at the pipeline's cfg_scale 2.
    ReferenceCase(
        name: "pixel_autoguided", folder: "pixel_guide", request: JobSpec(length: 20, parameters: .init(seed: 7))),
    // Guidance in an interval: by the guide at the noisiest two of the four steps, and by the null
    // class at the other two.
    ReferenceCase(
        name: "pixel_autoguided_interval", folder: "pixel_guide",
        request: JobSpec(length: 20, parameters: .init(seed: 8, cfgInterval: .init(lower: 500, upper: 999)))),
    ReferenceCase(
        name: "classcond_guided_interval", folder: "classcond",
        request: JobSpec(
            length: 6,
            parameters: .init(
                seed: 10, sampler: .ddpm, steps: "4", contextRows: 1, classLabel: 1, cfgScale: 3,
                cfgInterval: .init(lower: 0, upper: 400)))),
]

@Test(arguments: referenceCases)
func sequenceMatchesReference(_ c: ReferenceCase) throws {
    let scratch = TemporaryDirectory("ge-ref")
    let run = try runToEnd(try pipeline(c.folder), c.request, work: scratch.file("work"))
    let (want, shape) = try referenceFrames("\(c.name).frames.npy")
    #expect(run.plan.frames == shape[0], "\(c.name): \(run.plan.frames) frames, reference \(shape[0])")
    let got = try decodedFrames(run)
    var worst = 0, differing = 0, total = 0
    for (g, w) in zip(got, want) {
        #expect(g.width == shape[3] && g.height == shape[2] && g.channels == shape[1])
        for (a, b) in zip(g.pixels, w) {
            let d = abs(Int(a) - Int(b))
            worst = max(worst, d)
            differing += d > 0 ? 1 : 0
            total += 1
        }
    }
    print("\(c.name): \(got.count) frames, 8-bit max |diff| \(worst), \(differing) of \(total) pixels differ")
    #expect(worst <= 1, "\(c.name): 8-bit frames differ by up to \(worst)")
    #expect(differing * 100 <= total, "\(c.name): \(differing) of \(total) pixels differ")

    for g in 0..<run.plan.grids {
        let want = try NPYArray(path: fixture("\(c.name).grid\(g).npy")).floatTensor().toArray()
        let got = try NPYArray(path: run.workDirectory + String(format: "/grids/grid_%05d.npy", g)).floatTensor()
            .toArray()
        let scale = max(1, want.map { abs($0) }.max()!)
        let d = maxAbsDiff(got, want)
        print("\(c.name) grid \(g): max |diff| \(d) (relative \(d / scale))")
        #expect(got.count == want.count && d <= 2e-4 * scale, "\(c.name) grid \(g): max |diff| \(d), scale \(scale)")
    }
}
