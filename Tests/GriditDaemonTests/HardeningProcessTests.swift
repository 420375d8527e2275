// The attacks of issue 16 on the real binaries, as regression tests: memory kept per status call,
// hostile numbers, slow clients, reused job ids and output folders, state files others can read,
// a corrupt store that `models verify` called healthy.

import CDispatch  // declares `struct stat` and `timeval` first once Hummingbird is a dependency
import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Resident memory of a process in KiB.
func residentKB(_ pid: Int32) -> Int {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
}

/// Exited children of this process left unreaped until `reap()`: their /proc/<pid>/maps is empty,
/// like a kernel thread's (what the status leak needed), in any container.
final class Zombies {
    private(set) var pids: [pid_t] = []

    init(count: Int) throws {
        for _ in 0..<count {
            var pid: pid_t = 0
            let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
            defer { free(argv[0]) }
            guard posix_spawn(&pid, "/bin/true", nil, nil, argv, environ) == 0 else { throw TestFailure("posix_spawn") }
            pids.append(pid)
        }
        let deadline = Date().addingTimeInterval(30)
        while !pids.allSatisfy(Self.isZombie) {
            guard Date() < deadline else { throw TestFailure("the children did not exit") }
            usleep(10_000)
        }
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
    }

    func reap() {
        for pid in pids { waitpid(pid, nil, 0) }
        pids = []
    }

    deinit { reap() }
}

@Suite("griditd hardened", .serialized, .offPool)
struct HardeningProcessTests {
    static let ctl = binaryDirectory() + "/griditctl"

    static func griditctl(_ arguments: [String], socket: String) throws -> ProcessResult {
        try runProcess(ctl, arguments, environment: ["GRIDIT_SOCKET": socket, "PATH": "/usr/bin:/bin"])
    }

    @Test("status and models ps keep no memory per call: RSS flat over hundreds of calls")
    func statusDoesNotLeak() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"], model: tinyPipeline())
        defer { daemon.stop() }
        let zombies = try Zombies(count: 32)
        defer { zombies.reap() }
        let client = daemon.client
        for _ in 0..<30 {
            _ = try client.call("GET", "/v1/status")
            _ = try client.call("GET", "/v1/models/ps")
        }
        let before = residentKB(daemon.pid)
        for _ in 0..<150 {
            _ = try client.call("GET", "/v1/status")
            _ = try client.call("GET", "/v1/models/ps")
        }
        let grown = residentKB(daemon.pid) - before
        // Before the fix: ≥ 4 KiB per zombie per call, ≥ 38 MB here.
        #expect(grown < 12 * 1024, "griditd kept \(grown) KB over 300 calls (\(grown / 300) KB a call)")
        #expect(daemon.stop() == 0)
    }

    @Test("huge and non-finite numbers are refused with a message; neither binary traps")
    func hostileNumbers() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"], model: tinyPipeline())
        defer { daemon.stop() }
        let prune = try Self.griditctl(["jobs", "prune", "--older-than", "1e300s", "--yes"], socket: daemon.socket)
        #expect(prune.status == 0 && prune.stdout.contains("pruned 0 jobs"), "\(prune.stderr)")
        for body in [#"{"older_than_seconds": 1e300}"#, #"{"older_than_seconds": 1.7976931348623157e308}"#] {
            let answer = try rawExchange(daemon.socket, httpRequest("POST", "/v1/jobs/prune", body: body))
            #expect(parseAnswer(answer).status == 200, "\(answer.prefix(300))")
        }
        for body in [
            #"{"length": 4, "priority": -9223372036854775808}"#, #"{"length": 4, "parameters": {"eta": 1e999}}"#,
        ] {
            let answer = try rawExchange(daemon.socket, httpRequest("POST", "/v1/jobs", body: body))
            #expect(parseAnswer(answer).status == 400, "\(body): \(answer.prefix(300))")
        }
        let eta = try Self.griditctl(["submit", "--length", "4", "--eta", "nan"], socket: daemon.socket)
        #expect(eta.status == 2 && eta.stderr.contains("--eta"), "griditctl: \(eta.status) \(eta.stderr)")
        #expect(try daemon.client.get("/v1/version", as: VersionInfo.self).version == griditVersion)
        #expect(daemon.stop() == 0)
    }

    @Test("a request that never finishes arriving is cut off; an idle kept-alive connection is closed")
    func slowClients() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(
            directory: dir,
            arguments: ["--header-timeout", "1", "--body-timeout", "1", "--idle-timeout", "2", "--start-paused"])
        defer { daemon.stop() }
        // Half a head, then nothing (slowloris): closed without an answer. (Each exchange waits up
        // to 60 s; griditd must hang up long before.)
        let partial = try exchange(daemon.socket, Array("GET /v1/version HTTP/1.1\r\nHost: x\r\n".utf8), timeout: 60)
        #expect(partial.answer.isEmpty && partial.closedByServer, "\(partial)")
        // Nothing at all.
        #expect(try exchange(daemon.socket, [], timeout: 60).closedByServer)
        // A head announcing a body that never comes: 408 naming the option.
        let body = try exchange(
            daemon.socket, Array("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{".utf8), timeout: 60)
        let answer = parseAnswer(body.answer)
        #expect(answer.status == 408 && answer.code == "request_timeout" && body.closedByServer, "\(body)")
        #expect(answer.message?.contains("--body-timeout") == true)
        // A kept-alive connection gets its answer, then is closed once idle.
        let idle = try exchange(daemon.socket, Array("GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n".utf8), timeout: 60)
        #expect(idle.answer.hasPrefix("HTTP/1.1 200") && idle.closedByServer, "\(idle)")
        #expect(try daemon.client.get("/v1/version", as: VersionInfo.self).version == griditVersion)
        #expect(daemon.stop() == 0)
    }

    @Test("an --output name cannot take the next automatic job-<id> folder; ids are never reused after a prune")
    func idsAndOutputNames() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        let client = daemon.client
        let first = try client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self).job
        try waitForJob(daemon, first.id)
        // A user names an output after the next job's automatic folder, to make that job fail.
        let squatter = try client.post(
            "/v1/jobs", SubmitJobRequest(spec: JobSpec(length: 4, output: "job-\(first.id + 2)")),
            as: SubmitJobResponse.self
        ).job
        #expect(try waitForJob(daemon, squatter.id).state == .succeeded)
        let victim = try client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self).job
        #expect(victim.id == first.id + 2)
        let done = try waitForJob(daemon, victim.id)
        #expect(done.state == .succeeded, "\(done.errorMessage ?? "")")
        #expect(done.outputDir == daemon.stateDir + "/outputs/job-\(victim.id)")
        let named = try client.post(
            "/v1/jobs", SubmitJobRequest(spec: JobSpec(length: 4, output: "mine/run-1")), as: SubmitJobResponse.self
        ).job
        #expect(try waitForJob(daemon, named.id).outputDir == daemon.stateDir + "/outputs/named/\(getuid())/mine/run-1")

        let pruned = try Self.griditctl(["jobs", "prune", "--older-than", "0s", "--yes"], socket: daemon.socket)
        #expect(pruned.status == 0 && pruned.stdout.contains("pruned 4 jobs"), "\(pruned.stdout) \(pruned.stderr)")
        let next = try client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self).job
        #expect(next.id == named.id + 1, "job ids up to \(named.id) were pruned; \(next.id) must be new")
        #expect(try waitForJob(daemon, next.id).state == .succeeded)
        #expect(daemon.stop() == 0)
    }

    @Test("a watched job that does not change gets keepalive lines, and watchers that left free their connections")
    func eventStreamKeepalive() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(
            directory: dir,
            arguments: [
                "--start-paused", "--events-keepalive", "1", "--max-connections", "6", "--max-connections-per-user",
                "6",
                "--admin-connections", "1",
            ],
            model: tinyPipeline())
        defer { daemon.stop() }
        let job = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self).job
        let events = httpRequest("GET", "/v1/jobs/\(job.id)/events")
        /// A watcher: what it read within `seconds`, then it hangs up (Ctrl-C on `jobs watch`).
        func watch(for seconds: Double) -> String {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            guard UnixSocket.connect(fd, to: daemon.socket) else { return "" }
            _ = events.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            var tv = timeval(tv_sec: 0, tv_usec: 100_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var received = [UInt8](), buffer = [UInt8](repeating: 0, count: 4096)
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n == 0 { break }
                if n > 0 { received += buffer[0..<n] }
            }
            return String(decoding: received, as: UTF8.self)
        }
        // Held 3 s: the job's line, then empty lines (chunks of one newline).
        let held = watch(for: 3)
        #expect(held.contains(#""kind":"job""#) && held.contains("\r\n1\r\n\n\r\n"), "\(held)")
        // Twice as many watchers as connections, each gone at once.
        for _ in 0..<12 { _ = watch(for: 0.05) }
        // Their handlers notice at the next keepalive and free the slots.
        var answered = false
        for _ in 0..<50 where !answered {
            usleep(200_000)
            answered = (try? daemon.client.get("/v1/version", as: VersionInfo.self)) != nil
        }
        #expect(answered, "griditd still refuses connections: \(daemon.log.suffix(2000))")
        #expect(daemon.stop() == 0)
    }

    @Test("output names cannot nest: removing one job's output must never delete another's frames")
    func nestedOutputNames() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"], model: tinyPipeline())
        defer { daemon.stop() }
        let client = daemon.client
        func submit(_ output: String) throws(CLIError) -> JobInfo {
            try client.post(
                "/v1/jobs", SubmitJobRequest(spec: JobSpec(length: 4, output: output)), as: SubmitJobResponse.self
            ).job
        }
        func refused(_ output: String, _ says: String) {
            let error = #expect(throws: CLIError.self, "\(output)") { try submit(output) }
            #expect(
                error?.code == "conflict" && error?.message.contains(says) == true,
                "\(output): \(String(describing: error))")
        }
        // Waiting jobs: neither a folder inside a promised output nor one above it.
        let outer = try submit("proj/a")
        refused("proj/a/b", "job \(outer.id) writes to the output 'proj/a'")
        refused("proj", "job \(outer.id) writes to the output 'proj/a'")
        let sibling = try submit("proj/b")  // a folder of outputs is fine
        _ = try client.post("/v1/queue/resume", as: QueueStatus.self)
        #expect(try waitForJob(daemon, outer.id).state == .succeeded)
        #expect(try waitForJob(daemon, sibling.id).state == .succeeded)
        // Finished ones: nothing inside, and the folder above exists.
        refused("proj/a/b", "'proj/a' is a finished job's output")
        refused("proj/a/b/c", "'proj/a' is a finished job's output")
        refused("proj", "exists already")
        let third = try submit("proj/c")
        #expect(try waitForJob(daemon, third.id).state == .succeeded)
        let root = daemon.stateDir + "/outputs/named/\(getuid())/proj"
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).sorted() == ["a", "b", "c"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/a").sorted().contains("frames"))
        // A retry brings its name back: checked again (a job took the folder around it meanwhile).
        _ = try client.post("/v1/queue/pause", as: QueueStatus.self)
        let inner = try submit("q/r")
        _ = try client.post("/v1/jobs/\(inner.id)/cancel", as: JobInfo.self)
        let outerLater = try submit("q")
        // While that job waits, the retry names it and says how to get past it (not "choose another name").
        let waiting = #expect(throws: CLIError.self) {
            try client.post("/v1/jobs/\(inner.id)/retry", as: JobInfo.self)
        }
        #expect(
            waiting?.code == "conflict"
                && waiting?.message.contains("retry this job once job \(outerLater.id) has ended") == true,
            "\(String(describing: waiting))")
        _ = try client.post("/v1/queue/resume", as: QueueStatus.self)
        #expect(try waitForJob(daemon, outerLater.id).state == .succeeded)
        let retried = #expect(throws: CLIError.self) {
            try client.post("/v1/jobs/\(inner.id)/retry", as: JobInfo.self)
        }
        #expect(
            retried?.code == "conflict" && retried?.message.contains("'q' is a finished job's output") == true
                && retried?.message.contains("submit the job again with another --output-name") == true,
            "\(String(describing: retried))")
        #expect(try client.get("/v1/jobs/\(inner.id)", as: JobInfo.self).state == .canceled)
        #expect(daemon.stop() == 0)
    }

    @Test(
        "a repeated submit is its job after the job wrote its folder; a folder given to a later job outlives the old one's removal"
    )
    func outputsOfRepeatedAndLaterJobs() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        let client = daemon.client
        func submit(_ output: String, key: String? = nil, seed: UInt64 = 1) throws(CLIError) -> SubmitJobResponse {
            try client.post(
                "/v1/jobs",
                SubmitJobRequest(
                    spec: JobSpec(length: 4, output: output, parameters: .init(seed: seed)), idempotencyKey: key),
                as: SubmitJobResponse.self)
        }
        let first = try submit("kept", key: "k1").job
        #expect(try waitForJob(daemon, first.id).state == .succeeded)
        // The same request again (a client that lost the answer) is that job, not "the folder exists".
        let again = try submit("kept", key: "k1")
        #expect(again.deduplicated && again.job.id == first.id && again.job.state == .succeeded)
        let other = #expect(throws: CLIError.self) { try submit("kept", key: "k1", seed: 2) }
        #expect(
            other?.message.contains("used for job \(first.id) with other parameters") == true,
            "\(String(describing: other))")
        let noKey = #expect(throws: CLIError.self) { try submit("kept") }
        #expect(noKey?.message.contains("exists already") == true, "\(String(describing: noKey))")
        // Its folder removed by hand, the name goes to a new job, whose frames stay when either
        // job is removed without them: the old one's record is no longer what the folder holds.
        let folder = daemon.stateDir + "/outputs/named/\(getuid())/kept"
        try FileManager.default.removeItem(atPath: folder)
        let second = try submit("kept", seed: 2).job
        #expect(try waitForJob(daemon, second.id).state == .succeeded)
        let keptByRequest = try client.delete("/v1/jobs/\(second.id)?keep_outputs=true", as: PruneResponse.self)
        #expect(keptByRequest.pruned.first?.outputRemoved == false)
        let rm = try Self.griditctl(["jobs", "rm", String(first.id), "--yes"], socket: daemon.socket)
        #expect(
            rm.status == 0 && rm.stdout.contains("removed job \(first.id) (succeeded); left ")
                && rm.stdout.contains("/kept: it does not hold this job's output now"), "\(rm.stdout)\(rm.stderr)")
        #expect(FileManager.default.fileExists(atPath: folder + "/sequence.json"))
        let logged = try daemon.logLine(containing: "removed job \(first.id)")
        #expect(logged.contains("(it does not hold this job's output now)"), "\(logged)")
        // A job's own folder goes with it.
        let third = try submit("own").job
        #expect(try waitForJob(daemon, third.id).state == .succeeded)
        let gone = try client.delete("/v1/jobs/\(third.id)", as: PruneResponse.self)
        #expect(gone.pruned.first?.outputRemoved == true)
        #expect(gone.pruned.first?.outputDir?.hasSuffix("/named/\(getuid())/own") == true)
        #expect(!FileManager.default.fileExists(atPath: daemon.stateDir + "/outputs/named/\(getuid())/own"))
        #expect(daemon.stop() == 0)
    }

    @Test("the state directory is 0750, the database, work and outputs griditd's alone; owners fetch their frames")
    func privateStateDirectory() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        // DaemonProcess imports the model first (`griditd models import` creates the directory).
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        let job = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self).job
        try waitForJob(daemon, job.id)
        func mode(_ name: String) -> String {
            var st = stat()
            return stat(daemon.stateDir + name, &st) == 0 ? String(st.st_mode & 0o777, radix: 8) : "missing"
        }
        #expect(mode("") == "750")
        for file in ["/jobs.sqlite", "/jobs.sqlite-wal", "/jobs.sqlite-shm"] { #expect(mode(file) == "600", "\(file)") }
        for folder in ["/work", "/outputs", "/tmp"] { #expect(mode(folder) == "700", "\(folder)") }
        // The owner gets the frames through the socket.
        let copy = dir.file("mine")
        let fetch = try Self.griditctl(["jobs", "fetch", String(job.id), copy], socket: daemon.socket)
        #expect(fetch.status == 0, "\(fetch.stderr)")
        #expect(try frameDigests(copy).count == 4)
        #expect(daemon.stop() == 0)
    }

    @Test("griditctl models verify exits 1 when it finds a corrupt blob")
    func verifyFailsOnCorruption() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        let clean = try Self.griditctl(["models", "verify", "--all"], socket: daemon.socket)
        #expect(clean.status == 0, "\(clean.stderr)")
        let blobs = daemon.stateDir + "/blobs/sha256"
        let largest = try #require(
            entries(blobs).max { a, b in
                let size = { (name: String) in
                    (try? FileManager.default.attributesOfItem(atPath: blobs + "/" + name)[.size] as? Int) ?? 0
                }
                return size(a) < size(b)
            })
        let handle = try #require(FileHandle(forUpdatingAtPath: blobs + "/" + largest))
        try handle.seek(toOffset: 200)
        try handle.write(contentsOf: Data([0xFF, 0x00, 0xFF]))
        try handle.close()
        let corrupt = try Self.griditctl(["models", "verify", "--all"], socket: daemon.socket)
        #expect(corrupt.status == 1, "exit \(corrupt.status): \(corrupt.stdout) \(corrupt.stderr)")
        #expect(corrupt.stdout.contains("1 bad"), "\(corrupt.stdout)")
        #expect(daemon.stop() == 0)
    }
}
