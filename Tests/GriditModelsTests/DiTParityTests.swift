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

/// Backends to test: the OpenBLAS fallback, and this CPU's best (gridit's AVX-512 kernels where present).
let modelBackends = Array(Set([KernelBackend.openBLAS, .current])).sorted()

/// Loads fixture case `name`, runs the Swift model and returns (output, expected).
func runFixture(
    _ name: String, checkpoint: String? = nil, expected: String? = nil, workers: Int = 2,
    backend: KernelBackend = .current
) throws -> (Tensor, Tensor, DiT) {
    let config = try DiTConfiguration.load(path: fixture("\(name).config.json"))
    let file = try SafetensorsFile(path: fixture(checkpoint ?? "\(name).safetensors"))
    let model = try DiT(config: config, source: file, backend: backend)
    let x = try NPYArray(path: fixture("\(name).x.npy")).floatTensor()
    let t = try NPYArray(path: fixture("\(name).t.npy")).floatTensor().toArray()
    let y = config.numClasses > 0 ? try NPYArray(path: fixture("\(name).y.npy")).integers() : nil
    let cond = config.conditionChannels > 0 ? try NPYArray(path: fixture("\(name).cond.npy")).floatTensor() : nil
    let ws = model.makeWorkspace(batch: x.shape[0], workers: workers)
    let out = try model.forward(x: x, t: t, y: y, condition: cond, workspace: ws)
    let want = try NPYArray(path: fixture(expected ?? "\(name).out.npy")).floatTensor()
    return (out.copy(), want, model)
}

@Test(arguments: ["uncond", "classcond", "sr", "p8"], modelBackends)
func forwardMatchesPyTorchReference(name: String, backend: KernelBackend) throws {
    let (out, want, _) = try runFixture(name, backend: backend)
    #expect(maxAbsDiff(out, want, "\(name) \(backend)") <= tolerance)
}

@Test(arguments: ["f16", "bf16"])
func halfPrecisionCheckpointsMatchReference(dtype: String) throws {
    let (out, want, _) = try runFixture(
        "uncond", checkpoint: "uncond.\(dtype).safetensors", expected: "uncond.\(dtype).out.npy")
    #expect(maxAbsDiff(out, want, "uncond \(dtype)") <= tolerance)
}

@Test func posEmbedComesFromCheckpointWhenPresent() throws {
    let (_, _, uncond) = try runFixture("uncond")
    #expect(uncond.posEmbedFromCheckpoint)
    #expect(uncond.posEmbed.isBorrowed, "F32 pos_embed should be used in place from the mapping")
    // The fixture deliberately stores a non-standard pos_embed; the computed one differs from it.
    let computed = sinCosPositionEmbedding2D(
        dim: uncond.config.hiddenSize, gridH: uncond.config.gridSize,
        gridW: uncond.config.gridSize)
    #expect(zip(computed.toArray(), uncond.posEmbed.toArray()).contains { abs($0 - $1) > 0.1 })
    let (_, _, classcond) = try runFixture("classcond")
    #expect(!classcond.posEmbedFromCheckpoint)
}

@Test func f32WeightsAreBorrowedFromTheMapping() throws {
    let (_, _, model) = try runFixture("uncond")
    let w = model.weights
    let all =
        [w.xEmbedWeight, w.tEmbed0Weight, w.finalLinearWeight] + w.blocks.flatMap { [$0.qkvWeight, $0.fc2Weight] }
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
    let batch = try model.forward(x: x, t: t, workspace: model.makeWorkspace(batch: 2)).copy()
    let single = try model.forward(x: x.slice(1..<2), t: [t[1]], workspace: model.makeWorkspace(batch: 1))
    #expect(maxAbsDiff(single, batch.slice(1..<2), "batch independence") == 0)
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

/// DiT-S/2 shapes at a 32 latent (256 tokens, 384 wide, 6 heads), 3 blocks deep, seeded weights.
func seededSmallDiT(precision: Precision = .fp32, backend: KernelBackend = .current) throws -> DiT {
    var config = try DiTConfiguration.preset("DiT-S/2", inputSize: 32)
    config.depth = 3
    var source = TensorDictionary()
    for (i, b) in DiTWeights.table(config).enumerated() where !b.optional {
        source.tensors[b.key] = Tensor(seededValues(b.shape.reduce(1, *), seed: UInt64(i), scale: 0.05), shape: b.shape)
    }
    return try DiT(config: config, source: source, precision: precision, backend: backend)
}

struct ModelCase: CustomTestStringConvertible, Sendable {
    let backend: KernelBackend
    let precision: Precision
    var testDescription: String { "\(backend) \(precision)" }
}

let modelCases: [ModelCase] = modelBackends.flatMap { b in
    Precision.allCases.filter { $0.effective(on: b) == $0 }.map { ModelCase(backend: b, precision: $0) }
}

@Test(arguments: modelCases)
func outputIsBitIdenticalForAnyThreadCountAndBatch(_ c: ModelCase) throws {
    // The same input must give the same bytes at 1, 2 and 3 threads, and alone or inside a batch.
    let model = try seededSmallDiT(precision: c.precision, backend: c.backend)
    #expect(model.precision == c.precision)
    let x = Tensor(seededValues(2 * 4 * 32 * 32, seed: 999, scale: 1), shape: [2, 4, 32, 32])
    var outputs: [[UInt32]] = []
    for threads in [1, 2, 3] {
        let ws = model.makeWorkspace(batch: 2, workers: threads)
        outputs.append(try model.forward(x: x, t: [10, 900], workspace: ws).toArray().map(\.bitPattern))
    }
    for other in outputs.dropFirst() {
        let differing = zip(outputs[0], other).filter { $0 != $1 }.count
        #expect(differing == 0, "\(differing) of \(other.count) output values differ between thread counts")
    }
    // The second sample alone (batch 1) gives the same bits as inside the batch of 2.
    let alone = try model.forward(x: x.slice(1..<2), t: [900], workspace: model.makeWorkspace(batch: 1, workers: 2))
    let half = outputs[0].count / 2
    let differing = zip(alone.toArray().map(\.bitPattern), outputs[0][half...]).filter { $0 != $1 }.count
    #expect(differing == 0, "\(differing) of \(half) values differ between batch 1 and batch 2")
}

@Test func bf16OutputIsCloseToFP32() throws {
    // bf16 products (fp32 accumulation) on DiT-S/2 widths: relative L2 error of the whole output
    // within 2e-2 of the fp32 model on the same weights and input.
    guard KernelBackend.current.hasBF16 else {
        #expect(try seededSmallDiT(precision: .bf16).precision == .fp32, "without AVX512_BF16, bf16 falls back to fp32")
        return
    }
    let x = Tensor(seededValues(2 * 4 * 32 * 32, seed: 5, scale: 1), shape: [2, 4, 32, 32])
    let low = try seededSmallDiT(precision: .bf16), high = try seededSmallDiT(precision: .fp32)
    let a = try low.forward(x: x, t: [30, 700], workspace: low.makeWorkspace(batch: 2, workers: 2)).toArray()
    let b = try high.forward(x: x, t: [30, 700], workspace: high.makeWorkspace(batch: 2, workers: 2)).toArray()
    let num = zip(a, b).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
    let den = b.reduce(0.0) { $0 + Double($1) * Double($1) }
    let rel = (num / den).squareRoot()
    print("bf16 vs fp32 DiT-S/2: relative L2 error \(rel)")
    #expect(rel <= 2e-2)
    #expect(rel > 0, "bf16 products should not be bit-identical to fp32")
}

@Test func workspaceHoldsBF16AttentionScratchOnlyForBF16Models() throws {
    // bf16 attention keeps rounded copies of K and V in the workspace; an fp32 model's workspace
    // goes without them, and a bf16 model refuses a workspace made without room for them.
    let fp32 = try seededSmallDiT(precision: .fp32), bf16 = try seededSmallDiT(precision: .bf16)
    let small = fp32.makeWorkspace(batch: 2, workers: 2), large = bf16.makeWorkspace(batch: 2, workers: 2)
    #expect(!small.bf16Attention)
    guard KernelBackend.current.hasBF16 else {
        #expect(!large.bf16Attention && large.byteCount == small.byteCount, "no bf16 here: the same workspace")
        return
    }
    #expect(large.bf16Attention && large.byteCount > small.byteCount)
    print("DiT-S/2 widths, batch 2: workspace \(small.byteCount) bytes fp32, \(large.byteCount) bf16")
    let x = Tensor(seededValues(2 * 4 * 32 * 32, seed: 5, scale: 1), shape: [2, 4, 32, 32])
    #expect(throws: ModelError.self) { try bf16.forward(x: x, t: [30, 700], workspace: small) }
}

/// Deterministic values in [-scale, scale) from a linear congruential stream.
func seededValues(_ count: Int, seed: UInt64, scale: Float) -> [Float] {
    var s = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return (0..<count).map { _ in
        s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return (Float(s >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
}
