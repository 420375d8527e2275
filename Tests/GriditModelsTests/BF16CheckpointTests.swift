import Foundation
import GriditCheckpoint
import GriditModels
import GriditTensor
import Testing

// A DiT bound from a mapped checkpoint hands the pages of every weight it packed back to the file,
// and a bf16 checkpoint (`writeConverted` with `DiTWeights.bf16Keys`) binds straight into the bf16
// layers: neither changes a bit of the outputs.

/// A temporary folder for checkpoint files, removed by `remove()`.
struct ScratchFolder {
    let path = NSTemporaryDirectory() + "gridit-bf16-" + UUID().uuidString
    init() { try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
    func file(_ name: String) -> String { path + "/" + name }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Random weights of `c` (all of its table, pos_embed included), written as F32 safetensors.
func writeRandomCheckpoint(_ c: DiTConfiguration, to path: String, seed: UInt64) throws {
    var state = seed
    let tensors = DiTWeights.table(c).map { b -> (name: String, tensor: Tensor) in
        let t = Tensor(zeros: b.shape)
        let scale = b.shape.count >= 2 ? 1 / Float(b.shape.dropFirst().reduce(1, *)).squareRoot() : 0.05
        for i in 0..<t.count {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            t.mutablePointer[i] = (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
        return (b.key, t)
    }
    try SafetensorsWriter.write(path: path, tensors: tensors)
}

/// One forward of `model` on fixed inputs (batch 2, labels and condition when the model takes them).
func fixedForward(_ model: DiT) throws -> [Float] {
    let c = model.config
    let S = c.inputSize
    func image(_ channels: Int, _ seed: Float) -> Tensor {
        Tensor((0..<(2 * channels * S * S)).map { sin(Float($0) * 0.37 + seed) }, shape: [2, channels, S, S])
    }
    return try model.forward(
        x: image(c.inChannels, 1), t: [10, 700], y: c.numClasses > 0 ? [1, c.numClasses] : nil,
        condition: c.conditionChannels > 0 ? image(c.conditionChannels, 2) : nil,
        workspace: model.makeWorkspace(batch: 2, workers: 2)
    ).toArray()
}

let bf16CheckpointConfigs = [
    tinyConfig(numClasses: 5),
    tinyConfig(conditionChannels: 3),
    // Patch 1 of 5 channels: an odd K (5) in the patch embedding; hidden 48: one full 48-column panel.
    DiTConfiguration(depth: 1, hiddenSize: 48, numHeads: 3, patchSize: 1, inputSize: 4, inChannels: 5),
]

@Test("releasing the packed weights' pages leaves every output bit as it was", arguments: Precision.allCases)
func pageReleaseKeepsOutputs(_ precision: Precision) throws {
    let folder = ScratchFolder()
    defer { folder.remove() }
    for (i, c) in bf16CheckpointConfigs.enumerated() {
        let path = folder.file("\(i).safetensors")
        try writeRandomCheckpoint(c, to: path, seed: UInt64(i) + 7)
        let kept = try DiT(
            config: c, source: SafetensorsFile(path: path), precision: precision, releaseSourcePages: false)
        let released = try DiT(config: c, source: SafetensorsFile(path: path), precision: precision)
        let expected = try fixedForward(kept)
        #expect(try fixedForward(released) == expected, "\(precision) config \(i)")
        // Twice: the released pages fault back in for whatever reads them later.
        #expect(try fixedForward(released) == expected)
        let file = try SafetensorsFile(path: path)
        var owned = TensorDictionary()
        for name in file.tensorNames { owned.tensors[name] = try file.tensor(named: name).copy() }
        let inMemory = try DiT(config: c, source: owned, precision: precision)
        #expect(try fixedForward(inMemory) == expected, "owned weights give the mapped weights' outputs")
    }
}

@Test("a bf16 checkpoint run in bf16 gives its fp32 source's bf16 outputs bit for bit, without fp32 copies")
func bf16CheckpointMatchesFP32SourceInBF16() throws {
    let folder = ScratchFolder()
    defer { folder.remove() }
    for (i, c) in bf16CheckpointConfigs.enumerated() {
        let fp32 = folder.file("\(i).safetensors"), bf16 = folder.file("\(i)-bf16.safetensors")
        try writeRandomCheckpoint(c, to: fp32, seed: UInt64(i) + 11)
        try SafetensorsFile(path: fp32).writeConverted(to: bf16, bf16: DiTWeights.bf16Keys(c))
        let converted = try SafetensorsFile(path: bf16)
        for b in DiTWeights.table(c) {
            #expect(converted.info(b.key)?.dtype == (b.roundedInBF16 ? .bf16 : .f32), "\(b.key)")
        }
        let fromBF16 = try DiT(config: c, source: converted, precision: .bf16)
        let fromFP32 = try DiT(config: c, source: SafetensorsFile(path: fp32), precision: .bf16)
        #expect(fromBF16.precision == fromFP32.precision)
        #expect(try fixedForward(fromBF16) == fixedForward(fromFP32), "config \(i) in \(fromBF16.precision)")
        if fromBF16.precision == .bf16 {
            // The products' weights were packed from the bits: no float32 copy was bound.
            #expect(fromBF16.weights.blocks.allSatisfy { $0.qkvWeight == nil && $0.adaLNWeight == nil })
            #expect(fromBF16.weights.xEmbedWeight == nil && fromBF16.weights.finalLinearWeight == nil)
            #expect(fromBF16.weights.finalLinearBias?.isBorrowed == true)
        }
        // In fp32 the bf16 file still loads (its BF16 tensors converted to float32) and runs.
        let asFP32 = try fixedForward(DiT(config: c, source: converted, precision: .fp32))
        let sourceFP32 = try fixedForward(DiT(config: c, source: SafetensorsFile(path: fp32), precision: .fp32))
        var (num, den) = (0.0, 0.0)
        for (a, b) in zip(asFP32, sourceFP32) {
            num += Double(a - b) * Double(a - b)
            den += Double(b) * Double(b)
        }
        #expect((num / den).squareRoot() < 2e-2, "bf16-rounded weights in fp32: relative L2 error")
    }
}
