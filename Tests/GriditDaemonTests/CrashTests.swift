// Deaths of griditd and of its engine worker, with the real binaries: a daemon that dies (kill -9,
// OOM kill, power loss) never counts against its jobs; an engine that crashes does, and only
// against the jobs it was running.

import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("griditd and worker crashes", .serialized, .offPool)
struct CrashTests {
    static let arguments = ["--max-batch", "4"]

    @Test("kill -9 of griditd, again and again during two batched jobs: never dead, no crash counted, the same frames")
    func daemonKillsNeverKillJobs() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let requests = [11, 12].map { SubmitJobRequest(spec: JobSpec(length: 64, parameters: .init(seed: $0))) }
        // Each start pauses the engine at its first step of grid 3 (a resumed job, with two grids
        // done, gets there at once): griditd is killed there, four times in a row.
        let faults = ["GRIDIT_TEST_FAULTS": "pause-at=grid:3"]
        var daemon = try DaemonProcess(
            directory: dir, arguments: Self.arguments, environment: faults, model: tinyPipeline())
        let ids = try requests.map { try daemon.client.post("/v1/jobs", $0, as: SubmitJobResponse.self).job.id }
        for _ in 0..<4 {
            try waitForFile(daemon.stateDir + "/test-paused", daemon)
            kill(daemon.pid, SIGKILL)
            daemon.process.waitUntilExit()
            try FileManager.default.removeItem(atPath: daemon.stateDir + "/test-paused")
            daemon = try DaemonProcess(directory: dir, arguments: Self.arguments, environment: faults)
            for id in ids {
                let job = try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self)
                #expect(job.state != .dead && job.crashCount == 0, "\(job)")
            }
        }
        #expect(daemon.log.contains("not counted as a crash"), "\(daemon.log)")
        try waitForFile(daemon.stateDir + "/test-paused", daemon)
        kill(daemon.pid, SIGKILL)
        daemon.process.waitUntilExit()
        daemon = try DaemonProcess(directory: dir, arguments: Self.arguments)
        var outputs: [String] = []
        for id in ids {
            let job = try waitForJob(daemon, id)
            #expect(job.state == .succeeded && job.crashCount == 0 && job.attempt == 1, "\(job)")
            outputs.append(try #require(job.outputDir))
        }
        // The bytes of uninterrupted runs of the same requests.
        let again = try requests.map { try daemon.client.post("/v1/jobs", $0, as: SubmitJobResponse.self).job.id }
        for (id, output) in zip(again, outputs) {
            let whole = try waitForJob(daemon, id)
            #expect(whole.state == .succeeded)
            #expect(try frameDigests(output) == (try frameDigests(try #require(whole.outputDir))))
        }
        #expect(daemon.stop() == 0)
    }

    /// The engine worker's pid, from `status`.
    static func workerPID(_ daemon: DaemonProcess) throws -> Int32 {
        try #require(try daemon.client.get("/v1/status", as: DaemonStatus.self).worker?.pid)
    }

    @Test(
        "the engine worker killed by a crash signal counts against its job, by SIGKILL from outside not; griditd answers throughout"
    )
    func workerSignals() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let request = SubmitJobRequest(spec: JobSpec(length: 64, parameters: .init(seed: 11)))
        // A long lease: its stall watchdog (half the lease) must not take the paused worker for a
        // hung one while a loaded machine is slow to see the pause (CI saw it fire at 60 s).
        var daemon = try DaemonProcess(
            directory: dir, arguments: Self.arguments + ["--lease", "600"],
            // Swift's crash handler, given a SIGSEGV sent with kill() (no faulting instruction to
            // run again), prints a backtrace and lets the paused worker go on: without it the signal
            // ends the worker as a real fault would.
            environment: ["GRIDIT_TEST_FAULTS": "pause-at=sr:5", "SWIFT_BACKTRACE": "enable=no"],
            model: tinyPipeline())
        let marker = daemon.stateDir + "/test-paused"
        let id = try daemon.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id

        // Killed from outside (not the OOM killer): requeued as if nothing happened.
        try waitForFile(marker, daemon)
        try FileManager.default.removeItem(atPath: marker)
        kill(try Self.workerPID(daemon), SIGKILL)
        var job = try waitForJob(daemon, id) { !($0.errors ?? []).isEmpty }
        let outside = try #require(job.errors?.last)
        if !outside.message.contains("cannot be ruled out") {  // where no OOM count is readable, it counts
            #expect(job.crashCount == 0 && outside.errorClass == "interrupted", "\(job)")
            #expect(outside.message.contains("killed from outside (SIGKILL"), "\(outside.message)")
        }
        let before = job.crashCount

        // A crash signal: counted against the job.
        try waitForFile(marker, daemon)
        try FileManager.default.removeItem(atPath: marker)
        let crashed = try Self.workerPID(daemon)
        kill(crashed, SIGSEGV)
        job = try waitForJob(daemon, id) { $0.crashCount > before }
        #expect(job.state != .dead || before == 1, "\(job)")
        let last = try #require(job.errors?.last)
        #expect(
            last.errorClass == "worker_crashed"
                && last.message.contains("the engine crashed (its worker was killed by SIG"), "\(last)")
        let status = try daemon.client.get("/v1/status", as: DaemonStatus.self)
        #expect(status.pid == daemon.pid, "griditd itself is the same process")
        #expect(status.worker?.lastExit?.contains("killed by SIG") == true, "\(String(describing: status.worker))")

        // Without the fault, the job finishes with the bytes of an uninterrupted run.
        try waitForFile(marker, daemon)
        kill(daemon.pid, SIGKILL)
        daemon.process.waitUntilExit()
        daemon = try DaemonProcess(directory: dir, arguments: Self.arguments)
        let done = try waitForJob(daemon, id)
        #expect(done.state == .succeeded && done.crashCount == job.crashCount, "\(done)")
        let whole = try waitForJob(
            daemon, try daemon.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id)
        #expect(try frameDigests(try #require(done.outputDir)) == (try frameDigests(try #require(whole.outputDir))))
        #expect(daemon.stop() == 0)
    }

    @Test(
        "a stopped (SIGSTOP) worker: griditd answers; a cancel kills it after --stop-grace; the job batched with it resumes without a crash"
    )
    func cancelStoppedWorker() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(
            directory: dir, arguments: Self.arguments + ["--stop-grace", "2", "--start-paused"], model: tinyPipeline())
        let ids = try [1, 2].map { seed in
            try daemon.client.post(
                "/v1/jobs", SubmitJobRequest(spec: JobSpec(length: 1000, parameters: .init(seed: UInt64(seed)))),
                as: SubmitJobResponse.self
            ).job.id
        }
        _ = try daemon.client.post("/v1/queue/resume", as: QueueStatus.self)
        try waitForJob(daemon, ids[1]) { $0.state == .running && $0.progress.gridsDone >= 1 }
        let worker = try Self.workerPID(daemon)
        kill(worker, SIGSTOP)
        defer { kill(worker, SIGKILL) }
        // The API does not wait for the engine.
        #expect(try daemon.client.get("/v1/status", as: DaemonStatus.self).worker?.state == "running")
        #expect(try daemon.client.post("/v1/jobs/\(ids[0])/cancel", as: JobInfo.self).cancelRequested)
        let canceled = try waitForJob(daemon, ids[0])
        #expect(canceled.state == .canceled && canceled.crashCount == 0, "\(canceled)")
        let other = try waitForJob(daemon, ids[1])
        #expect(other.state == .succeeded && other.crashCount == 0 && other.attempt == 1, "\(other)")
        #expect(
            other.errors?.contains { $0.errorClass == "interrupted" && $0.message.contains("did not stop") } == true,
            "\(other)")
        #expect(daemon.log.contains("killing the engine worker"), "\(daemon.log)")
        #expect(daemon.stop() == 0)
    }

    /// griditd with `--lease 8` and a long job (the tiny pipeline's longest) that has begun.
    static func runningLongJob(_ dir: TemporaryDirectory, seed: UInt64) throws -> (DaemonProcess, Int64) {
        let daemon = try DaemonProcess(directory: dir, arguments: arguments + ["--lease", "8"], model: tinyPipeline())
        let id = try daemon.client.post(
            "/v1/jobs", SubmitJobRequest(spec: JobSpec(length: 1000, parameters: .init(seed: seed))),
            as: SubmitJobResponse.self
        ).job.id
        try waitForJob(daemon, id) { $0.state == .running && $0.progress.gridsDone >= 1 }
        return (daemon, id)
    }

    @Test(
        "a worker that makes no progress for its stall time is killed and the stall counts; the job then runs alone and succeeds"
    )
    func stalledWorker() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        // --lease 8: a running batch that reports nothing for 4 s (half the lease) is stalled.
        let (daemon, id) = try Self.runningLongJob(dir, seed: 4)
        kill(try Self.workerPID(daemon), SIGSTOP)
        let stalled = try waitForJob(daemon, id) { $0.crashCount == 1 }
        #expect(stalled.errors?.last?.message.contains("made no progress") == true, "\(stalled)")
        let done = try waitForJob(daemon, id)
        #expect(done.state == .succeeded && done.crashCount == 1, "\(done)")
        #expect(daemon.stop() == 0)
    }

    @Test("griditd stopped (SIGSTOP) past its jobs' leases and continued: nothing counts as a crash")
    func daemonStoppedAndContinued() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        // --lease 8: stopped for 20 s, the lease is long gone and the reaper (every 15 s) is due.
        let (daemon, id) = try Self.runningLongJob(dir, seed: 8)
        kill(daemon.pid, SIGSTOP)
        sleep(20)
        kill(daemon.pid, SIGCONT)
        let done = try waitForJob(daemon, id)
        #expect(done.state == .succeeded && done.crashCount == 0, "\(done)")
        #expect(daemon.stop() == 0)
    }

    @Test("the engine worker stopped and continued (SIGSTOP, SIGCONT: a debugger, a frozen host) lives on")
    func workerStoppedAndContinued() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: Self.arguments, model: tinyPipeline())
        let first = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 8), as: SubmitJobResponse.self).job.id
        #expect(try waitForJob(daemon, first).state == .succeeded)
        let pid = try Self.workerPID(daemon)
        // A stop interrupts the worker's blocking calls: each sees EINTR once continued, and
        // libdispatch's epoll wait then needs its descriptor (the worker once closed it at start).
        for _ in 0..<3 {
            kill(pid, SIGSTOP)
            usleep(200_000)
            kill(pid, SIGCONT)
            usleep(200_000)
        }
        let id = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 8), as: SubmitJobResponse.self).job.id
        let job = try waitForJob(daemon, id)
        #expect(job.state == .succeeded && job.crashCount == 0, "\(job)")
        let worker = try #require(try daemon.client.get("/v1/status", as: DaemonStatus.self).worker)
        #expect(worker.pid == pid && worker.starts == 1 && worker.lastExit == nil, "\(worker)\n\(daemon.log)")
        #expect(daemon.stop() == 0)
    }
}
