import Foundation
import GriditCheckpoint
import GriditModels
import GriditTensor
import Testing

// Parity with the independent PyTorch reference (tools/reference/dit_reference.py). The fixtures
// are tiny random models whose outputs the reference computed in float64; regenerate them with
// tools/reference/make_fixtures.py. Tolerance: max |diff| <= 1e-4 on every output element.

let tolerance: Float = 1e-4

func fixture(_ name: String) -> String {
    Bundle.module.resourceURL!.appendingPathComponent("Fixtures/\(name)").path
}

func maxAbsDiff(_ a: Tensor, _ b: Tensor, _ label: String) -> Float {
    #expect(a.shape == b.shape, "\(label): shape \(a.shape) vs \(b.shape)")
    let d = zip(a.toArray(), b.toArray()).map { abs($0 - $1) }.max() ?? .infinity
    print("\(label): max |diff| = \(d) over \(a.count) values")
    return d
}

/// Loads fixture case `name`, runs the Swift model and returns (output, expected).
func runFixture(_ name: String, checkpoint: String? = nil, expected: String? = nil, workers: Int = 2) throws -> (Tensor, Tensor, DiT) {
    let config = try DiTConfiguration.load(path: fixture("\(name).config.json"))
    let file = try SafetensorsFile(path: fixture(checkpoint ?? "\(name).safetensors"))
    let model = try DiT(config: config, source: file)
    let x = try NPYArray(path: fixture("\(name).x.npy")).floatTensor()
    let t = try NPYArray(path: fixture("\(name).t.npy")).floatTensor().toArray()
    let y = config.numClasses > 0 ? try NPYArray(path: fixture("\(name).y.npy")).integers() : nil
    let cond = config.conditionChannels > 0 ? try NPYArray(path: fixture("\(name).cond.npy")).floatTensor() : nil
    let ws = DiTWorkspace(config: config, batch: x.shape[0], workers: workers)
    let out = try model.forward(x: x, t: t, y: y, condition: cond, workspace: ws)
    let want = try NPYArray(path: fixture(expected ?? "\(name).out.npy")).floatTensor()
    return (out.copy(), want, model)
}

@Test(arguments: ["uncond", "classcond", "sr", "p8"])
func forwardMatchesPyTorchReference(name: String) throws {
    let (out, want, _) = try runFixture(name)
    #expect(maxAbsDiff(out, want, name) <= tolerance)
}

@Test(arguments: ["f16", "bf16"])
func halfPrecisionCheckpointsMatchReference(dtype: String) throws {
    let (out, want, _) = try runFixture("uncond", checkpoint: "uncond.\(dtype).safetensors", expected: "uncond.\(dtype).out.npy")
    #expect(maxAbsDiff(out, want, "uncond \(dtype)") <= tolerance)
}

@Test func posEmbedComesFromCheckpointWhenPresent() throws {
    let (_, _, uncond) = try runFixture("uncond")
    #expect(uncond.posEmbedFromCheckpoint)
    #expect(uncond.posEmbed.isBorrowed, "F32 pos_embed should be used in place from the mapping")
    // The fixture deliberately stores a non-standard pos_embed; the computed one differs from it.
    let computed = sinCosPositionEmbedding2D(dim: uncond.config.hiddenSize, gridH: uncond.config.gridSize,
                                             gridW: uncond.config.gridSize)
    #expect(zip(computed.toArray(), uncond.posEmbed.toArray()).contains { abs($0 - $1) > 0.1 })
    let (_, _, classcond) = try runFixture("classcond")
    #expect(!classcond.posEmbedFromCheckpoint)
}

@Test func f32WeightsAreBorrowedFromTheMapping() throws {
    let (_, _, model) = try runFixture("uncond")
    let w = model.weights
    let all = [w.xEmbedWeight, w.tEmbed0Weight, w.finalLinearWeight] + w.blocks.flatMap { [$0.qkvWeight, $0.fc2Weight] }
    #expect(all.allSatisfy { $0?.isBorrowed == true })
}

@Test func outputDoesNotDependOnAttentionWorkers() throws {
    let (one, _, _) = try runFixture("sr", workers: 1)
    let (three, _, _) = try runFixture("sr", workers: 3)
    #expect(one.toArray() == three.toArray())
}

@Test func batchElementsAreIndependent() throws {
    // Running element 1 of the uncond fixture alone gives the same output as inside the batch.
    let config = try DiTConfiguration.load(path: fixture("uncond.config.json"))
    let model = try DiT(config: config, source: try SafetensorsFile(path: fixture("uncond.safetensors")))
    let x = try NPYArray(path: fixture("uncond.x.npy")).floatTensor()
    let t = try NPYArray(path: fixture("uncond.t.npy")).floatTensor().toArray()
    let batch = try model.forward(x: x, t: t, workspace: DiTWorkspace(config: config, batch: 2)).copy()
    let single = try model.forward(x: x.slice(1..<2), t: [t[1]], workspace: DiTWorkspace(config: config, batch: 1))
    #expect(maxAbsDiff(single, batch.slice(1..<2), "batch independence") <= 1e-6)
}

@Test func referenceKernelsMatch() throws {
    let t = try NPYArray(path: fixture("tembed.t.npy")).floatTensor().toArray()
    let want = try NPYArray(path: fixture("tembed.out.npy")).floatTensor()
    let got = Tensor(zeros: [t.count, 256])
    timestepEmbedding(t, into: got.mutablePointer)
    #expect(maxAbsDiff(got, want, "timestep embedding") <= 1e-6)
    let pos = try NPYArray(path: fixture("pos2d.out.npy")).floatTensor()
    #expect(maxAbsDiff(sinCosPositionEmbedding2D(dim: 64, gridH: 4, gridW: 4), pos, "2-D sin-cos") <= 1e-6)
}
