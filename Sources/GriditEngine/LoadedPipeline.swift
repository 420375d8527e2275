// A pipeline ready to run: its spec, its models' configs, and the models bound from mapped
// safetensors files. One `LoadedPipeline` is shared by every run of that pipeline.

import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditModels
import GriditTensor

/// A pipeline's configuration without weights: the spec (file references are absolute paths) and
/// the model configs it names, checked against each other. Enough to validate and plan a request.
public struct PipelineConfiguration: Sendable {
    public let spec: PipelineSpec
    public let stage1: DiTConfiguration
    public let guide: DiTConfiguration?
    public let stage2: DiTConfiguration?
    public let vae: AutoencoderKLConfiguration?

    /// Reads the model configs `spec` names and checks them against it. `path` only labels errors.
    public init(spec: PipelineSpec, path: String? = nil) throws {
        do {
            try spec.validateFields(path: path)
            for (role, reference) in spec.files where !reference.hasPrefix("/") {
                throw PipelineError("\(role.rawValue) '\(reference)' is not an absolute path", path: path)
            }
            let s1 = try DiTConfiguration.load(path: spec.stage1.config)
            let g = try spec.guide.map { try DiTConfiguration.load(path: $0.config) }
            let s2 = try spec.stage2.map { try DiTConfiguration.load(path: $0.config) }
            let v = try spec.vae.map { try AutoencoderKLConfiguration.load(path: $0.config) }
            try spec.validate(stage1: s1, guide: g, stage2: s2, vae: v, path: path)
            self.init(spec: spec, stage1: s1, guide: g, stage2: s2, vae: v)
        } catch {
            throw EngineError.classify(error)
        }
    }

    /// A configuration from configs already at hand (tests, the model store); checked like the above.
    public init(
        spec: PipelineSpec, stage1: DiTConfiguration, guide: DiTConfiguration? = nil, stage2: DiTConfiguration?,
        vae: AutoencoderKLConfiguration?
    ) {
        self.spec = spec
        self.stage1 = stage1
        self.guide = guide
        self.stage2 = stage2
        self.vae = vae
    }

    /// Reads a pipeline file (relative references resolved against its folder) and its configs.
    public static func load(path: String) throws -> PipelineConfiguration {
        let spec: PipelineSpec
        do { spec = try PipelineSpec.load(path: path) } catch { throw EngineError.classify(error) }
        return try PipelineConfiguration(spec: spec, path: path)
    }

    /// Image-space geometry of a grid: K, the low-resolution frame side, the image channels.
    public var imageLayout: GridLayout {
        GridLayout(k: spec.grid.k, frameSize: spec.grid.frameSize, channels: spec.grid.channels)
    }

    /// Model-space (latent when there is a VAE) geometry of a stage-1 grid.
    public var modelLayout: GridLayout {
        let (c, s) = spec.stage1Space(vae: vae)
        return GridLayout(k: spec.grid.k, frameSize: s, channels: c)
    }

    /// Image side of a final frame with stage 2 (nil without one).
    public var highResolutionSize: Int? { spec.stage2.map { spec.grid.frameSize * $0.scale } }

    /// Model-space side of a stage-2 frame.
    var stage2ModelSize: Int? {
        highResolutionSize.map { hr in vae.map { hr / $0.downsampleFactor } ?? hr }
    }
}

/// Where a pipeline came from: the manifest digest and the digest of every file, recorded in
/// `sequence.json` so outputs can be traced to the exact bytes that made them.
public struct PipelineIdentity: Codable, Sendable, Equatable {
    /// "sha256:<hex>" of the pipeline manifest (the model store's digest, or `compute`'s).
    public var digest: String
    /// File role (`stage1.weights`, …) → "sha256:<hex>" of that file.
    public var blobs: [String: String]

    public init(digest: String, blobs: [String: String]) {
        self.digest = digest
        self.blobs = blobs
    }

    /// Hashes every file of `spec` (absolute paths). The manifest digest is the SHA-256 of the
    /// spec's canonical JSON (`PipelineSpec.encoded()`: sorted keys) with every file reference
    /// replaced by its blob digest, so the same files give the same digest wherever they live.
    public static func compute(spec: PipelineSpec) throws -> PipelineIdentity {
        var blobs: [String: String] = [:]
        for (role, path) in spec.files { blobs[role.rawValue] = try Files.sha256(ofFile: path) }
        let manifest = spec.mapFiles { role, _ in blobs[role.rawValue]! }
        return PipelineIdentity(digest: Files.sha256([UInt8](manifest.encoded())), blobs: blobs)
    }
}

/// A pipeline with its models bound: stage-1 DiT, optional guide, stage-2 DiT and VAE, each weight
/// borrowed from a read-only mapping of its safetensors file (resident only as it is used).
///
/// Immutable and `Sendable`: share one per pipeline digest between any number of runs.
/// All inference happens on the threads that call `SequenceRun.execute`.
public final class LoadedPipeline: Sendable {
    public let configuration: PipelineConfiguration
    public let identity: PipelineIdentity
    public let stage1: DiT
    public let guide: DiT?
    public let stage2: DiT?
    public let vae: AutoencoderKL?
    /// Bytes of the mapped weight files.
    public let mappedBytes: Int
    /// The precision every model's products run in (what `precision` asked for, or fp32 where the
    /// CPU lacks AVX512_BF16); runs must ask for this one (`RunSettings.precisionUsed`).
    public let precision: Precision

    public var spec: PipelineSpec { configuration.spec }

    /// Maps and binds the models `spec` names (absolute paths, as the model store hands them out).
    /// `identity` is the store's; when nil every file is hashed (`PipelineIdentity.compute`).
    /// `map` makes the read-only mapping of a weights file; by default each file is mapped here,
    /// while a daemon passes its model store's shared mappings (one per blob, whatever uses it).
    /// `precision` defaults to the spec's `defaults.precision`; bf16 weights are packed here, once.
    public init(
        spec: PipelineSpec, identity: PipelineIdentity? = nil, path: String? = nil, precision: Precision? = nil,
        map: (_ role: PipelineSpec.FileRole, _ path: String) throws -> MappedFile = { try MappedFile(path: $1) }
    )
        throws
    {
        let configuration = try PipelineConfiguration(spec: spec, path: path)
        let asked = precision ?? Precision(rawValue: spec.defaults.precision) ?? .fp32
        do {
            var mapped = 0
            /// Maps a role's weights file and counts its bytes.
            func weights(_ role: PipelineSpec.FileRole, _ path: String) throws -> SafetensorsFile {
                let file = try SafetensorsFile(mapping: map(role, path))
                mapped += file.mapping.size
                return file
            }
            stage1 = try DiT(
                config: configuration.stage1, source: weights(.stage1Weights, spec.stage1.weights), precision: asked)
            if let g = spec.guide, let cg = configuration.guide {
                guide = try DiT(config: cg, source: weights(.guideWeights, g.weights), precision: asked)
            } else {
                guide = nil
            }
            if let s2 = spec.stage2, let c2 = configuration.stage2 {
                stage2 = try DiT(config: c2, source: weights(.stage2Weights, s2.weights), precision: asked)
            } else {
                stage2 = nil
            }
            if let v = spec.vae, let cv = configuration.vae {
                vae = try AutoencoderKL(config: cv, source: weights(.vaeWeights, v.weights), precision: asked)
            } else {
                vae = nil
            }
            mappedBytes = mapped
            self.precision = stage1.precision
        } catch {
            throw EngineError.classify(error, context: path.map { "pipeline '\($0)'" })
        }
        self.configuration = configuration
        self.identity = try identity ?? PipelineIdentity.compute(spec: spec)
    }

    /// Reads a pipeline file and loads it (files resolved against its folder; every file hashed).
    public convenience init(path: String, precision: Precision? = nil) throws {
        let spec: PipelineSpec
        do { spec = try PipelineSpec.load(path: path) } catch { throw EngineError.classify(error) }
        try self.init(spec: spec, path: path, precision: precision)
    }
}
