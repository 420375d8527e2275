import Foundation
import GriditAPI
import GriditBackend
import GriditDaemon
import GriditEngine
import GriditJobQueue
import GriditJobSpec
import GriditModelStore
import GriditStateDatabase
import GriditTestSupport
import Logging
import NIOPosix
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A state directory with a real database, model store (the tiny pipeline imported as
/// `tiny:latest`), keep-alive cache and engine engine.
final class Harness: @unchecked Sendable {
    let directory = TemporaryDirectory("gb")
    var root: String { directory.path }
    let database: StateDatabase
    let models: ModelStore
    let cache: KeepAliveCache<LoadedPipeline>
    let pool: NIOThreadPool
    let engine: InProcessEngine
    let catalog: ModelStoreCatalog
    /// The manifest digest of `tiny:latest` (nil with `importModel: false`).
    let digest: String!
    /// Root, as the daemon sees a `griditctl` run by root.
    let admin = Caller(credentials: PeerCredentials(pid: 1, uid: 0, gid: 0), isAdmin: true, isMember: true)

    init(importModel: Bool = true, maxBatch: Int = 16) throws {
        database = try StateDatabase(path: directory.file("jobs.sqlite"))
        models = try ModelStore(stateDirectory: directory.path, database: database)
        cache = KeepAliveCache(mappings: models.mappings, keepAlive: 600)
        pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        engine = InProcessEngine(
            models: models, cache: cache, blocking: pool,
            options: ExecutionOptions(threads: 2, memoryBudget: 64 << 20, maxBatch: maxBatch),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        catalog = ModelStoreCatalog(
            models: models, jobs: SQLiteJobStore(database: database), cache: cache, blocking: pool)
        digest =
            importModel ? try models.importModel(from: tinyPipeline(), name: "tiny:latest", link: .copy).digest : nil
        try FileManager.default.createDirectory(atPath: root + "/outputs", withIntermediateDirectories: true)
    }

    /// Job `id`'s work directory under the state directory (where griditd puts it).
    func workDirectory(_ id: Int64) -> String { (root as NSString).appendingPathComponent("work/\(id)") }

    func item(_ id: Int64, length: Int, seed: UInt64, precision: String? = nil, work: String? = nil) -> ExecutionItem {
        ExecutionItem(
            jobID: id, spec: JobSpec(length: length, parameters: .init(seed: seed, precision: precision)),
            workDirectory: work ?? workDirectory(id), outputDirectory: root + "/outputs/job-\(id)",
            resumeFrom: JobProgress(), attempt: 1)
    }

    /// Runs `items` as one batch on this thread; `joining` is offered at the engine's second `admit`.
    func run(
        _ items: [ExecutionItem], joining: [ExecutionItem] = [], digest: String? = nil, resolved: Data? = nil,
        stop: @escaping @Sendable (Int64, Recorder) -> Bool = { _, _ in false }
    ) -> Recorder {
        let recorder = Recorder()
        let admissions = Mutex(0)
        let hooks = ExecutionHooks(
            admit: {
                admissions.withLock { n in
                    n += 1
                    return n == 2 ? joining : []
                }
            },
            finished: { id, outcome in
                recorder.state.withLock {
                    $0.outcomes[id, default: []].append(outcome)
                    $0.order.append(id)
                }
            },
            durable: { id, progress in recorder.state.withLock { $0.durable.append((id, progress)) } },
            step: { id, step in recorder.state.withLock { $0.steps.append((id, step)) } },
            shouldStop: { id in stop(id, recorder) ? .shutdown : nil },
            working: { id in recorder.state.withLock { $0.working[id, default: 0] += 1 } })
        engine.execute(
            ExecutionBatch(pipelineDigest: digest ?? self.digest, items: items, resolved: resolved), hooks: hooks)
        return recorder
    }

    /// SHA-256 of every frame of a job's output folder, in order (from `sequence.json`).
    func summary(_ id: Int64) throws -> SequenceSummary {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/outputs/job-\(id)/sequence.json"))
        return try JSONDecoder().decode(SequenceSummary.self, from: data)
    }

    func frameDigests(_ id: Int64) throws -> [String] { try summary(id).files.map(\.sha256) }

    deinit {
        try? pool.syncShutdownGracefully()
        try? database.close()
    }
}

/// What the hooks saw.
final class Recorder: Sendable {
    struct State {
        var outcomes: [Int64: [ExecutionOutcome]] = [:]
        /// Jobs in the order they were reported.
        var order: [Int64] = []
        var durable: [(Int64, JobProgress)] = []
        var steps: [(Int64, StepProgress)] = []
        /// `working` signals, by job.
        var working: [Int64: Int] = [:]
    }
    let state = Mutex(State())

    var outcomes: [Int64: [ExecutionOutcome]] { state.withLock { $0.outcomes } }
    func durable(_ id: Int64) -> [JobProgress] { state.withLock { $0.durable.filter { $0.0 == id }.map(\.1) } }
    func steps(_ id: Int64) -> [StepProgress] { state.withLock { $0.steps.filter { $0.0 == id }.map(\.1) } }
    func working(_ id: Int64) -> Int { state.withLock { $0.working[id, default: 0] } }
}
