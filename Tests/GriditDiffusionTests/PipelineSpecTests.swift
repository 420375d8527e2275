import Foundation
import GriditDiffusion
import GriditModels
import Testing

// PipelineSpec: decoding, field checks and consistency with the model configs.

private let example = """
    {"format": "gridit.pipeline.v1", "name": "moving-digits",
     "grid": {"k": 4, "frame_size": 16, "channels": 1},
     "stage1": {"config": "s1.json", "weights": "s1.safetensors"},
     "stage2": {"config": "s2.json", "weights": "s2.safetensors", "scale": 4},
     "defaults": {"sampler": "ddim", "steps": 50, "sr_steps": "ddim25", "context_rows": 2}}
    """

private func spec(_ json: String = example) throws -> PipelineSpec {
    try PipelineSpec.decode(Data(json.utf8))
}

private func expectError(_ json: String, mentions text: String) {
    do {
        _ = try spec(json)
        Issue.record("expected an error mentioning '\(text)'")
    } catch let e as PipelineError {
        #expect(e.message.contains(text), "\(e.message)")
    } catch {
        Issue.record("unexpected error \(error)")
    }
}

private let s1 = DiTConfiguration(depth: 2, hiddenSize: 32, numHeads: 2, patchSize: 4, inputSize: 64, inChannels: 1)
private let s2 = DiTConfiguration(
    depth: 2, hiddenSize: 32, numHeads: 2, patchSize: 8, inputSize: 64, inChannels: 1,
    conditionChannels: 1)

@Test func pipelineDecodesWithDefaults() throws {
    let p = try spec()
    #expect(p.grid == .init(k: 4, frameSize: 16, channels: 1))
    #expect(p.defaults.steps == "50" && p.defaults.srSteps == "ddim25" && p.defaults.sampler == "ddim")
    #expect(p.defaults.mode == "gridit" && p.defaults.precision == "fp32" && p.defaults.eta == 0)
    #expect(p.defaults.srTemperature == 1 && p.defaults.srNoise == "per-frame")
    #expect(p.vae == nil && p.stage2?.scale == 4 && p.limits.maxLength == 100_000)
    #expect(p.files.map(\.role) == [.stage1Config, .stage1Weights, .stage2Config, .stage2Weights])
    // Round trip through the encoder.
    #expect(try PipelineSpec.decode(p.encoded()) == p)
}

@Test func mapFilesRewritesEveryReference() throws {
    let p = try spec().mapFiles { role, ref in "\(role.rawValue):\(ref)" }
    #expect(p.stage1.config == "stage1.config:s1.json")
    #expect(p.stage2?.weights == "stage2.weights:s2.safetensors")
}

@Test func loadResolvesPathsNextToTheFile() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pipespec-\(getpid())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let file = dir.appendingPathComponent("pipeline.json")
    try Data(example.utf8).write(to: file)
    let p = try PipelineSpec.load(path: file.path)
    #expect(p.stage1.weights == dir.appendingPathComponent("s1.safetensors").standardizedFileURL.path)
    #expect(throws: PipelineError.self) { try PipelineSpec.load(path: dir.appendingPathComponent("absent.json").path) }
}

@Test func badFieldsAreNamed() throws {
    expectError(example.replacingOccurrences(of: "gridit.pipeline.v1", with: "v0"), mentions: "format")
    expectError(example.replacingOccurrences(of: "\"k\": 4", with: "\"k\": 9"), mentions: "grid.k")
    expectError(
        example.replacingOccurrences(of: "\"context_rows\": 2", with: "\"context_rows\": 4"),
        mentions: "context_rows")
    expectError(
        example.replacingOccurrences(of: "\"steps\": 50", with: "\"steps\": \"fast\""), mentions: "defaults.steps")
    expectError(example.replacingOccurrences(of: "\"ddim\"", with: "\"euler\""), mentions: "defaults.sampler")
    let cooled = { (field: String) in
        example.replacingOccurrences(of: "\"context_rows\"", with: "\(field), \"context_rows\"")
    }
    #expect(try spec(cooled(#""sr_temperature": 0.5, "sr_noise": "shared""#)).defaults.srNoise == "shared")
    expectError(cooled(#""sr_temperature": 2"#), mentions: "defaults.sr_temperature is 2.0; it must be in 0...1")
    expectError(
        cooled(#""sr_noise": "same""#), mentions: "defaults.sr_noise is 'same'; use one of [\"per-frame\", \"shared\"]")
    expectError(example.replacingOccurrences(of: "\"frame_size\": 16, ", with: ""), mentions: "grid.frame_size")
    expectError("{\"format\": ", mentions: "JSON")
    expectError(
        example.replacingOccurrences(of: "\"context_rows\": 2", with: "\"context_rows\": 2, \"context\": \"fresh\""),
        mentions: "defaults.context")
}

@Test func modelConfigsMustFitTheGrid() throws {
    let p = try spec()
    try p.validate(stage1: s1, guide: nil, stage2: s2, vae: nil)
    var wrong = s1
    wrong.inputSize = 32
    #expect(throws: PipelineError.self) { try p.validate(stage1: wrong, guide: nil, stage2: s2, vae: nil) }
    var wrongSR = s2
    wrongSR.conditionChannels = 0
    #expect(throws: PipelineError.self) { try p.validate(stage1: s1, guide: nil, stage2: wrongSR, vae: nil) }
    #expect(throws: PipelineError.self) { try p.validate(stage1: s1, guide: nil, stage2: nil, vae: nil) }
    // A latent pipeline: 128-pixel frames through an SD-like VAE (factor 8) are 16 latent pixels.
    var latent = p
    latent.grid = .init(k: 4, frameSize: 128, channels: 3)
    latent.stage2 = nil
    latent.vae = .init(config: "vae.json", weights: "vae.safetensors")
    let xl = DiTConfiguration(depth: 2, hiddenSize: 32, numHeads: 2, patchSize: 2, inputSize: 64, inChannels: 4)
    try latent.validate(stage1: xl, guide: nil, stage2: nil, vae: .stableDiffusion)
}

@Test func aGuideMustMakeStageOnesOutput() throws {
    var p = try spec()
    p.guide = .init(config: "guide.config.json", weights: "guide.safetensors")
    #expect(p.files.map(\.role).contains(.guideWeights))
    #expect(p.mapFiles { role, _ in role.rawValue }.guide == .init(config: "guide.config", weights: "guide.weights"))
    // Smaller is fine: a guide is a weaker model of the same task.
    var smaller = s1
    (smaller.depth, smaller.hiddenSize) = (2, 32)
    try p.validate(stage1: s1, guide: smaller, stage2: s2, vae: nil)
    func refused(_ guide: DiTConfiguration?, _ text: String) {
        let error = #expect(throws: PipelineError.self) {
            try p.validate(stage1: s1, guide: guide, stage2: s2, vae: nil)
        }
        #expect(error?.message.contains(text) == true, "\(String(describing: error))")
    }
    refused(nil, "the guide config must be given exactly when the pipeline has a guide")
    var other = s1
    other.prediction = s1.prediction == .v ? .epsilon : .v
    other.inputSize = 32
    refused(other, "the guide does not match stage 1 in input_size, prediction;")
    other = s1
    other.numClasses = 10
    refused(other, "num_classes")
    other = s1
    (other.depth, other.patchSize) = (3, 2)
    refused(other, "the guide is larger than stage 1 in depth, patch_size")
    // Without a guide in the file, a guide config is an error too.
    p.guide = nil
    #expect(throws: PipelineError.self) { try p.validate(stage1: s1, guide: s1, stage2: s2, vae: nil) }
}
