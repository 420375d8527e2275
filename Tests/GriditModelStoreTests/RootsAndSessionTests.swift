import Foundation
import GriditAPI
import GriditBackend
import GriditDiffusion
import GriditJobQueue
import GriditModelStore
import GriditModels
import GriditStateDatabase
import GriditTestSupport
import Testing

@Suite("Site roots, shared database, offline sessions, checks")
struct RootsAndSessionTests {
    @Test("a read-only site root is searched first for tags and lends its blobs without copies")
    func siteRoot() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let site = try ModelStore(stateDirectory: dir.file("site"))
        let shared = try site.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)

        let local = try ModelStore(stateDirectory: dir.file("local"), siteRoots: [dir.file("site")])
        #expect(try local.resolve("tiny:v1").description == shared.digest)
        let spec = try local.resolvePipeline(try local.resolve("tiny:v1")).spec
        #expect(spec.stage1.weights.hasPrefix(site.stateDirectory + "/blobs/"))
        let list = try local.list(pins: JobPins())
        #expect(list.models.count == 1 && list.models[0].root == site.stateDirectory)
        #expect(list.models[0].size == shared.size)

        // Importing the same files locally stores nothing but the manifest, and warns that the
        // site's tag wins.
        let again = try local.importModel(from: dir.file("src/pipeline.json"), name: "tiny:v1", link: .copy)
        #expect(again.digest == shared.digest)
        #expect(again.blobs.dropFirst().allSatisfy { $0.stored == "existing (site root)" })
        #expect(again.warnings.contains { $0.contains("site root") && $0.contains("searched first") })

        // Site tags can be copied to local ones, not removed.
        let tagged = try local.tag("tiny:v1", "mine:v1")
        #expect(tagged.digest == shared.digest)
        #expect(storeError { try local.remove("tiny:v2", pins: JobPins()) }?.code == .notFound)
        let local2 = try ModelStore(stateDirectory: dir.file("local2"), siteRoots: [dir.file("site")])
        #expect(storeError { try local2.remove("tiny:v1", pins: JobPins()) }?.code == .readOnly)
        // gc of a local store never touches the site.
        _ = try local2.gc(pins: JobPins())
        #expect(try site.verify(nil).ok)
    }

    @Test("the job queue and the model store share one database")
    func sharedDatabase() async throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let database = try StateDatabase(path: dir.file("jobs.sqlite"))
        let jobs = SQLiteJobStore(database: database)
        let store = try ModelStore(stateDirectory: dir.path, database: database)
        let v1 = try store.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1")
        let digest = try store.resolve("tiny:v1")
        _ = try await jobs.submit(
            JobSubmission(params: "{}", length: 4, pipelineDigest: digest.description), owner: 0,
            maxQueued: 5, now: Date())
        // The model store shows the pins the job queue reports.
        #expect(try store.show("tiny:v1", pins: JobPins(digests: try await jobs.livePipelinePins())).jobs == [1])
        #expect(v1.digest == digest.description)
        #expect(try database.appliedMigrations() == SchemaMigration.all.map(\.identifier))
    }

    @Test("while a daemon holds the lock, mutating offline commands refuse and read-only ones run")
    func offlineSession() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let state = dir.file("state")
        do {
            let session = try OfflineSession.open(stateDirectory: state, command: "import", mutating: true)
            _ = try session.store.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1")
        }
        let daemon = try StateDirectoryLock(stateDirectory: state)
        defer { daemon.release() }
        let refused = storeError { try OfflineSession.open(stateDirectory: state, command: "gc", mutating: true) }
        #expect(refused?.code == .daemonRunning)
        #expect(refused?.hint?.contains("griditctl models gc") == true)
        #expect(refused?.message.contains("pid \(getpid())") == true)

        let reader = try OfflineSession.open(stateDirectory: state, command: "list", mutating: false)
        #expect(reader.lock == nil && reader.store.access == .readOnly)
        #expect(try reader.store.list(pins: JobPins()).models.map(\.reference) == ["tiny:v1"])
        #expect(try reader.store.verify("tiny:v1").ok)
        #expect(storeError { try reader.store.tag("tiny:v1", "tiny:v2") }?.code == .daemonRunning)
        #expect(storeError { try reader.store.gc(pins: JobPins()) }?.code == .daemonRunning)
    }

    @Test("checks name the component at fault: a file in the middle of the path")
    func checksNameTheComponent() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        _ = FileManager.default.createFile(atPath: dir.file("file"), contents: Data())
        let result = StoreChecks.run(stateDirectory: dir.file("file/state"))
        #expect(!result.ok)
        let check = try #require(result.checks.first { $0.status == .error })
        #expect(check.path == dir.file("file"))
        #expect(check.message.contains("not a directory"))
        #expect(check.fix != nil)
        let error = storeError { try ModelStore(stateDirectory: dir.file("file/state")) }
        #expect(error?.message.contains(dir.file("file")) == true)

        let ok = StoreChecks.run(stateDirectory: dir.path)
        #expect(ok.ok, "\(ModelStoreCheckResult(ok).render())")
        #expect(ok.checks.contains { $0.name == "free space" })
    }
}

@Test("checks of a state directory that does not exist yet: ok when it can be created")
func checksOfMissingStateDirectory() throws {
    let dir = TemporaryDirectory("gms")
    defer { dir.remove() }
    let result = StoreChecks.run(stateDirectory: dir.file("new/state"))
    #expect(result.ok)
    #expect(result.checks.first?.message.contains("does not exist yet") == true)
    let json = String(decoding: try JSONEncoder().encode(ModelStoreCheckResult(result)), as: UTF8.self)
    #expect(json.contains("\"ok\":true"))
}
