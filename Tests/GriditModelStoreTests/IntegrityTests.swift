import Foundation
import GriditAPI
import GriditBackend
import GriditDiffusion
import GriditModelStore
import GriditModels
import GriditTestSupport
import Testing

@Suite("Integrity: verify, load checks, quarantine")
struct IntegrityTests {
    @Test("a flipped byte is found by pipeline(): digest_mismatch, the blob is quarantined, not used")
    func loadFindsFlippedByte() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let imported = try store.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        let digest = try store.resolve("tiny:v1")
        _ = try store.resolvePipeline(digest).spec  // intact: the recorded stat matches, no re-hash needed

        let weights = imported.blobs[2]
        try flipByte(weights.path!, at: Int(weights.size) - 3)
        let error = storeError { try store.resolvePipeline(digest).spec }
        #expect(error?.code == .digestMismatch)
        #expect(error?.message.contains("stage1.weights") == true)
        #expect(error?.message.contains("quarantine") == true)
        #expect(!FileManager.default.fileExists(atPath: weights.path!), "a bad blob is never handed out again")
        let quarantined = try FileManager.default.contentsOfDirectory(atPath: dir.file("state/quarantine"))
        #expect(quarantined.count == 1 && quarantined[0].hasPrefix(BlobDigest(weights.digest)!.hex))

        // Now the blob is missing; re-importing the same files repairs the version.
        #expect(storeError { try store.resolvePipeline(digest).spec }?.code == .notFound)
        let repaired = try store.importModel(from: dir.file("src/pipeline.json"), name: "tiny:v1", link: .copy)
        #expect(repaired.digest == digest.description)
        #expect(repaired.blobs[2].stored == "copy")
        _ = try store.resolvePipeline(digest).spec
        #expect(try store.verify(nil).ok)
    }

    @Test("verify re-hashes everything and reports a flipped byte with who uses the blob")
    func verifyFindsFlippedByte() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let imported = try store.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        let clean = try store.verify("tiny:v1")
        #expect(clean.ok && clean.entries.count == 5)
        #expect(clean.bytesHashed == imported.size)

        try flipByte(imported.blobs[4].path!, at: 100)
        let result = try store.verify(nil)
        #expect(!result.ok)
        let bad = try #require(result.entries.first { $0.status != .ok })
        #expect(bad.status == .mismatch)
        #expect(bad.digest == imported.blobs[4].digest)
        #expect(bad.usedBy == ["tiny:v1 stage2.weights"])
        #expect(bad.quarantinedTo?.contains("/quarantine/") == true)
        #expect(ModelVerifyResult(result).render().contains("1 bad"))
    }

    @Test("import finds a corrupt stored copy, quarantines it and stores the fresh one")
    func importFindsFlippedByte() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let first = try store.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        try flipByte(first.blobs[2].path!, at: 64)
        let again = try store.importModel(from: dir.file("src/pipeline.json"), name: "tiny:v2", link: .copy)
        #expect(again.warnings.contains { $0.contains("hashes to") && $0.contains("replaced by the imported copy") })
        #expect(again.blobs[2].stored == "copy")
        #expect(try digestOf(first.blobs[2].path!) == first.blobs[2].digest)
        #expect(try store.verify(nil).ok)
    }

    @Test("the cheap check notices a rewritten file even when size and mtime are restored")
    func cheapCheckUsesCtime() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let imported = try store.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        let path = imported.blobs[2].path!
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        try flipByte(path, at: 200)
        try FileManager.default.setAttributes([.modificationDate: attributes[.modificationDate]!], ofItemAtPath: path)
        #expect(storeError { try store.resolvePipeline(try store.resolve("tiny:v1")).spec }?.code == .digestMismatch)
    }
}
