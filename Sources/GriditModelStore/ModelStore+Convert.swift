import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditModels

#if canImport(Glibc)
import Glibc
#endif

extension ModelStore {
    /// Precisions a version can be converted to.
    public static let conversionPrecisions = ["bf16"]

    /// Writes a new version of the version `reference` names with its DiT weights in `precision`
    /// (only `bf16`): the weights of every matrix product (`DiTWeights.bf16Keys`) stored as BF16,
    /// rounded as the bf16 kernels round them, biases and embeddings as they were, the VAE's file
    /// and the configs unchanged, and `defaults.precision` set to bf16. Run in bf16 it gives the
    /// source's bf16 outputs bit for bit, from half the bytes of those weights.
    ///
    /// The new files go through the import's path: checked like an import (headers, finite
    /// weights, binding), hashed into blobs, durable, the version and its tag committed in one
    /// transaction. The source's blobs are re-hashed first. `name`: the tag to set; default
    /// `NAME:TAG-bf16` for a `NAME:TAG` reference, `NAME:bf16` for `NAME@sha256:…`.
    public func convert(
        _ reference: String, precision: String, name: String? = nil
    ) throws(ModelStoreError) -> ImportReport {
        try requireWritable("convert")
        guard Self.conversionPrecisions.contains(precision) else {
            throw ModelStoreError(
                .invalidInput,
                precision == "fp32"
                    ? "a version cannot be converted to fp32: keep (or tag) the fp32 version it was converted from"
                    : "unknown precision '\(precision.prefix(40))'",
                hint: "convert to one of: \(Self.conversionPrecisions.joined(separator: ", "))")
        }
        let parsed = try ModelReference(parsing: reference)
        let tag: (name: String, tag: String)
        if let name {
            tag = try ModelReference.parseTag(name)
        } else {
            switch parsed {
            case .tag(let n, let t): tag = try ModelReference.parseTag("\(n):\(t)-\(precision)")
            case .pinned(let n, _): tag = (n, precision)
            case .digest, .digestPrefix:
                throw ModelStoreError(
                    .invalidReference, "\(reference) has no name to tag the converted version with",
                    hint:
                        "name the new version: `models convert … --tag NAME:TAG` (or `--name`), e.g. moving-digits:v1-bf16"
                )
            }
        }
        let digest = try resolve(parsed)
        let manifest = try loadManifest(digest)
        // The source's blobs are pending while the conversion runs (minutes): a gc meanwhile
        // keeps those the new version reuses.
        let sourceBlobs = [digest] + manifest.blobs.map(\.digest)
        holdPending(sourceBlobs)
        defer { releasePending(sourceBlobs) }
        var paths: [PipelineSpec.FileRole: String] = [:]
        for blob in manifest.blobs {
            paths[blob.role] = try checkedBlob(blob.digest, what: "\(blob.role.rawValue) of \(digest)", full: true)
        }

        // The DiT stages: their weights converted into ingest/, then hashed in like an import.
        var stages: [(weights: PipelineSpec.FileRole, config: PipelineSpec.FileRole)] = [
            (.stage1Weights, .stage1Config)
        ]
        if manifest.pipeline.guide != nil { stages.append((.guideWeights, .guideConfig)) }
        if manifest.pipeline.stage2 != nil { stages.append((.stage2Weights, .stage2Config)) }
        var plans: [(role: PipelineSpec.FileRole, file: SafetensorsFile, keys: Set<String>)] = []
        for stage in stages {
            let config: DiTConfiguration
            let file: SafetensorsFile
            do {
                config = try DiTConfiguration.load(path: paths[stage.config]!)
                file = try SafetensorsFile(path: paths[stage.weights]!)
            } catch {
                throw ModelStoreError(
                    .invalidInput, "\(stage.weights.rawValue) of \(digest): \(error)",
                    hint: "`models verify \(reference)` checks the version")
            }
            plans.append((stage.weights, file, DiTWeights.bf16Keys(config)))
        }
        let converted = plans.filter { plan in plan.keys.contains { plan.file.info($0)?.dtype != .bf16 } }
        guard !converted.isEmpty else {
            throw ModelStoreError(
                .invalidInput,
                "\(reference) (\(digest)) already stores its weights in \(precision); nothing to convert",
                hint: "run it as it is, or tag it with `models tag`")
        }

        var ingested: [PipelineSpec.FileRole: IngestFile] = [:]
        var written: [BlobDigest: Int64] = [:]  // a blob two roles share is written once
        for plan in converted {
            let temporary = joinPath(local.ingestDirectory, UUID().uuidString.lowercased() + Self.convertingSuffix)
            defer { unlink(temporary) }
            do {
                try plan.file.writeConverted(to: temporary, bf16: plan.keys)
            } catch {
                throw ModelStoreError(
                    .io, "writing the \(precision) copy of \(plan.role.rawValue) of \(digest): \(error)",
                    hint: "check the free space of \(local.path)")
            }
            let opened: OpenedFile
            do { opened = try SafeOpen.file(atPath: temporary) } catch { throw ModelStoreError(error) }
            // Our own fresh file: the blob takes its inode (hashed again on the way in).
            let file = try IngestFile.fromFile(opened, into: local, mode: .hardlink)
            ingested[plan.role] = file
            written[file.digest] = file.size
        }

        var spec = manifest.pipeline
        spec.defaults.precision = precision
        var names: [PipelineSpec.FileRole: String] = [:]
        for (role, _) in spec.files { names[role] = "\(role.rawValue) of the \(precision) copy of \(digest)" }
        try PipelineValidation.validate(spec.mapFiles { role, _ in ingested[role]?.path ?? paths[role]! }, names: names)
        var files: [PipelineSpec.FileRole: (digest: BlobDigest, size: Int64)] = [:]
        for blob in manifest.blobs {
            files[blob.role] = ingested[blob.role].map { ($0.digest, $0.size) } ?? (blob.digest, blob.size)
        }
        let newManifest = PipelineManifest(spec: spec, files: files)
        let manifestFile = try IngestFile.fromBytes(newManifest.encoded(), into: local)
        let kept = Dictionary(
            manifest.blobs.filter { ingested[$0.role] == nil }.map { ($0.digest, paths[$0.role]!) },
            uniquingKeysWith: { a, _ in a })
        var report = try commit(
            manifest: newManifest, manifestFile: manifestFile, files: Array(ingested.values), existing: kept,
            source: "\(precision) conversion of \(reference) (\(digest))", tags: [tag], ownSources: true)
        report.bytesWritten = written.values.reduce(0, +)
        return report
    }
}
