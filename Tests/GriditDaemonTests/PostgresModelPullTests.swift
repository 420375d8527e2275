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

// Hosts of one PostgreSQL queue and one shared root whose own model stores lack a job's version
// pull it from the model origin (`<shared-root>/models`): real griditd processes, real files.
@Suite("griditd on PostgreSQL: model pulls from the origin", .serialized, .offPool)
struct PostgresModelPullTests {
    static let request = SubmitJobRequest(spec: JobSpec(length: 8, parameters: .init(seed: 77)))

    /// The tiny pipeline imported offline into host A's state directory with the cluster's
    /// settings, which publishes it to the model origin.
    static func importOnA(_ dirA: TemporaryDirectory, url: String, shared: String) throws -> ModelImportResult {
        let run = try runProcess(
            binaryDirectory() + "/griditd",
            [
                "models", "import", tinyPipeline(), "--name", "tiny:latest", "--link", "copy", "--json", "--state-dir",
                dirA.file("state"), "--database", url, "--shared-root", shared,
            ])
        guard run.status == 0 else { throw TestFailure("import: \(run.stderr)") }
        return try APICoding.decoder().decode(ModelImportResult.self, from: Data(run.stdout.utf8))
    }

    static func drain(_ via: DaemonProcess, _ node: DaemonProcess, _ draining: Bool = true) throws {
        let id = try PostgresDaemonTests.nodeID(node)
        _ = try via.client.post("/v1/nodes/\(id)/\(draining ? "drain" : "undrain")", as: NodeInfo.self)
    }

    static func blobFiles(_ daemon: DaemonProcess) -> [String] { entries(daemon.stateDir + "/blobs/sha256") }

    @Test(
        "a host without the model pulls the job's version from the origin, as its own copy, and writes the frames the importing host writes; gc on any host, offline too, keeps what a queued job pins"
    )
    func pullRunsAndGCKeepsPins() throws {
        let url = try PostgresDaemonTests.freshURL()
        let (dirA, dirB, shared) = (TemporaryDirectory(), TemporaryDirectory(), TemporaryDirectory())
        defer {
            for dir in [dirA, dirB, shared] { dir.remove() }
        }
        let imported = try Self.importOnA(dirA, url: url, shared: shared.path)
        let origin = try #require(imported.published)
        #expect(origin.hasSuffix("/models"), "\(origin)")
        let digests = imported.blobs.map { String($0.digest.dropFirst(7)) }
        #expect(Set(entries(origin + "/blobs/sha256")) == Set(digests))

        let cluster = ["--database", url, "--shared-root", shared.path]
        let a = try DaemonProcess(directory: dirA, arguments: cluster)
        let b = try DaemonProcess(directory: dirB, arguments: cluster)
        #expect(Self.blobFiles(b).isEmpty)

        // The reference: on A, which imported the model.
        try Self.drain(a, b)
        let first = try a.client.post("/v1/jobs", Self.request, as: SubmitJobResponse.self).job.id
        let onA = try waitForJob(a, first)
        let (nodeA, nodeB) = (try PostgresDaemonTests.nodeID(a), try PostgresDaemonTests.nodeID(b))
        #expect(onA.state == .succeeded && onA.node == nodeA, "\(onA)\n\(a.log)")

        // The same job, run by B: it pulls the version, then runs it from its own copy.
        try Self.drain(a, a)
        try Self.drain(a, b, false)
        let second = try a.client.post("/v1/jobs", Self.request, as: SubmitJobResponse.self).job.id
        let onB = try waitForJob(b, second)
        #expect(onB.state == .succeeded && onB.node == nodeB, "\(onB)\n\(b.log)")
        #expect(b.log.contains("pulled model sha256:\(digests[0])"), "\(b.log)")
        #expect(Set(Self.blobFiles(b)) == Set(digests))
        for hex in digests {
            var local = stat()
            var shared = stat()
            #expect(stat(b.stateDir + "/blobs/sha256/" + hex, &local) == 0)
            #expect(stat(origin + "/blobs/sha256/" + hex, &shared) == 0)
            #expect(local.st_ino != shared.st_ino || local.st_dev != shared.st_dev, "B's blob is its own copy")
        }
        let outputA = try #require(onA.outputDir)
        let outputB = try #require(onB.outputDir)
        let frames = try FileManager.default.contentsOfDirectory(atPath: outputA + "/frames").sorted()
        #expect(frames.count == 8)
        #expect(try frameDigests(outputB) == frameDigests(outputA))
        for frame in frames {
            let made = try Data(contentsOf: URL(fileURLWithPath: outputB + "/frames/" + frame))
            let expected = try Data(contentsOf: URL(fileURLWithPath: outputA + "/frames/" + frame))
            #expect(made == expected, "\(frame) differs from host A's")
        }
        // A tag only A's store holds names the same version on B: the import published it to
        // the origin, where B looks up a tag it does not know.
        let byTag = SubmitJobRequest(spec: JobSpec(length: 4, model: "tiny:latest", parameters: .init(seed: 5)))
        let tagged = try b.client.post("/v1/jobs", byTag, as: SubmitJobResponse.self).job
        #expect(tagged.pipelineDigest == imported.digest)
        #expect(try waitForJob(b, tagged.id).state == .succeeded, "\(b.log)")
        do {
            let unknown = SubmitJobRequest(spec: JobSpec(length: 4, model: "tiny:v9"))
            _ = try b.client.post("/v1/jobs", unknown, as: SubmitJobResponse.self)
            Issue.record("a tag no host published was accepted")
        } catch {
            #expect("\(error)".contains("no model tiny:v9"), "\(error)")
        }

        // A job queued on the shared queue pins the version B pulled (untagged there): gc keeps
        // it, through B's daemon and offline on B's state directory.
        try Self.drain(a, b)
        let queued = try a.client.post("/v1/jobs", Self.request, as: SubmitJobResponse.self).job.id
        let gc = try runProcess(
            binaryDirectory() + "/griditctl", ["models", "gc", "--json"], environment: b.cliEnvironment, timeout: 120)
        #expect(gc.status == 0, "\(gc.stderr)")
        #expect(Set(Self.blobFiles(b)) == Set(digests), "\(gc.stdout)")
        #expect(b.stop() == 0)
        let offline = [
            "models", "gc", "--json", "--state-dir", b.stateDir, "--database", url, "--shared-root", shared.path,
        ]
        let kept = try runProcess(binaryDirectory() + "/griditd", offline)
        #expect(kept.status == 0, "\(kept.stderr)")
        #expect(Set(Self.blobFiles(b)) == Set(digests), "offline gc on B: \(kept.stdout)")
        // The control: B's own SQLite queue knows no job, so a gc that asked it would delete the version.
        let local = try runProcess(
            binaryDirectory() + "/griditd", ["models", "gc", "--dry-run", "--json", "--state-dir", b.stateDir],
            environment: ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("GRIDIT_") })
        let wouldRemove = try APICoding.decoder().decode(ModelGCResult.self, from: Data(local.stdout.utf8))
        #expect(wouldRemove.removedManifests == [imported.digest], "\(local.stdout)\(local.stderr)")
        // Settings from the environment, as the config file would give them, count the same.
        let environment = ProcessInfo.processInfo.environment.merging([
            "GRIDIT_DATABASE": url, "GRIDIT_SHARED_ROOT": shared.path,
        ]) { $1 }
        let keptAgain = try runProcess(
            binaryDirectory() + "/griditd", ["models", "gc", "--state-dir", b.stateDir], environment: environment)
        #expect(keptAgain.status == 0 && Set(Self.blobFiles(b)) == Set(digests), "\(keptAgain.stderr)")

        // Once no live job pins it, B's untagged copy goes (it is pulled again when needed); A's
        // tagged version stays.
        _ = try a.client.post("/v1/jobs/\(queued)/cancel", as: JobInfo.self)
        let removed = try runProcess(binaryDirectory() + "/griditd", offline)
        #expect(removed.status == 0 && Self.blobFiles(b).isEmpty, "\(removed.stdout)\(removed.stderr)")
        #expect(a.stop() == 0)
        #expect(Set(entries(dirA.file("state/blobs/sha256"))) == Set(digests))
    }

    @Test(
        "griditctl models convert on one host publishes the new version and its tag to the origin; another host runs a job of it by tag"
    )
    func convertPublishes() throws {
        let url = try PostgresDaemonTests.freshURL()
        let (dirA, dirB, shared) = (TemporaryDirectory(), TemporaryDirectory(), TemporaryDirectory())
        defer {
            for dir in [dirA, dirB, shared] { dir.remove() }
        }
        _ = try Self.importOnA(dirA, url: url, shared: shared.path)
        let cluster = ["--database", url, "--shared-root", shared.path]
        let a = try DaemonProcess(directory: dirA, arguments: cluster)
        let b = try DaemonProcess(directory: dirB, arguments: cluster)
        let run = try runProcess(
            binaryDirectory() + "/griditctl", ["models", "convert", "tiny:latest", "--precision", "bf16", "--json"],
            environment: a.cliEnvironment, timeout: 120)
        #expect(run.status == 0, "\(run.stderr)")
        let converted = try APICoding.decoder().decode(ModelImportResult.self, from: Data(run.stdout.utf8))
        let origin = try #require(converted.published, "\(converted)")
        #expect(
            Set(converted.blobs.map { String($0.digest.dropFirst(7)) }).isSubset(of: entries(origin + "/blobs/sha256")))
        #expect(
            (try? String(contentsOfFile: origin + "/tags/tiny:latest-bf16", encoding: .utf8))?.contains(
                String(converted.digest.dropFirst(7))) == true)

        // B, whose own store holds neither the tag nor the version, runs it: the tag resolves in the origin.
        try Self.drain(a, a)
        let request = SubmitJobRequest(
            spec: JobSpec(length: 4, model: "tiny:latest-bf16", parameters: .init(seed: 5)))
        let job = try b.client.post("/v1/jobs", request, as: SubmitJobResponse.self).job
        #expect(job.pipelineDigest == converted.digest)
        let (done, nodeB) = (try waitForJob(b, job.id), try PostgresDaemonTests.nodeID(b))
        #expect(done.state == .succeeded && done.node == nodeB, "\(done)\n\(b.log)")
        #expect(a.stop() == 0 && b.stop() == 0)
    }

    @Test(
        "a corrupted origin blob is refused by every host, and nothing of it lands in their stores; an unreachable origin makes the job retryable, and it succeeds once the origin is back"
    )
    func corruptAndUnreachableOrigin() throws {
        let url = try PostgresDaemonTests.freshURL()
        let (dirA, dirB, dirC, shared) = (
            TemporaryDirectory(), TemporaryDirectory(), TemporaryDirectory(), TemporaryDirectory()
        )
        defer {
            for dir in [dirA, dirB, dirC, shared] { dir.remove() }
        }
        let imported = try Self.importOnA(dirA, url: url, shared: shared.path)
        let origin = try #require(imported.published)
        let weights = try #require(imported.blobs.max { $0.size < $1.size })
        let hex = String(weights.digest.dropFirst(7))

        let cluster = ["--database", url, "--shared-root", shared.path]
        let a = try DaemonProcess(directory: dirA, arguments: cluster)
        try Self.drain(a, a)
        let b = try DaemonProcess(directory: dirB, arguments: cluster)
        try Self.drain(a, b)
        let c = try DaemonProcess(directory: dirC, arguments: cluster)
        try Self.drain(a, c)

        // One byte of the origin's weights flipped.
        let bad = origin + "/blobs/sha256/" + hex
        func flip() throws {
            chmod(bad, 0o644)
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: bad))
            defer { try? handle.close() }
            let offset = UInt64(weights.size - 5)
            try handle.seek(toOffset: offset)
            let byte = try handle.read(upToCount: 1)![0]
            try handle.seek(toOffset: offset)
            try handle.write(contentsOf: [byte ^ 0x5A])
        }
        try flip()
        for host in [b, c] {
            try Self.drain(a, host, false)
            let id = try a.client.post("/v1/jobs", Self.request, as: SubmitJobResponse.self).job.id
            let job = try waitForJob(host, id)
            #expect(job.state == .failed && job.errorClass == "digest_mismatch", "\(job)\n\(host.log)")
            let node = try PostgresDaemonTests.nodeID(host)
            #expect(job.node == node)
            let message = job.errorMessage ?? ""
            #expect(message.contains(bad) && message.contains("corrupt"), "\(message)")
            #expect(Self.blobFiles(host).isEmpty, "nothing of the version is stored")
            #expect(entries(host.stateDir + "/ingest").isEmpty && entries(host.stateDir + "/quarantine").isEmpty)
            try Self.drain(a, host)
        }

        // The origin intact again but not reachable (the shared root's models folder gone, as
        // when the export is not mounted): the job waits for another try, and then succeeds.
        try flip()
        try FileManager.default.moveItem(atPath: origin, toPath: origin + "-away")
        try Self.drain(a, b, false)
        let id = try a.client.post("/v1/jobs", Self.request, as: SubmitJobResponse.self).job.id
        let waiting = try waitForJob(b, id) { $0.state == .retryable || $0.state.isTerminal }
        #expect(waiting.state == .retryable, "\(waiting)\n\(b.log)")
        #expect(waiting.errorClass == "transient" && (waiting.errorMessage ?? "").contains("cannot be reached"))
        try FileManager.default.moveItem(atPath: origin + "-away", toPath: origin)
        let done = try waitForJob(b, id)
        #expect(done.state == .succeeded && done.attempt == 2, "\(done)\n\(b.log)")
        #expect(Set(Self.blobFiles(b)) == Set(imported.blobs.map { String($0.digest.dropFirst(7)) }))
        for host in [a, b, c] { #expect(host.stop() == 0) }
    }
}
