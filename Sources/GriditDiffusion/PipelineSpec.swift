// The pipeline file (`pipeline.json`, format in docs/PIPELINE_FORMAT.md): which stage-1 grid
// model, stage-2 super-resolution model and VAE make up one GriDiT pipeline, the frame geometry,
// and the sampling defaults. The model store keeps it as the body of a pipeline version, with the
// file references rewritten to blob digests (`mapFiles`).

import Foundation
import GriditJobSpec
import GriditModels
import GriditTensor

/// A bad pipeline file: what is wrong and, where it helps, what to do.
public struct PipelineError: Error, CustomStringConvertible, Equatable {
    public var path: String?
    public var message: String

    public init(_ message: String, path: String? = nil) {
        self.message = message
        self.path = path
    }

    public var description: String { path.map { "pipeline '\($0)': \(message)" } ?? "pipeline: \(message)" }
}

public struct PipelineSpec: Codable, Equatable, Sendable {
    public static let currentFormat = "gridit.pipeline.v1"

    /// Always `gridit.pipeline.v1`.
    public var format: String
    public var name: String?
    public var description: String?
    public var grid: Grid
    public var stage1: ModelFiles
    /// A weaker stage-1 model for autoguidance (Karras et al. 2024: guiding a diffusion model
    /// with a bad version of itself): with `cfg_scale` s ≠ 1 each stage-1 output becomes
    /// guide + s·(stage1 − guide). Nil: no guide (an unconditional stage 1 is then unguided).
    public var guide: ModelFiles?
    /// Nil: no super-resolution stage; frames come out at `grid.frameSize`.
    public var stage2: SuperResolution?
    /// Nil: the models work in pixel space.
    public var vae: VAE?
    public var defaults: Defaults
    public var limits: Limits

    /// Frame geometry in image space.
    public struct Grid: Codable, Equatable, Sendable {
        /// Frames per grid side: a grid holds k·k frames in row-major time order (2...8).
        public var k: Int
        /// Side of one low-resolution frame in pixels.
        public var frameSize: Int
        /// Image channels (1 grey, 3 RGB).
        public var channels: Int

        public init(k: Int, frameSize: Int, channels: Int) {
            self.k = k
            self.frameSize = frameSize
            self.channels = channels
        }

        enum CodingKeys: String, CodingKey {
            case k
            case frameSize = "frame_size"
            case channels
        }
    }

    /// A model config JSON and its safetensors weights. In a pipeline file on disk these are paths
    /// relative to the file's folder; in a stored manifest, `sha256:<hex>` blob digests.
    public struct ModelFiles: Codable, Equatable, Sendable {
        public var config: String
        public var weights: String

        public init(config: String, weights: String) {
            self.config = config
            self.weights = weights
        }
    }

    public struct SuperResolution: Codable, Equatable, Sendable {
        public var config: String
        public var weights: String
        /// High-resolution frame side = `grid.frameSize · scale`.
        public var scale: Int

        public init(config: String, weights: String, scale: Int) {
            self.config = config
            self.weights = weights
            self.scale = scale
        }

        public var files: ModelFiles { ModelFiles(config: config, weights: weights) }
    }

    public struct VAE: Codable, Equatable, Sendable {
        public var config: String
        public var weights: String
        /// latent = scalingFactor · encode(image); decode(latent / scalingFactor). SD: 0.18215.
        public var scalingFactor: Double
        /// `mean` (default, deterministic) or `sample` (the posterior sample the official code uses).
        public var encode: EncodeMode

        public enum EncodeMode: String, Codable, Equatable, Sendable { case mean, sample }

        public init(config: String, weights: String, scalingFactor: Double = 0.18215, encode: EncodeMode = .mean) {
            self.config = config
            self.weights = weights
            self.scalingFactor = scalingFactor
            self.encode = encode
        }

        enum CodingKeys: String, CodingKey {
            case config, weights
            case scalingFactor = "scaling_factor"
            case encode
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            config = try c.decode(String.self, forKey: .config)
            weights = try c.decode(String.self, forKey: .weights)
            scalingFactor = try c.decodeIfPresent(Double.self, forKey: .scalingFactor) ?? 0.18215
            encode = try c.decodeIfPresent(EncodeMode.self, forKey: .encode) ?? .mean
        }

        public var files: ModelFiles { ModelFiles(config: config, weights: weights) }
    }

    /// What a run uses when the request does not say.
    public struct Defaults: Codable, Equatable, Sendable {
        /// `gridit` (exact length, context rows, correct RePaint level) or `official`.
        public var mode: String
        /// `ddpm`, `ddim`, `dpmpp-2m` or `dpmpp-2m-sde`.
        public var sampler: String
        /// Respacing of the 1000 training steps: a step count ("250", "50"), "ddimN", or a diffusers
        /// spacing ("linspaceN", "leadingN", "trailingN").
        public var steps: String
        /// DDIM η (0 = deterministic).
        public var eta: Double
        public var srSampler: String
        public var srSteps: String
        /// Scale of stage 2's noise, 0...1 (1 = as trained).
        public var srTemperature: Double
        /// `per-frame` or `shared` (the same noise for every frame of a sequence).
        public var srNoise: String
        /// Grid rows carried into the next grid as known frames (1...k-1), gridit mode.
        public var contextRows: Int
        /// How gridit mode gives those frames: `renoised` (RePaint) or `clean` (for a stage 1
        /// trained with clean context frames).
        public var context: String
        /// `fp32` or `bf16`.
        public var precision: String
        /// Guidance scale of stage 1 (1 = no guidance): autoguidance by the pipeline's `guide`, else
        /// classifier-free guidance for a class-conditional stage 1.
        public var cfgScale: Double
        /// Timesteps where that guidance applies, `[lower, upper]` on 0…999 (nil: every step).
        public var cfgInterval: GuidanceInterval?

        public init(
            mode: String = "gridit", sampler: String = "ddpm", steps: String = "250", eta: Double = 0,
            srSampler: String = "ddpm", srSteps: String = "250", srTemperature: Double = 1,
            srNoise: String = "per-frame", contextRows: Int = 1, context: String = "renoised",
            precision: String = "fp32", cfgScale: Double = 1, cfgInterval: GuidanceInterval? = nil
        ) {
            self.mode = mode
            self.sampler = sampler
            self.steps = steps
            self.eta = eta
            self.srSampler = srSampler
            self.srSteps = srSteps
            self.srTemperature = srTemperature
            self.srNoise = srNoise
            self.contextRows = contextRows
            self.context = context
            self.precision = precision
            self.cfgScale = cfgScale
            self.cfgInterval = cfgInterval
        }

        enum CodingKeys: String, CodingKey {
            case mode, sampler, steps, eta
            case srSampler = "sr_sampler"
            case srSteps = "sr_steps"
            case srTemperature = "sr_temperature"
            case srNoise = "sr_noise"
            case contextRows = "context_rows"
            case context
            case precision
            case cfgScale = "cfg_scale"
            case cfgInterval = "cfg_interval"
        }

        public init(from decoder: any Decoder) throws {
            let d = Defaults()
            let c = try decoder.container(keyedBy: CodingKeys.self)
            mode = try c.decodeIfPresent(String.self, forKey: .mode) ?? d.mode
            sampler = try c.decodeIfPresent(String.self, forKey: .sampler) ?? d.sampler
            steps = try Self.decodeSteps(c, .steps) ?? d.steps
            eta = try c.decodeIfPresent(Double.self, forKey: .eta) ?? d.eta
            srSampler = try c.decodeIfPresent(String.self, forKey: .srSampler) ?? d.srSampler
            srSteps = try Self.decodeSteps(c, .srSteps) ?? d.srSteps
            srTemperature = try c.decodeIfPresent(Double.self, forKey: .srTemperature) ?? d.srTemperature
            srNoise = try c.decodeIfPresent(String.self, forKey: .srNoise) ?? d.srNoise
            contextRows = try c.decodeIfPresent(Int.self, forKey: .contextRows) ?? d.contextRows
            context = try c.decodeIfPresent(String.self, forKey: .context) ?? d.context
            precision = try c.decodeIfPresent(String.self, forKey: .precision) ?? d.precision
            cfgScale = try c.decodeIfPresent(Double.self, forKey: .cfgScale) ?? d.cfgScale
            cfgInterval = try c.decodeIfPresent(GuidanceInterval.self, forKey: .cfgInterval)
        }

        /// Steps may be written as a number (50) or a respacing string ("50", "ddim50").
        private static func decodeSteps(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> String? {
            if let n = try? c.decodeIfPresent(Int.self, forKey: key) { return String(n) }
            return try c.decodeIfPresent(String.self, forKey: key)
        }
    }

    public struct Limits: Codable, Equatable, Sendable {
        /// Longest sequence a request may ask for.
        public var maxLength: Int

        public init(maxLength: Int = 100_000) { self.maxLength = maxLength }

        enum CodingKeys: String, CodingKey { case maxLength = "max_length" }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            maxLength = try c.decodeIfPresent(Int.self, forKey: .maxLength) ?? Limits().maxLength
        }
    }

    public init(
        name: String? = nil, description: String? = nil, grid: Grid, stage1: ModelFiles, guide: ModelFiles? = nil,
        stage2: SuperResolution? = nil, vae: VAE? = nil, defaults: Defaults = Defaults(),
        limits: Limits = Limits()
    ) {
        self.format = Self.currentFormat
        self.name = name
        self.description = description
        self.grid = grid
        self.stage1 = stage1
        self.guide = guide
        self.stage2 = stage2
        self.vae = vae
        self.defaults = defaults
        self.limits = limits
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        format = try c.decode(String.self, forKey: .format)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        grid = try c.decode(Grid.self, forKey: .grid)
        stage1 = try c.decode(ModelFiles.self, forKey: .stage1)
        guide = try c.decodeIfPresent(ModelFiles.self, forKey: .guide)
        stage2 = try c.decodeIfPresent(SuperResolution.self, forKey: .stage2)
        vae = try c.decodeIfPresent(VAE.self, forKey: .vae)
        defaults = try c.decodeIfPresent(Defaults.self, forKey: .defaults) ?? Defaults()
        limits = try c.decodeIfPresent(Limits.self, forKey: .limits) ?? Limits()
    }

    enum CodingKeys: String, CodingKey {
        case format, name, description, grid, stage1, guide, stage2, vae, defaults, limits
    }

    // MARK: Files

    /// Roles of the files a pipeline references, in a fixed order.
    public enum FileRole: String, CaseIterable, Codable, Sendable {
        case stage1Config = "stage1.config", stage1Weights = "stage1.weights"
        case guideConfig = "guide.config", guideWeights = "guide.weights"
        case stage2Config = "stage2.config", stage2Weights = "stage2.weights"
        case vaeConfig = "vae.config", vaeWeights = "vae.weights"

        /// A safetensors file (the others are model configs).
        public var isWeights: Bool { rawValue.hasSuffix(".weights") }
    }

    /// Every file reference with its role.
    public var files: [(role: FileRole, reference: String)] {
        var out: [(FileRole, String)] = [(.stage1Config, stage1.config), (.stage1Weights, stage1.weights)]
        if let g = guide { out += [(.guideConfig, g.config), (.guideWeights, g.weights)] }
        if let s = stage2 { out += [(.stage2Config, s.config), (.stage2Weights, s.weights)] }
        if let v = vae { out += [(.vaeConfig, v.config), (.vaeWeights, v.weights)] }
        return out
    }

    /// The same pipeline with every file reference replaced by `transform(role, reference)`:
    /// relative paths → absolute paths, paths → blob digests, digests → blob paths.
    public func mapFiles(_ transform: (FileRole, String) throws -> String) rethrows -> PipelineSpec {
        var p = self
        p.stage1.config = try transform(.stage1Config, stage1.config)
        p.stage1.weights = try transform(.stage1Weights, stage1.weights)
        if let g = guide {
            p.guide?.config = try transform(.guideConfig, g.config)
            p.guide?.weights = try transform(.guideWeights, g.weights)
        }
        if let s = stage2 {
            p.stage2?.config = try transform(.stage2Config, s.config)
            p.stage2?.weights = try transform(.stage2Weights, s.weights)
        }
        if let v = vae {
            p.vae?.config = try transform(.vaeConfig, v.config)
            p.vae?.weights = try transform(.vaeWeights, v.weights)
        }
        return p
    }

    // MARK: Reading and checking

    /// Decodes a pipeline JSON; errors name the field.
    public static func decode(_ data: Data, path: String? = nil) throws -> PipelineSpec {
        let spec: PipelineSpec
        do {
            spec = try JSONDecoder().decode(PipelineSpec.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            let field = (context.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
            throw PipelineError("the field '\(field)' is missing (see docs/PIPELINE_FORMAT.md)", path: path)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw PipelineError("the field '\(field)' has the wrong type (see docs/PIPELINE_FORMAT.md)", path: path)
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw PipelineError("the field '\(field)' is invalid: \(context.debugDescription)", path: path)
        } catch let error as JobSpecError {  // a malformed defaults.cfg_interval
            throw PipelineError("defaults.\(error.message)", path: path)
        } catch {
            throw PipelineError("not valid JSON", path: path)
        }
        try spec.validateFields(path: path)
        return spec
    }

    /// Reads `path`; relative file references become absolute paths next to it.
    public static func load(path: String) throws -> PipelineSpec {
        let url = URL(fileURLWithPath: path)
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw PipelineError("cannot read the file: \(error.localizedDescription)", path: path)
        }
        let dir = url.deletingLastPathComponent()
        return try decode(data, path: path).mapFiles { _, ref in
            ref.hasPrefix("/") ? ref : dir.appendingPathComponent(ref).standardizedFileURL.path
        }
    }

    public func encoded() -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try! e.encode(self)  // plain strings and numbers: cannot fail
    }

    // The names a default may take: those a `JobSpec` may ask for.
    public static let modes = SequenceMode.allCases.map(\.rawValue)
    public static let samplers = SamplerName.allCases.map(\.rawValue)
    public static let precisions = Precision.allCases.map(\.rawValue)
    public static let contexts = ContextFrames.allCases.map(\.rawValue)
    public static let frameNoises = FrameNoise.allCases.map(\.rawValue)

    /// Checks that need no model config: format, ranges, enumerations, respacing strings.
    public func validateFields(path: String? = nil) throws {
        func fail(_ m: String) throws -> Never { throw PipelineError(m, path: path) }
        if format != Self.currentFormat { try fail("format is '\(format)'; this gridit reads '\(Self.currentFormat)'") }
        if !(2...8).contains(grid.k) { try fail("grid.k is \(grid.k); it must be 2...8") }
        // Upper bounds keep every size derived from the geometry small (no overflow, no huge allocation).
        if !(1...4096).contains(grid.frameSize) {
            try fail("grid.frame_size is \(grid.frameSize); it must be 1...4096")
        }
        if !(1...64).contains(grid.channels) { try fail("grid.channels is \(grid.channels); it must be 1...64") }
        if let s = stage2, !(1...64).contains(s.scale) { try fail("stage2.scale is \(s.scale); it must be 1...64") }
        if let v = vae, !(v.scalingFactor > 0) { try fail("vae.scaling_factor must be positive") }
        let d = defaults
        if !Self.modes.contains(d.mode) { try fail("defaults.mode is '\(d.mode)'; use one of \(Self.modes)") }
        for (field, s) in [("defaults.sampler", d.sampler), ("defaults.sr_sampler", d.srSampler)]
        where !Self.samplers.contains(s) {
            try fail("\(field) is '\(s)'; use one of \(Self.samplers)")
        }
        for (field, s) in [("defaults.steps", d.steps), ("defaults.sr_steps", d.srSteps)] {
            do { _ = try GaussianDiffusion.spacedTimesteps(s) } catch { try fail("\(field): \(error)") }
        }
        if !(0...1).contains(d.eta) { try fail("defaults.eta is \(d.eta); it must be in 0...1") }
        if !(0...1).contains(d.srTemperature) {
            try fail("defaults.sr_temperature is \(d.srTemperature); it must be in 0...1")
        }
        if !Self.frameNoises.contains(d.srNoise) {
            try fail("defaults.sr_noise is '\(d.srNoise)'; use one of \(Self.frameNoises)")
        }
        if !(1..<grid.k).contains(d.contextRows) {
            try fail("defaults.context_rows is \(d.contextRows); it must be 1...\(grid.k - 1) for k = \(grid.k)")
        }
        if !Self.contexts.contains(d.context) {
            try fail("defaults.context is '\(d.context)'; use one of \(Self.contexts)")
        }
        if !Self.precisions.contains(d.precision) {
            try fail("defaults.precision is '\(d.precision)'; use one of \(Self.precisions)")
        }
        if !(0...JobSpec.Parameters.maxCFGScale).contains(d.cfgScale) {
            try fail("defaults.cfg_scale is \(d.cfgScale); it must be 0 to \(Int(JobSpec.Parameters.maxCFGScale))")
        }
        do { try d.cfgInterval?.validate("defaults.cfg_interval") } catch { try fail(error.message) }
        if limits.maxLength < 1 { try fail("limits.max_length is \(limits.maxLength); it must be positive") }
        for (role, ref) in files where ref.isEmpty { try fail("\(role.rawValue) is empty") }
    }

    /// Channels and side of the space stage 1 works in (latent when there is a VAE).
    public func stage1Space(vae v: AutoencoderKLConfiguration?) -> (channels: Int, frameSize: Int) {
        guard let v else { return (grid.channels, grid.frameSize) }
        return (v.latentChannels, grid.frameSize / v.downsampleFactor)
    }

    /// Checks the models' configs against the pipeline: a stage-1 input of k frames per side, the
    /// right channel counts, a stage-2 model taking [noisy, condition] at the high resolution.
    /// Stage 1 may be class-conditional (requests then name a class; guidance by `cfg_scale`).
    /// A guide makes the same output as stage 1 from the same input, and is no larger.
    public func validate(
        stage1 s1: DiTConfiguration, guide g: DiTConfiguration?, stage2 s2: DiTConfiguration?,
        vae v: AutoencoderKLConfiguration?, path: String? = nil
    ) throws {
        func fail(_ m: String) throws -> Never { throw PipelineError(m, path: path) }
        if (vae == nil) != (v == nil) { try fail("the VAE config must be given exactly when the pipeline has a vae") }
        if (guide == nil) != (g == nil) {
            try fail("the guide config must be given exactly when the pipeline has a guide")
        }
        if let g {
            let differ = [
                ("input_size", g.inputSize != s1.inputSize), ("in_channels", g.inChannels != s1.inChannels),
                ("condition_channels", g.conditionChannels != s1.conditionChannels),
                ("num_classes", g.numClasses != s1.numClasses), ("learn_sigma", g.learnSigma != s1.learnSigma),
                ("prediction", g.prediction != s1.prediction),
            ].filter(\.1).map(\.0)
            if !differ.isEmpty {
                try fail(
                    "the guide does not match stage 1 in \(differ.joined(separator: ", ")); a guide is a weaker "
                        + "model of the same task (an earlier or smaller stage 1)")
            }
            // Batches budget a guided grid's second row as a stage-1 row: a guide is no larger.
            let larger = [
                ("depth", g.depth > s1.depth), ("hidden_size", g.hiddenSize > s1.hiddenSize),
                ("num_heads", g.numHeads > s1.numHeads), ("mlp_ratio", g.mlpRatio > s1.mlpRatio),
                ("patch_size", g.patchSize < s1.patchSize),
            ].filter(\.1).map(\.0)
            if !larger.isEmpty {
                try fail(
                    "the guide is larger than stage 1 in \(larger.joined(separator: ", ")) (a smaller patch_size "
                        + "is larger); use a guide no larger than stage 1")
            }
        }
        if (stage2 == nil) != (s2 == nil) {
            try fail("the stage-2 config must be given exactly when the pipeline has a stage2")
        }
        if let v {
            let f = v.downsampleFactor
            if grid.frameSize % f != 0 {
                try fail("grid.frame_size \(grid.frameSize) is not a multiple of the VAE's factor \(f)")
            }
            if v.inChannels != grid.channels || v.outChannels != grid.channels {
                try fail(
                    "the VAE maps \(v.inChannels)→\(v.outChannels) image channels, grid.channels is \(grid.channels)")
            }
        }
        let (c, s) = stage1Space(vae: v)
        if s1.inputSize != grid.k * s {
            try fail(
                "stage 1 input_size is \(s1.inputSize), but k × frame = \(grid.k) × \(s) = \(grid.k * s)"
                    + (v == nil ? "" : " latent pixels") + "; fix grid.k or grid.frame_size")
        }
        if s1.inChannels != c { try fail("stage 1 in_channels is \(s1.inChannels), expected \(c)") }
        if s1.conditionChannels != 0 {
            try fail("stage 1 must not take a condition (condition_channels \(s1.conditionChannels))")
        }
        if s % s1.patchSize != 0 {
            try fail("a frame of \(s) pixels is not a whole number of stage-1 patches (\(s1.patchSize))")
        }
        if let sr = stage2, let s2 {
            let hr = grid.frameSize * sr.scale
            let side = v.map { hr / $0.downsampleFactor } ?? hr
            if let v, hr % v.downsampleFactor != 0 {
                try fail("the high-resolution side \(hr) is not a multiple of the VAE factor")
            }
            if s2.inputSize != side {
                try fail(
                    "stage 2 input_size is \(s2.inputSize), expected \(side) (frame \(grid.frameSize) × scale \(sr.scale))"
                )
            }
            if s2.inChannels != c || s2.conditionChannels != c {
                try fail("stage 2 takes \(s2.inChannels)+\(s2.conditionChannels) channels, expected \(c)+\(c)")
            }
            if s2.numClasses != 0 { try fail("stage 2 must not be class-conditional") }
        }
    }
}
