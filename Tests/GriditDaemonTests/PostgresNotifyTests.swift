import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Two real griditd processes on one database: host A takes the requests (drained, so it
/// claims nothing), host B runs the jobs. With a poll interval of 60 s, only a NOTIFY can get a
/// job from A's submit to B's claim, or A's cancel to B's running job, within the hang guards.
@Suite("griditd hosts wake each other (LISTEN/NOTIFY)", .serialized, .offPool)
struct PostgresNotifyTests {
    /// Longer than any hang guard below: a claim or stop seen in time came from a notice.
    static let slowPoll = ["--poll-interval", "60"]
    static let hangGuard: Double = 40

    /// Host A (drained: it claims nothing) and host B on a fresh schema.
    static func hosts(
        _ dirA: TemporaryDirectory, _ dirB: TemporaryDirectory, arguments: [String],
        environmentB: [String: String] = [:]
    ) throws -> (a: DaemonProcess, b: DaemonProcess) {
        // The shared root, beside A's state directory (griditd never creates it).
        let shared = dirA.file("shared")
        try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
        let cluster = ["--database", try PostgresDaemonTests.freshURL(), "--shared-root", shared]
        let a = try DaemonProcess(directory: dirA, arguments: cluster + arguments, model: tinyPipeline())
        let drained = try runProcess(
            binaryDirectory() + "/griditctl", ["nodes", "drain", try PostgresDaemonTests.nodeID(a)],
            environment: a.cliEnvironment, timeout: 120)
        guard drained.status == 0 else { throw TestFailure("drain: \(drained.stderr)") }
        let b = try DaemonProcess(
            directory: dirB, arguments: cluster + arguments, environment: environmentB,
            model: tinyPipeline())
        return (a, b)
    }

    /// Reads job `id` through `daemon` every 5 ms until `done` holds; fails after the hang guard.
    static func waitClosely(_ daemon: DaemonProcess, _ id: Int64, _ done: (JobInfo) -> Bool) throws -> JobInfo {
        let deadline = Date().addingTimeInterval(hangGuard)
        while Date() < deadline {
            let job = try daemon.client.get("/v1/jobs/\(id)", as: JobInfo.self)
            if done(job) { return job }
            usleep(5_000)
        }
        throw TestFailure("job \(id) did not get there within \(hangGuard) s, less than the 60 s poll interval")
    }

    @Test("a submit on host A is claimed on host B through NOTIFY: 50 submits, claim latency p50/p99")
    func submitWakesOtherHost() throws {
        let (dirA, dirB) = (TemporaryDirectory(), TemporaryDirectory())
        defer {
            dirA.remove()
            dirB.remove()
        }
        let (a, b) = try Self.hosts(dirA, dirB, arguments: Self.slowPoll)
        #expect(b.log.contains("follows other hosts' queue changes"), "\(b.log)")
        let nodeB = try PostgresDaemonTests.nodeID(b)
        // B's worker looked at the queue when it started and now waits out its 60 s poll.
        var latencies: [Double] = []
        for _ in 0..<50 {
            let id = try a.client.post("/v1/jobs", SubmitJobRequest(length: 1), as: SubmitJobResponse.self).job.id
            // From the submit's answer to the claim seen through A (the API's times are whole seconds).
            let submitted = Date()
            let claimed = try Self.waitClosely(a, id) { $0.startedAt != nil }
            latencies.append(Date().timeIntervalSince(submitted))
            #expect(claimed.node == nodeB, "\(claimed)")
            let done = try waitForJob(b, id)
            #expect(done.state == .succeeded, "\(b.log)")
            // B's worker finishes its job after recording it: give it time to wait on the queue
            // again, so that the next claim waits for a notice (else it measures the worker's loop).
            usleep(1_000_000)
        }
        let sorted = latencies.sorted()
        let p50 = sorted[sorted.count / 2], p99 = sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
        print(
            "LISTEN/NOTIFY claim latency over \(sorted.count) submits (host A submits, host B claims): "
                + String(format: "p50 %.1f ms, p99 %.1f ms, max %.1f ms", p50 * 1000, p99 * 1000, sorted.last! * 1000))
        #expect(a.stop() == 0)
        #expect(b.stop() == 0)
    }

    @Test("a cancel on host A reaches the job running on host B through NOTIFY; jobs watch on A sees it end")
    func cancelReachesOtherHost() throws {
        let (dirA, dirB) = (TemporaryDirectory(), TemporaryDirectory())
        defer {
            dirA.remove()
            dirB.remove()
        }
        // B's job holds at its first step (no progress, so no heartbeat: lease 600 s); only the
        // notice can tell B of the cancel in time. stop-grace 1: the held engine is killed then.
        let (a, b) = try Self.hosts(
            dirA, dirB, arguments: Self.slowPoll + ["--lease", "600", "--stop-grace", "1"],
            environmentB: ["GRIDIT_TEST_FAULTS": "pause-at=grid:1"])
        let id = try a.client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self).job.id
        try waitForFile(b.stateDir + "/test-paused", b)
        // `jobs watch` on A, the host that does not run the job, follows it to its end.
        let watch = Process()
        watch.executableURL = URL(fileURLWithPath: binaryDirectory() + "/griditctl")
        watch.arguments = ["jobs", "watch", "\(id)"]
        watch.environment = a.cliEnvironment
        let watchOutput = Pipe()
        watch.standardOutput = watchOutput
        watch.standardError = watchOutput
        try watch.run()
        let requested = try a.client.post("/v1/jobs/\(id)/cancel", as: JobInfo.self)
        #expect(requested.cancelRequested && requested.state == .running)
        let asked = Date()
        let canceled = try Self.waitClosely(a, id) { $0.state.isTerminal }
        #expect(canceled.state == .canceled, "\(b.log)")
        print(
            String(
                format: "LISTEN/NOTIFY cancel: canceled on host B %.0f ms after host A's cancel (1 s of it stop-grace)",
                Date().timeIntervalSince(asked) * 1000))
        let watchDeadline = Date().addingTimeInterval(Self.hangGuard)
        while watch.isRunning && Date() < watchDeadline { usleep(20_000) }
        let ended = !watch.isRunning
        if !ended { watch.terminate() }
        let watched = String(decoding: watchOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(ended && watch.terminationStatus != 0, "jobs watch on A: \(watched)")
        #expect(watched.lowercased().contains("cancel"), "jobs watch on A: \(watched)")
        #expect(a.stop() == 0)
        #expect(b.stop() == 0)
    }

    @Test("poll-only mode (--no-database-notify, for a transaction pooler): a submit on A still runs on B")
    func pollOnly() throws {
        let (dirA, dirB) = (TemporaryDirectory(), TemporaryDirectory())
        defer {
            dirA.remove()
            dirB.remove()
        }
        let (a, b) = try Self.hosts(dirA, dirB, arguments: ["--no-database-notify", "--poll-interval", "0.2"])
        let nodeB = try PostgresDaemonTests.nodeID(b)
        for _ in 0..<3 {
            let id = try a.client.post("/v1/jobs", SubmitJobRequest(length: 1), as: SubmitJobResponse.self).job.id
            let done = try waitForJob(a, id)
            #expect(done.state == .succeeded && done.node == nodeB, "\(b.log)")
        }
        #expect(b.log.contains("polls the shared queue only"), "\(b.log)")
        #expect(!b.log.contains("follows other hosts' queue changes"), "\(b.log)")
        #expect(a.stop() == 0)
        #expect(b.stop() == 0)
    }
}
