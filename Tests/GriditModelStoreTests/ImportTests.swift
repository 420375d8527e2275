import Foundation
import Glibc
import GriditAPI
import GriditBackend
import GriditDiffusion
import GriditModels
import GriditTestSupport
import Testing

@testable import GriditModelStore

@Suite("Import, tags and references")
struct ImportTests {
    @Test("a pipeline imports into blobs named by their digest; pipeline() hands out absolute read-only paths")
    func importAndLoad() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let source = try writePipeline(in: dir.file("src"))
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let result = try store.importModel(from: source, name: "tiny:v1", link: .copy)

        #expect(result.reference == "tiny:v1")
        #expect(
            result.blobs.map(\.role) == [
                "manifest", "stage1.config", "stage1.weights", "stage2.config", "stage2.weights",
            ])
        #expect(result.previous == nil)
        for blob in result.blobs {
            let path = try #require(blob.path)
            #expect(path.hasPrefix(store.stateDirectory + "/blobs/sha256/"))
            #expect(try digestOf(path) == blob.digest, "blob \(blob.role) is named by its content")
            #expect(fileMode(path) == 0o444)
            #expect(blob.stored == "copy")
        }
        #expect(result.bytesWritten == result.size)

        let digest = try store.resolve("tiny:v1")
        #expect(digest.description == result.digest)
        let spec = try store.resolvePipeline(digest).spec
        #expect(
            spec.stage1.weights == store.stateDirectory + "/blobs/sha256/"
                + BlobDigest(try digestOf(dir.file("src/stage1.safetensors")))!.hex)
        #expect(spec.grid.k == 4)
        #expect(FileManager.default.fileExists(atPath: spec.stage2!.config))

        // The manifest holds the pipeline with digests and the blob list; it is itself a blob.
        let manifest = try store.manifest(digest)
        #expect(manifest.pipeline.stage1.weights == result.blobs[2].digest)
        #expect(manifest.blobs.map(\.mediaType).contains(MediaType.safetensors))
        #expect(manifest.digest == digest)

        // Same files again: same digest (content only), nothing written, no history event.
        let again = try store.importModel(from: source, name: "tiny:v1", link: .copy)
        #expect(again.digest == result.digest)
        #expect(again.bytesWritten == 0)
        #expect(again.blobs.allSatisfy { $0.stored == "existing" })
        #expect(try store.history(name: "tiny").count == 1)
    }

    @Test("identical blobs are stored once across versions")
    func deduplication() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let v1 = try writePipeline(in: dir.file("v1"), seed: 1, stage2Seed: 7)
        let v2 = try writePipeline(in: dir.file("v2"), seed: 2, stage2Seed: 7)  // same stage 2
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let a = try store.importModel(from: v1, name: "tiny:v1", link: .copy)
        let b = try store.importModel(from: v2, name: "tiny:v2", link: .copy)
        #expect(a.digest != b.digest)
        #expect(a.blobs[4].digest == b.blobs[4].digest)
        #expect(b.blobs[4].stored == "existing" && b.blobs[3].stored == "existing")
        // 2 manifests + 2 stage-1 weights + 1 stage-1 config + 1 stage-2 weights + 1 stage-2 config.
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.file("state/blobs/sha256"))
        #expect(files.count == 7)
    }

    @Test("--link hardlink stores the source inode itself; copy makes an independent file")
    func linkModes() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let source = try writePipeline(in: dir.file("src"))
        let weights = dir.file("src/stage1.safetensors")
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let linked = try store.importModel(from: source, name: "tiny:linked", link: .hardlink)
        #expect(linked.blobs[2].stored == "hardlink")
        #expect(inode(linked.blobs[2].path!) == inode(weights), "the blob is the source file")
        #expect(fileMode(weights) == 0o644, "the source's mode is left alone")
        #expect(linked.bytesWritten == linked.blobs[0].size, "only the manifest was written")
        #expect(linked.warnings.contains { $0.contains("hardlinked") })

        let dir2 = TemporaryDirectory("gms")
        defer { dir2.remove() }
        let source2 = try writePipeline(in: dir2.file("src"), seed: 9)
        let copied = try store.importModel(from: source2, name: "tiny:copied", link: .copy)
        #expect(inode(copied.blobs[2].path!) != inode(dir2.file("src/stage1.safetensors")))
        #expect(fileMode(dir2.file("src/stage1.safetensors")) != 0o444)

        // auto: reflink where the filesystem can, else a copy; never a hardlink (LinkModeTests).
        let dir3 = TemporaryDirectory("gms")
        defer { dir3.remove() }
        let source3 = try writePipeline(in: dir3.file("src"), seed: 11)
        let auto = try store.importModel(from: source3, name: "tiny:auto", link: .auto)
        #expect(["reflink", "copy"].contains(auto.blobs[2].stored ?? ""))
    }

    @Test(
        "--link hardlink across filesystems fails naming both; auto copies",
        .enabled(if: device("/dev/shm") != device("/tmp") && device("/dev/shm") != 0))
    func crossFilesystem() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let shm = TemporaryDirectory("gms", under: "/dev/shm")
        defer { shm.remove() }
        let source = try writePipeline(in: shm.file("src"))
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let before = try StoreSnapshot(store)
        let error = storeError { try store.importModel(from: source, name: "tiny:v1", link: .hardlink) }
        #expect(error?.code == .crossDevice)
        #expect(error?.message.contains(shm.file("src")) == true)
        #expect(error?.message.contains(store.stateDirectory) == true)
        #expect(error?.hint?.contains("--link copy") == true)
        #expect(try StoreSnapshot(store) == before)

        let auto = try store.importModel(from: source, name: "tiny:v1", link: .auto)
        #expect(auto.blobs.dropFirst().allSatisfy { $0.stored == "copy" })

        let checks = store.checks(source: shm.file("src/stage1.safetensors"), link: .hardlink)
        #expect(checks.checks.contains { $0.name == "hardlink" && $0.status == .error })
    }

    @Test("tags move with an append-only history; NAME@digest pins a version")
    func tagsAndHistory() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let v1 = try store.importModel(from: try writePipeline(in: dir.file("v1"), seed: 1), name: "tiny:latest")
        let v2 = try store.importModel(from: try writePipeline(in: dir.file("v2"), seed: 2), name: "tiny:latest")
        #expect(v2.previous == v1.digest)
        #expect(try store.resolve("tiny").description == v2.digest)
        #expect(try store.resolve("tiny@\(v1.digest)").description == v1.digest, "a pinned reference ignores the tag")
        #expect(try store.resolve("sha256:" + v1.digest.dropFirst(7).prefix(10)).description == v1.digest)

        let tagged = try store.tag("tiny@\(v1.digest)", "tiny:stable")
        #expect(tagged.previous == nil && tagged.digest == v1.digest)
        let removed = try store.remove("tiny:latest", pins: JobPins())
        #expect(removed.removed == ["tiny:latest"] && removed.digest == v2.digest && removed.remaining.isEmpty)

        let history = try store.history(name: "tiny")
        #expect(history.map(\.action) == ["import", "import", "tag", "rm"])
        #expect(history[1].previous == v1.digest && history[1].digest == v2.digest)
        #expect(history[3].digest == nil && history[3].previous == v2.digest)

        // The untagged v2 is still listed (until gc) and show explains it.
        let list = try store.list(pins: JobPins())
        #expect(list.models.map(\.reference) == ["tiny:stable", nil])
        let show = try store.show(v2.digest, pins: JobPins())
        #expect(show.references.isEmpty)
        #expect(show.history.map(\.action) == ["import", "import", "rm"])
        #expect(ModelShowResult(show).configs["stage1.config"]?["depth"] == .integer(1))

        #expect(storeError { try store.resolve("tiny:latest") }?.code == .notFound)
        #expect(storeError { try store.resolve("tiny:latest") }?.message.contains("stable") == true)
        #expect(storeError { try store.resolve("other@\(v1.digest)") }?.code == .notFound)
    }

    @Test("models rm of a version leaves a tag that moved to another version since rm looked it up")
    func removeOnlyWhereItPoints() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let v1 = try store.importModel(from: try writePipeline(in: dir.file("v1"), seed: 1), name: "tiny:latest")
        let v2 = try store.importModel(from: try writePipeline(in: dir.file("v2"), seed: 2), name: "tiny:v2")
        // What `remove("sha256:<v2>")` does after an import moved tiny:latest off v2 meanwhile.
        let stale = try #require(BlobDigest(v2.digest))
        let removed = try store.write { db in
            try StoreSQL.removeTag(db, name: "tiny", tag: "latest", ifAt: stale, at: 0)
        }
        #expect(removed == nil)
        #expect(try store.resolve("tiny:latest").description == v1.digest)
        #expect(try store.remove("sha256:" + v2.digest.dropFirst(7), pins: JobPins()).removed == ["tiny:v2"])
    }

    @Test("references parse or fail with the accepted forms")
    func referenceParsing() throws {
        #expect(try ModelReference(parsing: "moving-digits") == .tag(name: "moving-digits", tag: "latest"))
        #expect(
            try ModelReference(parsing: "org/moving_digits.v2:V1.0-rc")
                == .tag(name: "org/moving_digits.v2", tag: "V1.0-rc"))
        let hex = String(repeating: "ab", count: 32)
        #expect(
            try ModelReference(parsing: "m@sha256:\(hex)") == .pinned(name: "m", digest: BlobDigest("sha256:" + hex)!))
        #expect(try ModelReference(parsing: "sha256:ABCDEF12") == .digestPrefix("abcdef12"))
        for bad in ["", "Upper:v1", "a:", "a:.x", "a@sha256:12", "sha256:12", "a//b", "-a", "a b", "a:b:c"] {
            let error = storeError { try ModelReference(parsing: bad) }
            #expect(error?.code == .invalidReference, "\(bad)")
            #expect(error?.hint?.contains("NAME:TAG") == true)
        }
    }
}
