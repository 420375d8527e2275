// griditd and its storage, with the real binaries: low disk space, a full filesystem under the
// database, and a database deleted or replaced under griditd. Small filesystems are tmpfs
// mounts where this machine allows them (root with CAP_SYS_ADMIN); elsewhere the injected
// free-space fault covers what it can.

import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A tmpfs of `size` on `path` (created); false where this machine cannot mount one.
func mountTmpfs(_ path: String, size: String) -> Bool {
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/bin/mount") else { return false }
    return (try? runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=0755", "tmpfs", path]))?.status == 0
}

func unmount(_ path: String) { _ = try? runProcess("/bin/umount", ["-l", path]) }

func freeBytes(_ path: String) -> Int64 {
    var st = statvfs()
    guard statvfs(path, &st) == 0 else { return 0 }
    return Int64(st.f_bavail) * Int64(st.f_frsize)
}

/// Fills the filesystem of `directory` with a file until `leaving` bytes are free (0: until
/// ENOSPC). Returns the file.
@discardableResult
func fill(_ directory: String, leaving: Int64 = 0) -> String {
    let path = directory + "/filler"
    let fd = open(path, O_CREAT | O_WRONLY | O_APPEND, 0o600)
    defer { close(fd) }
    var chunk = [UInt8](repeating: 0x5A, count: 1 << 20)
    while freeBytes(directory) > leaving {
        let want = Int(min(Int64(chunk.count), max(4096, freeBytes(directory) - leaving)))
        if chunk.withUnsafeMutableBytes({ write(fd, $0.baseAddress, want) }) <= 0 { break }
    }
    if leaving == 0 {  // the last blocks, a page at a time
        while chunk.withUnsafeMutableBytes({ write(fd, $0.baseAddress, 4096) }) > 0 {}
    }
    fsync(fd)
    return path
}

func status(_ daemon: DaemonProcess) throws -> DaemonStatus {
    try daemon.client.get("/v1/status", as: DaemonStatus.self)
}

/// Polls `condition` until it holds (or fails after `timeout`).
func waitUntil(_ what: String, _ daemon: DaemonProcess, timeout: Double = 120, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if (try? condition()) == true { return }
        guard daemon.process.isRunning else {
            throw TestFailure("griditd exited while waiting until \(what):\n\(daemon.log)")
        }
        usleep(50_000)
    }
    throw TestFailure("timed out waiting until \(what)\n\(daemon.log)")
}

@Suite("griditd and its storage", .serialized, .offPool)
struct StorageTests {
    @Test(
        "low disk space: a job waits queued without using attempts, status and jobs show say why; it runs once there is room"
    )
    func waitsForSpace() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let state = dir.file("state")
        let mounted = mountTmpfs(state, size: "96m")
        defer { if mounted { unmount(state) } }
        let daemon = try DaemonProcess(
            directory: dir, arguments: ["--min-free", "40M", "--db-reserve", "4M"],
            environment: mounted ? [:] : ["GRIDIT_TEST_FAULTS": "free-bytes=1000"], model: tinyPipeline())
        let filler = mounted ? fill(state, leaving: 24 << 20) : nil
        let request = SubmitJobRequest(spec: JobSpec(length: 16, parameters: .init(seed: 3)), maxAttempts: 1)
        let id = try daemon.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        try waitUntil("griditd holds the job for disk space", daemon) {
            daemon.log.contains("no job starts: waiting for disk space")
        }
        let waiting = try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self)
        #expect(waiting.state == .queued && waiting.attempt == 0 && (waiting.errors ?? []).isEmpty, "\(waiting)")
        #expect(waiting.waitingFor?.hasPrefix("waiting for disk space: ") == true, "\(waiting)")
        #expect(waiting.waitingFor?.contains("need 42 MB in \(daemon.stateDir)") == true, "\(waiting)")
        #expect(try status(daemon).notices.map(\.code) == [.waitingForDisk])
        let show = try runProcess(
            binaryDirectory() + "/griditctl", ["jobs", "show", "\(id)", "--socket", daemon.socket])
        #expect(show.stdout.contains("Waiting for") && show.stdout.contains("waiting for disk space"), "\(show.stdout)")
        let text = try runProcess(binaryDirectory() + "/griditctl", ["status", "--socket", daemon.socket])
        #expect(text.stdout.contains("NOTE:       waiting for disk space"), "\(text.stdout)")
        guard let filler else { return }  // the injected fault never ends

        try FileManager.default.removeItem(atPath: filler)
        let done = try waitForJob(daemon, id)
        #expect(done.state == .succeeded && done.attempt == 1, "\(done)")
        #expect(daemon.log.contains("jobs start again"))
        #expect(try status(daemon).notices.isEmpty)
        #expect(daemon.stop() == 0)
    }

    @Test(
        "the database's filesystem fills up under a running job: it is classified or handed back, never left running; pause, cancel and status work; it completes once there is room"
    )
    func fullDiskUnderTheDatabase() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let state = dir.file("state")
        guard mountTmpfs(state, size: "64m") else { return }  // SQLite's ENOSPC needs a real full filesystem
        defer { unmount(state) }
        let daemon = try DaemonProcess(
            directory: dir, arguments: ["--max-batch", "4", "--min-free", "1M", "--db-reserve", "8M"],
            model: tinyPipeline())
        let long = try daemon.client.post(
            "/v1/jobs", SubmitJobRequest(spec: JobSpec(length: 1000, parameters: .init(seed: 1))),
            as: SubmitJobResponse.self
        ).job.id
        // Another priority: not batched with the long job, it waits behind it.
        let waiting = try daemon.client.post(
            "/v1/jobs", SubmitJobRequest(spec: JobSpec(length: 8), priority: -1), as: SubmitJobResponse.self
        ).job.id
        try waitForJob(daemon, long) { $0.state == .running && $0.progress.gridsDone >= 1 }
        let filler = fill(state)

        // The job leaves `running` on its own (no lease has to expire, nothing counts as a crash):
        // its engine's ENOSPC is `disk_full`, or griditd hands it back to keep the space for the database.
        let left = try waitForJob(daemon, long) { $0.state != .running }
        #expect(left.crashCount == 0, "\(left)")
        #expect(left.errorClass == "disk_full" || left.state == .queued, "\(left)")
        let notices = try status(daemon).notices.map(\.code)
        #expect(notices == [.databaseDiskFull] || notices == [.waitingForDisk], "\(notices)")
        // Control commands still work.
        #expect(try daemon.client.post("/v1/queue/pause", as: QueueStatus.self).paused)
        #expect(try daemon.client.post("/v1/jobs/\(waiting)/cancel", as: JobInfo.self).state == .canceled)
        #expect(try daemon.client.post("/v1/queue/resume", as: QueueStatus.self).paused == false)

        try FileManager.default.removeItem(atPath: filler)
        let done = try waitForJob(daemon, long, timeout: 300)
        #expect(done.state == .succeeded && done.crashCount == 0, "\(done)")
        try waitUntil("the reserve is made again", daemon) {
            FileManager.default.fileExists(atPath: state + "/jobs.sqlite.reserve")
        }
        #expect(daemon.stop() == 0)
    }

    @Test(
        "the database deleted under a running griditd: nothing more starts, changes are refused, status says why; a restart refuses until --init"
    )
    func databaseDeletedWhileRunning() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"], model: tinyPipeline())
        let id = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 8), as: SubmitJobResponse.self).job.id
        #expect(unlink(daemon.stateDir + "/jobs.sqlite") == 0)
        try waitUntil("status reports the lost database", daemon) {
            try status(daemon).notices.map(\.code) == [.databaseLost]
        }
        let notice = try #require(try status(daemon).notices.first)
        #expect(
            notice.message.contains("was deleted while griditd ran") && notice.message.contains("--init"),
            "\(notice.message)")
        // Writes would be acknowledged and lost: refused, with the reason.
        let ctl = binaryDirectory() + "/griditctl"
        let submit = try runProcess(ctl, ["submit", "--length", "8", "--socket", daemon.socket])
        #expect(submit.status == 75 && submit.stderr.contains("was deleted"), "\(submit.stderr)")
        let resume = try runProcess(ctl, ["queue", "resume", "--socket", daemon.socket])
        #expect(resume.status == 75, "\(resume.stderr)")
        try waitUntil("the log says it, loudly", daemon) {
            daemon.log.contains("critical gridit.daemon: no job starts: the job database")
        }
        #expect(try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self).state == .queued)
        #expect(daemon.stop() == 0)

        // A new griditd refuses to start over silently (exit 78, EX_CONFIG), then --init does.
        let refused = try runProcess(
            binaryDirectory() + "/griditd", ["serve", "--state-dir", daemon.stateDir, "--socket", daemon.socket])
        #expect(refused.status == 78, "\(refused.stderr)")
        #expect(
            refused.stderr.contains("jobs.sqlite is missing") && refused.stderr.contains("griditd serve --init"),
            "\(refused.stderr)")
        let fresh = try DaemonProcess(directory: dir, arguments: ["--init"])
        #expect(try fresh.client.get("/v1/jobs?owner=all", as: JobList.self).jobs.isEmpty)
        #expect(fresh.log.contains("new, empty job database"), "\(fresh.log)")
        #expect(fresh.stop() == 0)
        let again = try DaemonProcess(directory: dir)
        #expect(again.stop() == 0, "the new database is the recorded one now")
    }

    @Test("the write-ahead log removed after griditd was killed: the next start refuses until --init")
    func walRemovedBetweenRuns() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"], model: tinyPipeline())
        for _ in 0..<3 {
            _ = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 8), as: SubmitJobResponse.self)
        }
        kill(daemon.pid, SIGKILL)
        daemon.process.waitUntilExit()
        #expect(unlink(daemon.stateDir + "/jobs.sqlite-wal") == 0)
        let refused = try runProcess(
            binaryDirectory() + "/griditd", ["serve", "--state-dir", daemon.stateDir, "--socket", daemon.socket])
        #expect(refused.status == 78, "\(refused.stderr)")
        #expect(refused.stderr.contains("jobs.sqlite-wal is missing"), "\(refused.stderr)")
        let accepted = try DaemonProcess(directory: dir, arguments: ["--init", "--start-paused"])
        #expect(accepted.log.contains("--init") || accepted.log.contains("ready"))
        #expect(accepted.stop() == 0)
    }
}
