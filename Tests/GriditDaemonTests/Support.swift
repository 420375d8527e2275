#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GriditAPI
import GriditCLI
import Testing

/// A short fresh directory under /tmp (Unix socket paths must stay under 108 bytes).
struct ShortTemporaryDirectory: Sendable {
    let path: String

    init() throws {
        var template = Array("/tmp/gd-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TestFailure("mkdtemp: \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
        chmod(path, 0o755)  // other uids (setpriv tests) must reach the socket inside
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The folder with the built griditd and griditctl: next to the test bundle, or GRIDIT_BIN_DIR.
func binaryDirectory(_ filePath: String = #filePath) -> String {
    if let dir = ProcessInfo.processInfo.environment["GRIDIT_BIN_DIR"] { return dir }
    let nextToTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [nextToTests, nextToTests.deletingLastPathComponent()] {
        if FileManager.default.isExecutableFile(atPath: candidate.appendingPathComponent("griditd").path) {
            return candidate.path
        }
    }
    let root = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug").path
}

/// What a finished process left.
struct ProcessResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command to completion (stdout/stderr captured in files, so large output cannot block).
func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, timeout: Double = 60) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("gd-out-\(UUID().uuidString)")
    let err = FileManager.default.temporaryDirectory.appendingPathComponent("gd-err-\(UUID().uuidString)")
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

/// The tiny random-weight pixel pipeline of the engine tests (4×4 grids of 4×4 frames, ×2 SR):
/// a job of a few dozen frames takes well under a second.
func tinyPipeline(_ filePath: String = #filePath) -> String {
    URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("GriditEngineTests/Fixtures/pixel/pipeline.json").path
}

/// A real griditd process on a state directory and socket of its own.
final class DaemonProcess: @unchecked Sendable {
    let directory: ShortTemporaryDirectory
    let stateDir: String
    let socket: String
    let process = Process()
    let logPath: String

    /// `model`: a pipeline to import first (offline, `griditd models import`) as `tiny:latest`,
    /// so that submits find a model.
    init(
        directory: ShortTemporaryDirectory, arguments: [String] = [], environment: [String: String] = [:],
        model: String? = nil
    ) throws {
        self.directory = directory
        stateDir = directory.file("state")
        socket = directory.file("s.sock")
        logPath = directory.file("griditd-\(UUID().uuidString.prefix(8)).log")
        if let model {
            let imported = try runProcess(
                binaryDirectory() + "/griditd",
                ["models", "import", model, "--name", "tiny:latest", "--link", "copy", "--state-dir", stateDir])
            guard imported.status == 0 else { throw TestFailure("importing \(model): \(imported.stderr)") }
        }
        process.executableURL = URL(fileURLWithPath: binaryDirectory() + "/griditd")
        process.arguments = ["serve", "--state-dir", stateDir, "--socket", socket] + arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "NOTIFY_SOCKET")
        env.removeValue(forKey: "LISTEN_FDS")
        env.removeValue(forKey: "JOURNAL_STREAM")
        env.merge(environment) { $1 }
        process.environment = env
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try waitUntilReady()
    }

    var pid: Int32 { process.processIdentifier }
    var client: GriditClient { GriditClient(socketPath: socket, timeout: 60) }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    private func waitUntilReady() throws {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if !process.isRunning { throw TestFailure("griditd exited (\(process.terminationStatus)) before listening:\n\(log)") }
            if (try? client.get("/v1/version", as: VersionInfo.self)) != nil { return }
            usleep(20_000)
        }
        throw TestFailure("griditd did not answer within 60 s:\n\(log)")
    }

    /// SIGTERM, then the exit status (SIGKILL after `timeout`).
    @discardableResult
    func stop(timeout: Double = 60) -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
            return -1
        }
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit() } }
}

/// Sends raw bytes on a fresh connection and returns everything the server answers before
/// closing (or within `timeout`).
func rawExchange(_ socketPath: String, _ bytes: [UInt8], timeout: Int = 10, halfClose: Bool = false) throws -> String {
    try exchange(socketPath, bytes, timeout: timeout, halfClose: halfClose).answer
}

/// `rawExchange`, and whether the server closed the connection (rather than `timeout` passing).
func exchange(
    _ socketPath: String, _ bytes: [UInt8], timeout: Int = 10, halfClose: Bool = false
) throws -> (answer: String, closedByServer: Bool) {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket()") }
    defer { close(fd) }
    guard UnixSocket.connect(fd, to: socketPath) else { throw TestFailure("connect \(socketPath): \(String(cString: strerror(errno)))") }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { break }
        offset += n
    }
    if halfClose { shutdown(fd, Int32(SHUT_WR)) }
    var received = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        // A server that closes with our bytes unread gives ECONNRESET rather than EOF.
        if n <= 0 { return (String(decoding: received, as: UTF8.self), n == 0 || errno == ECONNRESET) }
        received += buffer[0..<n]
    }
}

/// An HTTP request as bytes.
func httpRequest(_ method: String, _ path: String, body: String? = nil, headers: [String] = []) -> [UInt8] {
    var text = "\(method) \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    for h in headers { text += h + "\r\n" }
    if let body { text += "Content-Length: \(body.utf8.count)\r\n" }
    text += "\r\n"
    return Array(text.utf8) + Array((body ?? "").utf8)
}

/// The status code and the error code/message of a raw answer.
func parseAnswer(_ answer: String) -> (status: Int?, code: String?, message: String?) {
    let statusLine = answer.split(separator: "\r\n").first.map(String.init) ?? ""
    let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) }
    guard let bodyStart = answer.range(of: "\r\n\r\n") else { return (status, nil, nil) }
    let body = Data(answer[bodyStart.upperBound...].utf8)
    let error = try? APICoding.decoder().decode(ErrorResponse.self, from: body)
    return (status, error?.error.code.rawValue, error?.error.message)
}
