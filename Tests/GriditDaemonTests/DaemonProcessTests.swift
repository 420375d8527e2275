// griditd and griditctl as users run them: real binaries, a real database file, a real socket.

import Foundation
import GriditAPI
import GriditCLI
import GriditJobQueue
import GriditJobSpec
import GriditTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("griditd process", .serialized, .offPool)
struct DaemonProcessTests {
    @Test("500 concurrent submits from 20 clients: every accepted job exists once; idempotency keys dedupe")
    func concurrentSubmits() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"], model: tinyPipeline())
        defer { daemon.stop() }

        struct Outcome: Sendable {
            var id: Int64
            var key: String?
            var deduplicated: Bool
        }
        let outcomes = Mutex<[Outcome]>([])
        let failures = Mutex<[String]>([])
        let clients = 20, perClient = 25
        let group = DispatchGroup()
        for c in 0..<clients {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                let client = daemon.client
                for i in 0..<perClient {
                    let n = c * perClient + i
                    // Every fifth submit carries one of ten keys: 100 keyed submits, 10 jobs.
                    let key = n % 5 == 0 ? "key-\((n / 5) % 10)" : nil
                    let request = SubmitJobRequest(
                        spec: JobSpec(length: 8, parameters: .init(seed: key == nil ? nil : 7)), idempotencyKey: key)
                    do {
                        let reply = try client.post("/v1/jobs", request, as: SubmitJobResponse.self)
                        outcomes.withLock {
                            $0.append(Outcome(id: reply.job.id, key: key, deduplicated: reply.deduplicated))
                        }
                    } catch {
                        failures.withLock { $0.append("\(error)") }
                    }
                }
            }
            thread.start()
        }
        #expect(group.wait(timeout: .now() + 300) == .success)
        let results = outcomes.withLock { $0 }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0.prefix(3) })")
        #expect(results.count == clients * perClient)

        let unkeyed = results.filter { $0.key == nil }
        #expect(Set(unkeyed.map(\.id)).count == unkeyed.count, "two plain submits got the same job")
        #expect(unkeyed.allSatisfy { !$0.deduplicated })
        var byKey: [String: Set<Int64>] = [:]
        for r in results { if let key = r.key { byKey[key, default: []].insert(r.id) } }
        #expect(byKey.count == 10)
        #expect(byKey.values.allSatisfy { $0.count == 1 }, "a key mapped to several jobs: \(byKey)")
        #expect(results.filter(\.deduplicated).count == 90)

        let listed = try daemon.client.get("/v1/jobs?owner=all&limit=10000", as: JobList.self).jobs
        let expected = Set(results.map(\.id))
        #expect(listed.count == expected.count)
        #expect(Set(listed.map(\.id)) == expected)
        #expect(listed.count == 410)
        #expect(listed.allSatisfy { $0.state == .queued })
        #expect(daemon.stop() == 0)
    }

    @Test("malformed, oversized and hostile requests get a 4xx with a message; the daemon keeps serving")
    func hostileRequests() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(
            directory: dir, arguments: ["--max-length", "1000", "--start-paused"], model: tinyPipeline())
        defer { daemon.stop() }
        let s = daemon.socket

        struct Case {
            var name: String
            var bytes: [UInt8]
            var status: Int
            var message: String
        }
        let big = String(repeating: "a", count: 10 * 1024 * 1024 + 1)
        let nested = String(repeating: "[", count: 100_000)
        let cases: [Case] = [
            Case(
                name: "not JSON", bytes: httpRequest("POST", "/v1/jobs", body: "{length: 4"), status: 400,
                message: "malformed JSON"),
            Case(
                name: "empty body", bytes: httpRequest("POST", "/v1/jobs", body: ""), status: 400,
                message: "needs a JSON body"),
            Case(
                name: "unknown field", bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":4,"lenght":4}"#),
                status: 400, message: "unknown field 'lenght'"),
            Case(
                name: "unknown nested field",
                bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":4,"parameters":{"sead":1}}"#), status: 400,
                message: "unknown field 'sead'"),
            Case(
                name: "missing length", bytes: httpRequest("POST", "/v1/jobs", body: #"{"priority":1}"#), status: 400,
                message: "missing field 'length'"),
            Case(
                name: "negative length", bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":-5}"#), status: 400,
                message: "at least 1 frame"),
            Case(
                name: "absurd length", bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":1000000000000}"#),
                status: 400, message: "max 1000 frames"),
            Case(
                name: "overflowing length", bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":1e400}"#),
                status: 400, message: "malformed JSON"),
            Case(
                name: "wrong type", bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":"many"}"#), status: 400,
                message: "'length' has the wrong type"),
            Case(
                name: "negative seed",
                bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":4,"parameters":{"seed":-1}}"#), status: 400,
                message: "out of range"),
            Case(
                name: "absurd steps",
                bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":4,"parameters":{"steps":99999999}}"#),
                status: 400, message: "steps must be"),
            Case(
                name: "../ output", bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":4,"output":"../../etc"}"#),
                status: 400, message: "'..'"),
            Case(
                name: "absolute output",
                bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":4,"output":"/etc/cron.d"}"#), status: 400,
                message: "absolute path"),
            Case(
                name: "hidden output", bytes: httpRequest("POST", "/v1/jobs", body: #"{"length":4,"output":"a/.ssh"}"#),
                status: 400, message: "starts with '.'"),
            Case(
                name: "deep nesting", bytes: httpRequest("POST", "/v1/jobs", body: nested), status: 400,
                message: "malformed JSON"),
            Case(
                name: "10 MiB + 1 body", bytes: httpRequest("POST", "/v1/jobs", body: big), status: 413,
                message: "larger than 10485760 bytes"),
            Case(
                name: "lying Content-Length",
                bytes: Array("POST /v1/jobs HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n".utf8), status: 413,
                message: "larger than"),
            Case(
                name: "bad Content-Length", bytes: Array("POST /v1/jobs HTTP/1.1\r\nContent-Length: -3\r\n\r\n".utf8),
                status: 400, message: "malformed HTTP request"),
            Case(name: "unknown endpoint", bytes: httpRequest("GET", "/v1/nope"), status: 404, message: "no endpoint"),
            Case(
                name: "wrong method", bytes: httpRequest("DELETE", "/v1/jobs"), status: 405, message: "use POST or GET"),
            Case(
                name: "bad job id", bytes: httpRequest("GET", "/v1/jobs/-1"), status: 400, message: "positive integer"),
            Case(name: "unknown job", bytes: httpRequest("GET", "/v1/jobs/777"), status: 404, message: "no job 777"),
            Case(
                name: "traversal in file path", bytes: httpRequest("GET", "/v1/jobs/1/files/%2e%2e/%2e%2e/etc/passwd"),
                status: 404, message: ""),
            Case(
                name: "unknown state filter", bytes: httpRequest("GET", "/v1/jobs?state=zombie"), status: 400,
                message: "unknown state 'zombie'"),
            Case(
                name: "NUL in path", bytes: httpRequest("GET", "/v1/jobs/%00"), status: 400,
                message: "malformed request target"),
        ]
        // A job to point file requests at.
        _ = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self)
        for c in cases {
            let answer = try rawExchange(s, c.bytes)
            let (status, code, message) = parseAnswer(answer)
            if c.name == "traversal in file path" {
                // The job has not finished: no output files at all, and never a file outside.
                #expect(status == 409 || status == 404 || status == 400, "\(c.name): \(answer.prefix(300))")
                #expect(!answer.contains("root:"), "\(c.name) leaked a file")
                continue
            }
            #expect(status == c.status, "\(c.name): \(answer.prefix(400))")
            #expect(code != nil, "\(c.name): no error body in \(answer.prefix(400))")
            #expect(message?.contains(c.message) == true, "\(c.name): message '\(message ?? "nil")'")
        }
        // Garbage that is not HTTP at all, and a header bomb: the connection is refused with 400/431.
        let garbage = try rawExchange(s, Array("\u{01}\u{02}NOT HTTP\r\n\r\n".utf8))
        #expect(garbage.hasPrefix("HTTP/1.1 400"), "garbage: \(garbage.prefix(100))")
        let bomb = try rawExchange(
            s, Array(("GET /v1/version HTTP/1.1\r\nX-Big: " + String(repeating: "b", count: 200_000) + "\r\n\r\n").utf8)
        )
        #expect(bomb.hasPrefix("HTTP/1.1 431"), "header bomb: \(bomb.prefix(100))")
        #expect(parseAnswer(bomb).message?.contains("larger than griditd allows") == true)
        #expect(parseAnswer(garbage).message?.contains("malformed HTTP request") == true)
        // A client that half-closes after its request still gets the answer.
        let halfClosed = try rawExchange(s, httpRequest("GET", "/v1/version"), halfClose: true)
        #expect(halfClosed.hasPrefix("HTTP/1.1 200"), "half-closed: \(halfClosed.prefix(100))")
        // HTTP/1.0 closes after the answer unless the client asks to keep the connection alive
        // (long before the 60 s idle timeout, which would close it too).
        let http10 = try exchange(s, Array("GET /v1/version HTTP/1.0\r\n\r\n".utf8), timeout: 30)
        #expect(http10.answer.contains(" 200 ") && http10.closedByServer, "HTTP/1.0: \(http10.answer.prefix(100))")
        let keptAlive = try exchange(
            s, Array("GET /v1/version HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".utf8), timeout: 1)
        #expect(keptAlive.answer.contains(" 200 ") && !keptAlive.closedByServer, "\(keptAlive.answer.prefix(100))")
        // A malformed request pipelined after two good ones: both are answered, then the error.
        let good = "GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n"
        let pipelined = try exchange(s, Array((good + good + "\u{01}NOT HTTP\r\n\r\n").utf8), timeout: 30)
        #expect(pipelined.closedByServer)
        #expect(
            pipelined.answer.components(separatedBy: "HTTP/1.1 200").count == 3,
            "pipelined: \(pipelined.answer.prefix(600))")
        #expect(pipelined.answer.contains("HTTP/1.1 400"), "pipelined: \(pipelined.answer.suffix(300))")
        if let error = pipelined.answer.range(of: "HTTP/1.1 400"),
            let lastGood = pipelined.answer.range(of: "HTTP/1.1 200", options: .backwards)
        {
            #expect(error.lowerBound > lastGood.lowerBound, "the error answer comes last")
        }
        // Half a request, then the client vanishes.
        _ = try rawExchange(s, Array("POST /v1/jobs HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"len".utf8), timeout: 2)

        // Still serving, and nothing bad was stored.
        #expect(try daemon.client.get("/v1/version", as: VersionInfo.self).apiVersion == apiVersion)
        let jobs = try daemon.client.get("/v1/jobs?owner=all", as: JobList.self).jobs
        #expect(jobs.count == 1)
        #expect(daemon.stop() == 0)
    }

    @Test("a second daemon on the same state directory exits with a message naming the first")
    func secondDaemonRefused() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let first = try DaemonProcess(directory: dir)
        defer { first.stop() }
        let second = try runProcess(
            binaryDirectory() + "/griditd",
            ["serve", "--state-dir", first.stateDir, "--socket", dir.file("other.sock")], timeout: 60)
        #expect(second.status == 75)
        #expect(
            second.stderr.contains("another griditd (pid \(first.pid)) is using \(first.stateDir)"), "\(second.stderr)")
        // Same socket, other state directory: refused too, the first keeps its socket.
        let third = try runProcess(
            binaryDirectory() + "/griditd", ["serve", "--state-dir", dir.file("state2"), "--socket", first.socket],
            timeout: 60)
        #expect(third.status != 0)
        #expect(third.stderr.contains("already listening on \(first.socket)"), "\(third.stderr)")
        #expect(try first.client.get("/v1/version", as: VersionInfo.self).version == griditVersion)
    }

    @Test("SIGTERM exits cleanly; pause persists across restarts; --start-paused pauses")
    func shutdownAndPause() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        do {
            let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
            #expect(try daemon.client.post("/v1/queue/pause", as: QueueStatus.self).paused)
            _ = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self)
            let started = Date()
            #expect(daemon.stop() == 0)
            #expect(Date().timeIntervalSince(started) < 30)
            #expect(!FileManager.default.fileExists(atPath: daemon.socket), "the socket file stays behind")
            #expect(daemon.log.contains("griditd stopped"))
        }
        do {
            let daemon = try DaemonProcess(directory: dir)
            let queue = try daemon.client.get("/v1/queue", as: QueueStatus.self)
            #expect(queue.paused)
            #expect(queue.counts.queued == 1)
            #expect(try daemon.client.post("/v1/queue/resume", as: QueueStatus.self).paused == false)
            #expect(daemon.stop() == 0)
        }
        do {
            let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"])
            #expect(try daemon.client.get("/v1/queue", as: QueueStatus.self).paused)
            #expect(daemon.log.contains("--start-paused"))
            #expect(daemon.stop() == 0)
        }
    }

    @Test("jobs orphaned by griditd's deaths: requeued at their progress every time, never a crash, never dead")
    func orphansAtStartup() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let stateDir = dir.file("state")
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        let database = stateDir + "/jobs.sqlite"
        // A worker that claimed a job and died (no release): what kill -9 leaves behind.
        func crashWhileRunning() async throws -> Int64 {
            let store = try SQLiteJobStore(path: database)
            defer { try? store.close() }
            try await store.setPaused(false)  // the daemon below starts paused
            let claimed = try #require(try await store.claim(workerID: "dead-worker", leaseDuration: 3600, now: Date()))
            _ = try await store.saveProgress(
                id: claimed.job.id, token: claimed.token,
                progress: JobProgress(stage: .sr, gridsDone: 4, framesDone: 6), now: Date())
            return claimed.job.id
        }
        do {
            let store = try SQLiteJobStore(path: database)
            _ = try await store.submit(
                JobSubmission(params: #"{"length":16}"#, length: 16), owner: 0, maxQueued: 10, now: Date())
            _ = try await store.submit(
                JobSubmission(params: #"{"length":16}"#, length: 16), owner: 0, maxQueued: 10, now: Date())
            try store.close()
        }
        let id = try await crashWhileRunning()
        do {
            // Paused: the jobs (which name no model) must stay as recovery left them.
            let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"])
            let job = try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self)
            #expect(job.state == .queued)
            #expect(job.crashCount == 0 && job.attempt == 0)
            #expect(job.progress.stage == .sr && job.progress.framesDone == 6, "resume point kept")
            #expect(job.errors?.first?.errorClass == "interrupted")
            #expect(daemon.log.contains("not counted as a crash"))
            #expect(daemon.stop() == 0)
        }
        #expect(try await crashWhileRunning() == id)
        do {
            let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"])
            let job = try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self)
            #expect(job.state == .queued && job.crashCount == 0, "a second death of griditd is no crash either: \(job)")
            #expect(job.errors?.map(\.errorClass) == ["interrupted", "interrupted"])
            // Both jobs wait, the recovered one first in line again.
            let waiting = try daemon.client.get("/v1/jobs?state=queued", as: JobList.self).jobs
            #expect(waiting.count == 2 && waiting.first { $0.id == id }?.queuePosition == 1)
            #expect(daemon.stop() == 0)
        }
    }

    @Test("griditctl against the real daemon: output, --json and the documented exit codes")
    func griditctlExitCodes() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(
            directory: dir, arguments: ["--max-queued", "2", "--max-length", "1000", "--start-paused"],
            model: tinyPipeline())
        defer { daemon.stop() }
        let ctl = binaryDirectory() + "/griditctl"
        func run(_ args: [String], socket: String? = nil) throws -> ProcessResult {
            try runProcess(ctl, args, environment: ["GRIDIT_SOCKET": socket ?? daemon.socket, "PATH": "/usr/bin:/bin"])
        }

        let first = try run(["submit", "--length", "16", "--seed", "5", "--json"])
        #expect(first.status == 0, "\(first.stderr)")
        let job = try APICoding.decoder().decode(SubmitJobResponse.self, from: Data(first.stdout.utf8)).job
        #expect(job.spec.parameters.seed == 5 && job.length == 16)
        let second = try run(["submit", "--length", "4", "--priority", "3"])
        #expect(
            second.status == 0 && second.stdout.hasPrefix("job \(job.id + 1) queued, queue position 1"),
            "\(second.stdout)")

        let full = try run(["submit", "--length", "4"])
        #expect(full.status == 75, "\(full.stderr)")
        #expect(full.stderr.contains("the queue is full"))
        let tooLong = try run(["submit", "--length", "5000"])
        #expect(tooLong.status == 65 && tooLong.stderr.contains("max 1000 frames"), "\(tooLong.stderr)")
        let usage = try run(["submit"])
        #expect(usage.status == 2 && usage.stderr.contains("--length"), "\(usage.stderr)")
        let unknown = try run(["jobs", "show", "99"])
        #expect(unknown.status == 65 && unknown.stderr.contains("no job 99"))
        let unknownJSON = try run(["jobs", "show", "99", "--json"])
        #expect(
            try APICoding.decoder().decode(ErrorResponse.self, from: Data(unknownJSON.stdout.utf8)).error.code
                == .notFound)
        let unreachable = try run(["status"], socket: dir.file("nobody.sock"))
        #expect(
            unreachable.status == 69 && unreachable.stderr.contains("cannot reach griditd"), "\(unreachable.stderr)")

        let list = try run(["jobs", "list", "--json"])
        #expect(
            try APICoding.decoder().decode(JobList.self, from: Data(list.stdout.utf8)).jobs.map(\.id) == [
                job.id, job.id + 1,
            ])
        let table = try run(["jobs", "list"])
        #expect(table.stdout.hasPrefix("ID   STATE    PROGRESS"), "\(table.stdout)")

        #expect(try run(["jobs", "cancel", String(job.id)]).status == 0)
        let watch = try run(["jobs", "watch", String(job.id)])
        #expect(watch.status == 1, "a canceled job is not a success")
        #expect(watch.stderr.contains("job \(job.id) canceled"), "\(watch.stderr)")
        let retry = try run(["jobs", "retry", String(job.id)])
        #expect(retry.status == 0 && retry.stdout.contains("queued"), "\(retry.stdout)")

        // A watcher follows a live job and sees another client cancel it.
        let watcher = Process()
        watcher.executableURL = URL(fileURLWithPath: ctl)
        watcher.arguments = ["jobs", "watch", String(job.id + 1), "--socket", daemon.socket]
        let watchLog = dir.file("watch.log")
        _ = FileManager.default.createFile(atPath: watchLog, contents: nil)
        watcher.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: watchLog))
        watcher.standardOutput = FileHandle.nullDevice
        try watcher.run()
        let seen = Date().addingTimeInterval(30)
        while Date() < seen, !((try? String(contentsOfFile: watchLog, encoding: .utf8)) ?? "").contains("queued") {
            usleep(20_000)
        }
        _ = try daemon.client.post("/v1/jobs/\(job.id + 1)/cancel", as: JobInfo.self)
        let ended = Date().addingTimeInterval(30)
        while watcher.isRunning && Date() < ended { usleep(20_000) }
        #expect(!watcher.isRunning, "jobs watch did not end when the job was canceled")
        if watcher.isRunning { watcher.terminate() }
        watcher.waitUntilExit()
        #expect(watcher.terminationStatus == 1)
        let followed = (try? String(contentsOfFile: watchLog, encoding: .utf8)) ?? ""
        #expect(
            followed.contains("job \(job.id + 1) queued (position 1)")
                && followed.contains("job \(job.id + 1) canceled"), "\(followed)")
        #expect(try run(["jobs", "retry", String(job.id + 1)]).status == 0)

        let status = try run(["--json", "status"])
        let decoded = try APICoding.decoder().decode(DaemonStatus.self, from: Data(status.stdout.utf8))
        #expect(decoded.queue.counts.queued == 2 && decoded.yourJobs.count == 2 && decoded.engineAvailable)
        let doctor = try run(["doctor"])
        #expect(doctor.stdout.contains("ok   socket") && doctor.stdout.contains("ok   engine"), "\(doctor.stdout)")
        #expect(doctor.status == 0, "\(doctor.stdout)")
        let version = try run(["version"])
        #expect(version.status == 0 && version.stdout.contains("griditd   \(griditVersion)"))
        let models = try run(["models", "list"])
        #expect(models.status == 0 && models.stdout.contains("tiny"), "\(models.stderr)")
        #expect(daemon.stop() == 0)
    }

    /// Jobs finished before griditd starts: `outputs` maps a job's output name to its files
    /// ("{job}" in a file's text becomes the job's id).
    static func finishedJobs(
        in stateDir: String, outputs: [(name: String, files: [String: String])], finishedAt: Date
    ) async throws -> [Int64] {
        try FileManager.default.createDirectory(atPath: stateDir + "/outputs", withIntermediateDirectories: true)
        let store = try SQLiteJobStore(path: stateDir + "/jobs.sqlite")
        defer { try? store.close() }
        var ids: [Int64] = []
        for output in outputs {
            _ = try await store.submit(
                JobSubmission(params: #"{"length":4}"#, length: 4), owner: 0, maxQueued: 100, now: finishedAt)
            let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: finishedAt))
            let dir = output.name.hasPrefix("/") ? output.name : stateDir + "/outputs/" + output.name
            for (path, text) in output.files {
                let file = dir + "/" + path
                try FileManager.default.createDirectory(
                    atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try text.replacingOccurrences(of: "{job}", with: "\(claimed.job.id)")
                    .write(toFile: file, atomically: true, encoding: .utf8)
            }
            _ = try await store.complete(id: claimed.job.id, token: claimed.token, outputDir: dir, now: finishedAt)
            ids.append(claimed.job.id)
        }
        return ids
    }

    @Test("output files: listing and download; links and paths outside the folder are refused")
    func outputFiles() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let stateDir = dir.file("state")
        let ids = try await Self.finishedJobs(
            in: stateDir,
            outputs: [("job-1", ["frames/frame_00000.png": "png-bytes", "sequence.json": #"{"seed":1}"#])],
            finishedAt: Date())
        let secret = dir.file("secret.txt")
        try "do not serve".write(toFile: secret, atomically: true, encoding: .utf8)
        symlink(secret, stateDir + "/outputs/job-1/link.txt")
        symlink(dir.path, stateDir + "/outputs/job-1/up")
        let daemon = try DaemonProcess(directory: dir)
        defer { daemon.stop() }
        let list = try daemon.client.get("/v1/jobs/\(ids[0])/files", as: OutputFileList.self)
        #expect(list.files.map(\.path) == ["frames/frame_00000.png", "sequence.json"], "links are not listed")
        let target = dir.file("copy.png")
        try daemon.client.download("/v1/jobs/\(ids[0])/files/frames/frame_00000.png", to: target)
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "png-bytes")
        for hostile in [
            "link.txt", "up/secret.txt", "%2e%2e/%2e%2e/%2e%2e/secret.txt", "frames/%2e%2e/%2e%2e/job-1/sequence.json",
        ] {
            let answer = try rawExchange(daemon.socket, httpRequest("GET", "/v1/jobs/\(ids[0])/files/\(hostile)"))
            #expect(answer.hasPrefix("HTTP/1.1 4"), "\(hostile): \(answer.prefix(200))")
            #expect(!answer.contains("do not serve"))
        }
        #expect(daemon.stop() == 0)
    }

    @Test("prune deletes finished jobs and their outputs, never a folder outside the output root")
    func pruneOutputs() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let stateDir = dir.file("state")
        let outside = dir.file("elsewhere")
        let ids = try await Self.finishedJobs(
            in: stateDir,
            outputs: [
                ("old", ["a.png": "x", "sequence.json": #"{"job": {job}}"#]),
                (outside, ["keep.png": "y", "sequence.json": #"{"job": {job}}"#]),
            ],
            finishedAt: Date().addingTimeInterval(-3600))
        let daemon = try DaemonProcess(directory: dir)
        defer { daemon.stop() }
        let ctl = binaryDirectory() + "/griditctl"
        let result = try runProcess(
            ctl, ["jobs", "prune", "--older-than", "30m", "--yes", "--socket", daemon.socket, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let pruned = try APICoding.decoder().decode(PruneResponse.self, from: Data(result.stdout.utf8)).pruned
        #expect(Set(pruned.map(\.id)) == Set(ids))
        #expect(!FileManager.default.fileExists(atPath: stateDir + "/outputs/old"))
        #expect(
            FileManager.default.fileExists(atPath: outside + "/keep.png"), "a path outside the output root was deleted")
        #expect(try daemon.client.get("/v1/jobs?owner=all", as: JobList.self).jobs.isEmpty)
        #expect(daemon.stop() == 0)
    }
}
