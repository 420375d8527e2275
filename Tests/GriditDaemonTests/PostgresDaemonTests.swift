import CDispatch  // declares `struct stat` and `timeval` first once Hummingbird is a dependency
import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("griditd on PostgreSQL", .offPool)
struct PostgresDaemonTests {
    @Test("serve with GRIDIT_DATABASE: a job runs to the end; another host's griditd sees the same queue")
    func queueOnPostgres() throws {
        let server = try PostgresTestServer.shared()
        let url =
            "postgres://\(server.user)@\(server.host):\(server.port)/\(server.database)"
            + "?sslmode=disable&schema=\(server.freshSchema())"
        let (first, shared) = (TemporaryDirectory(), TemporaryDirectory())
        defer {
            first.remove()
            shared.remove()
        }
        do {
            // The URL from the environment (GRIDIT_DATABASE), not the command line.
            let daemon = try DaemonProcess(
                directory: first, environment: ["GRIDIT_DATABASE": url, "GRIDIT_SHARED_ROOT": shared.path],
                model: tinyPipeline())
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
        let daemon = try DaemonProcess(directory: second, arguments: ["--database", url, "--shared-root", shared.path])
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
        let (dirA, dirB, shared) = (TemporaryDirectory(), TemporaryDirectory(), TemporaryDirectory())
        defer {
            dirA.remove()
            dirB.remove()
            shared.remove()
        }
        let cluster = ["--database", url, "--shared-root", shared.path]
        // Host A runs a job and holds it at its first step.
        let paused = ["GRIDIT_TEST_FAULTS": "pause-at=grid:1"]
        var a = try DaemonProcess(
            directory: dirA, arguments: cluster, environment: paused, model: tinyPipeline())
        let nodeA = try Self.nodeID(a)
        let id = try a.client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self).job.id
        try waitForFile(a.stateDir + "/test-paused", a)
        let hostname = NodeIdentityName.current
        let running = try a.client.get("/v1/jobs/\(id)", as: JobInfo.self)
        #expect(running.state == .running && running.node == nodeA && running.host == hostname, "\(running)")

        // Host B starts on the same database: A's job is not B's to take back.
        let b = try DaemonProcess(directory: dirB, arguments: cluster)
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
        #expect(listed.stdout.contains("NODE") && listed.stdout.contains("STATE"), "\(listed.stdout)")
        #expect(listed.stdout.contains(String(nodeA.prefix(8)) + "   "), "\(listed.stdout)")
        #expect(listed.stdout.contains(String(nodeB.prefix(8)) + " *"), "answered by B: \(listed.stdout)")
        let nodes = try b.client.get("/v1/nodes", as: NodeList.self).nodes
        #expect(Set(nodes.map(\.id)) == [nodeA, nodeB])
        #expect(nodes.first { $0.id == nodeA }?.runningJobs == 1)
        // `status` shows every host too, and the shared root; --json is the status object, with `nodes`.
        let status = try ctl(b, ["status"])
        #expect(status.status == 0, "\(status.stderr)")
        #expect(status.stdout.contains("Hosts (2, * answered):"), "\(status.stdout)")
        #expect(status.stdout.contains(String(nodeA.prefix(8)) + "   ") && status.stdout.contains(hostname))
        #expect(status.stdout.contains(String(nodeB.prefix(8)) + " *"), "\(status.stdout)")
        #expect(status.stdout.contains("Shared:     \(shared.path)"), "\(status.stdout)")
        #expect(status.stdout.contains("(on the fuller of the two)"), "\(status.stdout)")
        let statusJSON = try ctl(b, ["status", "--json"])
        let decoded = try APICoding.decoder().decode(DaemonStatus.self, from: Data(statusJSON.stdout.utf8))
        #expect(Set(decoded.nodes?.map(\.id) ?? []) == [nodeA, nodeB] && decoded.sharedRoot == shared.path)
        #expect(decoded.nodes?.first { $0.id == nodeA }?.runningJobs == 1)
        #expect(decoded.nodes?.first { $0.id == nodeB }?.current == true)
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
        a = try DaemonProcess(directory: dirA, arguments: cluster)
        #expect(try Self.nodeID(a) == nodeA, "the node id survives a restart")
        #expect(a.log.contains("requeued a job griditd was running"), "\(a.log)")
        let finished = try waitForJob(a, id)
        #expect(finished.state == .succeeded && finished.crashCount == 0 && finished.node == nodeA, "\(finished)")

        // Undrain on B itself counts at once.
        let undrained = try ctl(b, ["nodes", "undrain", nodeB])
        #expect(undrained.status == 0, "\(undrained.stderr)")
        #expect(try b.client.get("/v1/status", as: DaemonStatus.self).notices.isEmpty)
        #expect(try b.client.get("/v1/nodes", as: NodeList.self).nodes.allSatisfy { !$0.draining && !$0.gone })
        // `nodes rm` forgets only a host that is gone (PostgresNodeTests counts the time): not a
        // live one, nor the one answering.
        let live = try ctl(a, ["nodes", "rm", String(nodeB.prefix(8))])
        #expect(live.status != 0 && live.stderr.contains("not gone"), "\(live.stderr)")
        let answering = try ctl(a, ["nodes", "rm", nodeA])
        #expect(answering.status != 0 && answering.stderr.contains("is the host answering"), "\(answering.stderr)")
        #expect(a.stop() == 0)
        #expect(b.stop() == 0)
    }
}

extension PostgresDaemonTests {
    @Test(
        "shared root: a job whose host is killed is taken over by another host, resumes from the grids the first finished, and its frames equal a single-host run's"
    )
    func takeoverResumesFromSharedRoot() throws {
        let url = try Self.freshURL()
        let (dirA, dirB, dirSingle, shared) = (
            TemporaryDirectory(), TemporaryDirectory(), TemporaryDirectory(), TemporaryDirectory()
        )
        defer {
            for dir in [dirA, dirB, dirSingle, shared] { dir.remove() }
        }
        var parameters = JobSpec.Parameters()
        parameters.seed = 4242
        let request = SubmitJobRequest(spec: JobSpec(length: 64, parameters: parameters))

        // The reference: one host, the SQLite queue.
        let single = try DaemonProcess(directory: dirSingle, model: tinyPipeline())
        let reference = try single.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        let referenceJob = try waitForJob(single, reference)
        #expect(referenceJob.state == .succeeded, "\(single.log)")
        let referenceOutput = try #require(referenceJob.outputDir)
        let singleStatus = try single.client.get("/v1/status", as: DaemonStatus.self)
        #expect(singleStatus.nodes == nil && singleStatus.sharedRoot == nil, "one host: no host list")
        #expect(single.stop() == 0)

        // Short leases, so that the takeover comes soon after the kill.
        let cluster = ["--database", url, "--shared-root", shared.path, "--lease", "6"]
        let a = try DaemonProcess(
            directory: dirA, arguments: cluster, environment: ["GRIDIT_TEST_FAULTS": "pause-at=grid:3"],
            model: tinyPipeline())
        let id = try a.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job.id
        try waitForFile(a.stateDir + "/test-paused", a)
        // What A finished is in the shared work folder.
        let grids = shared.file("work/\(id)/grids")
        let finished = try FileManager.default.contentsOfDirectory(atPath: grids)
            .filter { $0.hasPrefix("grid_") && $0.hasSuffix(".npy") && !$0.hasSuffix(".image.npy") }.sorted()
        #expect(!finished.isEmpty, "A finished no grid before its pause")
        func identity(_ name: String) -> [Int] {
            var st = stat()
            guard stat(grids + "/" + name, &st) == 0 else { return [] }
            return [Int(st.st_ino), Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec)]
        }
        let before = finished.map(identity)
        kill(a.pid, SIGKILL)
        a.process.waitUntilExit()

        // B takes the job over once A's lease expires, and stops at its first super-resolution
        // step: every grid is done by then, A's untouched.
        let nodeB: String
        do {
            let b = try DaemonProcess(
                directory: dirB, arguments: cluster, environment: ["GRIDIT_TEST_FAULTS": "pause-at=sr:1"],
                model: tinyPipeline())
            nodeB = try Self.nodeID(b)
            try waitForFile(b.stateDir + "/test-paused", b)
            #expect(
                b.log.contains("job \(id) resumes from its work folder: \(finished.count) of "),
                "B did not start from A's \(finished.count) grid(s):\n\(b.log)")
            #expect(finished.map(identity) == before, "A's grids were written again")
            kill(b.pid, SIGKILL)
            b.process.waitUntilExit()
        }
        try FileManager.default.removeItem(atPath: dirB.file("state/test-paused"))

        // B again, its shared root reached through another path (a mount point of its own): it
        // takes its job back and finishes it; the output is found under that path, because the
        // queue holds its name relative to the shared root.
        let mount = dirB.file("mnt")
        try FileManager.default.createSymbolicLink(atPath: mount, withDestinationPath: shared.path)
        let b = try DaemonProcess(
            directory: dirB, arguments: ["--database", url, "--shared-root", mount, "--lease", "6"],
            model: nil)
        let done = try waitForJob(b, id)
        #expect(done.state == .succeeded && done.node == nodeB && done.crashCount == 1, "\(done)\n\(b.log)")
        let output = try #require(done.outputDir)
        #expect(output == mount + "/outputs/job-\(id)", "\(output)")
        #expect(try frameDigests(output) == frameDigests(referenceOutput))
        let frames = try FileManager.default.contentsOfDirectory(atPath: referenceOutput + "/frames").sorted()
        #expect(frames.count == 64)
        for frame in frames {
            let made = try Data(contentsOf: URL(fileURLWithPath: output + "/frames/" + frame))
            let expected = try Data(contentsOf: URL(fileURLWithPath: referenceOutput + "/frames/" + frame))
            #expect(made == expected, "\(frame) differs from the single-host run's")
        }
        // Removed right after the success is recorded, which the test may see first.
        let removal = Date().addingTimeInterval(60)
        while FileManager.default.fileExists(atPath: shared.file("work/\(id)")) && Date() < removal { usleep(20_000) }
        #expect(!FileManager.default.fileExists(atPath: shared.file("work/\(id)")), "work folder removed")
        #expect(b.stop() == 0)
    }

    @Test("the queue on PostgreSQL refuses to start without a shared root, naming the fix")
    func needsSharedRoot() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let run = try runProcess(
            binaryDirectory() + "/griditd",
            [
                "serve", "--state-dir", dir.file("state"), "--socket", dir.file("s.sock"), "--database",
                try Self.freshURL(),
            ],
            environment: ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("GRIDIT_") })
        #expect(run.status == 78 && run.stderr.contains("--shared-root DIR"), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("state")), "nothing was started")
        // A shared root that is not there (an NFS export not mounted) is not made.
        let missing = dir.file("not-mounted")
        do {
            _ = try DaemonProcess(
                directory: dir, arguments: ["--database", try Self.freshURL(), "--shared-root", missing])
            Issue.record("griditd started on a shared root that is not there")
        } catch {
            #expect("\(error)".contains("the shared root \(missing) is not a folder"), "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: missing))
    }
}

extension PostgresDaemonTests {
    @Test(
        "the shared root's mark: the first host writes it, a host on an empty mount point or another cluster's share does not start, and a running host whose share goes away claims nothing until it is back"
    )
    func sharedRootMark() throws {
        let url = try Self.freshURL()
        let (dirA, dirB, shared, empty, other) = (
            TemporaryDirectory(), TemporaryDirectory(), TemporaryDirectory(), TemporaryDirectory(), TemporaryDirectory()
        )
        defer { for dir in [dirA, dirB, shared, empty, other] { dir.remove() } }
        let a = try DaemonProcess(
            directory: dirA, arguments: ["--database", url, "--shared-root", shared.path], model: tinyPipeline())
        let mark = shared.file(".gridit-cluster")
        let token = try String(contentsOfFile: mark, encoding: .utf8).trimmingCharacters(in: .newlines)
        #expect(UUID(uuidString: token) != nil, "a new token: \(token)")

        // An empty mount point: refused, and nothing is written there.
        do {
            _ = try DaemonProcess(directory: dirB, arguments: ["--database", url, "--shared-root", empty.path])
            Issue.record("griditd started on an empty shared root")
        } catch {
            #expect("\(error)".contains("lacks this cluster's mark .gridit-cluster (token \(token))"), "\(error)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: empty.path).isEmpty)
        // Another cluster's share.
        try "0e7a59d2-0000-4000-8000-000000000000\n".write(
            toFile: other.file(".gridit-cluster"), atomically: true, encoding: .utf8)
        do {
            _ = try DaemonProcess(directory: dirB, arguments: ["--database", url, "--shared-root", other.path])
            Issue.record("griditd started on another cluster's shared root")
        } catch {
            #expect("\(error)".contains("belongs to another cluster"), "\(error)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: other.path) == [".gridit-cluster"])
        // A mark that is no plain file (a pipe planted by someone who may write the share) is
        // refused at once, not waited on.
        try FileManager.default.removeItem(atPath: other.file(".gridit-cluster"))
        #expect(mkfifo(other.file(".gridit-cluster"), 0o644) == 0)
        do {
            _ = try DaemonProcess(directory: dirB, arguments: ["--database", url, "--shared-root", other.path])
            Issue.record("griditd started on a shared root whose mark is a pipe")
        } catch {
            #expect("\(error)".contains("is not a plain file"), "\(error)")
        }
        // An offline import does not publish to an empty mount point either.
        let imported = try runProcess(
            binaryDirectory() + "/griditd",
            [
                "models", "import", tinyPipeline(), "--name", "tiny:v2", "--state-dir", dirB.file("state"),
                "--database", url, "--shared-root", empty.path,
            ])
        #expect(imported.status == 69 && imported.stderr.contains("lacks this cluster's mark"), "\(imported.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: empty.path).isEmpty)

        // The share goes away under a running host: it reports it and starts nothing; once the
        // share is back, the job runs.
        try FileManager.default.moveItem(atPath: mark, toPath: mark + ".away")
        var status = try a.client.get("/v1/status", as: DaemonStatus.self)
        let deadline = Date().addingTimeInterval(60)
        while !status.notices.contains(where: { $0.code == .sharedRootUnavailable }) && Date() < deadline {
            usleep(100_000)
            status = try a.client.get("/v1/status", as: DaemonStatus.self)
        }
        #expect(status.notices.map(\.code) == [.sharedRootUnavailable], "\(status.notices)")
        #expect(status.notices.first?.message.contains("no job starts") == true)
        let id = try a.client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self).job.id
        usleep(1_500_000)
        #expect(try a.client.get("/v1/jobs/\(id)", as: JobInfo.self).state == .queued)
        try FileManager.default.moveItem(atPath: mark + ".away", toPath: mark)
        let finished = try waitForJob(a, id)
        #expect(finished.state == .succeeded, "\(a.log)")
        #expect(a.log.contains("no job starts: the shared root"), "the worker logs why")
        #expect(a.stop() == 0)
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
