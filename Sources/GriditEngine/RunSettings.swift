// The settings a run actually uses: a `JobSpec` with the pipeline's defaults filled in, checked
// against the pipeline (the spec's own rules are `JobSpec.validate`, applied first).

import Foundation
import GriditDiffusion
import GriditJobSpec
import GriditModels
import GriditTensor

extension JobSpec {
    /// The settings a run of this spec uses: pipeline defaults filled in, all checked. Throws an
    /// `invalid_input` `EngineError` that says what is wrong and what to do. `maxLength` overrides
    /// the pipeline's `limits.max_length` (a daemon-wide limit, say).
    public func settings(for pipeline: PipelineConfiguration, maxLength: Int? = nil) throws -> RunSettings {
        try RunSettings(spec: self, pipeline: pipeline, maxLength: maxLength)
    }
}

/// A spec resolved against a pipeline: every choice explicit. This is what a run is keyed by
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
    /// The timesteps where that guidance applies; nil: every step (or no guidance). Files written
    /// before it existed guided every step.
    public var cfgInterval: GuidanceInterval?
    /// False with `no_sr` or when the pipeline has no stage 2.
    public var superResolution: Bool
    public var srSampler: SamplerName?
    public var srSteps: String?
    /// Nil without stage 2, and in `run.json` files from before they existed (1, per-frame).
    public var srTemperature: Double?
    public var srNoise: FrameNoise?
    public var precisionRequested: String
    /// What runs: the one requested, or fp32 where the CPU lacks AVX512_BF16. Part of what makes
    /// the frames: the same seed gives other bits in the other precision.
    public var precisionUsed: String

    enum CodingKeys: String, CodingKey {
        case length, seed, mode, sampler, steps, eta, jumps, context
        case contextRows = "context_rows", classLabel = "class_label", cfgScale = "cfg_scale"
        case cfgInterval = "cfg_interval"
        case superResolution = "super_resolution", srSampler = "sr_sampler", srSteps = "sr_steps"
        case srTemperature = "sr_temperature", srNoise = "sr_noise"
        case precisionRequested = "precision_requested", precisionUsed = "precision_used"
    }

    /// `precisionUsed` as the kernels take it.
    public var precision: Precision { Precision(rawValue: precisionUsed) ?? .fp32 }

    /// Whether stage 1 is guided (two model rows per grid): by the pipeline's guide model, or
    /// classifier-free (the null class). A scale other than 1 is only ever set where one of them exists.
    public var guided: Bool { cfgScale != 1 }

    /// Whether the stage-1 step at model timestep `t` is guided.
    public func guided(at t: Float) -> Bool { guided && (cfgInterval?.contains(t) ?? true) }

    init(spec job: JobSpec, pipeline: PipelineConfiguration, maxLength: Int?) throws {
        do { try job.validate() } catch { throw EngineError.invalid(error.message) }
        let r = job.parameters, spec = pipeline.spec, d = spec.defaults, k = spec.grid.k
        func fail(_ message: String, _ hint: String) throws -> Never { throw EngineError.invalid(message, hint: hint) }
        let limit = maxLength ?? spec.limits.maxLength
        if job.length > limit {
            try fail(
                "length \(job.length) is above the limit of \(limit) frames",
                "ask for fewer frames, or raise the limit (limits.max_length in the pipeline file, --max-length)")
        }
        guard let seed = r.seed else {
            try fail("the spec has no seed", "give one (--seed); griditd picks one at submit")
        }
        length = job.length
        self.seed = seed
        guard let mode = r.mode ?? SequenceMode(rawValue: d.mode) else {
            try fail("defaults.mode '\(d.mode)'", "fix the pipeline")
        }
        guard let sampler = r.sampler ?? SamplerName(rawValue: d.sampler) else {
            try fail("defaults.sampler '\(d.sampler)'", "fix the pipeline")
        }
        self.mode = mode
        self.sampler = sampler
        steps = try Self.checkSteps(r.steps ?? d.steps, field: "steps")
        eta = r.eta ?? d.eta

        switch mode {
        case .gridit:
            let c = r.contextRows ?? d.contextRows
            if !(1..<k).contains(c) {
                try fail(
                    "context_rows is \(c)", "this pipeline has k = \(k): use 1...\(k - 1) context rows (--context-rows)"
                )
            }
            contextRows = c
            guard let frames = r.context ?? ContextFrames(rawValue: d.context) else {
                try fail("defaults.context '\(d.context)'", "fix the pipeline")
            }
            context = frames
        case .official:
            if r.contextRows != nil {
                try fail(
                    "context_rows does not apply to official mode",
                    "official mode always carries \(k - 1) rows; drop --context-rows or use --mode gridit")
            }
            if r.context != nil {
                try fail(
                    "context does not apply to official mode",
                    "official mode re-noises its known frames as the published code does; drop --context or use --mode gridit"
                )
            }
            if k < 3 {
                try fail(
                    "official mode needs k >= 3 (this pipeline has k = \(k))",
                    "its in-between pass generates rows between two known rows; use --mode gridit")
            }
            contextRows = nil
            context = nil
        }

        let timesteps = try GaussianDiffusion.spacedTimesteps(steps), count = timesteps.count
        if r.jumpLength != nil || r.jumpCount != nil {
            let j = r.jumpLength ?? 10, n = r.jumpCount ?? 2
            if mode == .official {
                try fail(
                    "resampling jumps do not apply to official mode",
                    "drop --jump-length/--jump-count or use --mode gridit")
            }
            if !(1..<max(count, 2)).contains(j) {
                try fail("jump_length is \(j)", "use 1...\(max(1, count - 1)) for \(count) steps")
            }
            jumps = n > 1 ? ResampleJumps(length: j, count: n) : nil
        } else {
            jumps = nil
        }

        let classes = pipeline.stage1.numClasses
        if classes > 0 {
            guard let label = r.classLabel else {
                try fail(
                    "this stage-1 model is class-conditional (\(classes) classes)",
                    "give a class (--class 0...\(classes - 1))")
            }
            if !(0..<classes).contains(label) { try fail("class_label is \(label)", "use 0...\(classes - 1)") }
            classLabel = label
        } else {
            if r.classLabel != nil { try fail("class_label given, but stage 1 is unconditional", "drop --class") }
            classLabel = nil
        }
        if classes > 0 || pipeline.guide != nil {
            cfgScale = r.cfgScale ?? d.cfgScale
        } else {
            if let s = r.cfgScale, s != 1 {
                try fail(
                    "cfg_scale \(s) given, but stage 1 is unconditional and the pipeline has no guide model",
                    "guidance needs a class-conditional stage 1 or a pipeline with a guide; drop --cfg-scale")
            }
            if let i = r.cfgInterval {
                try fail(
                    "cfg_interval \(i) given, but stage 1 is unconditional and the pipeline has no guide model",
                    "guidance needs a class-conditional stage 1 or a pipeline with a guide; drop --cfg-interval")
            }
            cfgScale = 1
        }
        // Kept only where it changes something, so that settings equal in effect are equal.
        let interval = r.cfgInterval ?? d.cfgInterval
        cfgInterval = cfgScale != 1 && interval?.isEveryStep == false ? interval : nil
        if let i = cfgInterval, !timesteps.contains(where: { i.contains(Float($0)) }) {
            try fail(
                "cfg_interval [\(i.lower), \(i.upper)] holds none of the timesteps of steps '\(steps)', so "
                    + "nothing would be guided", "widen the interval, or ask for no guidance (cfg_scale 1)")
        }

        superResolution = spec.stage2 != nil && !r.noSR
        if superResolution {
            guard let s = r.srSampler ?? SamplerName(rawValue: d.srSampler) else {
                try fail("defaults.sr_sampler '\(d.srSampler)'", "fix the pipeline")
            }
            srSampler = s
            srSteps = try Self.checkSteps(r.srSteps ?? d.srSteps, field: "sr_steps")
            srTemperature = r.srTemperature ?? d.srTemperature
            guard let noise = r.srNoise ?? FrameNoise(rawValue: d.srNoise) else {
                try fail("defaults.sr_noise '\(d.srNoise)'", "fix the pipeline")
            }
            srNoise = noise
        } else {
            srSampler = nil
            srSteps = nil
            srTemperature = nil
            srNoise = nil
        }

        precisionRequested = r.precision ?? d.precision
        if !PipelineSpec.precisions.contains(precisionRequested) {
            try fail(
                "precision '\(precisionRequested)'", "use one of \(PipelineSpec.precisions.joined(separator: ", "))")
        }
        precisionUsed = Precision(rawValue: precisionRequested)!.effective.rawValue
    }

    /// Settings read from a file an older gridit wrote, with what it did where a field is missing:
    /// runs recorded before `context` existed re-noised their carried frames, and before
    /// `sr_temperature` and `sr_noise`, drew stage 2's noise at 1, per frame.
    func filledAsOlderVersions() -> RunSettings {
        var s = self
        if s.mode == .gridit && s.context == nil { s.context = .renoised }
        if s.superResolution && s.srNoise == nil { (s.srTemperature, s.srNoise) = (1, .perFrame) }
        return s
    }

    private static func checkSteps(_ s: String, field: String) throws -> String {
        do {
            _ = try GaussianDiffusion.spacedTimesteps(s)
            return s
        } catch {
            throw EngineError.invalid(
                "\(field) '\(s)': \(error)", hint: "use a step count such as 50 or 250, ddimN, or trailingN")
        }
    }
}
