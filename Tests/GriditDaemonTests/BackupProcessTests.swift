// Moving and restoring a state directory with the real binaries, database and socket (issue 17,
// backup and move): output paths stored relative to the state directory, `griditd backup` while
// griditd runs, `griditd restore` after the database is lost.

import Foundation
import GRDB
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

@Suite("backup and move", .serialized, .offPool)
struct BackupProcessTests {
    static func outputDirColumn(_ stateDir: String, _ id: Int64) throws -> String? {
        let queue = try DatabaseQueue(path: stateDir + "/jobs.sqlite")
        defer { try? queue.close() }
        return try queue.read {
            try String.fetchOne($0, sql: "SELECT output_dir FROM job WHERE id = ?", arguments: [id])
        }
    }

    @Test(
        "a moved state directory keeps its outputs (relative paths, and old absolute ones); backup while running, restore after a loss"
    )
    func moveBackupRestore() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let griditd = binaryDirectory() + "/griditd"
        var daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        let request = SubmitJobRequest(spec: JobSpec(length: 8, parameters: .init(seed: 9)))
        let id = try daemon.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        let done = try waitForJob(daemon, id)
        #expect(done.state == .succeeded && done.outputDir == daemon.stateDir + "/outputs/job-\(id)")
        #expect(try Self.outputDirColumn(daemon.stateDir, id) == "outputs/job-\(id)")

        // A consistent copy while griditd runs.
        let backup = dir.file("backup.sqlite")
        let copied = try runProcess(griditd, ["backup", backup, "--state-dir", daemon.stateDir])
        #expect(copied.status == 0, "\(copied.stderr)")
        #expect(copied.stdout.contains("1 jobs"), "\(copied.stdout)")
        for suffix in ["-wal", "-shm"] {
            #expect(!FileManager.default.fileExists(atPath: backup + suffix), "one file, nothing beside it: \(suffix)")
        }
        #expect(
            try runProcess(griditd, ["backup", backup, "--state-dir", daemon.stateDir]).stderr.contains(
                "exists already"))
        #expect(daemon.stop() == 0)

        // Move the state directory; a row an older griditd wrote holds the old absolute path.
        let old = daemon.stateDir
        let moved = dir.file("moved-state")
        #expect(rename(old, moved) == 0)
        let queue = try DatabaseQueue(path: moved + "/jobs.sqlite")
        try queue.write {
            try $0.execute(
                sql: "UPDATE job SET output_dir = ? WHERE id = ?", arguments: [old + "/outputs/job-\(id)", id])
        }
        try queue.close()
        daemon = try DaemonProcess(
            directory: dir, environment: ["GRIDIT_STATE_DIR": moved], stateDirFlag: false)
        var job = try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self)
        #expect(job.outputDir == moved + "/outputs/job-\(id)")
        let files = try daemon.client.get("/v1/jobs/\(id)/files", as: OutputFileList.self)
        #expect(files.files.contains { $0.path == "frames/frame_00007.png" }, "\(files)")
        // The model store moved with it: a new job runs (into a named output, which leaves no
        // folder named by its id once it succeeded).
        let named = SubmitJobRequest(spec: JobSpec(length: 8, output: "after/backup", parameters: .init(seed: 9)))
        let next = try daemon.client.post("/v1/jobs", named, as: SubmitJobResponse.self).job.id
        #expect(try waitForJob(daemon, next).outputDir == moved + "/outputs/named/\(getuid())/after/backup")
        // The work folder goes after the job's success is recorded (a moment later).
        let work = [moved, "work", String(next)].joined(separator: "/")
        let gone = Date().addingTimeInterval(60)
        while FileManager.default.fileExists(atPath: work) && Date() < gone { usleep(20_000) }
        #expect(!FileManager.default.fileExists(atPath: work))
        #expect(daemon.stop() == 0)

        // The database is lost: griditd refuses to start; `restore` puts the backup back.
        for suffix in ["", "-wal", "-shm"] { unlink(moved + "/jobs.sqlite" + suffix) }
        let refused = try runProcess(griditd, ["serve", "--state-dir", moved, "--socket", dir.file("r.sock")])
        #expect(refused.status == 78, "\(refused.stderr)")
        let restored = try runProcess(griditd, ["restore", backup, "--state-dir", moved])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(restored.stdout.contains("restored \(backup)"))
        daemon = try DaemonProcess(directory: dir, environment: ["GRIDIT_STATE_DIR": moved], stateDirFlag: false)
        defer { daemon.stop() }
        job = try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self)
        #expect(job.state == .succeeded && job.outputDir == moved + "/outputs/job-\(id)")
        #expect(try daemon.client.get("/v1/jobs/\(id)/files", as: OutputFileList.self).files.count == files.files.count)
        // Job `next` is not in the backup, but its output names it: its id is not given again.
        #expect((try? daemon.client.get("/v1/jobs/\(next)", as: JobInfo.self)) == nil)
        let after = try daemon.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        #expect(after > next)
        #expect(try waitForJob(daemon, after).state == .succeeded)

        // Restore refuses while griditd runs (it holds the state directory's lock).
        let busy = try runProcess(griditd, ["restore", backup, "--state-dir", moved])
        #expect(busy.status == 75, "\(busy.stderr)")
        #expect(daemon.stop() == 0)

        // A restore that fails before the swap (here: its copy cannot take its place) changes nothing.
        let database = moved + "/jobs.sqlite"
        let before = try Data(contentsOf: URL(fileURLWithPath: database))
        let entries = try FileManager.default.contentsOfDirectory(atPath: moved).sorted()
        try FileManager.default.createDirectory(atPath: database + ".restoring/x", withIntermediateDirectories: true)
        let failed = try runProcess(griditd, ["restore", backup, "--state-dir", moved])
        #expect(failed.status == 1 && failed.stderr.contains("jobs.sqlite.restoring"), "\(failed.stderr)")
        try FileManager.default.removeItem(atPath: database + ".restoring")
        #expect(try Data(contentsOf: URL(fileURLWithPath: database)) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: moved).sorted() == entries)
        daemon = try DaemonProcess(directory: dir, environment: ["GRIDIT_STATE_DIR": moved], stateDirFlag: false)
        #expect(try daemon.client.get("/v1/jobs/\(after)", as: JobInfo.self).state == .succeeded)
        #expect(daemon.stop() == 0)

        // The set a restore moves aside can itself be restored: job `after` comes back.
        #expect(try runProcess(griditd, ["restore", backup, "--state-dir", moved]).status == 0)
        let aside = try #require(
            try FileManager.default.contentsOfDirectory(atPath: moved).first {
                $0.hasPrefix("jobs.sqlite.before-restore-") && !$0.hasSuffix("-wal") && !$0.hasSuffix("-shm")
            })
        let back = try runProcess(griditd, ["restore", moved + "/" + aside, "--state-dir", moved])
        #expect(back.status == 0, "\(back.stderr)")
        daemon = try DaemonProcess(directory: dir, environment: ["GRIDIT_STATE_DIR": moved], stateDirFlag: false)
        #expect(try daemon.client.get("/v1/jobs/\(after)", as: JobInfo.self).state == .succeeded)
        #expect(daemon.stop() == 0)
    }
}
