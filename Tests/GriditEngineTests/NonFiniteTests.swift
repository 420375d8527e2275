import Foundation
import GriditCheckpoint
import GriditEngine
import GriditJobSpec
import GriditTensor
import GriditTestSupport
import Testing

// A model whose outputs turn NaN or infinite (NaN weights that reached the engine without the
// store's import check, or a sampler that diverges) must fail its run: the 8-bit mapping would
// otherwise write flat grey frames and report success.

@Test("a run whose model outputs become non-finite fails and writes no frame", arguments: ["stage1", "stage2"])
func nonFiniteOutputsFailTheRun(stage: String) throws {
    let scratch = TemporaryDirectory("ge-nonfinite")
    let folder = scratch.file("pipeline")
    try FileManager.default.copyItem(atPath: fixture("pixel"), toPath: folder)
    let weights = folder + "/\(stage).safetensors"
    let source = try SafetensorsFile(path: weights)
    let tensors = try source.tensorNames.map { name in (name: name, tensor: try source.tensor(named: name).copy()) }
    let bias = try #require(tensors.first { $0.name == "final_layer.linear.bias" })
    bias.tensor.mutablePointer[0] = .nan
    try SafetensorsWriter.write(path: weights + ".nan", tensors: tensors)
    #expect(rename(weights + ".nan", weights) == 0)

    let p = try LoadedPipeline(path: folder + "/pipeline.json")
    let work = scratch.file("work")
    expectEngineError(.invalidInput, mentioning: "non-finite") {
        try SequenceRun(pipeline: p, spec: JobSpec(length: 16, parameters: .init(seed: 1)), workDirectory: work)
            .execute()
    }
    #expect(files(under: work).keys.filter { $0.hasPrefix("frames/") }.isEmpty, "a frame was written")
}
