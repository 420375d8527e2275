// What every test target shares: temporary directories, the repository's fixtures, running the
// built binaries. Linked into test targets only.
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A fresh directory with a short path under /tmp (Unix socket paths must stay under 108 bytes;
/// other users' processes in the setpriv tests must reach inside), removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init(_ label: String = "gt") throws {
        var template = Array("/tmp/\(label)-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TestFailure("mkdtemp: \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
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
        _ = try? Process.run(URL(fileURLWithPath: "/bin/chmod"), arguments: ["-R", "u+rwX", path]).waitUntilExit()
        try? FileManager.default.removeItem(atPath: path)
    }
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
