import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

@Suite("griditd on PostgreSQL")
struct PostgresDaemonTests {
    @Test("serve with GRIDIT_DATABASE: a job runs to the end; another host's griditd sees the same queue")
    func queueOnPostgres() throws {
        let server = try PostgresTestServer.shared()
        let url =
            "postgres://\(server.user)@\(server.host):\(server.port)/\(server.database)"
            + "?sslmode=disable&schema=\(server.freshSchema())"
        let first = TemporaryDirectory()
        defer { first.remove() }
        do {
            // The URL from the environment (GRIDIT_DATABASE), not the command line.
            let daemon = try DaemonProcess(
                directory: first, environment: ["GRIDIT_DATABASE": url], model: tinyPipeline())
            #expect(daemon.log.contains("job queue on PostgreSQL"), "\(daemon.log)")
            let id = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self).job.id
            let deadline = Date().addingTimeInterval(120)
            var job = try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self)
            while !job.state.isTerminal && Date() < deadline {
                usleep(100_000)
                job = try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self)
            }
            #expect(job.state == .succeeded, "\(daemon.log)")
            #expect(try daemon.client.post("/v1/queue/pause", as: QueueStatus.self).paused)
            #expect(daemon.stop() == 0)
        }
        // A griditd with a state directory of its own, told through --database: same queue.
        let second = TemporaryDirectory()
        defer { second.remove() }
        let daemon = try DaemonProcess(directory: second, arguments: ["--database", url])
        let queue = try daemon.client.get("/v1/queue", as: QueueStatus.self)
        #expect(queue.paused)
        #expect(queue.counts.succeeded == 1)
        #expect(daemon.stop() == 0)
    }
}
