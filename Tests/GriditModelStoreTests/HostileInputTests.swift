import Foundation
import GriditAPI
import GriditDiffusion
import GriditModelStore
import GriditModels
import GriditTestSupport
import Testing

/// Every bad input gives a clear error (code, the file or field concerned, a fix) and leaves the
/// store exactly as it was: same files under blobs/, ingest/, quarantine/, same listing.
@Suite("Hostile and broken inputs")
struct HostileInputTests {
    /// Imports `pipeline` into a store that already holds one version, expecting failure.
    func expectRejected(
        _ setup: (_ dir: TemporaryDirectory, _ pipeline: String) throws -> Void,
        code: ModelStoreError.Code, mentions: [String]
    ) throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        _ = try store.importModel(from: try writePipeline(in: dir.file("good")), name: "good:v1", link: .copy)
        let pipeline = try writePipeline(in: dir.file("bad"), seed: 5)
        try setup(dir, pipeline)
        let before = try StoreSnapshot(store)
        let error = storeError { try store.importModel(from: pipeline, name: "bad:v1", link: .copy) }
        #expect(error?.code == code, "\(String(describing: error))")
        for text in mentions {
            #expect(error?.description.contains(text) == true, "'\(text)' missing from: \(String(describing: error))")
        }
        #expect(try StoreSnapshot(store) == before, "the store changed")
    }

    func replaceWeights(_ dir: TemporaryDirectory, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: dir.file("bad/stage1.safetensors")))
    }

    /// A safetensors file with `header` as its JSON and `data` bytes after it.
    func safetensors(header: String, declaredLength: UInt64? = nil, data: Int = 0) -> [UInt8] {
        let json = Array(header.utf8)
        var n = declaredLength ?? UInt64(json.count)
        var bytes = withUnsafeBytes(of: &n) { Array($0) }
        bytes += json
        bytes += [UInt8](repeating: 0, count: data)
        return bytes
    }

    @Test func truncatedHeader() throws {
        try expectRejected(
            { dir, _ in try replaceWeights(dir, [1, 2, 3, 4]) },
            code: .invalidInput, mentions: ["stage1.weights", "bad/stage1.safetensors", "fewer than the 8-byte"])
    }

    @Test func oversizedHeader() throws {
        try expectRejected(
            { dir, _ in try replaceWeights(dir, safetensors(header: "{}", declaredLength: 200_000_000)) },
            code: .invalidInput, mentions: ["stage1.weights", "exceeds", "header"])
    }

    @Test func headerLongerThanFile() throws {
        try expectRejected(
            { dir, _ in try replaceWeights(dir, safetensors(header: "{}", declaredLength: 5000)) },
            code: .invalidInput, mentions: ["stage1.weights", "runs past the end"])
    }

    @Test func offsetsPastTheEnd() throws {
        let header = #"{"pos_embed":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        try expectRejected(
            { dir, _ in try replaceWeights(dir, safetensors(header: header, data: 8)) },
            code: .invalidInput, mentions: ["stage1.weights", "pos_embed", "past the data section"])
    }

    @Test func duplicateTensorNames() throws {
        let header =
            #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        try expectRejected(
            { dir, _ in try replaceWeights(dir, safetensors(header: header, data: 8)) },
            code: .invalidInput, mentions: ["stage1.weights", "'a'", "more than once"])
    }

    @Test("a config that does not describe its weights (binding is total)")
    func configDoesNotMatchWeights() throws {
        var deeper = Tiny.stage1
        deeper.depth = 2
        try expectRejected(
            { dir, _ in try writeConfig(deeper, to: dir.file("bad/stage1.config.json")) },
            code: .invalidInput, mentions: ["stage1.weights", "does not match stage1.config", "blocks.1"])
    }

    @Test("weights with a tensor the model does not use")
    func extraTensor() throws {
        try expectRejected(
            { dir, _ in
                var wider = Tiny.stage1
                wider.numClasses = 10
                try writeWeights(wider, to: dir.file("bad/stage1.safetensors"), seed: 3)
            }, code: .invalidInput, mentions: ["y_embedder.embedding_table.weight", "does not use"])
    }

    @Test("a config that contradicts the pipeline geometry")
    func geometryMismatch() throws {
        var other = Tiny.stage1
        other.inputSize = 8
        try expectRejected(
            { dir, _ in
                try writeConfig(other, to: dir.file("bad/stage1.config.json"))
                try writeWeights(other, to: dir.file("bad/stage1.safetensors"), seed: 3)
            }, code: .invalidInput, mentions: ["input_size"])
    }

    @Test func missingFile() throws {
        try expectRejected(
            { dir, _ in try FileManager.default.removeItem(atPath: dir.file("bad/stage2.safetensors")) },
            code: .notFound, mentions: ["stage2.weights", "bad/stage2.safetensors", "No such file"])
    }

    @Test("a directory where a file should be")
    func directoryInsteadOfFile() throws {
        try expectRejected(
            { dir, _ in
                try FileManager.default.removeItem(atPath: dir.file("bad/stage2.config.json"))
                try FileManager.default.createDirectory(
                    atPath: dir.file("bad/stage2.config.json"), withIntermediateDirectories: false)
            }, code: .invalidInput, mentions: ["stage2.config", "not a regular file"])
    }

    @Test("a config that is not JSON")
    func configNotJSON() throws {
        try expectRejected(
            { dir, _ in try Data("depth: 3".utf8).write(to: URL(fileURLWithPath: dir.file("bad/stage1.config.json"))) },
            code: .invalidInput, mentions: ["stage1.config", "bad/stage1.config.json"])
    }

    @Test("a pipeline file with a missing field names it")
    func pipelineMissingField() throws {
        try expectRejected(
            { _, pipeline in
                try Data(#"{"format":"gridit.pipeline.v1","stage1":{"config":"a","weights":"b"}}"#.utf8)
                    .write(to: URL(fileURLWithPath: pipeline))
            }, code: .invalidInput, mentions: ["'grid'"])
    }

    @Test("a path that does not exist, and one that is neither pipeline nor bundle")
    func badPaths() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let before = try StoreSnapshot(store)
        let missing = storeError { try store.importModel(from: dir.file("nope.json"), name: "x:v1") }
        #expect(missing?.code == .notFound)
        #expect(missing?.message.contains(dir.file("nope.json")) == true)
        try Data("hello".utf8).write(to: URL(fileURLWithPath: dir.file("hello.txt")))
        let neither = storeError { try store.importModel(from: dir.file("hello.txt"), name: "x:v1") }
        #expect(neither?.code == .invalidInput)
        #expect(neither?.message.contains("neither a pipeline JSON nor a bundle") == true)
        #expect(try StoreSnapshot(store) == before)
    }
}
