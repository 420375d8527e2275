import Foundation
import Glibc
import GriditAPI
import GriditCheckpoint
import GriditDiffusion
import GriditModelStore
import GriditModels
import GriditTestSupport
import Testing

/// Runs `body` (an import) on a thread of its own while watching `fifo`: if anything opens it
/// for reading (or blocks opening it), that is recorded and the reader released, so a broken
/// import fails the test instead of hanging it. Returns what `body` threw.
func importWatchingFIFO(
    _ fifo: String, _ body: @escaping @Sendable () throws -> Void
) -> (error: (any Error)?, openedFIFO: Bool) {
    final class Box: @unchecked Sendable {
        var error: (any Error)?
        let done = DispatchSemaphore(value: 0)
    }
    let box = Box()
    Thread.detachNewThread {
        do { try body() } catch { box.error = error }
        box.done.signal()
    }
    var opened = false
    while box.done.wait(timeout: .now() + .milliseconds(5)) == .timedOut {
        // A writer that opens and closes again gives a blocked reader end-of-file.
        if fifoHasReader(fifo) { opened = true }
    }
    return (box.error, opened)
}

/// True when a process has `path` (a FIFO) open, or is blocked opening it, for reading.
func fifoHasReader(_ path: String) -> Bool {
    let fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { return false }
    close(fd)
    return true
}

/// Files the daemon opens on a user's behalf that are not regular files of the pipeline's own
/// folder: every one is refused with a clear error before it is opened for reading, and the
/// store stays as it was.
@Suite("Hostile files: FIFOs, devices, links, escapes, other users' files, huge shapes, NaN", .offPool)
struct HostileFileTests {
    /// A store holding one good version, and a second pipeline folder `bad/` to break.
    struct Setup {
        let dir: TemporaryDirectory
        let store: ModelStore
        let pipeline: String
        let before: StoreSnapshot

        init() throws {
            dir = TemporaryDirectory("gms")
            store = try ModelStore(stateDirectory: dir.file("state"))
            _ = try store.importModel(from: try writePipeline(in: dir.file("good")), name: "good:v1", link: .copy)
            pipeline = try writePipeline(in: dir.file("bad"), seed: 5)
            before = try StoreSnapshot(store)
        }

        /// Imports `path` (default: the bad pipeline), expecting `code` and every text of
        /// `mentions` in the error; the store must be unchanged.
        @discardableResult
        func expectRefused(
            _ path: String? = nil, reader: FileReader? = nil, code: ModelStoreError.Code, mentions: [String],
            sourceLocation: SourceLocation = #_sourceLocation
        ) throws -> ModelStoreError? {
            let error = storeError { try store.importModel(from: path ?? pipeline, name: "bad:v1", reader: reader) }
            #expect(error?.code == code, "\(String(describing: error))", sourceLocation: sourceLocation)
            for text in mentions {
                #expect(
                    error?.description.contains(text) == true, "'\(text)' missing from: \(String(describing: error))",
                    sourceLocation: sourceLocation)
            }
            #expect(try StoreSnapshot(store) == before, "the store changed", sourceLocation: sourceLocation)
            return error
        }

        /// Rewrites one file reference of the bad pipeline.
        func point(_ role: String, _ field: String, to reference: String) throws {
            let url = URL(fileURLWithPath: pipeline)
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            var stage = json[role] as! [String: Any]
            stage[field] = reference
            json[role] = stage
            try JSONSerialization.data(withJSONObject: json).write(to: url)
        }

        func replace(_ name: String, with make: (String) throws -> Void) throws {
            try FileManager.default.removeItem(atPath: dir.file("bad/" + name))
            try make(dir.file("bad/" + name))
        }

        func remove() { dir.remove() }
    }

    @Test(
        "a FIFO as weights, config, pipeline file or bundle is refused and never opened for reading",
        arguments: ["stage1.safetensors", "stage2.config.json", "pipeline.json"])
    func fifo(name: String) throws {
        let s = try Setup()
        defer { s.remove() }
        try s.replace(name) { #expect(mkfifo($0, 0o644) == 0) }
        let fifo = s.dir.file("bad/" + name)
        let store = s.store, pipeline = s.pipeline
        let (error, opened) = importWatchingFIFO(fifo) { _ = try store.importModel(from: pipeline, name: "bad:v1") }
        #expect(!opened, "the import opened the FIFO for reading (it would have hung)")
        let refused = error as? ModelStoreError
        #expect(
            refused?.code == .invalidInput && refused?.message.contains("a FIFO") == true,
            "\(String(describing: error))")
        #expect(try StoreSnapshot(store) == s.before)
    }

    @Test("a device as weights (in the folder, or named directly) and a folder where a file belongs are refused")
    func devicesAndFolders() throws {
        let s = try Setup()
        defer { s.remove() }
        try s.expectRefused("/dev/zero", code: .invalidInput, mentions: ["/dev/zero", "character device"])
        if geteuid() == 0 {  // mknod needs root: a /dev/zero node (1, 5) inside the pipeline's folder
            try s.replace("stage1.safetensors") { #expect(mknod($0, S_IFCHR | 0o644, (1 << 8) | 5) == 0) }
            try s.expectRefused(code: .invalidInput, mentions: ["stage1.weights", "character device"])
            try s.replace("stage1.safetensors") {
                try FileManager.default.createDirectory(atPath: $0, withIntermediateDirectories: false)
            }
        } else {
            try s.replace("stage1.safetensors") {
                try FileManager.default.createDirectory(atPath: $0, withIntermediateDirectories: false)
            }
        }
        try s.expectRefused(code: .invalidInput, mentions: ["stage1.weights", "a folder, not a regular file"])
    }

    @Test("files named outside the pipeline's folder: absolute paths, '..', symbolic links out of it")
    func escapes() throws {
        let s = try Setup()
        defer { s.remove() }
        let outside = s.dir.file("good/stage1.safetensors")
        let mode = fileMode(outside)
        try s.point("stage1", "weights", to: outside)
        try s.expectRefused(code: .invalidInput, mentions: ["stage1.weights", "absolute path", "outside the folder"])
        try s.point("stage1", "weights", to: "../good/stage1.safetensors")
        try s.expectRefused(code: .invalidInput, mentions: ["stage1.weights", "'..'"])
        try s.point("stage1", "weights", to: "stage1.safetensors")
        try s.replace("stage1.safetensors") {
            try FileManager.default.createSymbolicLink(atPath: $0, withDestinationPath: outside)
        }
        try s.expectRefused(code: .invalidInput, mentions: ["stage1.weights", "symbolic link"])
        try FileManager.default.createSymbolicLink(
            atPath: s.dir.file("bad/models"), withDestinationPath: s.dir.file("good"))
        try s.point("stage1", "weights", to: "models/stage1.safetensors")
        try s.expectRefused(code: .invalidInput, mentions: ["stage1.weights", "symbolic link"])
        #expect(fileMode(outside) == mode, "the target was not touched")
        // /proc: the daemon's own environment is no pipeline folder either.
        try s.expectRefused(
            "/proc/self/environ", code: .invalidInput, mentions: ["neither a pipeline JSON nor a bundle"])
    }

    @Test("a pipeline file reached through a symbolic link resolves its files in its real folder")
    func linkedPipelineFile() throws {
        let s = try Setup()
        defer { s.remove() }
        let link = s.dir.file("link.json")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: s.dir.file("good/pipeline.json"))
        let result = try s.store.importModel(from: link, name: "linked:v1")
        #expect(result.digest == (try s.store.resolve("good:v1")).description)
    }

    @Test("with a reader (the daemon's caller), files and folders that uid could not read are refused")
    func otherUsersFiles() throws {
        let s = try Setup()
        defer { s.remove() }
        let weights = s.dir.file("bad/stage1.safetensors")
        chmod(weights, 0o600)
        let stranger = FileReader(uid: getuid() == 40_123 ? 40_124 : 40_123, groups: [40_123])
        try s.expectRefused(
            reader: stranger, code: .permission, mentions: ["uid \(stranger.uid) may not read", weights])
        #expect(fileMode(weights) == 0o600, "the file stays private")
        chmod(weights, 0o644)
        chmod(s.dir.file("bad"), 0o700)
        try s.expectRefused(reader: stranger, code: .permission, mentions: ["may not enter", s.dir.file("bad")])
        chmod(s.dir.file("bad"), 0o755)
        _ = try s.store.importModel(from: s.pipeline, name: "bad:v1", reader: stranger)
    }

    @Test("a file that fails to parse is never quoted: not the 8 bytes of a 'header length', not a character")
    func noEcho() throws {
        let s = try Setup()
        defer { s.remove() }
        let secret = Array("$6$s3cr3t.Hunter2/9x:19000:0:99999:7:::\n".utf8)
        let asNumber = String(
            secret[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * $1.offset) })
        try Data(secret).write(to: URL(fileURLWithPath: s.dir.file("bad/stage1.safetensors")))
        let weights = try s.expectRefused(code: .invalidInput, mentions: ["stage1.weights"])
        #expect(weights.map { !$0.description.contains(asNumber) && !$0.description.contains("s3cr3t") } == true)
        try Data(secret).write(to: URL(fileURLWithPath: s.dir.file("bad/stage1.config.json")))
        let config = try s.expectRefused(code: .invalidInput, mentions: ["stage1.config", "not valid JSON"])
        #expect(config.map { !$0.description.contains("'$'") && !$0.description.contains("s3cr3t") } == true)
    }

    @Test("a config with huge sizes is refused by its limits before any table or tensor is built")
    func hugeConfig() throws {
        let s = try Setup()
        defer { s.remove() }
        var deep = Tiny.stage1
        deep.depth = 1_000_000
        try writeConfig(deep, to: s.dir.file("bad/stage1.config.json"))
        try s.expectRefused(code: .invalidInput, mentions: ["stage1.config", "depth is 1000000", "at most 256"])
        var wide = Tiny.stage1
        wide.hiddenSize = 1 << 40
        try writeConfig(wide, to: s.dir.file("bad/stage1.config.json"))
        try s.expectRefused(code: .invalidInput, mentions: ["hidden_size"])
        // Geometry whose products would overflow an Int (a crash before these limits).
        try writeConfig(Tiny.stage1, to: s.dir.file("bad/stage1.config.json"))
        let url = URL(fileURLWithPath: s.pipeline)
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        json["grid"] = ["k": 4, "frame_size": 1 << 40, "channels": 1]
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        try s.expectRefused(code: .invalidInput, mentions: ["grid.frame_size", "1...4096"])
    }

    @Test("weights with a NaN or an infinity are refused, naming the tensor", arguments: [Float.nan, .infinity])
    func nonFiniteWeights(value: Float) throws {
        let s = try Setup()
        defer { s.remove() }
        let table = DiTWeights.table(Tiny.stage1).filter { !$0.optional }
        let target = table.firstIndex { $0.key == "blocks.0.mlp.fc1.weight" }!
        try SafetensorsWriter.write(
            path: s.dir.file("bad/stage1.safetensors"), entries: table.map { .init(name: $0.key, shape: $0.shape) },
            fill: { index, offset, chunk in
                for i in 0..<chunk.count { chunk[i] = index == target && offset + i == 7 ? value : 0.01 }
            })
        try s.expectRefused(
            code: .invalidInput,
            mentions: ["stage1.weights", "blocks.0.mlp.fc1.weight", "NaN or an infinity", "element 7"])
    }
}

@Suite("Link modes keep the sources independent", .offPool)
struct LinkModeTests {
    @Test("auto reflinks or copies, never hardlinks; writing the source in place leaves the blob intact")
    func autoIsIndependent() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let source = try writePipeline(in: dir.file("src"))
        let weights = dir.file("src/stage1.safetensors")
        let mode = fileMode(weights)
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let result = try store.importModel(from: source, name: "tiny:v1")
        #expect(["reflink", "copy"].contains(result.blobs[2].stored ?? ""), "\(result.blobs[2])")
        #expect(inode(result.blobs[2].path!) != inode(weights))
        #expect(fileMode(weights) == mode, "the source's mode is untouched")
        #expect(result.warnings.isEmpty)

        try flipByte(weights, at: 200)  // root ignores modes: an in-place write always gets through
        #expect(try digestOf(result.blobs[2].path!) == result.blobs[2].digest)
        #expect(try store.verify(nil).ok)
        _ = try store.resolvePipeline(try store.resolve("tiny:v1")).spec
    }

    @Test("hardlink on request: the source's mode stays; a later in-place write is found and quarantined")
    func hardlinkOnRequest() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let source = try writePipeline(in: dir.file("src"))
        let weights = dir.file("src/stage1.safetensors")
        chmod(weights, 0o640)
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let result = try store.importModel(from: source, name: "tiny:v1", link: .hardlink)
        #expect(result.blobs[2].stored == "hardlink" && inode(result.blobs[2].path!) == inode(weights))
        #expect(fileMode(weights) == 0o640, "hardlinking never changes the source's mode")
        #expect(result.warnings.contains { $0.contains("hardlinked") && $0.contains("--link copy") })

        try flipByte(weights, at: 200)
        #expect(storeError { try store.resolvePipeline(try store.resolve("tiny:v1")).spec }?.code == .digestMismatch)
    }
}
