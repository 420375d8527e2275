// The flags of a job's sampling parameters (`JobSpec.Parameters`), one option group for
// `griditctl submit` and `griditd run`: a parameter the engine learns is a flag of both at once.

import ArgumentParser
import GriditJobSpec

extension SequenceMode: ExpressibleByArgument {}
extension SamplerName: ExpressibleByArgument {}
extension ContextFrames: ExpressibleByArgument {}
extension FrameNoise: ExpressibleByArgument {}
extension GuidanceInterval: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}

public struct SamplingOptions: ParsableArguments {
    public init() {}

    // The numbers take a value that starts with "-" (`.unconditional`), so that `--seed -1`
    // says what is wrong with -1 rather than "Missing value".
    @Option(
        parsing: .unconditional,
        help:
            "Noise seed, 0...2^64-1: the same seed, model and settings give the same bytes (default: a submit picks a random one and records it in the job; griditd run uses 0).",
        transform: SamplingOptions.seed)
    public var seed: UInt64?

    @Option(help: "gridit (exact length) or official (the published algorithm). Default: the model's.")
    public var mode: SequenceMode?

    @Option(help: "Stage-1 reverse step: ddpm, ddim, dpmpp-2m or dpmpp-2m-sde.")
    public var sampler: SamplerName?

    @Option(help: "Stage-1 steps: a count (50, 250), ddimN, or a diffusers spacing (trailingN, linspaceN, leadingN).")
    public var steps: String?

    @Option(help: "Stage-2 (super-resolution) reverse step: ddpm, ddim, dpmpp-2m or dpmpp-2m-sde.")
    public var srSampler: SamplerName?

    @Option(help: "Stage-2 steps: a count, ddimN or trailingN.")
    public var srSteps: String?

    @Option(
        parsing: .unconditional,
        help:
            "Scale of stage 2's noise, 0...1: 1 samples as trained, lower flickers less with softer strokes. Default: the model's."
    )
    public var srTemperature: Double?

    @Option(
        help: "Stage-2 noise: per-frame, or shared by every frame of the sequence (less flicker). Default: the model's."
    )
    public var srNoise: FrameNoise?

    @Option(
        parsing: .unconditional, help: "DDIM eta in 0...1 (0 = deterministic).")
    public var eta: Double?

    @Option(
        parsing: .unconditional, help: "Grid rows carried into each next grid as known frames (gridit mode), 1...K-1.")
    public var contextRows: Int?

    @Option(
        help:
            "gridit mode's carried frames: renoised (RePaint) or clean (for a stage 1 trained with clean context). Default: the model's."
    )
    public var context: ContextFrames?

    @Flag(help: "Skip stage 2: frames stay at the low resolution.")
    public var noSR = false

    @Option(help: "fp32 or bf16 (bf16 matrix products on CPUs with AVX512_BF16, else fp32). Default: the model's.")
    public var precision: String?

    @Option(
        parsing: .unconditional, help: "RePaint resampling (gridit mode): steps jumped back.")
    public var jumpLength: Int?

    @Option(
        parsing: .unconditional, help: "RePaint resampling: passes over each jumped span (1 = off).")
    public var jumpCount: Int?

    @Option(
        name: .customLong("class"), parsing: .unconditional,
        help: "Class label of a class-conditional model (required there, 0...classes-1).")
    public var classLabel: Int?

    @Option(
        parsing: .unconditional,
        help:
            "Stage-1 guidance scale (1 = none): autoguidance by the pipeline's guide model, else classifier-free guidance of a class-conditional model. Default: the model's."
    )
    public var cfgScale: Double?

    @Option(
        help:
            "Stage-1 timesteps where that guidance applies, lower:upper on 0...999 (700:999: only the noisiest steps). Default: the model's."
    )
    public var cfgInterval: GuidanceInterval?

    public var parameters: JobSpec.Parameters {
        JobSpec.Parameters(
            seed: seed, mode: mode, sampler: sampler, steps: steps, srSampler: srSampler, srSteps: srSteps,
            srTemperature: srTemperature, srNoise: srNoise, eta: eta, contextRows: contextRows, context: context,
            noSR: noSR, precision: precision, jumpLength: jumpLength, jumpCount: jumpCount, classLabel: classLabel,
            cfgScale: cfgScale, cfgInterval: cfgInterval)
    }

    static func seed(_ text: String) throws -> UInt64 {
        guard let seed = UInt64(text) else {
            throw ValidationError("a seed is a whole number from 0 to \(UInt64.max)")
        }
        return seed
    }

    /// The spec's own rules (`JobSpec.validate`), as usage errors before anything runs.
    public func validate() throws {
        do { try parameters.validate() } catch { throw ValidationError(error.message) }
    }
}
