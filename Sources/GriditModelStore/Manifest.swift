import Foundation
import GriditDiffusion

/// Media types of the blobs of a pipeline version.
public enum MediaType {
    public static let manifest = "application/vnd.gridit.pipeline.manifest.v1+json"
    public static let ditConfig = "application/vnd.gridit.dit.config.v1+json"
    public static let vaeConfig = "application/vnd.gridit.vae.config.v1+json"
    public static let safetensors = "application/vnd.gridit.weights.safetensors"

    static func of(_ role: PipelineSpec.FileRole) -> String {
        switch role {
        case .stage1Config, .guideConfig, .stage2Config: return ditConfig
        case .vaeConfig: return vaeConfig
        case .stage1Weights, .guideWeights, .stage2Weights, .vaeWeights: return safetensors
        }
    }
}

/// One pipeline version, stored as a blob and named by its digest:
///
///     {"media_type": "application/vnd.gridit.pipeline.manifest.v1+json",
///      "pipeline": { …pipeline.json with every file reference replaced by "sha256:<hex>"… },
///      "blobs": [{"role": "stage1.config", "digest": "sha256:…", "size": 312,
///                 "media_type": "application/vnd.gridit.dit.config.v1+json"}, …]}
///
/// The encoding is deterministic (sorted keys) and holds nothing but content, so importing the
/// same files twice gives the same digest.
public struct PipelineManifest: Codable, Sendable, Equatable {
    public struct Blob: Codable, Sendable, Equatable {
        public var role: PipelineSpec.FileRole
        public var digest: BlobDigest
        public var size: Int64
        public var mediaType: String

        enum CodingKeys: String, CodingKey {
            case role, digest, size
            case mediaType = "media_type"
        }
    }

    public var mediaType: String
    /// The pipeline; its file references are the blob digests.
    public var pipeline: PipelineSpec
    /// In `PipelineSpec.FileRole` order.
    public var blobs: [Blob]

    enum CodingKeys: String, CodingKey {
        case mediaType = "media_type"
        case pipeline, blobs
    }

    /// Largest manifest accepted.
    static let maxSize = 1 << 20

    /// The manifest of `spec` (file references are local paths) given the digest and size of
    /// each role's file.
    init(spec: PipelineSpec, files: [PipelineSpec.FileRole: (digest: BlobDigest, size: Int64)]) {
        mediaType = MediaType.manifest
        pipeline = spec.mapFiles { role, _ in files[role]!.digest.description }
        blobs = spec.files.map { role, _ in
            Blob(role: role, digest: files[role]!.digest, size: files[role]!.size, mediaType: MediaType.of(role))
        }
    }

    public func encoded() -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try! e.encode(self))  // strings and numbers only: cannot fail
    }

    public var digest: BlobDigest { BlobDigest(of: encoded()) }

    /// Decodes and checks a manifest: the media type, the pipeline's fields, and that every file
    /// reference of the pipeline is the digest listed for its role.
    public static func decode(_ bytes: some DataProtocol, name: String) throws(ModelStoreError) -> PipelineManifest {
        func bad(_ why: String) -> ModelStoreError {
            ModelStoreError(
                .invalidInput, "manifest \(name): \(why)",
                hint: "re-export the model, or import its pipeline.json again")
        }
        let m: PipelineManifest
        do {
            m = try JSONDecoder().decode(PipelineManifest.self, from: Data(bytes))
        } catch {
            throw bad("not a pipeline manifest (\(error))")
        }
        guard m.mediaType == MediaType.manifest else {
            throw bad("media type is '\(m.mediaType)', expected \(MediaType.manifest)")
        }
        do { try m.pipeline.validateFields() } catch { throw bad("\(error)") }
        let roles = Dictionary(m.blobs.map { ($0.role, $0) }, uniquingKeysWith: { a, _ in a })
        guard roles.count == m.blobs.count else { throw bad("a role is listed twice") }
        let referenced = m.pipeline.files
        guard Set(referenced.map(\.role)) == Set(roles.keys) else {
            throw bad(
                "the blob list (\(m.blobs.map(\.role.rawValue))) differs from the pipeline's files (\(referenced.map(\.role.rawValue)))"
            )
        }
        for (role, reference) in referenced where BlobDigest(reference) != roles[role]!.digest {
            throw bad("\(role.rawValue) is '\(reference)' but the blob list says \(roles[role]!.digest)")
        }
        return m
    }
}
