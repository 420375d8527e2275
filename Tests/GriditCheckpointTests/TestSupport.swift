import Foundation
import GriditCheckpoint
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body`, expecting a `CheckpointError` with `code` whose description names `path`;
/// returns the error for further checks.
@discardableResult
func expectCheckpointError<T>(
    _ code: CheckpointError.Code, path: String, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> T
) -> CheckpointError? {
    do {
        _ = try body()
        Issue.record("expected CheckpointError .\(code), but no error was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as CheckpointError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        #expect(error.path == path, sourceLocation: sourceLocation)
        #expect(error.description.contains(path), "description: \(error)", sourceLocation: sourceLocation)
        #expect(error.hint != nil, "no hint: \(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record(
            "expected CheckpointError .\(code), got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Builds a safetensors file by hand: the 8-byte length, `header` as given, then `data`.
func safetensorsBytes(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let json = Array(header.utf8)
    let length = declaredLength ?? UInt64(json.count)
    return (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) } + json + data
}

/// Little-endian bytes of float32 values.
func floatBytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v.bitPattern >> (8 * $0)) } }
}

/// Deterministic PRNG for tests (SplitMix64).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Resident memory of this process in bytes (VmRSS), or nil off Linux.
func residentBytes() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let digits = line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
        return digits.map { $0 * 1024 }
    }
    return nil
}
