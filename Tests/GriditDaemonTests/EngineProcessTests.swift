import Foundation
import GRDB
import GriditAPI
import GriditCLI
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import GriditTestSupport
import Testing

// griditd with its engine and model store, as users run it: the real binaries, a real database
// file, a real socket, the tiny random-weight pipeline (a job takes a second or two).
#if canImport(Glibc)
import Glibc
#endif

/// Polls `GET /v1/jobs/{id}` until `done` holds (or fails after `timeout`).
@discardableResult
func waitForJob(
    _ daemon: DaemonProcess, _ id: Int64, timeout: Double = 180, _ done: (JobInfo) -> Bool = { $0.state.isTerminal }
) throws -> JobInfo {
    let deadline = Date().addingTimeInterval(timeout)
    var last: JobInfo?
    while Date() < deadline {
        if let job = try? daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self) {
            last = job
            if done(job) { return job }
        }
        guard daemon.process.isRunning else {
            throw TestFailure("griditd exited while waiting for job \(id):\n\(daemon.log)")
        }
        usleep(50_000)
    }
    throw TestFailure(
        "job \(id) did not get there within \(timeout) s (last: \(String(describing: last)))\n\(daemon.log)")
}

/// Waits until `path` exists (a test fault's marker), or fails.
func waitForFile(_ path: String, _ daemon: DaemonProcess, timeout: Double = 180) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while !FileManager.default.fileExists(atPath: path) {
        guard Date() < deadline, daemon.process.isRunning else {
            throw TestFailure("\(path) did not appear:\n\(daemon.log)")
        }
        usleep(20_000)
    }
}

/// The SHA-256 of every frame of an output folder, from its sequence.json.
func frameDigests(_ output: String) throws -> [String] {
    let data = try Data(contentsOf: URL(fileURLWithPath: output + "/sequence.json"))
    let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let files = try #require(object["files"] as? [[String: Any]])
    return files.compactMap { $0["sha256"] as? String }
}

func entries(_ path: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
}

@Suite("griditd with the engine", .serialized, .offPool)
struct EngineProcessTests {
    /// 64 frames: 5 stage-1 grids, stage-2 batches of 4 frames (`--max-batch 4`).
    static let request = SubmitJobRequest(spec: JobSpec(length: 64, parameters: .init(seed: 11)))
    static let arguments = ["--max-batch", "4"]

    @Test(
        "kill -9 during stage 1 and during stage 2: the job resumes and completes once, with the frames of an uninterrupted run"
    )
    func killAndResume() throws {
        let expected: [String]
        do {
            let dir = TemporaryDirectory()
            defer { dir.remove() }
            let daemon = try DaemonProcess(directory: dir, arguments: Self.arguments, model: tinyPipeline())
            let id = try daemon.client.post("/v1/jobs", Self.request, as: SubmitJobResponse.self).job.id
            let done = try waitForJob(daemon, id)
            #expect(done.state == .succeeded, "\(done)")
            expected = try frameDigests(try #require(done.outputDir))
            #expect(expected.count == 64)
            #expect(daemon.stop() == 0)
        }
        for point in ["grid:3", "sr:10"] {
            let dir = TemporaryDirectory()
            defer { dir.remove() }
            let daemon = try DaemonProcess(
                directory: dir, arguments: Self.arguments, environment: ["GRIDIT_TEST_FAULTS": "pause-at=\(point)"],
                model: tinyPipeline())
            let id = try daemon.client.post("/v1/jobs", Self.request, as: SubmitJobResponse.self).job.id
            try waitForFile(daemon.stateDir + "/test-paused", daemon)
            kill(daemon.pid, SIGKILL)
            daemon.process.waitUntilExit()
            // What the crash left: the durable units before the paused step, nothing of it.
            let work = (daemon.stateDir as NSString).appendingPathComponent("work/\(id)")
            let grids = entries(work + "/grids").filter { $0.hasSuffix(".npy") }.count
            let frames = entries(work + "/frames").filter { $0.hasSuffix(".png") }.count
            if point == "grid:3" {
                #expect(grids == 2, "grids 1 and 2 done when grid 3 began: \(grids)")
            } else {
                #expect(frames >= 8 && frames < 64, "frames 1-8 done when frame 10's batch began: \(frames)")
            }

            let restarted = try DaemonProcess(directory: dir, arguments: Self.arguments)
            let job = try waitForJob(restarted, id)
            #expect(job.state == .succeeded, "\(point): \(job)")
            #expect(
                job.crashCount == 0 && job.attempt == 1, "\(point): griditd's death counts no crash, no attempt: \(job)"
            )
            #expect(
                try frameDigests(try #require(job.outputDir)) == expected,
                "\(point): frames differ from the uninterrupted run")
            #expect(entries(daemon.stateDir + "/outputs") == ["job-\(id)"], "one output, no leftovers")
            // The work folder goes right after the success is recorded.
            let gone = Date().addingTimeInterval(30)
            while FileManager.default.fileExists(atPath: work) && Date() < gone { usleep(20_000) }
            #expect(!FileManager.default.fileExists(atPath: work), "the work folder stays after the success")
            #expect(restarted.log.contains("not counted as a crash"))
            #expect(restarted.stop() == 0)
        }
    }

    @Test("SIGTERM checkpoints a running job and hands it back; the next griditd finishes it with the same frames")
    func gracefulStop() throws {
        let request = SubmitJobRequest(spec: JobSpec(length: 300, parameters: .init(seed: 21)))
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: Self.arguments, model: tinyPipeline())
        let stopped = try daemon.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        try waitForJob(daemon, stopped) { $0.state == .running && $0.progress.framesDone >= 8 }
        let started = Date()
        #expect(daemon.stop() == 0)
        #expect(Date().timeIntervalSince(started) < 30, "griditd stops at the next step")
        #expect(daemon.log.contains("job \(stopped) checkpointed and handed back for shutdown"), "\(daemon.log)")

        let again = try DaemonProcess(directory: dir, arguments: Self.arguments)
        let handedBack = try again.client.get("/v1/jobs/\(stopped)", as: JobInfo.self)
        #expect(handedBack.crashCount == 0 && handedBack.progress.framesDone >= 8, "\(handedBack)")
        // The same job again from scratch, for the bytes an uninterrupted run writes.
        let fresh = try again.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        let resumed = try waitForJob(again, stopped)
        let whole = try waitForJob(again, fresh)
        #expect(resumed.state == .succeeded && whole.state == .succeeded)
        #expect(try frameDigests(try #require(resumed.outputDir)) == (try frameDigests(try #require(whole.outputDir))))
        #expect(again.stop() == 0)
    }

    @Test(
        "no space left on the output filesystem: the job fails with disk_full, the database stays intact, a retry succeeds once there is room"
    )
    func diskFull() async throws {
        // A real full filesystem where this machine lets us mount one; the engine's injected
        // ENOSPC below the output folder in any case.
        try await checkDiskFull(tmpfs: false)
        let canMount = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/bin/mount")
        if canMount { try await checkDiskFull(tmpfs: true) }
    }

    private func checkDiskFull(tmpfs: Bool) async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let outputs = dir.file("state/outputs")
        try FileManager.default.createDirectory(atPath: outputs, withIntermediateDirectories: true)
        // 64 KiB: a 40-frame output needs at least 40 blocks.
        let mounted =
            tmpfs
            && (try? runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", outputs]))?.status
                == 0
        if tmpfs && !mounted { return }  // a container without CAP_SYS_ADMIN: the injected case covers it
        defer { if mounted { _ = try? runProcess("/bin/umount", [outputs]) } }
        let environment = mounted ? [:] : ["GRIDIT_TEST_FAULTS": "disk-full-under=\(outputs)"]
        let daemon = try DaemonProcess(directory: dir, environment: environment, model: tinyPipeline())
        let request = SubmitJobRequest(spec: JobSpec(length: 40, parameters: .init(seed: 5)), maxAttempts: 1)
        let id = try daemon.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        let failed = try waitForJob(daemon, id)
        let how = mounted ? "tmpfs" : "injected"
        #expect(failed.state == .failed && failed.errorClass == "disk_full", "\(how): \(failed.errorMessage ?? "")")
        #expect(
            failed.errorMessage?.contains("No space left on device") == true, "\(how): \(failed.errorMessage ?? "")")
        #expect(
            entries(outputs).filter { $0.contains("job-\(id)") }.isEmpty,
            "\(how): a partial output is left: \(entries(outputs))")
        #expect(daemon.stop() == 0)

        // The database is intact, with the failure in the job's history.
        do {
            let database = try StateDatabase(path: daemon.stateDir + "/jobs.sqlite")
            defer { try? database.close() }
            #expect(try database.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") } == "ok")
            let errors = try await SQLiteJobStore(database: database).errors(id: id)
            #expect(errors.map(\.errorClass) == ["disk_full"])
        }

        // Room again: the same job, retried, succeeds.
        if mounted { #expect(try runProcess("/bin/umount", [outputs]).status == 0) }
        let again = try DaemonProcess(directory: dir)
        _ = try again.client.post("/v1/jobs/\(id)/retry", as: JobInfo.self)
        let job = try waitForJob(again, id)
        #expect(job.state == .succeeded, "\(how): \(job)")
        #expect(try frameDigests(try #require(job.outputDir)).count == 40)
        #expect(again.stop() == 0)
    }

    @Test("a job that crashes the engine twice goes dead; the job batched with it survives and runs; griditd stays up")
    func poisonJob() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        // The engine's worker process aborts whenever it is handed job 1.
        let daemon = try DaemonProcess(
            directory: dir, arguments: ["--start-paused"], environment: ["GRIDIT_TEST_FAULTS": "crash-engine=1"],
            model: tinyPipeline())
        for _ in 0..<2 {
            _ = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 8), as: SubmitJobResponse.self)
        }
        _ = try daemon.client.post("/v1/queue/resume", as: QueueStatus.self)  // 1 and 2 start as one batch
        let poison = try waitForJob(daemon, 1)
        #expect(poison.state == .dead && poison.crashCount == 2, "\(poison)")
        #expect(poison.errorMessage?.contains("crashed or stalled its worker 2 times") == true)
        // abort() raises SIGABRT; Swift's backtracer may end the process with SIGILL after printing.
        #expect(
            poison.errorMessage?.contains("the engine crashed (its worker was killed by SIG") == true,
            "\(poison.errorMessage ?? "")")
        let next = try waitForJob(daemon, 2)
        #expect(next.state == .succeeded && next.crashCount == 1, "crashed once with job 1, then ran alone: \(next)")
        let status = try daemon.client.get("/v1/status", as: DaemonStatus.self)
        #expect(status.pid == daemon.pid && (status.worker?.starts ?? 0) >= 3, "griditd itself never died: \(status)")
        #expect(daemon.log.contains("the engine worker died"), "\(daemon.log)")
        #expect(daemon.stop() == 0)
    }

    @Test("griditctl submit to a class-conditional model: refused without --class, run with it, the class in the job")
    func classConditionalSubmit() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let classcond = URL(fileURLWithPath: tinyPipeline()).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("classcond/pipeline.json").path
        let daemon = try DaemonProcess(directory: dir, model: classcond)
        defer { daemon.stop() }
        let ctl = binaryDirectory() + "/griditctl"
        let environment = ["GRIDIT_SOCKET": daemon.socket, "PATH": "/usr/bin:/bin"]
        let refused = try runProcess(ctl, ["submit", "--length", "6", "--seed", "9"], environment: environment)
        #expect(refused.status == 65 && refused.stderr.contains("--class 0...2"), "\(refused.stderr)")
        let result = try runProcess(
            ctl, ["submit", "--length", "6", "--seed", "9", "--class", "1", "--cfg-scale", "3", "--wait"],
            environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        let output = daemon.stateDir + "/outputs/job-1"
        #expect(result.stdout == output + "\n", "\(result.stdout)")
        #expect(entries(output + "/frames").count == 6)
        let job = try daemon.client.get("/v1/jobs/1", as: JobInfo.self)
        #expect(job.spec.parameters.classLabel == 1 && job.spec.parameters.cfgScale == 3)
        let show = try runProcess(ctl, ["jobs", "show", "1"], environment: environment)
        #expect(show.stdout.contains("cfg_scale=3") && show.stdout.contains("class_label=1"), "\(show.stdout)")
        #expect(daemon.stop() == 0)
    }

    @Test("griditctl submit --wait --out DIR: the job's progress, the frames copied, and where they are")
    func submitWaitOut() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        let ctl = binaryDirectory() + "/griditctl"
        let environment = ["GRIDIT_SOCKET": daemon.socket, "PATH": "/usr/bin:/bin"]
        let out = dir.file("mine")
        let result = try runProcess(
            ctl, ["submit", "--length", "24", "--seed", "3", "--wait", "--out", out], environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        let output = daemon.stateDir + "/outputs/job-1"
        #expect(result.stdout == output + "\n", "stdout names the output folder: \(result.stdout)")
        #expect(
            result.stderr.contains("job 1 submitted (seed 3)") && result.stderr.contains("job 1 succeeded: \(output)"))
        #expect(result.stderr.contains("frames copied to \(out)"), "\(result.stderr)")
        let frames = entries(out + "/frames")
        #expect(frames.count == 24 && frames.first == "frame_00000.png")
        for name in frames {
            #expect(
                FileManager.default.contents(atPath: out + "/frames/" + name)
                    == FileManager.default.contents(atPath: output + "/frames/" + name))
        }
        #expect(FileManager.default.fileExists(atPath: out + "/sequence.json"))
        let show = try runProcess(ctl, ["jobs", "show", "1"], environment: environment)
        #expect(
            show.stdout.contains("succeeded") && show.stdout.contains("Output") && show.stdout.contains(output),
            "\(show.stdout)")
        #expect(daemon.stop() == 0)
    }

    @Test(
        "models over the socket: import, list, show, tag, rm, gc; gc keeps a running job's model, and a loaded one's weights"
    )
    func modelsRoundTrip() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let ctl = binaryDirectory() + "/griditctl"
        var daemon = try DaemonProcess(
            directory: dir, arguments: Self.arguments, environment: ["GRIDIT_TEST_FAULTS": "pause-at=sr:5"])
        func run(_ args: [String]) throws -> ProcessResult {
            try runProcess(ctl, args + ["--socket", daemon.socket], environment: ["PATH": "/usr/bin:/bin"])
        }
        let none = try run(["submit", "--length", "8"])
        #expect(none.status == 65 && none.stderr.contains("griditctl models import"), "\(none.stderr)")
        let imported = try run(["models", "import", tinyPipeline(), "--name", "tiny:v1", "--link", "copy"])
        #expect(imported.status == 0 && imported.stdout.contains("tiny:v1"), "\(imported.stderr)")
        let list = try run(["models", "list"])
        #expect(list.stdout.contains("tiny") && list.stdout.contains("v1"), "\(list.stdout)")
        let show = try run(["models", "show", "tiny:v1", "--json"])
        let digest = try #require(
            (try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any])?["digest"] as? String)
        #expect(try run(["models", "tag", "tiny:v1", "tiny:latest"]).status == 0)

        // A job holds the model (paused at frame 5); its tags go and gc runs.
        let job = try daemon.client.post("/v1/jobs", Self.request, as: SubmitJobResponse.self).job
        #expect(job.pipelineDigest == digest, "the default model resolves to the only one")
        try waitForFile(daemon.stateDir + "/test-paused", daemon)
        #expect(try run(["models", "rm", "tiny:v1"]).status == 0)
        #expect(try run(["models", "rm", "tiny:latest"]).status == 0)
        let gc = try run(["models", "gc", "--json"])
        #expect(gc.status == 0, "\(gc.stderr)")
        let collected = try APICoding.decoder().decode(ModelGCResult.self, from: Data(gc.stdout.utf8))
        #expect(
            collected.removedManifests.isEmpty && collected.removedBlobs.isEmpty,
            "the running job's model was collected: \(collected)")
        let ps = try run(["models", "ps"])
        #expect(ps.stdout.contains(String(digest.dropFirst(7).prefix(12))), "\(ps.stdout)")

        // griditd dies; the job resumes on the version no tag names and completes.
        kill(daemon.pid, SIGKILL)
        daemon.process.waitUntilExit()
        daemon = try DaemonProcess(directory: dir, arguments: Self.arguments)
        #expect(try waitForJob(daemon, job.id).state == .succeeded)
        // Now nothing references the version, but the model stays loaded a while: its weights stay.
        let second = try APICoding.decoder().decode(
            ModelGCResult.self, from: Data(try run(["models", "gc", "--json"]).stdout.utf8))
        #expect(second.removedManifests == [digest], "\(second)")
        #expect(second.keptMapped.count == 2, "the two weight files are mapped: \(second)")
        let empty = try run(["models", "list", "--json"])
        #expect(try APICoding.decoder().decode(ModelListResult.self, from: Data(empty.stdout.utf8)).models.isEmpty)
        #expect(daemon.stop() == 0)
    }

    @Test("a loaded model is unmapped once idle past its keep-alive")
    func keepAlive() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--keep-alive", "1"], model: tinyPipeline())
        defer { daemon.stop() }
        let id = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 8), as: SubmitJobResponse.self).job.id
        #expect(try waitForJob(daemon, id).state == .succeeded)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !(try daemon.client.get("/v1/status", as: DaemonStatus.self).loadedModels.isEmpty) {
            usleep(100_000)
        }
        #expect(try daemon.client.get("/v1/status", as: DaemonStatus.self).loadedModels.isEmpty)
        #expect(daemon.log.contains("unloaded an idle model"), "\(daemon.log)")
        #expect(daemon.stop() == 0)
    }

    @Test("doctor runs the store's checks as griditd's user and fails until a model is imported")
    func doctor() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir)
        defer { daemon.stop() }
        let ctl = binaryDirectory() + "/griditctl"
        func doctor() throws -> ProcessResult {
            try runProcess(ctl, ["doctor", "--socket", daemon.socket], environment: ["PATH": "/usr/bin:/bin"])
        }
        let empty = try doctor()
        #expect(empty.status == 1, "\(empty.stdout)")
        #expect(empty.stdout.contains("ok   store   state directory: \(daemon.stateDir) exists"), "\(empty.stdout)")
        #expect(empty.stdout.contains("FAIL models  the model store holds no model"))
        #expect(empty.stdout.contains("fix: griditctl models import"))
        let imported = try runProcess(
            ctl, ["models", "import", tinyPipeline(), "--name", "tiny:v1", "--link", "copy", "--socket", daemon.socket])
        #expect(imported.status == 0, "\(imported.stderr)")
        let ready = try doctor()
        #expect(ready.status == 0 && ready.stdout.contains("ok   models  tiny:v1"), "\(ready.stdout)")
        #expect(daemon.stop() == 0)
    }
}
