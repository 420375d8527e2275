// What every test target shares: temporary directories, the repository's fixtures, running the
// built binaries. Linked into test targets only.

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory with a short path (under /tmp by default: Unix socket paths must stay under
/// 108 bytes, and other users' processes in the setpriv tests must reach inside), removed by
/// `remove()` or when the last reference goes.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init(_ label: String = "gt", under base: String = "/tmp") {
        var template = Array("\(base)/\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp in \(base): \(String(cString: strerror(errno)))")
        path = String(cString: made!)
        chmod(path, 0o755)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    /// Writes `bytes` to `name` (plain, not atomic: tests build broken files on purpose).
    @discardableResult
    public func write(_ name: String, _ bytes: [UInt8]) -> String {
        let target = file(name)
        let written = FileManager.default.createFile(atPath: target, contents: Data(bytes))
        precondition(written, "could not write \(target)")
        return target
    }

    /// Removes the directory, opening up what tests locked down first (0444 blobs, 0500 folders).
    public func remove() {
        guard FileManager.default.fileExists(atPath: path) else { return }
        _ = try? Process.run(URL(fileURLWithPath: "/bin/chmod"), arguments: ["-R", "u+rwX", path]).waitUntilExit()
        try? FileManager.default.removeItem(atPath: path)
    }

    deinit { remove() }
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The repository root, found from this file's path (Tests/GriditTestSupport/…).
public func repositoryRoot(_ filePath: String = #filePath) -> URL {
    URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// The `pipeline.json` of an engine fixture (Tests/GriditEngineTests/Fixtures/<name>): `pixel` is
/// the tiny random-weight pipeline (4×4 grids of 4×4 frames, ×2 super-resolution) whose jobs of
/// a few dozen frames take well under a second; `classcond` a class-conditional one.
public func fixturePipeline(_ name: String = "pixel") -> String {
    repositoryRoot().appendingPathComponent("Tests/GriditEngineTests/Fixtures/\(name)/pipeline.json").path
}

/// The tiny random-weight pixel pipeline (`fixturePipeline("pixel")`).
public func tinyPipeline() -> String { fixturePipeline("pixel") }

/// The folder with the built griditd and griditctl: next to the test bundle, or GRIDIT_BIN_DIR.
public func binaryDirectory() -> String {
    if let dir = ProcessInfo.processInfo.environment["GRIDIT_BIN_DIR"] { return dir }
    let nextToTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [nextToTests, nextToTests.deletingLastPathComponent()] {
        if FileManager.default.isExecutableFile(atPath: candidate.appendingPathComponent("griditd").path) {
            return candidate.path
        }
    }
    return repositoryRoot().appendingPathComponent(".build/debug").path
}

/// What a finished process left.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs a command to completion (stdout/stderr captured in files, so large output cannot block).
/// `input`: its stdin (a file, never a terminal); nil inherits the test's.
public func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, timeout: Double = 60,
    input: String? = nil
) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    if let input {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gt-in-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: file.path, contents: Data(input.utf8))
        defer { try? FileManager.default.removeItem(at: file) }  // the open handle keeps it readable
        process.standardInput = try FileHandle(forReadingFrom: file)
    }
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("gt-out-\(UUID().uuidString)")
    let err = FileManager.default.temporaryDirectory.appendingPathComponent("gt-err-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: out)
        try? FileManager.default.removeItem(at: err)
    }
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        throw TestFailure("\(executable) \(arguments.joined(separator: " ")) ran past \(timeout) s")
    }
    return ProcessResult(
        status: process.terminationStatus,
        stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
}
