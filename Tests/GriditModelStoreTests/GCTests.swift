import Foundation
import Glibc
import GriditAPI
import GriditDiffusion
import GriditJobQueue
import GriditModelStore
import GriditModels
import GriditTestSupport
import Testing

@Suite("gc", .offPool)
struct GCTests {
    func blobFiles(_ store: ModelStore) throws -> Set<String> {
        Set(try FileManager.default.contentsOfDirectory(atPath: store.stateDirectory + "/blobs/sha256"))
    }

    @Test("gc removes untagged versions and the blobs only they used; shared blobs stay")
    func removesUnreferenced() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let v1 = try store.importModel(
            from: try writePipeline(in: dir.file("v1"), seed: 1, stage2Seed: 7), name: "tiny:v1")
        let v2 = try store.importModel(
            from: try writePipeline(in: dir.file("v2"), seed: 2, stage2Seed: 7), name: "tiny:v2")
        #expect(try store.gc(pins: JobPins()).removedBlobs.isEmpty, "everything is referenced")

        _ = try store.remove("tiny:v1", pins: JobPins())
        let dry = try store.gc(dryRun: true, pins: JobPins())
        #expect(dry.removedManifests == [v1.digest])
        #expect(Set(dry.removedBlobs) == [v1.digest, v1.blobs[2].digest])
        #expect(try blobFiles(store).count == 7, "a dry run deletes nothing")

        let real = try store.gc(pins: JobPins())
        #expect(
            real.removedManifests == dry.removedManifests && real.removedBlobs.sorted() == dry.removedBlobs.sorted())
        #expect(real.freedBytes == v1.blobs[0].size + v1.blobs[2].size)
        let left = try blobFiles(store)
        #expect(left == Set(v2.blobs.map { String($0.digest.dropFirst(7)) }))
        #expect(storeError { try store.resolve(v1.digest) }?.code == .notFound)
        _ = try store.resolvePipeline(try store.resolve("tiny:v2")).spec
    }

    @Test("a version pinned by a queued or running job survives rm and gc until the job ends")
    func keepsWhatLiveJobsPin() async throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let jobs = SQLiteJobStore(database: store.database)
        let v1 = try store.importModel(from: try writePipeline(in: dir.file("v1")), name: "tiny:v1")
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        let job = try await jobs.submit(
            JobSubmission(params: "{}", length: 16, pipelineDigest: v1.digest), owner: 1, maxQueued: 10, now: now
        ).job
        // What the job store says live jobs pin, as griditd asks it before each command.
        func pins() async throws -> JobPins { JobPins(digests: try await jobs.livePipelinePins()) }
        #expect(try await pins().jobs == [BlobDigest(v1.digest)!: [job.id]])
        #expect(try store.remove("tiny:v1", pins: try await pins()).jobs == 1)
        #expect(try store.list(pins: try await pins()).models.first { $0.digest == v1.digest }?.jobs == 1)
        let kept = try store.gc(pins: try await pins())
        #expect(kept.removedBlobs.isEmpty && kept.removedManifests.isEmpty)
        #expect(
            try store.resolvePipeline(try store.resolve(v1.digest)).spec.grid.k == 4, "the queued job can still load it"
        )

        let claimed = try #require(try await jobs.claim(workerID: "w", leaseDuration: 60, now: now))
        #expect(try store.gc(pins: try await pins()).removedBlobs.isEmpty, "running jobs pin too")
        _ = try await jobs.complete(id: job.id, token: claimed.token, outputDir: "/x", now: now)
        #expect(
            try store.gc(pins: try await pins()).removedBlobs.count == 5, "a finished job no longer pins the version")
    }

    @Test("gc keeps blobs this process maps, and deletes them once unmapped")
    func keepsMapped() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let v1 = try store.importModel(from: try writePipeline(in: dir.file("v1")), name: "tiny:v1")
        let weights = BlobDigest(v1.blobs[2].digest)!
        var mapping: AnyObject? = try store.mappings.map(weights, path: v1.blobs[2].path!)
        _ = try store.remove("tiny:v1", pins: JobPins())
        let first = try store.gc(pins: JobPins())
        #expect(first.keptMapped == [weights.description])
        #expect(!first.removedBlobs.contains(weights.description))
        #expect(FileManager.default.fileExists(atPath: v1.blobs[2].path!))
        #expect(mapping != nil)
        mapping = nil
        #expect(try store.gc(pins: JobPins()).removedBlobs == [weights.description])
    }

    @Test("gc removes temporary files of dead imports, not of live ones")
    func temporaryFiles() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let ingest = store.stateDirectory + "/ingest/"
        _ = FileManager.default.createFile(atPath: ingest + "dead.partial", contents: Data([1, 2, 3]))
        _ = FileManager.default.createFile(atPath: ingest + "live.partial", contents: Data([4]))
        let fd = open(ingest + "live.partial", O_RDONLY)
        defer { close(fd) }
        #expect(flock(fd, LOCK_EX) == 0)
        let result = try store.gc(pins: JobPins())
        #expect(result.removedTemporary == [ingest + "dead.partial"])
        #expect(result.freedBytes == 3)
        #expect(FileManager.default.fileExists(atPath: ingest + "live.partial"))
    }

    @Test("gc removes the files of a conversion killed an hour ago or more (they hold no lock), not a running one's")
    func killedConversionFiles() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let ingest = store.stateDirectory + "/ingest/"
        let dead = [ingest + "a.converting", ingest + ".b.converting.tmp-Xy12Ab"]
        let live = [ingest + "c.converting", ingest + ".d.converting.tmp-Qw34Er"]
        for path in dead + live { _ = FileManager.default.createFile(atPath: path, contents: Data([1, 2])) }
        let twoHoursAgo = Date().addingTimeInterval(-7200)
        for path in dead { try FileManager.default.setAttributes([.modificationDate: twoHoursAgo], ofItemAtPath: path) }
        let result = try store.gc(pins: JobPins())
        #expect(Set(result.removedTemporary) == Set(dead))
        for path in live { #expect(FileManager.default.fileExists(atPath: path)) }
    }
}

@Suite("Mappings of other processes", .offPool)
struct OtherProcessTests {
    @Test(
        "gc keeps a blob another process maps, and ps shows that process",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")))
    func otherProcessMapping() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let v1 = try store.importModel(from: try writePipeline(in: dir.file("v1")), name: "tiny:v1", link: .copy)
        let weights = try #require(v1.blobs[2].path)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [
            "-c",
            """
            import mmap, sys, time
            f = open(sys.argv[1], "rb"); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); m[0]
            print("mapped", flush=True); time.sleep(60)
            """, weights,
        ]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let line = String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        #expect(line.hasPrefix("mapped"))

        let ps = store.ps()
        let entry = try #require(ps.entries.first { $0.pid == process.processIdentifier })
        #expect(entry.blobs.map(\.digest) == [v1.blobs[2].digest])
        #expect(entry.blobs[0].resident > 0)
        _ = try store.remove("tiny:v1", pins: JobPins())
        let gc = try store.gc(pins: JobPins())
        #expect(gc.keptMapped == [v1.blobs[2].digest])
        #expect(FileManager.default.fileExists(atPath: weights))
    }
}
