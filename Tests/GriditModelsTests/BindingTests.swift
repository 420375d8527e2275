import Foundation
import GriditCheckpoint
import GriditModels
import GriditTensor
import Testing

// Binding is total: every parameter once with its shape, every tensor of the source used.

func tinyConfig(numClasses: Int = 0, conditionChannels: Int = 0) -> DiTConfiguration {
    DiTConfiguration(
        depth: 2, hiddenSize: 16, numHeads: 2, patchSize: 2, inputSize: 4, inChannels: 3,
        learnSigma: true, numClasses: numClasses, conditionChannels: conditionChannels)
}

func fullSource(_ c: DiTConfiguration) -> TensorDictionary {
    var d = TensorDictionary()
    for b in DiTWeights.table(c) { d.tensors[b.key] = Tensor(zeros: b.shape) }
    return d
}

@Test func tableHasTheReferenceKeys() {
    let keys = DiTWeights.table(tinyConfig(numClasses: 5)).map(\.key)
    #expect(keys.contains("blocks.1.adaLN_modulation.1.weight"))
    #expect(keys.contains("y_embedder.embedding_table.weight"))
    #expect(keys.contains("t_embedder.mlp.2.bias"))
    #expect(Set(keys).count == keys.count)
    // 7 stem + 1 class table + 10 per block + 4 final.
    #expect(keys.count == 7 + 1 + 2 * 10 + 4)
    let sr = DiTWeights.table(tinyConfig(conditionChannels: 3))
    #expect(sr.first { $0.key == "x_embedder.proj.weight" }?.shape == [16, 6, 2, 2])
    #expect(!DiTWeights.table(tinyConfig()).map(\.key).contains("y_embedder.embedding_table.weight"))
}

@Test func completeSourceBinds() throws {
    let c = tinyConfig(numClasses: 5, conditionChannels: 2)
    let model = try DiT(config: c, source: fullSource(c))
    #expect(model.weights.blocks.count == 2)
    #expect(model.posEmbedFromCheckpoint)
}

@Test func missingTensorIsNamed() {
    let c = tinyConfig()
    var d = fullSource(c)
    d.tensors["blocks.1.mlp.fc2.bias"] = nil
    #expect(throws: BindingError.missing(key: "blocks.1.mlp.fc2.bias", expected: [16])) {
        try DiT(config: c, source: d)
    }
}

@Test func shapeMismatchNamesKeyAndBothShapes() {
    let c = tinyConfig()
    var d = fullSource(c)
    d.tensors["blocks.0.attn.qkv.weight"] = Tensor(zeros: [48, 8])
    do {
        _ = try DiT(config: c, source: d)
        Issue.record("binding should fail")
    } catch let error as BindingError {
        #expect(error == .shapeMismatch(key: "blocks.0.attn.qkv.weight", expected: [48, 16], found: [48, 8]))
        let text = "\(error)"
        #expect(text.contains("blocks.0.attn.qkv.weight") && text.contains("[48, 8]") && text.contains("[48, 16]"))
    } catch {
        Issue.record("unexpected error \(error)")
    }
}

@Test func unusedTensorsAreRejected() {
    // A class-conditional checkpoint bound with a config that has no classes: the table is extra.
    let withClasses = fullSource(tinyConfig(numClasses: 5))
    #expect(throws: BindingError.unused(keys: ["y_embedder.embedding_table.weight"])) {
        try DiT(config: tinyConfig(), source: withClasses)
    }
    var extra = fullSource(tinyConfig())
    extra.tensors["blocks.2.attn.qkv.weight"] = Tensor(zeros: [48, 16])  // one block too many
    #expect(throws: BindingError.unused(keys: ["blocks.2.attn.qkv.weight"])) {
        try DiT(config: tinyConfig(), source: extra)
    }
}

@Test func configWithWrongDepthForFixtureFails() throws {
    var c = try DiTConfiguration.load(path: fixture("uncond.config.json"))
    c.depth += 1
    #expect(throws: BindingError.missing(key: "blocks.2.attn.qkv.weight", expected: [3 * c.hiddenSize, c.hiddenSize])) {
        try DiT(config: c, source: try SafetensorsFile(path: fixture("uncond.safetensors")))
    }
}

@Test func forwardRejectsBadInputs() throws {
    let c = tinyConfig(numClasses: 5)
    let model = try DiT(config: c, source: fullSource(c))
    let ws = DiTWorkspace(config: c, batch: 1)
    let x = Tensor(zeros: [1, 3, 4, 4])
    #expect(throws: ModelError.self) { try model.forward(x: x, t: [1], y: nil, workspace: ws) }
    #expect(throws: ModelError.self) { try model.forward(x: x, t: [1], y: [6], workspace: ws) }
    #expect(throws: ModelError.self) {
        try model.forward(x: Tensor(zeros: [1, 3, 4, 2]), t: [1], y: [0], workspace: ws)
    }
    #expect(throws: ModelError.self) { try model.forward(x: x, t: [1, 2], y: [0], workspace: ws) }
    _ = try model.forward(x: x, t: [1], y: [5], workspace: ws)  // 5 = the null (CFG) class
}

@Test func presetsMatchReferenceSizes() throws {
    let xl = try DiTConfiguration.preset("DiT-XL/2", inputSize: 64)
    #expect((xl.depth, xl.hiddenSize, xl.numHeads, xl.patchSize, xl.tokens) == (28, 1152, 16, 2, 1024))
    let s8 = try DiTConfiguration.preset("DiT-S/8")
    #expect((s8.depth, s8.hiddenSize, s8.numHeads, s8.patchSize) == (12, 384, 6, 8))
    #expect(DiTConfiguration.presetNames.count == 12)
    #expect(throws: ModelError.self) { try DiTConfiguration.preset("DiT-M/2") }
    #expect(throws: ModelError.self) { try DiTConfiguration.preset("DiT-B/3") }
    // Parameter count of DiT-XL/2 without the class table (GriDiT stage 1): 673,681,568 trainable
    // + 1,179,648 pos_embed (../shared/reference/gridit-method.md §1.2).
    let params = DiTWeights.table(xl).reduce(0) { $0 + $1.shape.reduce(1, *) }
    #expect(params == 673_681_568 + 1_179_648)
}

@Test func configJSONRoundTripAndValidation() throws {
    let c = try DiTConfiguration.load(path: fixture("sr.config.json"))
    #expect(c.conditionChannels == 4 && c.embedInChannels == 8 && c.outChannels == 8)
    var bad = c
    bad.numHeads = 3
    #expect(throws: ModelError.self) { try bad.validate() }
    bad = c
    bad.inputSize = 9
    #expect(throws: ModelError.self) { try bad.validate() }
    #expect(throws: ModelError.self) { try DiTConfiguration.load(path: "/nonexistent/config.json") }
    #expect(c.prediction == .epsilon)  // absent: epsilon

    // "prediction" is read, written back, and an unknown one is named with the choices.
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    var v = c
    v.prediction = .v
    let file = dir.appendingPathComponent("v.json")
    try JSONEncoder().encode(v).write(to: file)
    #expect(try DiTConfiguration.load(path: file.path) == v)
    let text = try String(contentsOf: file, encoding: .utf8).replacingOccurrences(
        of: #""prediction":"v""#, with: #""prediction":"x0""#)
    try text.write(to: file, atomically: true, encoding: .utf8)
    do {
        _ = try DiTConfiguration.load(path: file.path)
        Issue.record("an unknown prediction was accepted")
    } catch ModelError.invalidConfiguration(let message) {
        #expect(
            message.contains("prediction") && message.contains("epsilon or v") && !message.contains("x0"), "\(message)")
    }
}

@Test func parameterCountIsTheTablesSize() throws {
    for c in [
        tinyConfig(), tinyConfig(numClasses: 5, conditionChannels: 2),
        try DiTConfiguration.preset("DiT-XL/2", inputSize: 64),
    ] {
        #expect(c.parameterCount == DiTWeights.table(c).reduce(0) { $0 + $1.shape.reduce(1, *) })
    }
    // DiT-XL/2 is larger than the fp32 packing limit (its weights stay in place); DiT-B/2 is not.
    #expect(try DiTConfiguration.preset("DiT-XL/2", inputSize: 64).parameterCount * 4 > DiT.packFP32Limit)
    #expect(try DiTConfiguration.preset("DiT-B/2", inputSize: 32).parameterCount * 4 <= DiT.packFP32Limit)
}
