// GriditBackend: the engine (GriditEngine) and the model store (GriditModelStore) behind the
// daemon's protocols (GriditDaemon's `JobEngine` and `ModelCatalog`), so that GriditDaemon
// builds and is tested without either. `griditd serve` calls `Backend.components`.
//
// - `InProcessEngine`: jobs → resumable `SequenceRun`s batched on one `LoadedPipeline`, loaded
//   through the store's integrity check into a keep-alive cache keyed by manifest digest.
// - `ModelStoreCatalog`: the store's commands for the socket API, and the default model of a submit.
// - `ModelCacheService`: unmaps models idle past their keep-alive.

import Foundation
import GriditDaemon
import GriditEngine
import GriditFaults
import GriditJobQueue
import GriditModelStore
import GriditStateDatabase
import Logging
import NIOPosix
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

public enum Backend {
    /// The engine and model store of `configuration`'s state directory, the model store on the
    /// state database (one connection pool per file) and asking `jobs` (SQLite or PostgreSQL)
    /// which versions live jobs pin. Call after griditd holds the state
    /// directory's lock and the database is migrated (what `Daemon.run` does before `components`).
    /// With `worker`, the engine runs in that worker process (`griditd worker`), supervised;
    /// without, in griditd itself.
    public static func components(
        configuration: DaemonConfiguration, database: StateDatabase, jobs: any JobStore, siteRoots: [String] = [],
        worker: WorkerLaunch? = nil, logger: Logger
    ) throws -> DaemonComponents {
        let models: ModelStore
        do {
            models = try ModelStore(
                stateDirectory: configuration.stateDirectory, siteRoots: siteRoots,
                origin: configuration.layout.modelOrigin, database: database, access: .readWrite)
        } catch {
            throw DaemonError("the model store cannot open: \(error)")
        }
        let cache = KeepAliveCache<LoadedPipeline>(mappings: models.mappings, keepAlive: configuration.modelKeepAlive)
        // Store calls block (hashing, SQLite, file copies): they run here, never on Swift's
        // cooperative pool, and never on the inference thread.
        let blocking = NIOThreadPool(numberOfThreads: 2)
        blocking.start()
        let engine = InProcessEngine(
            models: models, cache: cache, blocking: blocking,
            options: ExecutionOptions(
                threads: configuration.blasThreads, memoryBudget: configuration.memoryBudget,
                maxBatch: configuration.maxBatchItems),
            logger: Logger(label: "gridit.engine"))
        let service = ModelCacheService(
            cache: cache, keepAlive: configuration.modelKeepAlive, logger: Logger(label: "gridit.models"))
        guard let worker else {
            let catalog = ModelStoreCatalog(models: models, jobs: jobs, cache: cache, blocking: blocking)
            return DaemonComponents(engine: engine, catalog: catalog, services: [service])
        }
        let loaded = WorkerModels()
        models.mappings.addReporter { loaded.current }
        let supervisor = WorkerSupervisor(
            settings: WorkerSupervisor.Settings(
                launch: worker, stallTimeout: configuration.leaseDuration / 2,
                stopGrace: configuration.stopGrace),
            logger: Logger(label: "gridit.supervisor"), onModels: { loaded.update($0) })
        let catalog = ModelStoreCatalog(
            models: models, jobs: jobs, cache: cache, blocking: blocking, workerModels: loaded)
        return DaemonComponents(engine: WorkerProcessEngine(local: engine, supervisor: supervisor), catalog: catalog)
    }

    /// `griditd worker`: the engine in the worker process griditd started, served over the
    /// channel until griditd says exit or dies. Opens no database: each batch carries its
    /// resolved pipeline. Returns the exit status.
    public static func runWorker(
        stateDirectory: String, options: ExecutionOptions, keepAlive: TimeInterval, faults: FaultInjection,
        logger: Logger
    ) -> Int32 {
        let cache = KeepAliveCache<LoadedPipeline>(mappings: BlobMappings(), keepAlive: keepAlive)
        let blocking = NIOThreadPool(numberOfThreads: 1)
        blocking.start()
        let engine = InProcessEngine(
            models: nil, cache: cache, blocking: blocking, options: options, logger: Logger(label: "gridit.engine"))
        let pid = getpid()
        return WorkerChild.serve(
            engine: engine, faults: faults, stateDirectory: stateDirectory,
            idle: {
                let evicted = cache.evictIdle()
                for key in evicted { logger.info("unloaded an idle model", metadata: ["model.digest": "\(key)"]) }
                return !evicted.isEmpty
            },
            models: { try? JSONEncoder().encode(cache.report(pid: pid)) },
            logger: logger)
    }
}

/// Unloads (unmaps) pipelines idle past their keep-alive, checking a few times per period.
struct ModelCacheService: Service {
    let cache: KeepAliveCache<LoadedPipeline>
    let keepAlive: TimeInterval
    let logger: Logger

    func run() async throws {
        let period = Duration.milliseconds(Int64(1000 * min(max(keepAlive / 4, 0.25), 30)))
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: period) }
            for key in cache.evictIdle() {
                logger.info("unloaded an idle model", metadata: ["model.digest": "\(key)"])
            }
        }
    }
}

extension NIOThreadPool {
    /// Runs blocking work on the pool; its error comes back as thrown, and `stopped` if the pool
    /// no longer runs work (it is never shut down while griditd serves).
    func blocking<T: Sendable, E: Error>(
        _ body: @escaping @Sendable () throws(E) -> T, stopped: @autoclosure () -> E
    ) async throws(E) -> T {
        let result: Result<T, E>
        do {
            result = try await runIfActive { () -> Result<T, E> in
                do throws(E) { return .success(try body()) } catch { return .failure(error) }
            }
        } catch {
            throw stopped()
        }
        return try result.get()
    }
}
