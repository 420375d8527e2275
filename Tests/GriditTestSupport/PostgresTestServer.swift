// A real PostgreSQL server for the tests: initdb, then the postmaster on a temporary folder and a free
// loopback port, started once per test process and stopped when it exits. As root it runs as
// the `postgres` user (the server refuses root). A server that cannot start fails the tests
// that need it: they never skip.

import Foundation

#if canImport(Glibc)
import Glibc
#endif

public final class PostgresTestServer: Sendable {
    public let host = "127.0.0.1"
    public let port: Int
    /// The superuser initdb made; trust authentication on loopback, so no password.
    public let user = "gridit"
    public let database = "postgres"
    public let version: String
    let dataDirectory: String
    let binaries: String
    let pid: pid_t

    /// The one server of this test process, started on first use.
    public static func shared() throws -> PostgresTestServer {
        try started.get()
    }

    private static let started: Result<PostgresTestServer, TestFailure> = {
        do {
            let server = try PostgresTestServer()
            runningServer = server
            atexit { PostgresTestServer.stopAtExit() }
            print("PostgreSQL test server \(server.version) started on \(server.host):\(server.port)")
            return .success(server)
        } catch let failure as TestFailure {
            print("PostgreSQL test server could not start: \(failure)")
            return .failure(failure)
        } catch {
            return .failure(TestFailure("PostgreSQL test server could not start: \(error)"))
        }
    }()

    /// The folder with initdb and postgres: GRIDIT_PG_BIN, else the newest Debian postgresql-NN.
    static func binaryFolder() throws -> String {
        if let folder = ProcessInfo.processInfo.environment["GRIDIT_PG_BIN"] { return folder }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.compactMap(Int.init).sorted(by: >) {
            let folder = "/usr/lib/postgresql/\(version)/bin"
            if FileManager.default.isExecutableFile(atPath: folder + "/pg_ctl") { return folder }
        }
        throw TestFailure(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (tools/install-deps.sh installs postgresql), "
                + "or set GRIDIT_PG_BIN")
    }

    private init() throws {
        binaries = try Self.binaryFolder()
        let asRoot = getuid() == 0
        // Not TemporaryDirectory: this folder outlives every test and goes at exit.
        var template = Array("/tmp/gt-pg-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TestFailure("mkdtemp: \(String(cString: strerror(errno)))")
        }
        let root = String(cString: made)
        dataDirectory = root + "/data"
        port = try Self.freePort()
        if asRoot {
            guard let account = getpwnam("postgres") else {
                throw TestFailure("the tests run as root and there is no 'postgres' user to run PostgreSQL as")
            }
            chown(root, account.pointee.pw_uid, account.pointee.pw_gid)
        }
        let initdb = try Self.run(
            binaries + "/initdb",
            ["-D", dataDirectory, "-U", user, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
            asRoot: asRoot)
        guard initdb.status == 0 else { throw TestFailure("initdb failed: \(initdb.stderr)\(initdb.stdout)") }
        // Settings for a throwaway server: no fsync, small, sockets only in its own folder.
        let settings = [
            "-p", "\(port)", "-k", root, "-c", "listen_addresses=\(host)", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200",
            "-c", "shared_buffers=32MB",
        ]
        // The postmaster runs in the foreground as this process's child (not through `pg_ctl
        // start`: Foundation's Process counts a command as running while anything it started,
        // a daemonised server included, holds its descriptors). setpriv execs, so the child's
        // pid is the postmaster's own.
        let server = Process()
        if asRoot {
            server.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            server.arguments =
                [
                    "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--", binaries + "/postgres", "-D",
                    dataDirectory,
                ]
                + settings
        } else {
            server.executableURL = URL(fileURLWithPath: binaries + "/postgres")
            server.arguments = ["-D", dataDirectory] + settings
        }
        let log = root + "/server.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        server.standardOutput = logHandle
        server.standardError = logHandle
        try server.run()
        pid = server.processIdentifier
        let deadline = Date().addingTimeInterval(60)
        while true {
            let ready = try runProcess(binaries + "/pg_isready", ["-q", "-h", host, "-p", "\(port)"], timeout: 10)
            if ready.status == 0 { break }
            guard server.isRunning, Date() < deadline else {
                kill(pid, SIGQUIT)
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                throw TestFailure("PostgreSQL did not start (\(binaries)/postgres on port \(port)):\n\(text)")
            }
            usleep(100_000)
        }
        let postgres = try runProcess(binaries + "/postgres", ["--version"])
        version = postgres.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A loopback port nothing listens on now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw TestFailure("bind: \(String(cString: strerror(errno)))") }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw TestFailure("getsockname: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Runs a PostgreSQL tool, as `postgres` when the tests run as root (runuser, from util-linux).
    static func run(_ executable: String, _ arguments: [String], asRoot: Bool) throws -> ProcessResult {
        if asRoot {
            return try runProcess("/sbin/runuser", ["-u", "postgres", "--", executable] + arguments, timeout: 120)
        }
        return try runProcess(executable, arguments, timeout: 120)
    }

    /// A fresh schema name for one test: lower case, unique in this server's life.
    public func freshSchema() -> String {
        "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
    }

    /// Immediate shutdown (SIGQUIT): the data is thrown away anyway.
    private static func stopAtExit() {
        guard let server = runningServer else { return }
        kill(server.pid, SIGQUIT)
        var status: Int32 = 0
        for _ in 0..<100 where waitpid(server.pid, &status, WNOHANG) == 0 { usleep(50_000) }
        let root = (server.dataDirectory as NSString).deletingLastPathComponent
        try? FileManager.default.removeItem(atPath: root)
        print("PostgreSQL test server stopped")
    }
}

nonisolated(unsafe) private var runningServer: PostgresTestServer?

/// Runs `body` with a `start` function: each value handed to `start` has `run` called on it in a
/// child task for as long as `body` runs (connection pools of the stores a test makes), then
/// those tasks are cancelled.
public func withServices<Value: Sendable, Result: Sendable>(
    run: @escaping @Sendable (Value) async -> Void,
    _ body: (_ start: @escaping @Sendable (Value) -> Void) async throws -> Result
) async throws -> Result {
    let (values, continuation) = AsyncStream.makeStream(of: Value.self)
    return try await withThrowingTaskGroup(of: Void.self, returning: Result.self) { group in
        group.addTask {
            await withDiscardingTaskGroup { services in
                for await value in values { services.addTask { await run(value) } }
            }
        }
        defer {
            continuation.finish()
            group.cancelAll()
        }
        return try await body { continuation.yield($0) }
    }
}
