// What a job asks for, the one type every layer passes along: griditctl builds it from its flags,
// the control API carries it, the job queue stores it as it is (the `params` column), the worker
// hands it to the engine, and the engine resolves it against a pipeline (`RunSettings`) and
// records it in `run.json` and `sequence.json`. Foundation only, so that griditctl, the daemon
// and the engine all import it.
//
// JSON (snake_case): {"length": 128, "model": "moving-digits:latest", "output": "run-1",
//   "parameters": {"seed": 7, "mode": "gridit", "sampler": "ddim", "steps": "50", "sr_sampler": "ddim",
//   "sr_steps": "ddim25", "sr_temperature": 0.5, "sr_noise": "shared", "eta": 0, "context_rows": 2,
//   "context": "clean", "no_sr": false, "precision": "fp32", "jump_length": 10, "jump_count": 2,
//   "class_label": 3, "cfg_scale": 4, "cfg_interval": [700, 999]}}
// Every parameter is optional: nil means the pipeline's default. `parameters` refuses unknown
// keys (a misspelt field must not be ignored); names outside their sets fail to decode.

import Foundation

/// How sequences are grown (see docs/ENGINE.md).
public enum SequenceMode: String, Codable, Sendable, CaseIterable {
    /// Exactly L frames; `context_rows` rows carried into each next grid by RePaint replacement
    /// at the correct level at every step; context kept in model space.
    case gridit
    /// The published algorithm: the initial grid, K−1 known rows per extension grid (the
    /// reference's noise coupling and ᾱ level), the in-between pass, 16 + 8N frames (K = 4), the
    /// 8-bit (and VAE) round trip between grids.
    case official
}

/// How gridit mode gives a grid the frames it carries over from the previous grid.
public enum ContextFrames: String, Codable, Sendable, CaseIterable {
    /// Re-noised to the level of x_{k−1} after every step (RePaint; any stage-1 model).
    case renoised
    /// Clean at every step, never re-noised: for a stage 1 trained with clean context frames
    /// (tools/train `--ctx-share`); re-noised context is a known cause of incoherent continuations.
    case clean
}

/// The reverse step.
public enum SamplerName: String, Codable, Sendable, CaseIterable {
    case ddpm, ddim
    /// DPM-Solver++(2M), deterministic; pair it with a diffusers spacing such as "trailing20".
    case dpmpp2m = "dpmpp-2m"
    /// SDE-DPM-Solver++(2M): the same solver with fresh noise at every step (diffusers'
    /// "sde-dpmsolver++"); pair it with a diffusers spacing too.
    case dpmpp2mSDE = "dpmpp-2m-sde"
}

/// How stage 2 draws the noise of a sequence's frames.
public enum FrameNoise: String, Codable, Sendable, CaseIterable {
    /// Every frame its own noise.
    case perFrame = "per-frame"
    /// The same noise for every frame of the sequence: frames that look alike at the low
    /// resolution come out alike, so strokes flicker less from frame to frame.
    case shared
}

/// The stage-1 timesteps where guidance applies: a step is guided when lower ≤ t ≤ upper, t on
/// the 0…999 scale of training (999: pure noise). Guiding only the noisiest steps ([700, 999])
/// sets a grid's layout and motion without the distorted shapes that guidance at low noise draws
/// (Kynkäänniemi et al. 2024). JSON: `[lower, upper]`; a flag: `lower:upper`.
public struct GuidanceInterval: Codable, Hashable, Sendable, CustomStringConvertible {
    public var lower: Int
    public var upper: Int

    public init(lower: Int, upper: Int) {
        self.lower = lower
        self.upper = upper
    }

    /// The largest timestep.
    public static let maxTimestep = 999

    /// Whether it guides every step (the same as no interval).
    public var isEveryStep: Bool { lower <= 0 && upper >= Self.maxTimestep }

    public func contains(_ t: Float) -> Bool { Float(lower) <= t && t <= Float(upper) }

    /// "700:999".
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let lower = Int(parts[0]), let upper = Int(parts[1]) else { return nil }
        self.init(lower: lower, upper: upper)
    }

    public var description: String { "\(lower):\(upper)" }

    public func validate(_ name: String = "cfg_interval") throws(JobSpecError) {
        guard 0 <= lower, lower <= upper, upper <= Self.maxTimestep else {
            throw JobSpecError(
                "\(name) is [\(lower), \(upper)]; use timesteps 0 <= lower <= upper <= \(Self.maxTimestep) "
                    + "([700, 999] guides only the noisiest steps)")
        }
    }

    /// Anything but two whole numbers gets one message that shows the form, not a decoder's path.
    public init(from decoder: any Decoder) throws {
        let expected = JobSpecError(
            "cfg_interval is two whole timesteps [lower, upper] in 0...\(Self.maxTimestep), such as [700, 999]")
        guard var c = try? decoder.unkeyedContainer(), c.count == 2,
            let lower = try? c.decode(Int.self), let upper = try? c.decode(Int.self)
        else { throw expected }
        self.init(lower: lower, upper: upper)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.unkeyedContainer()
        try c.encode(lower)
        try c.encode(upper)
    }
}

/// A job: how many frames of which model, where they go, and how they are sampled.
public struct JobSpec: Codable, Hashable, Sendable {
    /// Frames wanted (gridit: exactly this many; official: the reference's 16 + 8N for this L).
    public var length: Int
    /// `NAME:TAG`, `NAME@sha256:<hex>` or `sha256:<hex>` as the submitter wrote it; nil: the
    /// daemon's default model. The daemon resolves it to a manifest digest at submit (the job
    /// keeps the digest); the engine never reads it.
    public var model: String?
    /// Output folder the submitter named, relative to its own folder of the daemon's outputs;
    /// nil: the automatic `job-<id>`. The engine never reads it.
    public var output: String?
    public var parameters: Parameters

    public init(length: Int, model: String? = nil, output: String? = nil, parameters: Parameters = Parameters()) {
        self.length = length
        self.model = model
        self.output = output
        self.parameters = parameters
    }

    /// How the frames are sampled. Nil fields take the pipeline's defaults.
    public struct Parameters: Codable, Hashable, Sendable {
        /// Noise seed; the daemon picks one at submit when absent, so that the job is reproducible.
        public var seed: UInt64?
        public var mode: SequenceMode?
        public var sampler: SamplerName?
        /// Respacing of the 1000 training steps: a count ("250", "50"), "ddimN" or "trailingN"
        /// (also "linspaceN", "leadingN"). A JSON integer is accepted too.
        public var steps: String?
        public var srSampler: SamplerName?
        public var srSteps: String?
        /// Scale of stage 2's noise, 0...1 (1 = the model's own distribution; lower keeps each frame
        /// closer to its most likely output, with less flicker and softer strokes).
        public var srTemperature: Double?
        public var srNoise: FrameNoise?
        /// DDIM η in [0, 1] (both stages).
        public var eta: Double?
        /// Grid rows carried into the next grid (gridit mode), 1…K−1.
        public var contextRows: Int?
        /// How the carried frames are given (gridit mode).
        public var context: ContextFrames?
        /// Skip stage 2: frames come out at the low resolution.
        public var noSR: Bool
        /// "fp32" or "bf16"; nil = the pipeline's default.
        public var precision: String?
        /// RePaint resampling (gridit mode): jump `jump_length` steps back up, `jump_count` passes per span.
        public var jumpLength: Int?
        public var jumpCount: Int?
        /// Class of a class-conditional stage 1 (required there, refused otherwise).
        public var classLabel: Int?
        /// Stage-1 guidance scale (1 = none): autoguidance by the pipeline's guide model, else
        /// classifier-free guidance of a class-conditional stage 1.
        public var cfgScale: Double?
        /// The timesteps where that guidance applies (nil: the pipeline's default).
        public var cfgInterval: GuidanceInterval?

        public init(
            seed: UInt64? = nil, mode: SequenceMode? = nil, sampler: SamplerName? = nil, steps: String? = nil,
            srSampler: SamplerName? = nil, srSteps: String? = nil, srTemperature: Double? = nil,
            srNoise: FrameNoise? = nil, eta: Double? = nil, contextRows: Int? = nil, context: ContextFrames? = nil,
            noSR: Bool = false, precision: String? = nil, jumpLength: Int? = nil, jumpCount: Int? = nil,
            classLabel: Int? = nil, cfgScale: Double? = nil, cfgInterval: GuidanceInterval? = nil
        ) {
            self.seed = seed
            self.mode = mode
            self.sampler = sampler
            self.steps = steps
            self.srSampler = srSampler
            self.srSteps = srSteps
            self.srTemperature = srTemperature
            self.srNoise = srNoise
            self.eta = eta
            self.contextRows = contextRows
            self.context = context
            self.noSR = noSR
            self.precision = precision
            self.jumpLength = jumpLength
            self.jumpCount = jumpCount
            self.classLabel = classLabel
            self.cfgScale = cfgScale
            self.cfgInterval = cfgInterval
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case seed, mode, sampler, steps, eta, precision, context
            case srSampler = "sr_sampler", srSteps = "sr_steps", srTemperature = "sr_temperature", srNoise = "sr_noise"
            case contextRows = "context_rows", noSR = "no_sr"
            case jumpLength = "jump_length", jumpCount = "jump_count", classLabel = "class_label"
            case cfgScale = "cfg_scale", cfgInterval = "cfg_interval"
        }

        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue), in: "parameters")
            let c = try decoder.container(keyedBy: CodingKeys.self)
            seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
            mode = try c.decodeName(SequenceMode.self, .mode)
            sampler = try c.decodeName(SamplerName.self, .sampler)
            steps = try c.decodeSteps(.steps)
            srSampler = try c.decodeName(SamplerName.self, .srSampler)
            srSteps = try c.decodeSteps(.srSteps)
            srTemperature = try c.decodeIfPresent(Double.self, forKey: .srTemperature)
            srNoise = try c.decodeName(FrameNoise.self, .srNoise)
            eta = try c.decodeIfPresent(Double.self, forKey: .eta)
            contextRows = try c.decodeIfPresent(Int.self, forKey: .contextRows)
            context = try c.decodeName(ContextFrames.self, .context)
            noSR = try c.decodeIfPresent(Bool.self, forKey: .noSR) ?? false
            precision = try c.decodeIfPresent(String.self, forKey: .precision)
            jumpLength = try c.decodeIfPresent(Int.self, forKey: .jumpLength)
            jumpCount = try c.decodeIfPresent(Int.self, forKey: .jumpCount)
            classLabel = try c.decodeIfPresent(Int.self, forKey: .classLabel)
            cfgScale = try c.decodeIfPresent(Double.self, forKey: .cfgScale)
            cfgInterval = try c.decodeIfPresent(GuidanceInterval.self, forKey: .cfgInterval)
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encodeIfPresent(seed, forKey: .seed)
            try c.encodeIfPresent(mode, forKey: .mode)
            try c.encodeIfPresent(sampler, forKey: .sampler)
            try c.encodeIfPresent(steps, forKey: .steps)
            try c.encodeIfPresent(srSampler, forKey: .srSampler)
            try c.encodeIfPresent(srSteps, forKey: .srSteps)
            try c.encodeIfPresent(srTemperature, forKey: .srTemperature)
            try c.encodeIfPresent(srNoise, forKey: .srNoise)
            try c.encodeIfPresent(eta, forKey: .eta)
            try c.encodeIfPresent(contextRows, forKey: .contextRows)
            try c.encodeIfPresent(context, forKey: .context)
            if noSR { try c.encode(noSR, forKey: .noSR) }
            try c.encodeIfPresent(precision, forKey: .precision)
            try c.encodeIfPresent(jumpLength, forKey: .jumpLength)
            try c.encodeIfPresent(jumpCount, forKey: .jumpCount)
            try c.encodeIfPresent(classLabel, forKey: .classLabel)
            try c.encodeIfPresent(cfgScale, forKey: .cfgScale)
            try c.encodeIfPresent(cfgInterval, forKey: .cfgInterval)
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case length, model, output, parameters
    }

    /// The spec's own keys, for an object that holds the spec's fields beside its own (the
    /// control API's submit request and job).
    public static let keys = CodingKeys.allCases.map(\.rawValue)

    /// Reads `length`, `model`, `output` and `parameters` from the decoder's object, ignoring its
    /// other keys (the caller checks those). A missing `parameters` means every default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        length = try c.decode(Int.self, forKey: .length)
        model = try c.decodeIfPresent(String.self, forKey: .model)
        output = try c.decodeIfPresent(String.self, forKey: .output)
        parameters = try c.decodeIfPresent(Parameters.self, forKey: .parameters) ?? Parameters()
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(length, forKey: .length)
        try c.encodeIfPresent(model, forKey: .model)
        try c.encodeIfPresent(output, forKey: .output)
        try c.encode(parameters, forKey: .parameters)
    }
}

extension KeyedDecodingContainer {
    /// A name of `T`'s set; another one is corrupt data that lists the set.
    fileprivate func decodeName<T: RawRepresentable & CaseIterable>(_ type: T.Type, _ key: Key) throws -> T?
    where T.RawValue == String {
        guard let raw = try decodeIfPresent(String.self, forKey: key) else { return nil }
        guard let value = T(rawValue: raw) else {
            let known = T.allCases.map(\.rawValue).joined(separator: " or ")
            throw DecodingError.dataCorruptedError(
                forKey: key, in: self, debugDescription: "\(key.stringValue) '\(raw.prefix(40))' is not \(known)")
        }
        return value
    }

    /// Steps are strings ("250", "ddim50"); `"steps": 50` means "50".
    fileprivate func decodeSteps(_ key: Key) throws -> String? {
        if let n = try? decodeIfPresent(Int.self, forKey: key) { return String(n) }
        return try decodeIfPresent(String.self, forKey: key)
    }
}

/// A spec that breaks a rule of its own (no pipeline needed to tell), or a JSON object with a key
/// nobody reads. The message names the field and what it may be.
public struct JobSpecError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Fails decoding when the object has a key outside `known`: a typo must not be ignored.
public func rejectUnknownKeys(_ decoder: any Decoder, known: [String], in what: String) throws {
    let c = try decoder.container(keyedBy: AnyCodingKey.self)
    let unknown = c.allKeys.map(\.stringValue).filter { !known.contains($0) }.sorted()
    guard unknown.isEmpty else {
        let list = unknown.map { "'\($0)'" }.joined(separator: ", ")
        throw JobSpecError(
            "unknown field\(unknown.count == 1 ? "" : "s") \(list) in \(what); known fields: \(known.sorted().joined(separator: ", "))"
        )
    }
}

struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}
