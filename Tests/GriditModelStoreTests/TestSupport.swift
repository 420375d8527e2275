import Foundation
import Glibc
import GriditAPI
import GriditCheckpoint
import GriditDiffusion
import GriditModelStore
import GriditModels
import Testing

/// Tiny model configs that fit a 4×4 grid of 4×4 frames, ×2 super-resolution, 1 channel.
enum Tiny {
    static let stage1 = DiTConfiguration(
        depth: 1, hiddenSize: 16, numHeads: 2, patchSize: 2, inputSize: 16, inChannels: 1)
    static let stage2 = DiTConfiguration(
        depth: 1, hiddenSize: 16, numHeads: 2, patchSize: 2, inputSize: 8, inChannels: 1,
        conditionChannels: 1)
    /// Weights above one I/O chunk (1 MiB), for the crash tests.
    static let bigStage1 = DiTConfiguration(
        depth: 2, hiddenSize: 128, numHeads: 4, patchSize: 2, inputSize: 16, inChannels: 1)
}

/// Random weights of `config` in the official key layout (the binding table), as safetensors.
func writeWeights(_ config: DiTConfiguration, to path: String, seed: UInt64, skip: Set<String> = []) throws {
    let table = DiTWeights.table(config).filter { !$0.optional && !skip.contains($0.key) }
    try SafetensorsWriter.write(
        path: path, entries: table.map { SafetensorsWriter.Entry(name: $0.key, shape: $0.shape) },
        fill: { index, offset, chunk in
            var state = seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(offset)
            for i in 0..<chunk.count {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                chunk[i] = Float(Int64(bitPattern: state >> 11) % 2000 - 1000) / 10_000
            }
        })
}

func writeConfig(_ config: DiTConfiguration, to path: String) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    try e.encode(config).write(to: URL(fileURLWithPath: path))
}

/// A pipeline folder: pipeline.json, stage1/stage2 configs and random weights.
@discardableResult
func writePipeline(
    in dir: String, name: String? = "tiny", seed: UInt64 = 1, stage2Seed: UInt64? = nil,
    stage1: DiTConfiguration = Tiny.stage1
) throws -> String {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    func p(_ n: String) -> String { (dir as NSString).appendingPathComponent(n) }
    try writeConfig(stage1, to: p("stage1.config.json"))
    try writeWeights(stage1, to: p("stage1.safetensors"), seed: seed)
    try writeConfig(Tiny.stage2, to: p("stage2.config.json"))
    try writeWeights(Tiny.stage2, to: p("stage2.safetensors"), seed: stage2Seed ?? seed &+ 100)
    var json: [String: Any] = [
        "format": "gridit.pipeline.v1",
        "grid": ["k": 4, "frame_size": stage1.inputSize / 4, "channels": 1],
        "stage1": ["config": "stage1.config.json", "weights": "stage1.safetensors"],
        "stage2": ["config": "stage2.config.json", "weights": "stage2.safetensors", "scale": 2],
    ]
    if let name { json["name"] = name }
    try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]).write(
        to: URL(fileURLWithPath: p("pipeline.json")))
    return p("pipeline.json")
}

/// Everything observable of a store: file names under the state directory (blobs, ingest,
/// quarantine) and the listing. Equal before and after a failed operation = unchanged store.
struct StoreSnapshot: Equatable {
    var files: [String]
    var list: StoreListing

    init(_ store: ModelStore) throws {
        let fm = FileManager.default
        var files: [String] = []
        for dir in ["blobs/sha256", "ingest", "quarantine"] {
            let path = (store.stateDirectory as NSString).appendingPathComponent(dir)
            files += ((try? fm.contentsOfDirectory(atPath: path)) ?? []).map { "\(dir)/\($0)" }
        }
        self.files = files.sorted()
        list = try store.list(pins: JobPins())
    }
}

/// The `ModelStoreError` `body` throws (nil if none).
func storeError<T>(_ body: () throws -> T) -> ModelStoreError? {
    do {
        _ = try body()
        return nil
    } catch let error as ModelStoreError {
        return error
    } catch {
        Issue.record("unexpected error type: \(error)")
        return nil
    }
}

func fileMode(_ path: String) -> UInt32 {
    var s = stat()
    return stat(path, &s) == 0 ? UInt32(s.st_mode) & 0o7777 : 0
}

func inode(_ path: String) -> UInt64 {
    var s = stat()
    return stat(path, &s) == 0 ? UInt64(s.st_ino) : 0
}

func device(_ path: String) -> UInt64 {
    var s = stat()
    return stat(path, &s) == 0 ? UInt64(s.st_dev) : 0
}

/// Flips one byte of `path` at `offset` (making the file writable first, as a stray writer could).
func flipByte(_ path: String, at offset: Int) throws {
    chmod(path, 0o644)
    let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.seek(toOffset: UInt64(offset))
    let byte = try handle.read(upToCount: 1)![0]
    try handle.seek(toOffset: UInt64(offset))
    try handle.write(contentsOf: [byte ^ 0x5A])
}

/// SHA-256 of a file as `sha256:<hex>`.
func digestOf(_ path: String) throws -> String {
    BlobDigest(of: try Data(contentsOf: URL(fileURLWithPath: path))).description
}

/// A mutable clock for cache tests.
final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current = Date(timeIntervalSince1970: 1_700_000_000)

    func now() -> Date { lock.withLock { current } }
    func advance(_ seconds: TimeInterval) { lock.withLock { current += seconds } }
}
