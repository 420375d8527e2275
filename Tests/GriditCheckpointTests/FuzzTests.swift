import Foundation
import GriditCheckpoint
import GriditTensor
import GriditTestSupport
import Testing

/// Corrupted files must either open (and serve every tensor) or throw `CheckpointError`: never
/// crash, never throw anything else. Deterministic seeds, bounded counts.
@Suite struct FuzzTests {
    let dir = TemporaryDirectory()

    /// A small valid file with F32, F16 and BF16 tensors and metadata.
    func validFile() throws -> [UInt8] {
        let path = dir.file("seed.safetensors")
        try SafetensorsWriter.write(
            path: path,
            entries: [
                .init(name: "w", shape: [2, 3]), .init(name: "h", shape: [3], dtype: .f16),
                .init(name: "b", shape: [2], dtype: .bf16),
            ],
            metadata: ["format": "pt"], alignment: 4
        ) { _, _, chunk in
            for i in 0..<chunk.count { chunk[i] = Float(i) - 1.5 }
        }
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Opens `bytes` as a file; returns "ok" or the error code, and records anything but a CheckpointError.
    @discardableResult
    func attempt(_ bytes: [UInt8]) -> String {
        let path = dir.write("fuzz.safetensors", bytes)
        do {
            let file = try SafetensorsFile(path: path)
            for name in file.tensorNames {
                do {
                    let tensor = try file.tensor(named: name)
                    _ = tensor.toArray().reduce(0, +)
                } catch {
                    #expect(error.code == .unsupportedDType)
                }
            }
            return "ok"
        } catch {
            // The API throws only CheckpointError (typed throws); check it names the file.
            #expect(error.description.contains(path))
            return error.code.description
        }
    }

    @Test func truncationAtEveryLength() throws {
        let bytes = try validFile()
        var outcomes: [String: Int] = [:]
        for length in 0...bytes.count {
            outcomes[attempt(Array(bytes[0..<length])), default: 0] += 1
        }
        #expect(outcomes["ok"] == 1, "\(outcomes)")  // only the untruncated file opens
        #expect(outcomes["empty"] == 1)
    }

    @Test func flippedHeaderBytes() throws {
        let bytes = try validFile()
        let headerEnd = 8 + Int(bytes[0]) + Int(bytes[1]) << 8
        var rng = SplitMix64(seed: 0xC0FFEE)
        var outcomes: [String: Int] = [:]
        for _ in 0..<600 {
            var corrupted = bytes
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let at = Int.random(in: 0..<headerEnd, using: &rng)
                corrupted[at] =
                    rng.next() % 2 == 0
                    ? corrupted[at] ^ (1 << UInt8.random(in: 0..<8, using: &rng))
                    : UInt8.random(in: 0...255, using: &rng)
            }
            outcomes[attempt(corrupted), default: 0] += 1
        }
        #expect(outcomes.count >= 4, "corruptions should hit several checks: \(outcomes)")
    }

    @Test func structuralHeaderEdits() throws {
        // Replace header characters with JSON-significant ones, to reach deeper validation paths.
        let bytes = try validFile()
        let headerEnd = 8 + Int(bytes[0]) + Int(bytes[1]) << 8
        let tokens = Array("{}[],:\"\\0123456789-.eE ".utf8)
        var rng = SplitMix64(seed: 99)
        for _ in 0..<400 {
            var corrupted = bytes
            let at = Int.random(in: 8..<headerEnd, using: &rng)
            corrupted[at] = tokens.randomElement(using: &rng)!
            attempt(corrupted)
        }
    }

    @Test func overwrittenLengthField() throws {
        let bytes = try validFile()
        let n = UInt64(bytes[0]) | UInt64(bytes[1]) << 8
        var lengths: [UInt64] = [
            0, 1, 2, n - 1, n + 1, UInt64(bytes.count - 8), UInt64(bytes.count - 7), 1 << 63,
            .max, UInt64(Int.max), UInt64(Int.max) + 1, 100_000_000, 100_000_001,
        ]
        var rng = SplitMix64(seed: 5)
        for _ in 0..<100 { lengths.append(rng.next() >> UInt64.random(in: 0..<64, using: &rng)) }
        for length in lengths {
            var corrupted = bytes
            for k in 0..<8 { corrupted[k] = UInt8(truncatingIfNeeded: length >> (8 * UInt64(k))) }
            // Shortening the length by a few bytes of the space padding can still give a valid file
            // (the data section just starts earlier), so "ok" is allowed; crashing is not.
            let outcome = attempt(corrupted)
            if length > UInt64(bytes.count - 8) { #expect(outcome != "ok") }
        }
    }

    @Test func npyTruncationAndFlips() throws {
        let path = dir.file("seed.npy")
        try NPY.write(Tensor((0..<6).map(Float.init), shape: [2, 3]), to: path)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        func attemptNPY(_ candidate: [UInt8]) -> Bool {
            let target = dir.write("fuzz.npy", candidate)
            do {
                let array = try NPYArray(path: target)
                _ = array.floatTensor()
                _ = try? array.integers()
                return true
            } catch {
                #expect(error.description.contains(target))
                return false
            }
        }
        var opened = 0
        for length in 0...bytes.count where attemptNPY(Array(bytes[0..<length])) { opened += 1 }
        #expect(opened == 1)
        var rng = SplitMix64(seed: 11)
        for _ in 0..<300 {
            var corrupted = bytes
            let at = Int.random(in: 0..<64, using: &rng)
            corrupted[at] = UInt8.random(in: 0...255, using: &rng)
            _ = attemptNPY(corrupted)
        }
    }
}
