// Retention and `jobs prune` with the real binaries, database and socket (issue 17, outputs and
// retention).

import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("retention and jobs prune", .serialized, .offPool)
struct RetentionProcessTests {
    static let request = SubmitJobRequest(spec: JobSpec(length: 8, parameters: .init(seed: 3)))

    /// A succeeded job and a canceled one, on a daemon started with `arguments`.
    static func finishedJobs(
        _ dir: TemporaryDirectory, _ arguments: [String]
    ) throws -> (DaemonProcess, succeeded: JobInfo, canceled: Int64) {
        let daemon = try DaemonProcess(directory: dir, arguments: arguments + ["--start-paused"], model: tinyPipeline())
        let canceled = try daemon.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        _ = try daemon.client.post("/v1/jobs/\(canceled)/cancel", as: JobInfo.self)
        let id = try daemon.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        _ = try daemon.client.post("/v1/queue/resume", as: QueueStatus.self)
        let done = try waitForJob(daemon, id)
        #expect(done.state == .succeeded, "\(done)")
        return (daemon, done, canceled)
    }

    @Test(
        "retention per state: succeeded jobs pruned at 0s with their outputs and a log line each, failed ones kept when off"
    )
    func configuredRetention() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let arguments = ["--keep-succeeded", "0s", "--keep-failed", "off"]
        var (daemon, succeeded, canceled) = try Self.finishedJobs(dir, arguments)
        let output = try #require(succeeded.outputDir)
        #expect(FileManager.default.fileExists(atPath: output))
        #expect(daemon.stop() == 0)

        // The retention pass runs at start (then hourly).
        daemon = try DaemonProcess(directory: dir, arguments: arguments)
        defer { daemon.stop() }
        // The row goes first, then the folders, then the log line.
        let deadline = Date().addingTimeInterval(30)
        while !daemon.log.contains("pruned job \(succeeded.id) "), Date() < deadline { usleep(50_000) }
        #expect((try? daemon.client.get("/v1/jobs/\(succeeded.id)", as: JobInfo.self)) == nil)
        #expect(!FileManager.default.fileExists(atPath: output))
        #expect(try daemon.client.get("/v1/jobs/\(canceled)", as: JobInfo.self).state == .canceled)
        #expect(
            daemon.log.contains(
                "pruned job \(succeeded.id) (succeeded, finished more than 0s ago; retention), removed \(output)"),
            "\(daemon.log)")
        #expect(!daemon.log.contains("pruned job \(canceled) "))
        #expect(daemon.stop() == 0)
    }

    @Test("griditctl jobs prune: refused without a terminal unless --yes; asks on a terminal; logs each job")
    func pruneConfirms() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (daemon, succeeded, canceled) = try Self.finishedJobs(
            dir, ["--keep-succeeded", "off", "--keep-failed", "off"])
        defer { daemon.stop() }
        let environment = daemon.cliEnvironment
        let griditctl = binaryDirectory() + "/griditctl"

        let refused = try runProcess(
            griditctl, ["jobs", "prune", "--older-than", "0"], environment: environment, input: "y\n")
        #expect(refused.status == ExitStatus.usage, "\(refused)")
        #expect(refused.stderr.contains("pass --yes"), "\(refused.stderr)")
        #expect(try daemon.client.get("/v1/jobs/\(succeeded.id)", as: JobInfo.self).state == .succeeded)

        // On a terminal (script(1) gives it one): "n" keeps everything, "y" prunes.
        let command = "\(griditctl) jobs prune --older-than 0"
        let declined = try runProcess(
            "/usr/bin/script", ["-qec", command, "/dev/null"], environment: environment, input: "n\n")
        #expect(declined.status == 0, "\(declined)")
        #expect(declined.stdout.contains("Are you sure you want to continue? [y/N]"), "\(declined.stdout)")
        #expect(declined.stdout.contains("nothing pruned"))
        #expect(try daemon.client.get("/v1/jobs/\(canceled)", as: JobInfo.self).state == .canceled)

        let accepted = try runProcess(
            "/usr/bin/script", ["-qec", command, "/dev/null"], environment: environment, input: "y\n")
        #expect(accepted.status == 0, "\(accepted)")
        #expect(accepted.stdout.contains("pruned 2 jobs: "), "\(accepted.stdout)")
        #expect((try? daemon.client.get("/v1/jobs/\(succeeded.id)", as: JobInfo.self)) == nil)
        #expect(!FileManager.default.fileExists(atPath: try #require(succeeded.outputDir)))
        #expect(
            daemon.log.contains(
                "pruned job \(succeeded.id) (succeeded, finished more than 0s ago; jobs prune by uid \(getuid()))"))
        #expect(daemon.log.contains("pruned job \(canceled) (canceled"))

        // --yes needs no terminal.
        let again = try runProcess(
            griditctl, ["jobs", "prune", "--older-than", "0", "--yes"], environment: environment, input: "")
        #expect(again.status == 0, "\(again)")
        #expect(again.stdout.contains("pruned 0 jobs"))
    }
}
