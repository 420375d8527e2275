// What a user asks for, and the settings a run actually uses once the pipeline's defaults are
// filled in and everything is checked.
import Foundation
import GriditModels
import GriditPipeline
import GriditTensor

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
}

/// A request for one sequence. Optional fields left nil take the pipeline's defaults.
///
/// JSON (snake_case): `{"length": 128, "seed": 7, "mode": "gridit", "sampler": "ddim", "steps": 50,
/// "sr_sampler": "ddim", "sr_steps": "ddim25", "eta": 0, "context_rows": 2, "context": "clean", "no_sr": false,
/// "precision": "fp32", "jump_length": 10, "jump_count": 2, "class_label": 3, "cfg_scale": 4}`.
public struct SequenceRequest: Codable, Sendable, Equatable {
    /// Frames wanted (gridit: exactly this many; official: the reference's 16 + 8N for this L).
    public var length: Int
    public var seed: UInt64
    public var mode: SequenceMode?
    public var sampler: SamplerName?
    /// Respacing of the 1000 training steps: a count ("250", "50"), "ddimN" or "trailingN" (also
    /// "linspaceN", "leadingN").
    public var steps: String?
    public var srSampler: SamplerName?
    public var srSteps: String?
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
    /// Classifier-free guidance scale for a class-conditional stage 1 (1 = none).
    public var cfgScale: Double?

    public init(length: Int, seed: UInt64, mode: SequenceMode? = nil, sampler: SamplerName? = nil, steps: String? = nil,
                srSampler: SamplerName? = nil, srSteps: String? = nil, eta: Double? = nil, contextRows: Int? = nil,
                context: ContextFrames? = nil, noSR: Bool = false, precision: String? = nil, jumpLength: Int? = nil, jumpCount: Int? = nil,
                classLabel: Int? = nil, cfgScale: Double? = nil) {
        self.length = length
        self.seed = seed
        self.mode = mode
        self.sampler = sampler
        self.steps = steps
        self.srSampler = srSampler
        self.srSteps = srSteps
        self.eta = eta
        self.contextRows = contextRows
        self.context = context
        self.noSR = noSR
        self.precision = precision
        self.jumpLength = jumpLength
        self.jumpCount = jumpCount
        self.classLabel = classLabel
        self.cfgScale = cfgScale
    }

    enum CodingKeys: String, CodingKey {
        case length, seed, mode, sampler, steps, eta, precision, context
        case srSampler = "sr_sampler", srSteps = "sr_steps", contextRows = "context_rows", noSR = "no_sr"
        case jumpLength = "jump_length", jumpCount = "jump_count", classLabel = "class_label", cfgScale = "cfg_scale"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        length = try c.decode(Int.self, forKey: .length)
        seed = try c.decode(UInt64.self, forKey: .seed)
        mode = try c.decodeIfPresent(SequenceMode.self, forKey: .mode)
        sampler = try c.decodeIfPresent(SamplerName.self, forKey: .sampler)
        steps = try Self.decodeSteps(c, .steps)
        srSampler = try c.decodeIfPresent(SamplerName.self, forKey: .srSampler)
        srSteps = try Self.decodeSteps(c, .srSteps)
        eta = try c.decodeIfPresent(Double.self, forKey: .eta)
        contextRows = try c.decodeIfPresent(Int.self, forKey: .contextRows)
        context = try c.decodeIfPresent(ContextFrames.self, forKey: .context)
        noSR = try c.decodeIfPresent(Bool.self, forKey: .noSR) ?? false
        precision = try c.decodeIfPresent(String.self, forKey: .precision)
        jumpLength = try c.decodeIfPresent(Int.self, forKey: .jumpLength)
        jumpCount = try c.decodeIfPresent(Int.self, forKey: .jumpCount)
        classLabel = try c.decodeIfPresent(Int.self, forKey: .classLabel)
        cfgScale = try c.decodeIfPresent(Double.self, forKey: .cfgScale)
    }

    /// Steps may be a number (50) or a respacing string ("50", "ddim50").
    private static func decodeSteps(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> String? {
        if let n = try? c.decodeIfPresent(Int.self, forKey: key) { return String(n) }
        return try c.decodeIfPresent(String.self, forKey: key)
    }

    /// Checks the request against a pipeline; throws an `invalid_input` `EngineError` that says
    /// what is wrong and what to do. `maxLength` overrides the pipeline's `limits.max_length`
    /// (a daemon-wide limit, say).
    public func validate(against pipeline: PipelineConfiguration, maxLength: Int? = nil) throws {
        _ = try settings(for: pipeline, maxLength: maxLength)
    }

    /// The settings a run of this request uses: pipeline defaults filled in, all checked.
    public func settings(for pipeline: PipelineConfiguration, maxLength: Int? = nil) throws -> RunSettings {
        try RunSettings(request: self, pipeline: pipeline, maxLength: maxLength)
    }
}

/// A request resolved against a pipeline: every choice explicit. This is what a run is keyed by
/// (a work directory only resumes a run with equal settings) and what `sequence.json` records.
public struct RunSettings: Codable, Sendable, Equatable {
    public var length: Int
    public var seed: UInt64
    public var mode: SequenceMode
    public var sampler: SamplerName
    public var steps: String
    public var eta: Double
    /// gridit mode; nil in official mode (which always carries K−1 rows).
    public var contextRows: Int?
    /// gridit mode; nil in official mode (which re-noises at its own level).
    public var context: ContextFrames?
    public var jumps: ResampleJumps?
    public var classLabel: Int?
    public var cfgScale: Double
    /// False with `no_sr` or when the pipeline has no stage 2.
    public var superResolution: Bool
    public var srSampler: SamplerName?
    public var srSteps: String?
    public var precisionRequested: String
    /// What runs: the one requested, or fp32 where the CPU lacks AVX512_BF16. Part of what makes
    /// the frames: the same seed gives other bits in the other precision.
    public var precisionUsed: String

    enum CodingKeys: String, CodingKey {
        case length, seed, mode, sampler, steps, eta, jumps, context
        case contextRows = "context_rows", classLabel = "class_label", cfgScale = "cfg_scale"
        case superResolution = "super_resolution", srSampler = "sr_sampler", srSteps = "sr_steps"
        case precisionRequested = "precision_requested", precisionUsed = "precision_used"
    }

    /// `precisionUsed` as the kernels take it.
    public var precision: Precision { Precision(rawValue: precisionUsed) ?? .fp32 }

    /// Whether stage 1 runs classifier-free guidance (two model rows per grid).
    public var guided: Bool { classLabel != nil && cfgScale != 1 }

    init(request r: SequenceRequest, pipeline: PipelineConfiguration, maxLength: Int?) throws {
        let spec = pipeline.spec, d = spec.defaults, k = spec.grid.k
        func fail(_ message: String, _ hint: String) throws -> Never { throw EngineError.invalid(message, hint: hint) }
        let limit = maxLength ?? spec.limits.maxLength
        if r.length < 1 { try fail("length is \(r.length)", "ask for at least 1 frame (--length)") }
        if r.length > limit {
            try fail("length \(r.length) is above the limit of \(limit) frames",
                     "ask for fewer frames, or raise the limit (limits.max_length in the pipeline file, --max-length)")
        }
        length = r.length
        seed = r.seed
        guard let mode = r.mode ?? SequenceMode(rawValue: d.mode) else { try fail("defaults.mode '\(d.mode)'", "fix the pipeline") }
        guard let sampler = r.sampler ?? SamplerName(rawValue: d.sampler) else {
            try fail("defaults.sampler '\(d.sampler)'", "fix the pipeline")
        }
        self.mode = mode
        self.sampler = sampler
        steps = try Self.checkSteps(r.steps ?? d.steps, field: "steps")
        eta = r.eta ?? d.eta
        if !(0...1).contains(eta) { try fail("eta is \(eta)", "use a DDIM η in 0...1 (--eta)") }

        switch mode {
        case .gridit:
            let c = r.contextRows ?? d.contextRows
            if !(1..<k).contains(c) {
                try fail("context_rows is \(c)", "this pipeline has k = \(k): use 1...\(k - 1) context rows (--context-rows)")
            }
            contextRows = c
            guard let frames = r.context ?? ContextFrames(rawValue: d.context) else {
                try fail("defaults.context '\(d.context)'", "fix the pipeline")
            }
            context = frames
        case .official:
            if r.contextRows != nil {
                try fail("context_rows does not apply to official mode",
                         "official mode always carries \(k - 1) rows; drop --context-rows or use --mode gridit")
            }
            if r.context != nil {
                try fail("context does not apply to official mode",
                         "official mode re-noises its known frames as the published code does; drop --context or use --mode gridit")
            }
            if k < 3 {
                try fail("official mode needs k >= 3 (this pipeline has k = \(k))",
                         "its in-between pass generates rows between two known rows; use --mode gridit")
            }
            contextRows = nil
            context = nil
        }

        let count = try GaussianDiffusion.spacedTimesteps(steps).count
        if r.jumpLength != nil || r.jumpCount != nil {
            let j = r.jumpLength ?? 10, n = r.jumpCount ?? 2
            if mode == .official {
                try fail("resampling jumps do not apply to official mode", "drop --jump-length/--jump-count or use --mode gridit")
            }
            if !(1..<max(count, 2)).contains(j) {
                try fail("jump_length is \(j)", "use 1...\(max(1, count - 1)) for \(count) steps")
            }
            if !(1...50).contains(n) { try fail("jump_count is \(n)", "use 1 (no resampling) ... 50 passes") }
            jumps = n > 1 ? ResampleJumps(length: j, count: n) : nil
        } else {
            jumps = nil
        }

        let classes = pipeline.stage1.numClasses
        if classes > 0 {
            guard let label = r.classLabel else {
                try fail("this stage-1 model is class-conditional (\(classes) classes)", "give a class (--class 0...\(classes - 1))")
            }
            if !(0..<classes).contains(label) { try fail("class_label is \(label)", "use 0...\(classes - 1)") }
            classLabel = label
            cfgScale = r.cfgScale ?? d.cfgScale
            if !(cfgScale.isFinite && cfgScale >= 0) { try fail("cfg_scale is \(cfgScale)", "use a scale >= 0 (1 = no guidance)") }
        } else {
            if r.classLabel != nil { try fail("class_label given, but stage 1 is unconditional", "drop --class") }
            if let s = r.cfgScale, s != 1 {
                try fail("cfg_scale \(s) given, but stage 1 is unconditional", "guidance needs a class-conditional model; drop --cfg-scale")
            }
            classLabel = nil
            cfgScale = 1
        }

        superResolution = spec.stage2 != nil && !r.noSR
        if superResolution {
            guard let s = r.srSampler ?? SamplerName(rawValue: d.srSampler) else {
                try fail("defaults.sr_sampler '\(d.srSampler)'", "fix the pipeline")
            }
            srSampler = s
            srSteps = try Self.checkSteps(r.srSteps ?? d.srSteps, field: "sr_steps")
        } else {
            srSampler = nil
            srSteps = nil
        }

        precisionRequested = r.precision ?? d.precision
        if !PipelineSpec.precisions.contains(precisionRequested) {
            try fail("precision '\(precisionRequested)'", "use one of \(PipelineSpec.precisions.joined(separator: ", "))")
        }
        precisionUsed = Precision(rawValue: precisionRequested)!.effective.rawValue
    }

    private static func checkSteps(_ s: String, field: String) throws -> String {
        do {
            _ = try GaussianDiffusion.spacedTimesteps(s)
            return s
        } catch {
            throw EngineError.invalid("\(field) '\(s)': \(error)", hint: "use a step count such as 50 or 250, ddimN, or trailingN")
        }
    }
}
