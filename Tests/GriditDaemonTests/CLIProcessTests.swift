// griditctl as people use it, with the real binaries, database and socket (issue 17, the CLI as
// people use it): Ctrl-C while waiting, fetching later, progress lines in CI logs, negative numbers,
// `jobs rm`, the owner's name and the model's tag, shell completions.

import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("griditctl with griditd", .serialized, .offPool)
struct CLIProcessTests {
    static let griditctl = binaryDirectory() + "/griditctl"

    @Test("Ctrl-C during submit --wait leaves the job queued and says how to follow, fetch or cancel it")
    func interruptedWait() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"], model: tinyPipeline())
        defer { daemon.stop() }
        let (process, stderr) = try Self.start(["submit", "--length", "8", "--wait"], daemon, dir)
        let deadline = Date().addingTimeInterval(30)
        while !stderr().contains("job 1 queued"), process.isRunning, Date() < deadline { usleep(20_000) }
        kill(process.processIdentifier, SIGINT)
        Self.wait(process)
        #expect(process.terminationReason == .exit && process.terminationStatus == 130, "\(stderr())")
        for text in [
            "job 1; it keeps running in griditd", "griditctl jobs watch 1", "griditctl jobs cp 1 DIR",
            "griditctl jobs cancel 1",
        ] {
            #expect(stderr().contains(text), "\(stderr())")
        }
        #expect(try daemon.client.get("/v1/jobs/1", as: JobInfo.self).state == .queued)
    }

    /// griditctl running in the background; its stderr so far.
    static func start(
        _ arguments: [String], _ daemon: DaemonProcess, _ dir: TemporaryDirectory
    ) throws -> (Process, stderr: () -> String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: griditctl)
        process.arguments = arguments
        process.environment = daemon.cliEnvironment
        let errPath = dir.file("griditctl-\(UUID().uuidString.prefix(8)).err")
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        return (process, { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" })
    }

    /// Its end, within 180 s (then SIGKILL, and the test fails on its status).
    static func wait(_ process: Process) {
        let end = Date().addingTimeInterval(180)
        while process.isRunning, Date() < end { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    @Test(
        "jobs watch --out and jobs cp fetch the frames later; without a terminal the wait prints progress lines; jobs rm deletes"
    )
    func fetchLaterAndRemove() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"], model: tinyPipeline())
        defer { daemon.stop() }
        let environment = daemon.cliEnvironment
        func griditctl(_ arguments: [String], input: String = "") throws -> ProcessResult {
            try runProcess(Self.griditctl, arguments, environment: environment, timeout: 180, input: input)
        }

        // Negative numbers parse, or are refused saying why (never "Missing value").
        let submitted = try griditctl(["submit", "--length", "8", "--priority", "-3", "--seed", "5"])
        #expect(submitted.status == 0 && submitted.stdout.hasPrefix("job 1 queued"), "\(submitted)")
        let refused = try griditctl(["submit", "--length", "8", "--seed", "-1"])
        #expect(refused.status == ExitStatus.usage, "\(refused)")
        #expect(refused.stderr.contains("'-1'") && refused.stderr.contains("whole number"), "\(refused.stderr)")
        #expect(!refused.stderr.contains("Missing value"))
        #expect(try daemon.client.get("/v1/jobs/1", as: JobInfo.self).priority == -3)

        // A queued job cannot be removed, only canceled.
        let live = try griditctl(["jobs", "rm", "1", "--yes"])
        #expect(live.status == ExitStatus.badInput && live.stderr.contains("jobs cancel 1"), "\(live)")

        // Watching from before the job starts, so that every step passes by.
        let frames = dir.file("watched")
        let (watch, watched) = try Self.start(
            ["jobs", "watch", "1", "--out", frames, "--progress-interval", "0.001"], daemon, dir)
        let deadline = Date().addingTimeInterval(30)
        while !watched().contains("job 1 queued"), watch.isRunning, Date() < deadline { usleep(20_000) }
        _ = try daemon.client.post("/v1/queue/resume", as: QueueStatus.self)
        Self.wait(watch)
        #expect(watch.terminationStatus == 0, "\(watched())")
        #expect(watched().contains("job 1  grid "), "progress lines without a terminal: \(watched())")
        #expect(watched().contains("frames copied to \(frames)"))
        let names = try FileManager.default.contentsOfDirectory(atPath: frames + "/frames")
        #expect(names.count == 8, "\(names)")
        let copied = dir.file("copied")
        #expect(try griditctl(["jobs", "cp", "1", copied]).status == 0)
        #expect(FileManager.default.fileExists(atPath: copied + "/frames/frame_00007.png"))
        // An output folder removed behind griditd's back: an error, not an empty copy.
        let folder = daemon.stateDir + "/outputs/job-1"
        try FileManager.default.moveItem(atPath: folder, toPath: folder + ".aside")
        let gone = try griditctl(["jobs", "cp", "1", dir.file("gone")])
        #expect(gone.status != 0 && gone.stderr.contains("output folder outputs/job-1 is gone"), "\(gone)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("gone")))
        try FileManager.default.moveItem(atPath: folder + ".aside", toPath: folder)

        // The owner's user name and the model's tag.
        let me = getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? String(getuid())
        #expect(try griditctl(["jobs", "list"]).stdout.contains(" \(me) "))
        let shown = try griditctl(["jobs", "show", "1"]).stdout
        #expect(shown.contains("tiny:latest (sha256:") && shown.contains("\(me) (uid \(getuid()))"), "\(shown)")

        // jobs rm: asks (no terminal: refused without --yes), then deletes the row and the folder.
        let job = try daemon.client.get("/v1/jobs/1", as: JobInfo.self)
        let output = try #require(job.outputDir)
        let unconfirmed = try griditctl(["jobs", "rm", "1"], input: "y\n")
        #expect(unconfirmed.status == ExitStatus.usage && unconfirmed.stderr.contains("pass --yes"))
        let removed = try griditctl(["jobs", "rm", "1", "--yes"])
        #expect(removed.status == 0 && removed.stdout.hasPrefix("removed job 1 (succeeded) and "), "\(removed)")
        #expect((try? daemon.client.get("/v1/jobs/1", as: JobInfo.self)) == nil)
        #expect(!FileManager.default.fileExists(atPath: output))
        #expect(daemon.log.contains("removed job 1 (succeeded; jobs rm by uid \(getuid())), removed "), "\(daemon.log)")
        #expect(try griditctl(["jobs", "rm", "1", "--yes"]).status == ExitStatus.badInput)
    }

    @Test("submit --out checks its folder again when it copies: a file or a link put there meanwhile is left alone")
    func outFolderCheckedAtCopy() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"], model: tinyPipeline())
        defer { daemon.stop() }
        /// `submit --out out` that waits, `meanwhile` while it waits, then the job runs.
        func submit(_ out: String, meanwhile: () throws -> Void) throws -> (status: Int32, stderr: String) {
            _ = try daemon.client.post("/v1/queue/pause", as: QueueStatus.self)
            let (process, stderr) = try Self.start(["submit", "--length", "8", "--out", out], daemon, dir)
            let deadline = Date().addingTimeInterval(60)
            while !stderr().contains("queued"), process.isRunning, Date() < deadline { usleep(20_000) }
            try meanwhile()
            _ = try daemon.client.post("/v1/queue/resume", as: QueueStatus.self)
            Self.wait(process)
            return (process.terminationStatus, stderr())
        }
        let refusal = "is not a new folder nor an empty folder of yours any more; the job's files were not copied"
        // A file put in the folder after the submit: not mixed with the job's files.
        let filled = dir.file("filled")
        let first = try submit(filled) {
            try FileManager.default.createDirectory(atPath: filled, withIntermediateDirectories: true)
            try "mine".write(toFile: filled + "/notes.txt", atomically: true, encoding: .utf8)
        }
        #expect(first.status == ExitStatus.failure && first.stderr.contains(refusal), "\(first.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: filled) == ["notes.txt"])
        // A link to another folder put in its place: nothing is written through it.
        let elsewhere = dir.file("elsewhere"), linked = dir.file("linked")
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        let second = try submit(linked) { #expect(symlink(elsewhere, linked) == 0) }
        #expect(second.status == ExitStatus.failure && second.stderr.contains(refusal), "\(second.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere).isEmpty)
        // Nothing half copied stays behind; the frames are still there to copy.
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: dir.path)).contains { $0.contains(".partial-") })
        let empty = dir.file("empty")
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let copy = try runProcess(Self.griditctl, ["jobs", "cp", "2", empty], environment: daemon.cliEnvironment)
        #expect(copy.status == 0, "\(copy)")
        #expect(FileManager.default.fileExists(atPath: empty + "/frames/frame_00007.png"))
        // Under umask 077 the copy is the caller's alone, its files too.
        let own = dir.file("own")
        let strict = try runProcess(
            "/bin/sh", ["-c", "umask 077 && exec \"$0\" jobs cp 2 \"$1\"", Self.griditctl, own],
            environment: daemon.cliEnvironment)
        #expect(strict.status == 0, "\(strict)")
        for file in ["", "/sequence.json", "/frames", "/frames/frame_00007.png"] {
            let mode = try FileManager.default.attributesOfItem(atPath: own + file)[.posixPermissions] as? Int
            #expect(mode.map { $0 & 0o077 == 0 } == true, "\(file): \(String(mode ?? -1, radix: 8))")
        }
    }

    @Test("systemd/install.sh installs bash, zsh and fish completions of both commands")
    func completions() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var environment = ProcessInfo.processInfo.environment
        environment["DESTDIR"] = dir.file("root")
        let install = try runProcess(
            repositoryRoot().appendingPathComponent("systemd/install.sh").path, ["--bin-dir", binaryDirectory()],
            environment: environment)
        #expect(install.status == 0, "\(install)")
        let share = dir.file("root/usr/local/share")
        for file in [
            "bash-completion/completions/griditctl", "zsh/site-functions/_griditctl",
            "fish/vendor_completions.d/griditctl.fish", "bash-completion/completions/griditd",
        ] {
            let text = (try? String(contentsOfFile: share + "/" + file, encoding: .utf8)) ?? ""
            #expect(text.contains("griditctl") || text.contains("griditd"), "\(file)")
        }
        let bash = try String(contentsOfFile: share + "/bash-completion/completions/griditctl", encoding: .utf8)
        #expect(bash.contains("submit") && bash.contains("--output-name"), "completions know the commands")
    }
}

@Suite("griditctl submit --dry-run", .serialized, .offPool)
struct DryRunProcessTests {
    @Test("submit --dry-run prints griditd's plan and estimate; a job over --max-job-time is refused with its estimate")
    func dryRunAndLimit() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        // The tiny pipeline's 8-frame job is estimated at about 6e-05 s.
        let daemon = try DaemonProcess(
            directory: dir, arguments: ["--start-paused", "--max-job-time", "0.00001s"], model: tinyPipeline())
        defer { daemon.stop() }
        func griditctl(_ arguments: [String]) throws -> ProcessResult {
            try runProcess(CLIProcessTests.griditctl, arguments, environment: daemon.cliEnvironment, input: "")
        }
        let dry = try griditctl(["submit", "--length", "8", "--dry-run"])
        #expect(dry.status == 0, "\(dry)")
        for text in [
            "grids: 1", "stage 1: ", "stage 2: ", "model:    sha256:", "estimate: ", "a submit would be refused",
        ] {
            #expect(dry.stdout.contains(text), "\(dry.stdout)")
        }
        let json = try griditctl(["submit", "--length", "8", "--dry-run", "--json"])
        let plan = try APICoding.decode(JobPlanResponse.self, from: Data(json.stdout.utf8))
        #expect(plan.estimatedSeconds > 0 && plan.limitSeconds == 0.00001)
        #expect(try daemon.client.get("/v1/jobs?limit=10", as: JobList.self).jobs.isEmpty, "a dry run makes no job")

        let refused = try griditctl(["submit", "--length", "8"])
        #expect(refused.status == ExitStatus.badInput, "\(refused)")
        #expect(
            refused.stderr.contains("estimated compute is ") && refused.stderr.contains("--max-job-time"),
            "\(refused.stderr)")
        #expect(try daemon.client.get("/v1/jobs?limit=10", as: JobList.self).jobs.isEmpty)
    }
}
