import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

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

    static func freshURL() throws -> String {
        let server = try PostgresTestServer.shared()
        return "postgres://\(server.user)@\(server.host):\(server.port)/\(server.database)"
            + "?sslmode=disable&schema=\(server.freshSchema())"
    }

    static func nodeID(_ daemon: DaemonProcess) throws -> String {
        try String(contentsOfFile: daemon.stateDir + "/node-id", encoding: .utf8).trimmingCharacters(in: .newlines)
    }

    @Test(
        "hosts: a node id per state directory; a starting host takes back only its own jobs; nodes list, drain, undrain; jobs name their host"
    )
    func hosts() throws {
        let url = try Self.freshURL()
        let griditctl = binaryDirectory() + "/griditctl"
        let (dirA, dirB) = (TemporaryDirectory(), TemporaryDirectory())
        defer {
            dirA.remove()
            dirB.remove()
        }
        // Host A runs a job and holds it at its first step.
        let paused = ["GRIDIT_TEST_FAULTS": "pause-at=grid:1"]
        var a = try DaemonProcess(
            directory: dirA, arguments: ["--database", url], environment: paused, model: tinyPipeline())
        let nodeA = try Self.nodeID(a)
        let id = try a.client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self).job.id
        try waitForFile(a.stateDir + "/test-paused", a)
        let hostname = NodeIdentityName.current
        let running = try a.client.get("/v1/jobs/\(id)", as: JobInfo.self)
        #expect(running.state == .running && running.node == nodeA && running.host == hostname, "\(running)")

        // Host B starts on the same database: A's job is not B's to take back.
        let b = try DaemonProcess(directory: dirB, arguments: ["--database", url])
        let nodeB = try Self.nodeID(b)
        #expect(nodeA != nodeB && UUID(uuidString: nodeB) != nil)
        let seenByB = try b.client.get("/v1/jobs/\(id)", as: JobInfo.self)
        #expect(seenByB.state == .running && seenByB.attempt == 1 && seenByB.node == nodeA, "\(b.log)")
        #expect(!b.log.contains("requeued a job"), "\(b.log)")

        func ctl(_ daemon: DaemonProcess, _ arguments: [String]) throws -> ProcessResult {
            try runProcess(griditctl, arguments, environment: daemon.cliEnvironment, timeout: 120)
        }
        let listed = try ctl(b, ["nodes", "list"])
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect(listed.stdout.contains("NODE") && listed.stdout.contains("DRAINING"), "\(listed.stdout)")
        #expect(listed.stdout.contains(String(nodeA.prefix(8)) + "   "), "\(listed.stdout)")
        #expect(listed.stdout.contains(String(nodeB.prefix(8)) + " *"), "answered by B: \(listed.stdout)")
        let nodes = try b.client.get("/v1/nodes", as: NodeList.self).nodes
        #expect(Set(nodes.map(\.id)) == [nodeA, nodeB])
        #expect(nodes.first { $0.id == nodeA }?.runningJobs == 1)
        let jobs = try ctl(b, ["jobs", "list", "--all"])
        #expect(jobs.stdout.contains("HOST") && jobs.stdout.contains(hostname), "\(jobs.stdout)")

        // Drain B from A: B claims nothing more, and says so once its heartbeat reads the drain.
        let drained = try ctl(a, ["nodes", "drain", String(nodeB.prefix(8))])
        #expect(drained.status == 0 && drained.stdout.contains("drained"), "\(drained.stdout)\(drained.stderr)")
        let deadline = Date().addingTimeInterval(60)
        var notices: [StatusNotice.Code] = []
        while Date() < deadline {
            notices = try b.client.get("/v1/status", as: DaemonStatus.self).notices.map(\.code)
            if notices.contains(.draining) { break }
            usleep(100_000)
        }
        #expect(notices == [.draining])
        #expect(try ctl(a, ["nodes", "drain", "no-such-node"]).status != 0)

        // A dies under its job and comes back: it takes its job back and finishes it, with no
        // crash counted; the drained B never runs it.
        kill(a.pid, SIGKILL)
        a.process.waitUntilExit()
        try FileManager.default.removeItem(atPath: a.stateDir + "/test-paused")
        a = try DaemonProcess(directory: dirA, arguments: ["--database", url])
        #expect(try Self.nodeID(a) == nodeA, "the node id survives a restart")
        #expect(a.log.contains("requeued a job griditd was running"), "\(a.log)")
        let finished = try waitForJob(a, id)
        #expect(finished.state == .succeeded && finished.crashCount == 0 && finished.node == nodeA, "\(finished)")

        // Undrain on B itself counts at once.
        let undrained = try ctl(b, ["nodes", "undrain", nodeB])
        #expect(undrained.status == 0, "\(undrained.stderr)")
        #expect(try b.client.get("/v1/status", as: DaemonStatus.self).notices.isEmpty)
        #expect(try b.client.get("/v1/nodes", as: NodeList.self).nodes.allSatisfy { !$0.draining })
        #expect(a.stop() == 0)
        #expect(b.stop() == 0)
    }
}

/// This machine's hostname, as griditd registers it.
enum NodeIdentityName {
    static var current: String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count - 1)
        return String(cString: buffer)
    }
}
