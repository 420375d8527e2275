// The daemon's small pure parts: routing, request limits, submit validation, log fields, faults.

import Foundation
import GriditAPI
import GriditFaults
import GriditJobQueue
import GriditJobSpec
import GriditTestSupport
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Testing

@testable import GriditDaemon

#if canImport(Glibc)
import Glibc
#endif

@Suite("daemon units")
struct DaemonUnitTests {
    @Test(
        "under a shared root, work folders and outputs move there; only a partial output untouched for a lease is a leftover"
    )
    func sharedRootLayout() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let layout = StateLayout(root: dir.file("state"), sharedRoot: dir.file("shared"))
        #expect(layout.workDirectory(job: 7) == dir.file("shared/work") + "/7")
        #expect(layout.automaticOutputDirectory(job: 7) == dir.file("shared/outputs/job-7"))
        #expect(layout.tmp == dir.file("state/tmp") && layout.database == dir.file("state/jobs.sqlite"))
        #expect(layout.relative(dir.file("shared/outputs/job-7")) == "outputs/job-7")
        let (fresh, stale) = (layout.outputs + "/.job-1.partial-Ab12Cd", layout.outputs + "/.job-2.partial-Ef34Gh")
        for folder in [fresh, stale] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
        let old = Date().addingTimeInterval(-600)
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: stale)
        // Old at the top, a frame just written below: still being written.
        let writing = layout.outputs + "/.job-3.partial-Gh56Ij"
        try FileManager.default.createDirectory(atPath: writing + "/frames", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: writing + "/frames/frame_00000.png", contents: Data([1]))
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: writing + "/frames")
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: writing)
        let removed = Leftovers.remove(in: layout, partialOutputsUntouchedFor: 120, logger: Logger(label: "test"))
        #expect(removed == [stale])
        #expect(FileManager.default.fileExists(atPath: fresh), "another host may be writing it")
        #expect(FileManager.default.fileExists(atPath: writing), "a file deep inside was just written")
        // Beside the deepest named output a name may have (8 levels under outputs/named/<uid>/).
        let deepest = (1...JobSpec.maxOutputLevels).map { "l\($0)" }
        try JobSpec(length: 1, output: deepest.joined(separator: "/")).validate()
        let deep =
            layout.namedOutputDirectory(owner: 1000, name: deepest.dropLast().joined(separator: "/"))
            + "/.l8.partial-Kl78Mn"
        try FileManager.default.createDirectory(atPath: deep, withIntermediateDirectories: true)
        #expect(
            Set(Leftovers.remove(in: layout, logger: Logger(label: "test"))) == [fresh, writing, deep],
            "one host: every partial output")
    }

    @Test("a pruned job's folder is its output only while sequence.json names the job (older outputs: its request)")
    func holdsOutput() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let spec = JobSpec(length: 4, output: "x", parameters: .init(seed: 7))
        func pruned(_ spec: JobSpec, digest: String? = "sha256:a") -> PrunedJob {
            PrunedJob(
                Job(
                    id: 1, ownerUID: 1, state: .succeeded, params: spec.storedJSON, pipelineDigest: digest,
                    length: spec.length, createdAt: Date(), updatedAt: Date(), notBefore: Date(),
                    outputDir: dir.path))
        }
        func record(_ json: String) throws {
            try Data(json.utf8).write(to: URL(fileURLWithPath: dir.file("sequence.json")))
        }
        #expect(!Retention.holdsOutput(of: pruned(spec), dir.path), "no sequence.json")
        let specJSON = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
        try record(#"{"pipeline": {"digest": "sha256:a"}, "seed": 7, "spec": \#(specJSON)}"#)
        #expect(Retention.holdsOutput(of: pruned(spec), dir.path))
        #expect(Retention.holdsOutput(of: pruned(spec, digest: nil), dir.path), "no model store: the request alone")
        #expect(!Retention.holdsOutput(of: pruned(spec, digest: "sha256:b"), dir.path), "another model")
        var other = spec
        other.parameters.seed = 8
        #expect(!Retention.holdsOutput(of: pruned(other), dir.path), "another request")
        // Outputs from before sequence.json recorded the request: the seed.
        try record(#"{"pipeline": {"digest": "sha256:a"}, "seed": 7}"#)
        #expect(
            Retention.holdsOutput(of: pruned(spec), dir.path) && !Retention.holdsOutput(of: pruned(other), dir.path))
        try record("{")
        #expect(!Retention.holdsOutput(of: pruned(spec), dir.path), "unreadable")
        // Since the job is recorded, it decides, whatever else the file holds.
        try record(#"{"job": 1, "spec": {"parameters": {"a_field_of_tomorrow": 1}}}"#)
        #expect(Retention.holdsOutput(of: pruned(other), dir.path))
        try record(#"{"job": 2, "pipeline": {"digest": "sha256:a"}, "seed": 7, "spec": \#(specJSON)}"#)
        #expect(!Retention.holdsOutput(of: pruned(spec), dir.path), "another job's, though its request is the same")
    }

    @Test("routes match literal segments first and take parameters")
    func routeMatching() {
        func route(_ method: HTTPRequest.Method, _ path: String) -> (String, [String: String])? {
            let parts = path.split(separator: "/").map(String.init)
            for r in ControlAPI.routes where r.method == method {
                if let params = r.match(parts) { return (r.template, params) }
            }
            return nil
        }
        #expect(route(.post, "/v1/jobs/prune")?.0 == "/v1/jobs/prune")
        #expect(route(.get, "/v1/jobs/12")?.1 == ["id": "12"])
        #expect(route(.get, "/v1/models/ps")?.0 == "/v1/models/ps")
        #expect(route(.get, "/v1/models/moving-digits:v1")?.1 == ["ref": "moving-digits:v1"])
        #expect(
            route(.get, "/v1/jobs/3/files/frames/frame_00001.png")?.1 == ["id": "3", "path": "frames/frame_00001.png"])
        #expect(route(.get, "/v1/jobs/3/files")?.0 == "/v1/jobs/{id}/files")
        #expect(route(.get, "/v1/jobs/3/nope") == nil)
    }

    @Test("request targets are decoded per segment; NUL and non-absolute targets are refused")
    func targets() {
        let parsed = HTTPServer.parseTarget("/v1/models/a%3Ab%40sha256%3Aff?state=queued,running&limit=5")
        #expect(parsed?.0 == ["v1", "models", "a:b@sha256:ff"])
        #expect(parsed?.1 == ["state": "queued,running", "limit": "5"])
        #expect(HTTPServer.parseTarget("/v1/x%00y") == nil)
        #expect(HTTPServer.parseTarget("v1/jobs") == nil)
        #expect(HTTPServer.parseTarget("/a/%2F/b")?.0 == ["a", "/", "b"], "an encoded slash stays inside its segment")
    }

    @Test("bodies over 10 MiB are drained and answered 413; a declared huge body is refused at once")
    func bodyLimit() async throws {
        var limits = HTTPServerLimits()
        limits.maxBodyBytes = 10
        limits.maxDrainBytes = 100
        func post(declaring length: Int? = nil) -> HTTPRequest {
            var head = HTTPRequest(method: .post, scheme: nil, authority: nil, path: "/v1/jobs")
            head.headerFields[.contentLength] = length.map(String.init)
            return head
        }
        let context = APIContext(
            source: .init(logger: Logger(label: "test"), caller: ConnectionPolicyTests.caller(1000), limits: limits))
        do {
            _ = try await ControlAPI.body(
                of: Request(head: post(), body: RequestBody(buffer: ByteBuffer(string: "0123456789ab"))),
                context: context)
            Issue.record("expected a 413")
        } catch {
            #expect(error.code == .payloadTooLarge)
        }
        // Under the drain limit, the rest of the body reaches the router, which reads and drops it.
        func connection() async throws -> EmbeddedChannel {
            let channel = EmbeddedChannel(handler: ConnectionGuard(limits: limits))
            try await channel.connect(to: SocketAddress(unixDomainSocketPath: "/griditd.sock")).get()
            return channel
        }
        let drained = try await connection()
        try drained.writeInbound(HTTPRequestPart.head(post(declaring: 100)))
        try drained.writeInbound(HTTPRequestPart.body(ByteBuffer(repeating: 0x61, count: 100)))
        try drained.writeInbound(HTTPRequestPart.end(nil))
        #expect(try drained.readInbound(as: HTTPRequestPart.self) == .head(post(declaring: 100)))
        let answer = try drained.readOutbound(as: HTTPResponsePart.self)
        #expect(drained.isActive && answer == nil, "no answer, no close")

        let declared = try await connection()
        try declared.writeInbound(HTTPRequestPart.head(post(declaring: 1000)))
        #expect(try declared.readInbound(as: HTTPRequestPart.self) == nil, "the router never sees it")
        guard case .head(let head)? = try declared.readOutbound(as: HTTPResponsePart.self),
            case .body(let body)? = try declared.readOutbound(as: HTTPResponsePart.self)
        else {
            Issue.record("expected an immediate 413 with close")
            return
        }
        #expect(head.status == .contentTooLarge && !declared.isActive)
        let e2 = try APICoding.decoder().decode(ErrorResponse.self, from: Data(body.readableBytesView)).error
        #expect(e2.code == .payloadTooLarge)

        let ok = try await ControlAPI.body(
            of: Request(head: post(), body: RequestBody(buffer: ByteBuffer(string: "{}"))), context: context)
        #expect(ok == Data("{}".utf8))
    }

    @Test("journald field names from metadata keys")
    func journalFieldNames() {
        #expect(DaemonLogHandler.journalFieldName("job.id") == "JOB_ID")
        #expect(DaemonLogHandler.journalFieldName("stage") == "STAGE")
        #expect(DaemonLogHandler.journalFieldName("_secret") == "SECRET")
        #expect(DaemonLogHandler.journalFieldName("2x") == "F2X")
        #expect(DaemonLogHandler.syslogPriority(.error) == 3)
        #expect(DaemonLogHandler.detectSink(environment: [:]) == .stderr)
        #expect(DaemonLogHandler.detectSink(environment: ["JOURNAL_STREAM": "1:2"]) == .stderr, "not our stderr")
    }

    @Test("test faults parse, and unknown ones are refused")
    func faults() throws {
        let f = try FaultInjection(environment: ["GRIDIT_TEST_FAULTS": "crash-after-claim=3,free-bytes=0"])
        #expect(f.crashAfterClaim == [3] && f.freeBytes == 0 && f.isActive)
        #expect(!(try FaultInjection(environment: [:])).isActive)
        #expect(throws: FaultInjectionError.self) { try FaultInjection(environment: ["GRIDIT_TEST_FAULTS": "explode"]) }
        let pause = try #require(try FaultInjection(environment: ["GRIDIT_TEST_FAULTS": "pause-at=sr:3"]).pauseAt)
        #expect(pause.matches(StepProgress(stage: .sr, grid: 2, grids: 2, step: 1, steps: 5, frame: 3, frames: 8)))
        #expect(!pause.matches(StepProgress(stage: .sr, grid: 2, grids: 2, step: 1, steps: 5, frame: 2, frames: 8)))
        #expect(!pause.matches(StepProgress(stage: .grid, grid: 3, grids: 4, step: 1, steps: 5, frame: 3, frames: 8)))
        for bad in ["pause-at=sr", "pause-at=vae:1", "pause-at=grid:0"] {
            #expect(throws: FaultInjectionError.self) { try FaultInjection(environment: ["GRIDIT_TEST_FAULTS": bad]) }
        }
    }

    @Test("waitForWake waits its timeout every time; a wake ends it, and one sent while nobody waits is kept once")
    func wakeUps() async {
        let monitor = JobMonitor()
        let clock = ContinuousClock()
        func timed(_ timeout: Duration) async -> Duration {
            let start = clock.now
            await monitor.waitForWake(timeout: timeout)
            return clock.now - start
        }
        // A second wait after a timeout must wait again (a cancelled stream once made it return at once).
        for _ in 0..<3 { #expect(await timed(.milliseconds(100)) >= .milliseconds(100)) }
        monitor.wake()
        #expect(await timed(.seconds(60)) < .seconds(30), "a wake sent before the wait is kept")
        #expect(await timed(.milliseconds(100)) >= .milliseconds(100), "and kept only once")
        async let waited = timed(.seconds(60))
        try? await Task.sleep(for: .milliseconds(50))
        monitor.wake()
        #expect(await waited < .seconds(30))
    }

    @Test("stop requests: only for jobs this host runs, and they end with the run")
    func staleStops() {
        let monitor = JobMonitor()
        monitor.requestStop(7, .cancel)  // another host runs job 7
        monitor.started([7])
        #expect(monitor.stopReason(7) == nil, "a cancel of another host's run stops nothing here")
        monitor.requestStop(7, .cancel)
        monitor.requestStop(7, .leaseLost)
        #expect(monitor.stopReason(7) == .leaseLost, "a lost lease overrides")
        monitor.finished(7)
        #expect(monitor.stopReason(7) == nil && !monitor.isRunning(7), "a later run of job 7 starts clean")
    }

    @Test("an idempotent resubmit matches when only the daemon-chosen seed differs")
    func idempotentMatch() {
        let stored = JobSpec(length: 8, model: "m:v1", parameters: .init(seed: 42, steps: "50"))
        let same = JobSpec(length: 8, model: "m:v1", parameters: .init(steps: "50"))
        #expect(stored.matches(same))
        var other = same
        other.parameters.steps = "250"
        #expect(!stored.matches(other))
        var longer = same
        longer.length = 9
        #expect(!stored.matches(longer))
    }

    @Test("job rows written before JobSpec read as the spec they asked for; unreadable rows are errors")
    func storedSpecs() throws {
        // What gridit 0.1 stored in `params` (the length only in its column), verbatim.
        let legacy =
            #"{"model":"m:v1","output":"cats/run-1","parameters":{"context":"clean","eta":0.5,"no_sr":true,"precision":"bf16","sampler":"ddim","seed":18446744073709551615,"sr_steps":"ddim25","steps":"50"},"seed_given":true}"#
        let spec = try JobSpec(storedJSON: legacy, length: 12)
        #expect(
            spec
                == JobSpec(
                    length: 12, model: "m:v1", output: "cats/run-1",
                    parameters: .init(
                        seed: .max, sampler: .ddim, steps: "50", srSteps: "ddim25", eta: 0.5, context: .clean,
                        noSR: true,
                        precision: "bf16")))
        let minimal = try JobSpec(storedJSON: #"{"parameters":{"seed":7},"seed_given":false}"#, length: 3)
        #expect(minimal == JobSpec(length: 3, parameters: .init(seed: 7)))
        // Today's rows hold the spec as it is.
        #expect(try JobSpec(storedJSON: spec.storedJSON, length: 12) == spec)
        // Never a default for what does not decode.
        for broken in ["", "{", #"{"parameters":{"sampler":"euler"}}"#, #"{"parameters":{"seed":-1}}"#, "[1]"] {
            #expect(throws: StoredJobError.self, "\(broken)") { try JobSpec(storedJSON: broken, length: 4) }
        }
    }

    @Test("a worker's end: crash signals, exit codes, and where its cgroup's OOM-kill count is")
    func workerExit() {
        // Wait statuses as the kernel encodes them: signal in the low 7 bits, exit code above.
        let segv = WorkerExit(status: SIGSEGV)
        #expect(segv.signal == SIGSEGV && segv.isCrashSignal && segv.description == "killed by SIGSEGV")
        let killed = WorkerExit(status: SIGKILL)
        #expect(killed.signal == SIGKILL && !killed.isCrashSignal)
        let exited = WorkerExit(status: 3 << 8)
        #expect(exited.signal == 0 && exited.code == 3 && exited.description == "exited with status 3")
        // A container mounts the hierarchy from some ancestor: the cgroup's own file comes first.
        #expect(
            OOMKills.own("/sys/fs/cgroup/memory", "/a/b", "memory.oom_control") == [
                "/sys/fs/cgroup/memory/a/b/memory.oom_control", "/sys/fs/cgroup/memory/b/memory.oom_control",
                "/sys/fs/cgroup/memory/memory.oom_control",
            ])
        #expect(OOMKills.own("/sys/fs/cgroup", "/", "memory.events") == ["/sys/fs/cgroup/memory.events"])
    }
}
