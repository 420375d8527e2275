// griditd's log lines read on their own, with the real binaries, database and socket (issue 17,
// logs that read on their own): the message carries the job id and the essentials (journald's
// MESSAGE= is the same text), the fields stay; requests are logged at debug only.

import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("griditd's log", .serialized, .offPool)
struct LogProcessTests {
    @Test("a job's lines name it and say what happened; no request lines at info, one per request at debug")
    func jobLines() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        let request = SubmitJobRequest(spec: JobSpec(length: 8, parameters: .init(seed: 3)))
        let id = try daemon.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        #expect(try waitForJob(daemon, id).state == .succeeded)
        let uid = getuid()
        #expect(daemon.log.contains("job \(id) submitted by uid \(uid): 8 frames of sha256:"), "\(daemon.log)")
        #expect(daemon.log.contains("running job \(id) on sha256:"))
        let succeeded = try daemon.logLine(containing: "job \(id) succeeded in ")
        #expect(succeeded.contains(" s: 8 frames → outputs/job-\(id) "), "\(succeeded)")
        #expect(succeeded.contains(" job.id=\(id)") && succeeded.contains(" output="), "the fields stay: \(succeeded)")
        #expect(!daemon.log.contains("/v1/jobs/\(id) 200"), "requests are not logged at info")
        #expect(daemon.stop() == 0)

        daemon = try DaemonProcess(directory: dir, arguments: ["--log-level", "debug"])
        defer { daemon.stop() }
        _ = try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self)
        #expect(daemon.log.contains("debug gridit") && daemon.log.contains("GET /v1/jobs/\(id) 200 uid \(uid)"))
        #expect(daemon.log.contains("http.status=200"), "\(daemon.log)")
    }
}
