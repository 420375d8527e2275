// The daemon's `ModelCatalog` over GriditModelStore: the same library calls `griditd models`
// makes offline, their results mapped to the wire types (ModelStore+Wire.swift) with the same
// rendering, plus the default model of a submit and what is loaded for `status`.

import Foundation
import GriditAPI
import GriditCheckpoint
import GriditDaemon
import GriditEngine
import GriditJobQueue
import GriditModelStore
import GriditStateDatabase
import GriditTensor
import NIOPosix

public final class ModelStoreCatalog: ModelCatalog {
    let models: ModelStore
    /// Which versions live jobs pin (the model store does not read the job queue itself).
    let jobs: any JobStore
    let cache: KeepAliveCache<LoadedPipeline>
    let blocking: NIOThreadPool
    /// What the engine worker process has loaded (nil: the engine runs in griditd).
    let workerModels: WorkerModels?

    init(
        models: ModelStore, jobs: any JobStore, cache: KeepAliveCache<LoadedPipeline>, blocking: NIOThreadPool,
        workerModels: WorkerModels? = nil
    ) {
        self.models = models
        self.jobs = jobs
        self.cache = cache
        self.blocking = blocking
        self.workerModels = workerModels
    }

    public convenience init(
        models: ModelStore, jobs: any JobStore, cache: KeepAliveCache<LoadedPipeline>, blocking: NIOThreadPool
    ) {
        self.init(models: models, jobs: jobs, cache: cache, blocking: blocking, workerModels: nil)
    }

    func run<T: Sendable>(
        _ body: @escaping @Sendable () throws(ModelStoreError) -> T
    ) async throws(APIError)
        -> T
    {
        do {
            return try await blocking.blocking(body, stopped: ModelStoreError(.io, "griditd is stopping"))
        } catch {
            throw Self.apiError(error)
        }
    }

    public func resolve(_ reference: String?) async throws(APIError) -> String {
        try await run { () throws(ModelStoreError) in
            if let reference { return try self.models.resolveToRun(reference).description }
            return try self.defaultModel()
        }
    }

    /// The digest a submit without `--model` runs: the store's only model (its `latest` tag, or
    /// the one version all its tags name). Refused when the store is empty or holds several.
    func defaultModel() throws(ModelStoreError) -> String {
        let tagged = try models.list(pins: JobPins()).models.filter { $0.name != nil && $0.tag != nil }
        let names = Set(tagged.compactMap(\.name)).sorted()
        guard let name = names.first else {
            throw ModelStoreError(
                .notFound, "griditd's model store holds no model yet",
                hint: "import one: `griditctl models import PATH/pipeline.json --name NAME:TAG`, then submit again")
        }
        guard names.count == 1 else {
            throw ModelStoreError(
                .invalidReference,
                "the model store holds several models (\(names.joined(separator: ", "))) and none is the default",
                hint: "say which with `--model NAME:TAG`, or start griditd with `--default-model NAME:TAG`")
        }
        let versions = tagged.filter { $0.name == name }
        if let latest = versions.first(where: { $0.tag == "latest" }) { return latest.digest }
        let digests = Set(versions.map(\.digest))
        guard digests.count == 1, let only = digests.first else {
            throw ModelStoreError(
                .invalidReference,
                "\(name) has several versions (\(versions.compactMap(\.tag).sorted().map { "\(name):\($0)" }.joined(separator: ", "))) and no :latest",
                hint:
                    "say which with `--model NAME:TAG`, or tag one latest (`griditctl models tag \(name):TAG \(name):latest`)"
            )
        }
        return only
    }

    public func perform(_ command: ModelCommand, for caller: Caller) async throws(APIError) -> ModelCommandOutput {
        let models = self.models
        let reader = FileReader(uid: caller.uid, groups: caller.groups)
        let pins: JobPins
        switch command {
        case .list, .show, .remove, .gc:
            do {
                pins = JobPins(digests: try await jobs.livePipelinePins())
            } catch {
                throw APIError(.internalError, "reading which models live jobs pin: \(error.message)")
            }
        default:
            pins = JobPins()
        }
        return try await run { () throws(ModelStoreError) in
            switch command {
            case .list:
                let r = ModelListResult(try models.list(pins: pins))
                return ModelCommandOutput(encoding: r, text: r.render())
            case .show(let reference):
                let r = ModelShowResult(try models.show(reference, pins: pins))
                return ModelCommandOutput(encoding: r, text: r.render())
            case .importPipeline(let request):
                guard let link = LinkMode(rawValue: request.link ?? "auto") else {
                    throw ModelStoreError(
                        .invalidInput,
                        "link '\(request.link ?? "")' is not one of "
                            + LinkMode.allCases.map(\.rawValue).joined(separator: ", "))
                }
                let r = ModelImportResult(
                    try models.importModel(from: request.path, name: request.name, link: link, reader: reader))
                return ModelCommandOutput(encoding: r, text: r.render())
            case .importUpload(let upload):
                guard let kind = ModelStore.UploadKind(rawValue: upload.kind), let digest = BlobDigest(upload.sha256)
                else {
                    throw ModelStoreError(.invalidInput, "an upload is a bundle or a pipeline, with its sha256:<hex>")
                }
                let r = ModelImportResult(
                    try models.importUpload(upload.file, kind: kind, sha256: digest, name: upload.name))
                return ModelCommandOutput(encoding: r, text: r.render())
            case .tag(let request):
                let r = ModelTagResult(try models.tag(request.source, request.target))
                return ModelCommandOutput(encoding: r, text: r.render())
            case .convert(let request):
                // The offline command's conversion; on the blocking pool, as it reads and writes whole weight files.
                let r = ModelImportResult(
                    try models.convert(request.ref, precision: request.precision, name: request.tag))
                return ModelCommandOutput(encoding: r, text: r.render())
            case .remove(let reference):
                let r = ModelRemoveResult(try models.remove(reference, pins: pins))
                return ModelCommandOutput(encoding: r, text: r.render())
            case .verify(let request):
                let r = ModelVerifyResult(try models.verify(request.all == true ? nil : request.reference))
                return ModelCommandOutput(encoding: r, text: r.render())
            case .gc(let request):
                let r = ModelGCResult(try models.gc(dryRun: request.dryRun ?? false, pins: pins))
                return ModelCommandOutput(encoding: r, text: r.render())
            case .ps:
                let r = ModelPSResult(models.ps())
                return ModelCommandOutput(encoding: r, text: r.render())
            case .check:
                let r = ModelStoreCheckResult(models.checks())
                return ModelCommandOutput(encoding: r, text: r.render())
            }
        }
    }

    public func loadedModels() async -> [LoadedModel] {
        let keys = Set(cache.keys).union(workerModels?.keys ?? [])
        let entries = (try? await run { () throws(ModelStoreError) in self.models.ps() })?.entries ?? []
        return entries.filter { keys.contains($0.key) }.map { entry in
            let (digest, precision) = InProcessEngine.parseCacheKey(entry.key)
            return LoadedModel(
                digest: digest, names: entry.references, precision: precision.rawValue,
                residentBytes: entry.blobs.reduce(0) { $0 + $1.resident }, activeJobs: entry.leases,
                expiresAt: entry.expiresAt)
        }
    }

    public func exportBundle(_ reference: String) async throws(APIError) -> any BundlePieces {
        let models = self.models
        let bundle = try await run { () throws(ModelStoreError) in
            try models.exportStream(reference, name: "the download of \(reference)")
        }
        return Pieces(catalog: self, bundle: bundle, reference: reference)
    }

    /// `exportBundle`'s pieces, each read and hashed on the blocking pool: a client that reads
    /// slowly holds no thread between pieces.
    struct Pieces: BundlePieces {
        let catalog: ModelStoreCatalog
        let bundle: BundleStream
        let reference: String

        func next() async throws(APIError) -> [UInt8]? {
            let (models, bundle, reference) = (catalog.models, self.bundle, self.reference)
            return try await catalog.run { () throws(ModelStoreError) in try models.exportPiece(bundle, reference) }
        }
    }

    static func apiError(_ error: ModelStoreError) -> APIError {
        let code: APIError.Code =
            switch error.code {
            case .notFound: .notFound
            case .invalidReference, .invalidInput, .crossDevice: .badRequest
            case .digestMismatch: .digestMismatch
            case .permission: .forbidden
            case .readOnly, .daemonRunning: .conflict
            case .noSpace: .unavailable
            default: .internalError
            }
        return APIError(code, error.message + (error.hint.map { ". Fix: \($0)" } ?? ""))
    }
}
