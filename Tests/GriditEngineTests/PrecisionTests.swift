import Foundation
import GriditCheckpoint
import GriditEngine
import GriditJobSpec
import GriditModels
import GriditTensor
import GriditTestSupport
import Testing

// Precision is a per-pipeline setting: the pipeline is loaded in one (bf16 weights packed once),
// a run asks for one, and sequence.json records what was asked and what ran. The bf16 kernels'
// accuracy is tested on the models (DiTParityTests, VAETests); here, the wiring.

@Test func bf16RunsRecordTheirPrecisionAndReproduce() throws {
    let expected = Precision.bf16.effective  // bf16 on CPUs with AVX512_BF16, else fp32
    let bf16 = try LoadedPipeline(path: fixture("latent/pipeline.json"), precision: .bf16)
    #expect(bf16.precision == expected && bf16.stage1.precision == expected && bf16.vae?.precision == expected)
    let fp32 = try pipeline("latent")
    #expect(fp32.precision == .fp32)

    let scratch = TemporaryDirectory("ge-prec")
    let request = JobSpec(length: 9, parameters: .init(seed: 6, steps: "3", srSteps: "2", precision: "bf16"))
    let a = try runToEnd(bf16, request, work: scratch.file("a"))
    let summary = try a.finish(into: scratch.file("out"))
    #expect(summary.settings.precisionRequested == "bf16" && summary.settings.precisionUsed == expected.rawValue)
    let json = try #require(FileManager.default.contents(atPath: scratch.file("out/sequence.json")))
    #expect(String(decoding: json, as: UTF8.self).contains("\"precision_used\" : \"\(expected.rawValue)\""))

    // Same seed, same precision: the same bytes, at another thread count.
    _ = try runToEnd(bf16, request, work: scratch.file("b"), options: ExecutionOptions(threads: 1))
    #expect(results(of: scratch.file("a")) == results(of: scratch.file("b")))

    // The fp32 run of the same seed: close in model space, and (where bf16 runs) not the same bits.
    let c = try runToEnd(
        fp32, JobSpec(length: 9, parameters: .init(seed: 6, steps: "3", srSteps: "2", precision: "fp32")),
        work: scratch.file("c"))
    let g16 = try NPYArray(path: a.workDirectory + "/grids/grid_00000.npy").floatTensor()
    let g32 = try NPYArray(path: c.workDirectory + "/grids/grid_00000.npy").floatTensor()
    var num = 0.0, den = 0.0
    for i in 0..<g32.count {
        num += Double(g16.pointer[i] - g32.pointer[i]) * Double(g16.pointer[i] - g32.pointer[i])
        den += Double(g32.pointer[i]) * Double(g32.pointer[i])
    }
    let rel = (num / den).squareRoot()
    print("bf16 vs fp32, stage-1 grid 0 of the latent fixture: relative error \(rel)")
    #expect(rel.isFinite)
    if expected == .bf16 {
        #expect(rel > 0, "bf16 gave fp32's bits: the bf16 kernels did not run")
        #expect(results(of: scratch.file("a")) != results(of: scratch.file("c")))
    } else {
        #expect(rel == 0)
    }
}

@Test func aRunMustAskForThePrecisionItsPipelineIsLoadedIn() throws {
    let fp32 = try pipeline("latent")
    let scratch = TemporaryDirectory("ge-prec-mismatch")
    let request = JobSpec(length: 4, parameters: .init(seed: 1, precision: "bf16"))
    if Precision.bf16.effective == .bf16 {
        expectEngineError(.invalidInput, mentioning: "loaded in fp32") {
            _ = try SequenceRun(pipeline: fp32, spec: request, workDirectory: scratch.file("w"))
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.file("w")))
    } else {
        // Without AVX512_BF16 a bf16 request runs fp32, on the fp32 pipeline.
        _ = try SequenceRun(pipeline: fp32, spec: request, workDirectory: scratch.file("w"))
    }
}
