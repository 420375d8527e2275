import CDispatch  // declares `struct stat` and `timeval` first once Hummingbird is a dependency
import Foundation
import GriditAPI
import GriditCLI
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real griditd process on a state directory and socket of its own.
final class DaemonProcess: @unchecked Sendable {
    let directory: TemporaryDirectory
    let stateDir: String
    let socket: String
    let process = Process()
    let logPath: String

    /// `model`: a pipeline to import first (offline, `griditd models import`) as `tiny:latest`,
    /// so that submits find a model.
    /// `stateDirFlag` false: no `--state-dir` (the environment or the config file names it).
    /// `hiding`: a folder griditd does not see (an empty tmpfs over it in a mount namespace of its
    /// own, as the unit's ProtectHome= hides /home); needs root (`canHide`).
    init(
        directory: TemporaryDirectory, arguments: [String] = [], environment: [String: String] = [:],
        model: String? = nil, stateDirFlag: Bool = true, hiding: String? = nil
    ) throws {
        self.directory = directory
        stateDir = stateDirFlag ? directory.file("state") : environment["GRIDIT_STATE_DIR"] ?? directory.file("state")
        socket = directory.file("s.sock")
        logPath = directory.file("griditd-\(UUID().uuidString.prefix(8)).log")
        if let model {
            let imported = try runProcess(
                binaryDirectory() + "/griditd",
                ["models", "import", model, "--name", "tiny:latest", "--link", "copy", "--state-dir", stateDir])
            guard imported.status == 0 else { throw TestFailure("importing \(model): \(imported.stderr)") }
        }
        process.executableURL = URL(fileURLWithPath: binaryDirectory() + "/griditd")
        process.arguments =
            ["serve"] + (stateDirFlag ? ["--state-dir", stateDir] : []) + ["--socket", socket] + arguments
        if let hiding {
            // unshare execs sh, which execs griditd: the pid stays griditd's.
            process.arguments =
                [
                    "-m", "--propagation", "private", "sh", "-c", #"mount -t tmpfs hidden "$0" && exec "$@""#, hiding,
                    process.executableURL!.path,
                ] + process.arguments!
            process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        }
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

    /// Whether `hiding` works here: root, with unshare and mount namespaces.
    static let canHide: Bool = {
        guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else { return false }
        return (try? runProcess("/usr/bin/unshare", ["-m", "--propagation", "private", "true"]).status) == 0
    }()
    var client: GriditClient { GriditClient(socketPath: socket, timeout: 60) }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The first log line that contains `text`, waited for (griditd logs a job's end after the
    /// state change the API shows), or a failure after `timeout` seconds.
    func logLine(containing text: String, timeout: Double = 60) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let line = log.split(separator: "\n").first(where: { $0.contains(text) }) { return String(line) }
            guard Date() < deadline else { throw TestFailure("no log line with \"\(text)\" in \(timeout) s:\n\(log)") }
            usleep(20_000)
        }
    }
    /// The test's environment with GRIDIT_SOCKET naming this daemon, for griditctl.
    var cliEnvironment: [String: String] {
        ProcessInfo.processInfo.environment.merging(["GRIDIT_SOCKET": socket]) { $1 }
    }

    private func waitUntilReady() throws {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if !process.isRunning {
                throw TestFailure("griditd exited (\(process.terminationStatus)) before listening:\n\(log)")
            }
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

    deinit {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }
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
    guard UnixSocket.connect(fd, to: socketPath) else {
        throw TestFailure("connect \(socketPath): \(String(cString: strerror(errno)))")
    }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes {
            Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
        }
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
