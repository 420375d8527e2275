import Foundation
import Glibc
import GriditDiffusion
import GriditModelStore
import GriditTestSupport
import Synchronization
import Testing

@Suite("The model origin: imports publish to it, stores pull from it")
struct OriginTests {
    /// Host A's store, having imported the tiny pipeline (published to the origin), and host
    /// B's, empty; both with the origin `shared/models`.
    static func cluster(_ dir: TemporaryDirectory) throws -> (a: ModelStore, b: ModelStore, report: ImportReport) {
        try FileManager.default.createDirectory(atPath: dir.file("shared"), withIntermediateDirectories: true)
        let origin = dir.file("shared/models")
        let a = try ModelStore(stateDirectory: dir.file("a"), origin: origin)
        let report = try a.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        let b = try ModelStore(stateDirectory: dir.file("b"), origin: origin)
        return (a, b, report)
    }

    @Test("gc while a pull copies: the blobs the pull found here (another version's) are kept for it")
    func gcDuringPull() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("shared"), withIntermediateDirectories: true)
        let a = try ModelStore(stateDirectory: dir.file("a"), origin: dir.file("shared/models"))
        let b = try ModelStore(stateDirectory: dir.file("b"), origin: dir.file("shared/models"))
        // Two versions that differ in stage 2's weights only; B holds the first, untagged.
        let v1 = try a.importModel(
            from: try writePipeline(in: dir.file("v1"), seed: 1, stage2Seed: 7), name: "tiny:v1", link: .copy)
        let v2 = try a.importModel(
            from: try writePipeline(in: dir.file("v2"), seed: 1, stage2Seed: 8), name: "tiny:v2", link: .copy)
        _ = try b.pull(try #require(BlobDigest(v1.digest)))
        // B finds v2's stage 1 here and copies its stage-2 weights (the second file copied, after the
        // manifest); meanwhile a gc removes v1, unpinned, but not the files v2 takes from it.
        var copied = 0
        var report: GCReport?
        let second = try #require(BlobDigest(v2.digest))
        _ = try b.pull(second) {
            copied += 1
            if copied == 2 { report = try? b.gc(pins: JobPins()) }
        }
        #expect(report?.removedManifests == [v1.digest], "\(String(describing: report))")
        #expect(report?.removedBlobs.count == 2, "v1's manifest and stage-2 weights: \(String(describing: report))")
        let resolved = try b.resolvePipeline(second)
        for path in resolved.spec.files.map(\.reference) {
            #expect(FileManager.default.fileExists(atPath: path), "\(path)")
        }
    }

    @Test("models tag and models rm on one host move and remove the cluster's tag, the origin's")
    func tagAndRemoveReachTheOrigin() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let (a, b, report) = try Self.cluster(dir)
        let v1 = try #require(BlobDigest(report.digest))
        let second = try a.importModel(
            from: try writePipeline(in: dir.file("src2"), seed: 2), name: "tiny:v2", link: .copy)
        let v2 = try #require(BlobDigest(second.digest))
        _ = try a.tag("tiny:v1", "tiny:latest")
        #expect(try b.resolveToRun("tiny:latest") == v1)
        _ = try a.tag("tiny:v2", "tiny:latest")
        #expect(try b.resolveToRun("tiny:latest") == v2, "B runs what A moved the tag to")
        #expect(try a.remove("tiny:latest", pins: JobPins()).removed == ["tiny:latest"])
        for store in [a, b] {
            #expect(storeError { try store.resolveToRun("tiny:latest") }?.code == .notFound, "removed for every host")
        }
        // Removing a version's tags takes the origin's with them; another version's tag stays.
        _ = try a.remove("sha256:" + second.digest.dropFirst(7), pins: JobPins())
        #expect(storeError { try b.resolveToRun("tiny:v2") }?.code == .notFound)
        #expect(try b.resolveToRun("tiny:v1") == v1)
    }

    @Test(
        "an import publishes its version to the origin; another store pulls it by digest as its own copy, once for concurrent pulls, untagged"
    )
    func publishAndPull() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let (_, b, report) = try Self.cluster(dir)
        let origin = try #require(b.origin)
        #expect(report.published == origin)
        for blob in report.blobs {
            #expect(FileManager.default.fileExists(atPath: origin + "/blobs/sha256/" + blob.digest.dropFirst(7)))
        }
        let digest = try #require(BlobDigest(report.digest))

        // Four threads pull at once: one copies, the others wait and find it here.
        let pulled = Mutex([Int]())
        let chunks = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            let result = try? b.pull(digest, copying: { chunks.withLock { $0 += 1 } })
            pulled.withLock { $0.append(result == nil ? 0 : 1) }
        }
        #expect(pulled.withLock { $0.sorted() } == [0, 0, 0, 1])
        // The copy reports each chunk (the job's liveness while it waits for its model).
        #expect(chunks.withLock { $0 } >= report.blobs.count, "one call per file at least")
        let resolved = try b.resolvePipeline(digest)
        for path in resolved.spec.files.map(\.reference) {
            #expect(path.hasPrefix(b.stateDirectory + "/blobs/sha256/"), "runs from its own copy: \(path)")
            let originCopy = origin + "/blobs/sha256/" + (path as NSString).lastPathComponent
            #expect(inode(path) != inode(originCopy), "a copy, not a link of the origin's file")
        }
        #expect(try b.pull(digest) == nil, "already here")
        // The import's tag is the cluster's: B resolves it to run a job, not as a tag of its own.
        #expect(try b.resolveToRun("tiny:v1") == digest)
        #expect(storeError { try b.resolve("tiny:v1") }?.code == .notFound)
        #expect(storeError { try b.resolveToRun("tiny:v2") }?.code == .notFound)
        // Untagged here: kept while a live job pins it, removed by gc after (pulled again when needed).
        let listed = try b.list(pins: JobPins()).models
        #expect(listed.count == 1 && listed[0].name == nil && listed[0].digest == report.digest)
        _ = try b.gc(pins: JobPins(digests: [report.digest: [7]]))
        #expect(try b.list(pins: JobPins()).models.count == 1)
        _ = try b.gc(pins: JobPins())
        #expect(try b.list(pins: JobPins()).models.isEmpty)
    }

    @Test(
        "a corrupt origin blob is refused and nothing of it is stored; importing again repairs the origin; an unreachable origin is an io error; a version it lacks is not_found"
    )
    func refusals() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let (a, b, report) = try Self.cluster(dir)
        let origin = try #require(b.origin)
        let digest = try #require(BlobDigest(report.digest))
        let weights = try #require(report.blobs.max { $0.size < $1.size })
        let bad = origin + "/blobs/sha256/" + weights.digest.dropFirst(7)
        try flipByte(bad, at: Int(weights.size) - 3)

        let before = try StoreSnapshot(b)
        let refused = storeError { try b.pull(digest) }
        #expect(refused?.code == .digestMismatch, "\(String(describing: refused))")
        #expect(refused?.message.contains(bad) == true && refused?.message.contains("corrupt") == true)
        #expect(try StoreSnapshot(b) == before, "nothing of the version reached the store")

        // Importing the version again on a host that holds it intact replaces the origin's copy.
        let again = try a.importModel(from: dir.file("src/pipeline.json"), name: "tiny:v1", link: .copy)
        #expect(again.published == origin)
        #expect(try digestOf(bad) == weights.digest)

        // The origin's folder gone (the shared root not mounted): worth another try, not a refusal.
        try FileManager.default.moveItem(atPath: origin, toPath: origin + "-away")
        #expect(storeError { try b.pull(digest) }?.code == .io)
        #expect(storeError { try b.pull(digest) }?.message.contains("cannot be reached") == true)
        try FileManager.default.moveItem(atPath: origin + "-away", toPath: origin)
        #expect(try b.pull(digest) != nil)

        let unknown = BlobDigest(of: Array("no such version".utf8))
        // Not (yet) in the origin: its importer may have found the origin unreachable, so the job is retried.
        #expect(storeError { try b.pull(unknown) }?.code == .io)
        #expect(storeError { try b.pull(unknown) }?.message.contains("may not have reached the origin") == true)
    }

    @Test("gc removes a killed publish's leftover in the origin's ingest/ once untouched for an hour, not a recent one")
    func originLeftovers() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let (a, _, _) = try Self.cluster(dir)
        let ingest = try #require(a.origin) + "/ingest/"
        let (old, recent) = (
            ingest + UUID().uuidString.lowercased() + ".partial", ingest + UUID().uuidString.lowercased() + ".partial"
        )
        // A killed tag write's temporary too.
        let tagTemporary = try #require(a.origin) + "/tags/.tiny:v1.tmp-Ab12Cd"
        for path in [old, recent, tagTemporary] {
            #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 1000)))
        }
        for path in [old, tagTemporary] {
            try FileManager.default.setAttributes(
                [.modificationDate: Date().addingTimeInterval(-3700)], ofItemAtPath: path)
        }
        let report = try a.gc(pins: JobPins())
        #expect(report.removedTemporary == [old, tagTemporary], "\(report.removedTemporary)")
        #expect(FileManager.default.fileExists(atPath: try #require(a.origin) + "/tags/tiny:v1"), "the tag stays")
        #expect(!FileManager.default.fileExists(atPath: old) && FileManager.default.fileExists(atPath: recent))
        #expect(try a.list(pins: JobPins()).models.count == 1, "the version stays")
    }
}
