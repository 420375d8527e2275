// The engine as griditd runs it: in a worker process (`griditd worker`) that GriditDaemon's
// `WorkerSupervisor` starts and watches. griditd validates submits and resolves each batch's
// pipeline through the model store (the integrity check, quarantine) itself; the worker maps
// the weights, runs the batch and reports what it has loaded, which `ps`, `status` and `gc` see.

import Foundation
import GriditAPI
import GriditDaemon
import GriditEngine
import GriditJobSpec
import GriditModelStore
import Logging
import Synchronization

public final class WorkerProcessEngine: JobEngine {
    /// In griditd: validation and pipeline resolution only (it never loads a model).
    let local: InProcessEngine
    let supervisor: WorkerSupervisor

    init(local: InProcessEngine, supervisor: WorkerSupervisor) {
        self.local = local
        self.supervisor = supervisor
    }

    public func validate(_ spec: JobSpec, pipelineDigest: String?) async throws(JobFailure) -> TimeInterval {
        try await local.validate(spec, pipelineDigest: pipelineDigest)
    }

    public func plan(
        _ spec: JobSpec, pipelineDigest: String?
    ) async throws(JobFailure) -> (plan: String, seconds: TimeInterval) {
        try await local.plan(spec, pipelineDigest: pipelineDigest)
    }

    public func execute(_ batch: ExecutionBatch, hooks: ExecutionHooks) {
        var batch = batch
        if let digest = batch.pipelineDigest {
            do throws(JobFailure) {
                let ids = batch.items.map(\.jobID)
                let resolved = try local.resolve(digest) { for id in ids { hooks.working(id) } }
                do { batch.resolved = try JSONEncoder().encode(resolved) } catch {
                    throw JobFailure(.internalError, "encoding the pipeline for the engine worker: \(error)")
                }
            } catch {
                local.logger.error(
                    "loading the model failed: \(error.message)", metadata: ["model.digest": "\(digest)"])
                for item in batch.items + hooks.admit() { hooks.finished(item.jobID, .failed(error)) }
                return
            }
        }
        supervisor.execute(batch, hooks: hooks)
    }

    public var worker: EngineWorkerInfo? { supervisor.info }

    public func shutdown() { supervisor.shutdown() }
}

/// What the engine worker last said it has loaded, shown by `ps` and `status` and kept by `gc`
/// as if griditd had loaded it.
final class WorkerModels: Sendable {
    private let reports = Mutex<[CacheReport]>([])

    var keys: Set<String> { Set(reports.withLock { $0.map(\.key) }) }
    var current: [CacheReport] { reports.withLock { $0 } }

    /// A report from the worker (nil: it is gone, nothing of it is loaded).
    func update(_ data: Data?) {
        let decoded = data.flatMap { try? JSONDecoder().decode([CacheReport].self, from: $0) } ?? []
        reports.withLock { $0 = decoded }
    }
}
