import Foundation
import GriditCheckpoint
import GriditEngine
import GriditImage
import GriditJobSpec
import GriditTensor
import Testing

// Shared helpers of the engine tests. Fixtures: tools/reference/make_engine_fixtures.py (tiny
// random-weight pipelines and float64 reference sequences of tools/reference/engine_reference.py).

func fixture(_ name: String) -> String {
    Bundle.module.resourceURL!.appendingPathComponent("Fixtures/\(name)").path
}

/// Loaded once per pipeline folder (the LoadedPipeline is immutable and shared, as in the daemon).
final class Pipelines: @unchecked Sendable {
    static let shared = Pipelines()
    private var loaded: [String: LoadedPipeline] = [:]
    private let lock = NSLock()

    func get(_ folder: String) throws -> LoadedPipeline {
        lock.lock()
        defer { lock.unlock() }
        if let p = loaded[folder] { return p }
        let p = try LoadedPipeline(path: fixture("\(folder)/pipeline.json"))
        loaded[folder] = p
        return p
    }
}

func pipeline(_ folder: String) throws -> LoadedPipeline { try Pipelines.shared.get(folder) }

/// The bytes of every file under a directory, by relative path.
func files(under dir: String) -> [String: [UInt8]] {
    var out: [String: [UInt8]] = [:]
    guard let e = FileManager.default.enumerator(atPath: dir) else { return out }
    for case let name as String in e {
        var isDir: ObjCBool = false
        let path = dir + "/" + name
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue,
            let data = FileManager.default.contents(atPath: path)
        {
            out[name] = [UInt8](data)
        }
    }
    return out
}

/// Frames and stage-1 grids of a run's work directory (the bytes that must be reproducible).
func results(of work: String) -> [String: [UInt8]] {
    files(under: work).filter { $0.key.hasPrefix("frames/") || $0.key.hasPrefix("grids/") }
}

/// Runs `request` to completion in a new work directory and returns the run.
@discardableResult
func runToEnd(
    _ p: LoadedPipeline, _ request: JobSpec, work: String,
    options: ExecutionOptions = ExecutionOptions(threads: 2)
) throws -> SequenceRun {
    let run = try SequenceRun(pipeline: p, spec: request, workDirectory: work)
    try run.execute(options: options)
    #expect(run.isComplete)
    return run
}

/// The 8-bit frames of a finished run, decoded from its PNGs, (C, H, W) planar per frame.
func decodedFrames(_ run: SequenceRun) throws -> [Image8] {
    try (0..<run.plan.frames).map { i in
        let data = try #require(
            FileManager.default.contents(atPath: run.workDirectory + String(format: "/frames/frame_%05d.png", i)))
        return try PNG.decode([UInt8](data))
    }
}

/// Interleaved bytes of image i of a reference `(F, C, H, W)` uint8 array.
func referenceFrames(_ name: String) throws -> (images: [[UInt8]], shape: [Int]) {
    let npy = try NPYArray(path: fixture(name))
    let values = try npy.integers()
    let (f, c, h, w) = (npy.shape[0], npy.shape[1], npy.shape[2], npy.shape[3])
    var images: [[UInt8]] = []
    for i in 0..<f {
        var px = [UInt8](repeating: 0, count: c * h * w)
        for ch in 0..<c {
            for j in 0..<(h * w) { px[j * c + ch] = UInt8(values[((i * c + ch) * h * w) + j]) }
        }
        images.append(px)
    }
    return (images, npy.shape)
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
}

/// Expects `body` to throw an EngineError with `code` whose message or hint mentions `text`.
func expectEngineError(
    _ code: EngineError.Code, mentioning text: String, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected an \(code) error mentioning '\(text)'", sourceLocation: sourceLocation)
    } catch let e as EngineError {
        #expect(e.code == code, "\(e)", sourceLocation: sourceLocation)
        #expect(e.description.contains(text), "\(e)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}
