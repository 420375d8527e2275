import ArgumentParser
import Foundation
import GriditAPI
import GriditJobSpec
import GriditTestSupport
import Testing

@testable import GriditCLI

/// griditd as a test sees it: canned replies by "METHOD path", the requests it was sent.
final class FakeDaemon: ControlClient, @unchecked Sendable {
    // @unchecked: `sent` is only touched under `lock`.
    private let lock = NSLock()
    private var sent: [(method: String, path: String, body: Data?)] = []
    let replies: [String: (status: Int, body: Data)]

    init(_ replies: [String: (status: Int, body: Data)]) { self.replies = replies }

    var requests: [(method: String, path: String, body: Data?)] { lock.withLock { sent } }

    func send(_ method: String, _ path: String, body: Data?) throws(ConnectionError) -> HTTPReply {
        lock.withLock { sent.append((method, path, body)) }
        guard let reply = replies["\(method) \(path)"] else {
            throw ConnectionError(kind: .unreachable, message: "no reply for \(method) \(path)")
        }
        return HTTPReply(status: reply.status, headers: [:], body: reply.body)
    }

    func stream(_ path: String, onLine: (Data) -> Bool) throws(ConnectionError) -> HTTPReply {
        let reply = try send("GET", path, body: nil)
        for line in reply.body.split(separator: 0x0A) where !onLine(Data(line)) { break }
        return HTTPReply(status: reply.status, headers: [:], body: Data())
    }

    func download(_ path: String, to file: String) throws(ConnectionError) -> HTTPReply {
        let reply = try send("GET", path, body: nil)
        FileManager.default.createFile(atPath: file, contents: reply.body)
        return reply
    }
}

/// What a command printed.
final class Printed: @unchecked Sendable {
    // @unchecked: the strings are only touched under `lock`.
    private let lock = NSLock()
    private var out = "", err = ""
    var stdout: String { lock.withLock { out } }
    var stderr: String { lock.withLock { err } }
    var output: Output {
        Output(
            stdout: { text in self.lock.withLock { self.out += text } },
            stderr: { text in self.lock.withLock { self.err += text } }, stderrIsTerminal: false)
    }
}

@Suite("griditctl")
struct CLITests {
    @Test("global options may come before the command, as with docker")
    func globalOptionsMove() {
        #expect(
            Griditctl.moveGlobalOptions(["--socket", "/s", "--json", "jobs", "list"]) == [
                "jobs", "list", "--socket", "/s", "--json",
            ])
        #expect(Griditctl.moveGlobalOptions(["--socket=/s", "status"]) == ["status", "--socket=/s"])
        #expect(Griditctl.moveGlobalOptions(["jobs", "list", "--json"]) == ["jobs", "list", "--json"])
        #expect(Griditctl.moveGlobalOptions(["--json"]) == ["--json"])
    }

    @Test("commands parse; bad input is a usage error naming the option")
    func parsing() throws {
        let submit = try Griditctl.parseAsRoot([
            "submit", "--length", "128", "--model", "m:v1", "--seed", "7", "--steps", "ddim50", "--wait",
        ])
        let s = try #require(submit as? Submit)
        #expect(s.length == 128 && s.model == "m:v1" && s.sampling.seed == 7 && s.sampling.steps == "ddim50" && s.wait)
        // Every parameter a model can use has its flag, class-conditional ones included.
        let classcond = try #require(
            try Griditctl.parseAsRoot([
                "submit", "--length", "4", "--class", "2", "--cfg-scale", "4", "--jump-length", "3", "--jump-count",
                "2",
            ]) as? Submit)
        #expect(
            classcond.spec
                == JobSpec(length: 4, parameters: .init(jumpLength: 3, jumpCount: 2, classLabel: 2, cfgScale: 4)))
        #expect(throws: (any Error).self) {
            try Griditctl.parseAsRoot(["submit", "--length", "4", "--sampler", "euler"])
        }
        let interval = try #require(
            try Griditctl.parseAsRoot(["submit", "--length", "4", "--cfg-scale", "2", "--cfg-interval", "700:999"])
                as? Submit)
        #expect(interval.spec.parameters.cfgInterval == GuidanceInterval(lower: 700, upper: 999))
        for bad in ["700", "999:700", "700:1000"] {
            #expect(throws: (any Error).self, "\(bad)") {
                try Griditctl.parseAsRoot(["submit", "--length", "4", "--cfg-interval", bad])
            }
        }
        #expect(throws: (any Error).self) { try Griditctl.parseAsRoot(["submit"]) }
        #expect(throws: (any Error).self) { try Griditctl.parseAsRoot(["submit", "--length", "0"]) }
        #expect(throws: (any Error).self) { try Griditctl.parseAsRoot(["submit", "--length", "4", "--seed", "-1"]) }
        #expect(throws: (any Error).self) { try Griditctl.parseAsRoot(["jobs", "list", "--state", "zombie"]) }
        #expect(throws: (any Error).self) { try Griditctl.parseAsRoot(["models", "verify"]) }
        #expect(throws: (any Error).self) { try Griditctl.parseAsRoot(["jobs", "prune", "--older-than", "soon"]) }
        #expect(throws: (any Error).self) { try Griditctl.parseAsRoot(["jobs", "prune", "--older-than", "1e400s"]) }
        // Non-finite or out-of-range numbers are usage errors, not a crash in the JSON encoder.
        for eta in ["nan", "inf", "-0.5", "2"] {
            #expect(throws: (any Error).self, "--eta \(eta)") {
                try Griditctl.parseAsRoot(["submit", "--length", "4", "--eta", eta])
            }
        }
        #expect(try Griditctl.parseAsRoot(["submit", "--length", "4", "--eta", "0.5"]) is Submit)
        let cooled = try #require(
            try Griditctl.parseAsRoot(["submit", "--length", "4", "--sr-temperature", "0.5", "--sr-noise", "shared"])
                as? Submit)
        #expect(cooled.spec.parameters.srTemperature == 0.5 && cooled.spec.parameters.srNoise == .shared)
        #expect(try Griditctl.parseAsRoot(["jobs"]) is Jobs.List, "jobs lists by default")
        #expect(try Griditctl.parseAsRoot(["jobs", "ls", "--state", "queued,running"]) is Jobs.List)
        #expect(try Griditctl.parseAsRoot(["models", "verify", "--all"]) is Models.Verify)
        let usage = Griditctl.exitCode(for: ValidationError("x"))
        #expect(usage == .validationFailure)
    }

    @Test("the exit codes are documented in the help")
    func helpDocumentsExitCodes() {
        let help = Griditctl.helpMessage()
        for line in [
            "69  griditd cannot be reached", "75  the queue is full", "77  permission denied",
            "65  the daemon refused the input", "2   bad command line",
        ] {
            #expect(help.contains(line), "help lacks '\(line)'")
        }
    }

    @Test("API error codes map to the documented exit codes")
    func exitCodes() {
        #expect(ExitStatus.forAPIError(.queueFull) == 75)
        #expect(ExitStatus.forAPIError(.forbidden) == 77)
        #expect(ExitStatus.forAPIError(.badRequest) == 65)
        #expect(ExitStatus.forAPIError(.notFound) == 65)
        #expect(ExitStatus.forAPIError(.internalError) == 70)
        let unreachable = GriditClient.cliError(ConnectionError(kind: .unreachable, message: "x"))
        #expect(unreachable.status == 69)
        // A file of the caller's that cannot be written (a full disk): not "griditd unreachable".
        let local = GriditClient.cliError(ConnectionError(kind: .localFile, message: "saving x: ENOSPC"))
        #expect(local.status == ExitStatus.failure && local.code == "local")
    }

    @Test("ages and durations")
    func ages() {
        #expect(
            parseDuration("90s") == 90 && parseDuration("30m") == 1800 && parseDuration("12h") == 43_200
                && parseDuration("7d") == 604_800)
        #expect(parseDuration("15") == 15 && parseDuration("soon") == nil && parseDuration("-3d") == nil)
        #expect(
            Rendering.duration(5) == "5s" && Rendering.duration(245) == "4m05s" && Rendering.duration(7800) == "2h10m")
        let now = Date(timeIntervalSince1970: 1_000_000)
        #expect(Rendering.ago(now.addingTimeInterval(-300), now: now) == "5 minutes ago")
        #expect(Rendering.ago(now.addingTimeInterval(-1), now: now) == "just now")
    }

    @Test("a job's parameters as key=value, an interval as its flag writes it")
    func parameterList() {
        let p = JobSpec.Parameters(
            seed: 3, eta: 0.5, noSR: true, cfgScale: 2, cfgInterval: .init(lower: 700, upper: 999))
        #expect(Rendering.parameterList(p) == "cfg_interval=700:999 cfg_scale=2 eta=0.5 no_sr")
    }

    @Test("nodes list: each host's state (up, draining, gone), last seen and running jobs; * marks the one answering")
    func nodesTable() throws {
        let now = Date(timeIntervalSince1970: 1_000_000)
        func node(
            _ id: String, _ host: String, seen: Double, draining: Bool, gone: Bool, current: Bool = false
        ) -> NodeInfo {
            NodeInfo(
                id: id, hostname: host, version: "1.0", startedAt: now, lastSeen: now.addingTimeInterval(-seen),
                draining: draining, runningJobs: current ? 1 : 0, current: current, gone: gone)
        }
        let table = Rendering.nodesTable(
            [
                node("aaaaaaaa-0000", "gpu1", seen: 1, draining: false, gone: false, current: true),
                node("bbbbbbbb-0000", "gpu2", seen: 2, draining: true, gone: false),
                node("cccccccc-0000", "gpu3", seen: 600, draining: true, gone: true),
            ], now: now)
        let lines = table.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        #expect(lines[0].prefix(4) == ["NODE", "HOSTNAME", "VERSION", "STATE"], "\(table)")
        #expect(lines[1].prefix(5) == ["aaaaaaaa", "*", "gpu1", "1.0", "up"], "\(table)")
        #expect(lines[2].prefix(4) == ["bbbbbbbb", "gpu2", "1.0", "draining"], "\(table)")
        #expect(lines[3].prefix(5) == ["cccccccc", "gpu3", "1.0", "gone,", "drained"], "\(table)")
        #expect(table.contains("10 minutes ago"), "\(table)")
        // A griditd that predates `gone` leaves it out of its answer.
        let old =
            #"{"id":"d","hostname":"h","version":"0.9","started_at":"2026-01-01T00:00:00Z","last_seen":"2026-01-01T00:00:00Z","draining":false,"running_jobs":0,"current":false}"#
        #expect(try APICoding.decoder().decode(NodeInfo.self, from: Data(old.utf8)).gone == false)
    }

    @Test("the progress bar shows stage, grid, step, frame and ETA within the terminal width")
    func progressBar() {
        let step = StepProgress(
            stage: .sr, grid: 3, grids: 8, step: 40, steps: 250, frame: 64, frames: 128, etaSeconds: 80)
        let line = Rendering.progressLine(jobID: 12, step: step, width: 120)
        #expect(line.hasPrefix("job 12  sr  grid 3/8  step 40/250  frame 64/128  ETA 1m20s  ["))
        #expect(line.contains("###############---------------]"), "half done: \(line)")
        #expect(Rendering.progressLine(jobID: 12, step: step, width: 40).count <= 39)
        // The engine's share of the work done (both stages) fills the bar when it is given.
        var early = step
        early.fraction = 0.1
        #expect(Rendering.progressLine(jobID: 12, step: early, width: 120).contains("[###---------------------------]"))
    }

    static let now = Date(timeIntervalSince1970: 2_000_000)

    static func job(_ id: Int64, _ spec: JobSpec, state: JobState = .queued) -> JobInfo {
        JobInfo(
            id: id, state: state, ownerUID: 1000, priority: 0, spec: spec, pipelineDigest: nil, idempotencyKey: nil,
            createdAt: now, updatedAt: now, startedAt: nil, finishedAt: nil, attempt: 0, maxAttempts: 3, crashCount: 0,
            cancelRequested: false, queuePosition: 1, notBefore: now, progress: JobProgress(), errorClass: nil,
            errorMessage: nil, outputDir: state == .succeeded ? "/state/outputs/job-\(id)" : nil)
    }

    @Test("submit to a class-conditional model, without a daemon: the spec sent, the answer printed")
    func submitClassConditional() throws {
        let spec = JobSpec(length: 6, model: "cc:latest", parameters: .init(seed: 9, classLabel: 1, cfgScale: 3))
        let answer = SubmitJobResponse(job: Self.job(4, spec), deduplicated: false, instanceID: "i")
        let daemon = FakeDaemon(["POST /v1/jobs": (201, APICoding.encode(answer))])
        let command = try #require(
            try Griditctl.parseAsRoot([
                "submit", "--length", "6", "--model", "cc:latest", "--seed", "9", "--class", "1", "--cfg-scale", "3",
            ]) as? Submit)
        let printed = Printed()
        try command.run(client: GriditClient(daemon), output: printed.output)
        let sent = try #require(daemon.requests.first)
        #expect(sent.method == "POST" && sent.path == "/v1/jobs")
        #expect(try APICoding.decode(SubmitJobRequest.self, from: try #require(sent.body)).spec == spec)
        #expect(printed.stdout == "job 4 queued, queue position 1\n")
    }

    @Test("jobs list and show render the daemon's answer; its errors become exit codes")
    func jobsAgainstAFakeDaemon() throws {
        let spec = JobSpec(length: 8, parameters: .init(seed: 2, sampler: .ddim, classLabel: 0))
        let list = JobList(jobs: [Self.job(3, spec)])
        let refusal = ErrorResponse(error: APIError(.notFound, "no job 9"))
        let daemon = FakeDaemon([
            "GET /v1/jobs?limit=100": (200, APICoding.encode(list)),
            "GET /v1/jobs/3": (200, APICoding.encode(Self.job(3, spec, state: .succeeded))),
            "GET /v1/jobs/9": (404, APICoding.encode(refusal)),
        ])
        let client = GriditClient(daemon)
        let printed = Printed()
        try #require(try Griditctl.parseAsRoot(["jobs", "list"]) as? Jobs.List).run(
            client: client, output: printed.output)
        #expect(printed.stdout.contains("3    queued") && printed.stdout.contains("PROGRESS"), "\(printed.stdout)")
        let shown = Printed()
        try #require(try Griditctl.parseAsRoot(["jobs", "show", "3"]) as? Jobs.Show).run(
            client: client, output: shown.output)
        #expect(
            shown.stdout.contains("class_label=0 sampler=ddim") && shown.stdout.contains("/state/outputs/job-3"),
            "\(shown.stdout)")
        let missing = try #require(try Griditctl.parseAsRoot(["jobs", "show", "9"]) as? Jobs.Show)
        let error = #expect(throws: CLIError.self) { try missing.run(client: client, output: Printed().output) }
        #expect(error?.status == ExitStatus.badInput && error?.message == "no job 9")
    }

    @Test("jobs table")
    func jobsTable() {
        let now = Date(timeIntervalSince1970: 2_000_000)
        let job = JobInfo(
            id: 7, state: .queued, ownerUID: 1000, priority: 2, spec: JobSpec(length: 128, parameters: .init(seed: 1)),
            pipelineDigest: nil, idempotencyKey: nil, createdAt: now.addingTimeInterval(-120),
            updatedAt: now, startedAt: nil, finishedAt: nil, attempt: 0, maxAttempts: 3, crashCount: 0,
            cancelRequested: false,
            queuePosition: 1, notBefore: now, progress: JobProgress(stage: .grid, gridsDone: 0, framesDone: 0),
            errorClass: nil, errorMessage: nil, outputDir: nil)
        #expect(
            Rendering.jobsTable([job], now: now) == """
                ID   STATE    PROGRESS   POSITION   PRIORITY   LENGTH   OWNER   CREATED         HOST
                7    queued   -          1          2          128      1000    2 minutes ago   -

                """)
        // Stage 2 counts frames against the length, unless official mode writes more than that.
        var running = job
        running.state = .running
        running.progress = JobProgress(stage: .sr, gridsDone: 3, framesDone: 12)
        #expect(Rendering.progress(running) == "sr 12/128 frames")
        running.spec.length = 10
        running.progress.framesDone = 24
        #expect(Rendering.progress(running) == "sr 24 frames")
        running.progress.stage = .grid
        #expect(Rendering.progress(running) == "grid 3 done")
    }
}

@Suite("griditctl jobs prune")
struct PruneConfirmationTests {
    static let reply = (
        status: 200, body: Data(#"{"pruned":[{"id":3,"state":"succeeded","output_dir":"/s/outputs/job-3"}]}"#.utf8)
    )

    func prune(_ arguments: [String]) throws -> Jobs.Prune {
        try #require(try Griditctl.parseAsRoot(["jobs", "prune"] + arguments) as? Jobs.Prune)
    }

    @Test("without a terminal and without --yes nothing is sent; the error names --yes (exit 2)")
    func noTerminal() throws {
        let daemon = FakeDaemon(["POST /v1/jobs/prune": Self.reply])
        let printed = Printed()
        #expect {
            try prune(["--older-than", "1h"]).run(client: GriditClient(daemon), output: printed.output)
        } throws: { ($0 as? CLIError)?.status == ExitStatus.usage && "\($0)".contains("--yes") }
        #expect(daemon.requests.isEmpty)
    }

    @Test("on a terminal it asks (the warning names the age and the outputs); no means nothing is sent")
    func asks() throws {
        let daemon = FakeDaemon(["POST /v1/jobs/prune": Self.reply])
        let printed = Printed()
        let asked = Printed()
        var output = printed.output
        output.confirm = { question in
            asked.output.stdout(question)
            return false
        }
        try prune(["--older-than", "2h"]).run(client: GriditClient(daemon), output: output)
        #expect(asked.stdout.contains("finished more than 2h ago") && asked.stdout.contains("output folders"))
        #expect(asked.stdout.hasSuffix("[y/N] "))
        #expect(daemon.requests.isEmpty && printed.stderr == "nothing pruned\n")

        output.confirm = { _ in true }
        try prune(["--older-than", "2h"]).run(client: GriditClient(daemon), output: output)
        #expect(daemon.requests.count == 1 && printed.stdout == "pruned 1 job: 3\n")
        // --yes (or -y, -f) asks nothing.
        for flag in ["--yes", "-y", "-f", "--force"] {
            try prune([flag]).run(client: GriditClient(daemon), output: printed.output)
        }
        #expect(daemon.requests.count == 5)
    }
}

@Suite("griditctl as people use it")
struct HabitsTests {
    @Test("negative numbers parse; a bad one is refused saying what is wrong, not \"Missing value\"")
    func negativeNumbers() throws {
        let submit = try #require(
            try Griditctl.parseAsRoot(["submit", "--length", "4", "--priority", "-3"]) as? Submit)
        #expect(submit.priority == -3)
        for (arguments, says) in [
            (["--seed", "-1"], "whole number"), (["--cfg-scale", "-1"], "a scale from 0 to 100"),
            (["--eta", "-0.5"], "eta"),
            (["--sr-temperature", "-0.5"], "sr_temperature must be in 0...1"), (["--sr-noise", "same"], "shared"),
        ] {
            do {
                _ = try Griditctl.parseAsRoot(["submit", "--length", "4"] + arguments)
                Issue.record("\(arguments) parsed")
            } catch {
                let message = Griditctl.fullMessage(for: error)
                #expect(message.contains(says) && !message.contains("Missing value"), "\(message)")
            }
        }
    }

    @Test("--output-name is the server's folder, --out the local copy; --output still works, with a warning")
    func outputNames() throws {
        let named = try #require(
            try Griditctl.parseAsRoot(["submit", "--length", "4", "--output-name", "run1", "--out", "/tmp/x-none"])
                as? Submit)
        #expect(named.spec.output == "run1" && named.follow.out == "/tmp/x-none")
        let old = try #require(try Griditctl.parseAsRoot(["submit", "--length", "4", "--output", "run1"]) as? Submit)
        #expect(old.spec.output == "run1")
        let answer = SubmitJobResponse(job: CLITests.job(2, old.spec), deduplicated: false, instanceID: "i")
        let printed = Printed()
        try old.run(
            client: GriditClient(FakeDaemon(["POST /v1/jobs": (201, APICoding.encode(answer))])),
            output: printed.output)
        #expect(printed.stderr.contains("--output is deprecated") && printed.stderr.contains("--output-name"))
        #expect(!Griditctl.helpMessage(for: Submit.self).contains("--output <"), "the old spelling is hidden")
    }

    @Test("jobs rm removes (after confirmation), jobs cancel does not answer to rm; jobs cp fetches")
    func remove() throws {
        #expect(try Griditctl.parseAsRoot(["jobs", "rm", "3"]) is Jobs.Remove)
        #expect(try Griditctl.parseAsRoot(["jobs", "cp", "3", "/tmp/x-none"]) is Jobs.Fetch)
        #expect(try Griditctl.parseAsRoot(["jobs", "watch", "3", "--out", "/tmp/x-none"]) is Jobs.Watch)
        let reply = (
            status: 200, body: Data(#"{"pruned":[{"id":3,"state":"failed","output_dir":"outputs/job-3"}]}"#.utf8)
        )
        let daemon = FakeDaemon(["DELETE /v1/jobs/3": reply, "DELETE /v1/jobs/3?keep_outputs=true": reply])
        let printed = Printed()
        let rm = try #require(try Griditctl.parseAsRoot(["jobs", "rm", "3"]) as? Jobs.Remove)
        #expect { try rm.run(client: GriditClient(daemon), output: printed.output) } throws: {
            ($0 as? CLIError)?.status == ExitStatus.usage
        }
        #expect(daemon.requests.isEmpty)
        var output = printed.output
        output.confirm = { $0.contains("remove job 3 and its output folder") }
        try rm.run(client: GriditClient(daemon), output: output)
        #expect(printed.stdout == "removed job 3 (failed) and outputs/job-3\n")
        let keep = try #require(try Griditctl.parseAsRoot(["jobs", "rm", "3", "-y", "--keep-outputs"]) as? Jobs.Remove)
        try keep.run(client: GriditClient(daemon), output: printed.output)
        #expect(daemon.requests.map(\.method) == ["DELETE", "DELETE"])
        #expect(daemon.requests.last?.path == "/v1/jobs/3?keep_outputs=true")
    }

    @Test("without a terminal the wait prints a progress line at a steady interval")
    func progressLines() throws {
        let spec = JobSpec(length: 8, parameters: .init(seed: 1))
        var events = [JobEventMessage(kind: .job, job: CLITests.job(5, spec, state: .running))]
        for step in 1...10 {
            let progress = StepProgress(stage: .grid, grid: 1, grids: 1, step: step, steps: 10, frame: 0, frames: 8)
            events.append(JobEventMessage(kind: .step, step: progress))
        }
        events.append(JobEventMessage(kind: .job, job: CLITests.job(5, spec, state: .succeeded)))
        let body = events.map { String(decoding: APICoding.encode($0), as: UTF8.self) }.joined(separator: "\n")
        let daemon = FakeDaemon(["GET /v1/jobs/5/events": (200, Data(body.utf8))])
        let printed = Printed()
        // A clock that moves 4 s per look: with a 10 s interval, steps 1, 4, 7 and 10 print.
        let clock = Printed()
        var follower = JobFollower(client: GriditClient(daemon), json: false, output: printed.output)
        follower.now = {
            clock.output.stdout("x")
            return Date(timeIntervalSince1970: Double(clock.stdout.count) * 4)
        }
        _ = try follower.follow(5)
        let lines = printed.stderr.split(separator: "\n").filter { $0.hasPrefix("job 5  grid") }
        #expect(lines.count == 4, "\(printed.stderr)")
        #expect(lines.first?.contains("step 1/10") == true)
    }

    @Test("jobs list names the owner, jobs show the model's tags")
    func ownerAndTag() throws {
        var job = CLITests.job(3, JobSpec(length: 8), state: .succeeded)
        job.pipelineDigest = "sha256:abc"
        #expect(
            Rendering.jobsTable([job], now: CLITests.now, userName: { $0 == 1000 ? "alice" : nil }).contains(" alice "))
        let models =
            #"{"result":{"models":[{"name":"md","tag":"v1","digest":"sha256:abc","size":1,"created":"2026-01-01T00:00:00Z","loaded":false,"jobs":0},{"name":"other","tag":"latest","digest":"sha256:def","size":1,"created":"2026-01-01T00:00:00Z","loaded":false,"jobs":0}]}}"#
        let daemon = FakeDaemon([
            "GET /v1/jobs/3": (200, APICoding.encode(job)), "GET /v1/models": (200, Data(models.utf8)),
        ])
        let printed = Printed()
        var output = printed.output
        output.userName = { _ in "alice" }
        try #require(try Griditctl.parseAsRoot(["jobs", "show", "3"]) as? Jobs.Show).run(
            client: GriditClient(daemon), output: output)
        #expect(printed.stdout.contains("md:v1 (sha256:abc)") && !printed.stdout.contains("other:latest"))
        #expect(printed.stdout.contains("alice (uid 1000)"), "\(printed.stdout)")
    }

    @Test("submit --dry-run sends the request to /v1/jobs/plan and prints the plan and the estimate against the limit")
    func dryRun() throws {
        let plan = JobPlanResponse(
            plan: "grids: 8\n", estimatedSeconds: 7200, limitSeconds: 3600, pipelineDigest: "sha256:abc")
        let daemon = FakeDaemon(["POST /v1/jobs/plan": (200, APICoding.encode(plan))])
        let printed = Printed()
        try #require(try Griditctl.parseAsRoot(["submit", "--length", "128", "--dry-run"]) as? Submit).run(
            client: GriditClient(daemon), output: printed.output)
        #expect(daemon.requests.map(\.path) == ["/v1/jobs/plan"])
        #expect(
            printed.stdout == """
                grids: 8
                model:    sha256:abc
                estimate: 2h00m at griditd's nominal rate; over its limit of 1h00m per job: a submit would be refused

                """)
        #expect(throws: (any Error).self) {
            try Griditctl.parseAsRoot(["submit", "--length", "4", "--dry-run", "--wait"])
        }
    }

    @Test("models import of a folder means its pipeline.json, named after the folder")
    func importFolder() throws {
        let root = repositoryRoot().appendingPathComponent("models/moving-digits").path
        let command = try #require(try Griditctl.parseAsRoot(["models", "import", root]) as? Models.Import)
        #expect(command.source.path == root + "/pipeline.json" && command.source.name == "moving-digits:latest")
        let named = try #require(
            try Griditctl.parseAsRoot(["models", "import", "/x/b.tar", "--name", "m:v2"]) as? Models.Import)
        #expect(named.source.path == "/x/b.tar" && named.source.name == "m:v2")
    }

    @Test("every griditctl command in the README's code blocks parses as written")
    func readmeCommands() throws {
        let readme = try String(
            contentsOf: repositoryRoot().appendingPathComponent("README.md"), encoding: .utf8)
        var inBlock = false
        var checked = 0
        for line in readme.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") {
                inBlock.toggle()
                continue
            }
            guard inBlock else { continue }
            // Each griditctl command of the line, up to a comment, a pipe or the next command.
            let words = line.split(separator: " ").map(String.init)
            for (i, word) in words.enumerated() where word.hasSuffix("griditctl") && words[..<i].last != "--product" {
                var arguments: [String] = []
                for next in words[(i + 1)...] {
                    if ["#", "&&", "||", ";", "|", "&"].contains(next) || next.hasPrefix("#") { break }
                    if next.hasSuffix(";") {
                        arguments.append(String(next.dropLast()))
                        break
                    }
                    arguments.append(next)
                }
                do {
                    _ = try Griditctl.parseAsRoot(Griditctl.moveGlobalOptions(arguments))
                } catch {
                    Issue.record(
                        "README: `griditctl \(arguments.joined(separator: " "))`: \(Griditctl.fullMessage(for: error))")
                }
                checked += 1
            }
        }
        #expect(checked >= 5)
    }
}
