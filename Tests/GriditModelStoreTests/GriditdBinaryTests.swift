import Foundation
import Glibc
import GriditAPI
import GriditDiffusion
import GriditJobQueue
import GriditModelStore
import GriditModels
import GriditStateDatabase
import GriditTestSupport
import Testing

/// The real `griditd` executable (built by `swift build` / `swift test` next to the test bundle).
func griditdExecutable() throws -> String {
    let path = binaryDirectory() + "/griditd"
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw TestFailure("no griditd at \(path); run `swift build --product griditd` first")
    }
    return path
}

/// Runs griditd to completion (`prefix`: a command that runs it, such as setpriv).
func griditd(_ arguments: [String], environment: [String: String] = [:], prefix: [String] = []) throws -> ProcessResult
{
    let binary = try griditdExecutable()
    return try runProcess(
        prefix.first ?? binary, Array(prefix.dropFirst()) + (prefix.isEmpty ? [] : [binary]) + arguments,
        environment: ProcessInfo.processInfo.environment.merging(environment) { $1 }, timeout: 300)
}

@Suite("The griditd binary: kill -9 during import, CLI contract", .offPool)
struct GriditdBinaryTests {
    /// Starts an import that stops at `label` (the `pause-at` fault point, which writes
    /// `<state>/test-paused` there), waits until it is there, and kills it with SIGKILL.
    func killImport(at label: String, pipeline: String, state: String, extra: [String] = []) throws {
        let marker = state + "/test-paused"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try griditdExecutable())
        process.arguments =
            ["models", "import", pipeline, "--name", "big:v1", "--link", "copy", "--state-dir", state] + extra
        process.environment = ProcessInfo.processInfo.environment.merging(
            ["GRIDIT_TEST_FAULTS": "pause-at=\(label)"]) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: marker) {
            guard process.isRunning else {
                Issue.record("griditd exited (status \(process.terminationStatus)) before reaching \(label)")
                return
            }
            guard Date() < deadline else {
                process.terminate()
                Issue.record("griditd did not reach \(label) within 120 s")
                return
            }
            usleep(20_000)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal)
    }

    @Test(
        "kill -9 at any point of an import leaves no visible partial blob or tag; the next open and gc clean up",
        arguments: ["import.copying", "import.ingested", "import.published", "import.committed"])
    func killDuringImport(label: String) throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let pipeline = try writePipeline(in: dir.file("src"), name: "big", stage1: Tiny.bigStage1)
        let state = dir.file("state")
        let weightsSize =
            try FileManager.default.attributesOfItem(atPath: dir.file("src/stage1.safetensors"))[.size] as! Int
        #expect(weightsSize > 1 << 20, "the crash point import.copying needs a file over one I/O chunk")
        try killImport(at: label, pipeline: pipeline, state: state)
        #expect(try String(contentsOfFile: state + "/test-paused", encoding: .utf8) == label + "\n")

        let ingest = try FileManager.default.contentsOfDirectory(atPath: state + "/ingest")
        if label == "import.copying" {
            // stage1.config is in, stage1.safetensors one chunk in.
            #expect(ingest.count == 2)
            let sizes = try ingest.map {
                try FileManager.default.attributesOfItem(atPath: state + "/ingest/" + $0)[.size] as! Int
            }
            #expect(sizes.contains(1 << 20) && weightsSize > 1 << 20, "killed mid-file")
        }
        if label == "import.ingested" { #expect(ingest.count == 5) }

        let store = try ModelStore(stateDirectory: state)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: state + "/ingest").isEmpty,
            "opening the store removes the dead import's ingest files")
        // Whatever is under blobs/ is complete: it hashes to its name.
        for name in try FileManager.default.contentsOfDirectory(atPath: state + "/blobs/sha256") {
            #expect(try digestOf(state + "/blobs/sha256/" + name) == "sha256:" + name)
        }
        let committed = label == "import.committed"
        #expect(try store.list(pins: JobPins()).models.map(\.reference) == (committed ? ["big:v1"] : []))
        if committed { _ = try store.resolvePipeline(try store.resolve("big:v1")).spec }

        let gc = try store.gc(pins: JobPins())
        #expect(gc.removedTemporary.isEmpty)
        if label == "import.published" { #expect(gc.removedBlobs.count == 5, "complete but unreferenced blobs go") }
        if committed { #expect(gc.removedBlobs.isEmpty) }
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: state + "/blobs/sha256").count == (committed ? 5 : 0))

        // The store works afterwards.
        let result = try store.importModel(from: pipeline, name: "big:v1", link: .copy)
        #expect(result.reference == "big:v1")
        #expect(try store.verify(nil).ok)
    }

    @Test("an import publishes its version to the model origin before it commits it here")
    func publishesBeforeCommitting() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let pipeline = try writePipeline(in: dir.file("src"), name: "big", stage1: Tiny.bigStage1)
        let shared = dir.file("shared")
        try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
        let server = try PostgresTestServer.shared()
        let url =
            "postgres://\(server.user)@\(server.host):\(server.port)/\(server.database)"
            + "?sslmode=disable&schema=\(server.freshSchema())"
        try killImport(
            at: "import.committed", pipeline: pipeline, state: dir.file("state"),
            extra: ["--shared-root", shared, "--database", url])
        #expect(FileManager.default.fileExists(atPath: shared + "/.gridit-cluster"), "a new cluster's mark")
        let origin = shared + "/models/blobs/sha256"
        let published = try FileManager.default.contentsOfDirectory(atPath: origin).sorted()
        let local = try FileManager.default.contentsOfDirectory(atPath: dir.file("state/blobs/sha256")).sorted()
        #expect(published.count == 5 && published == local, "the manifest and its four blobs are in the origin")
        for name in published { #expect(try digestOf(origin + "/" + name) == "sha256:" + name) }
        // Its tag too, once committed.
        let tag = try String(contentsOfFile: shared + "/models/tags/big:v1", encoding: .utf8)
        #expect(published.contains(String(tag.trimmingCharacters(in: .newlines).dropFirst(7))), "\(tag)")
    }

    @Test("--json output decodes into the result types; errors exit with their status")
    func jsonContract() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let pipeline = try writePipeline(in: dir.file("src"))
        let state = ["--state-dir", dir.file("state")]
        let imported = try griditd(["models", "import", pipeline, "--name", "tiny:v1", "--json"] + state)
        #expect(imported.status == 0, "\(imported.stderr)")
        let result = try JSONDecoder().decode(ModelImportResult.self, from: Data(imported.stdout.utf8))
        #expect(result.reference == "tiny:v1")
        #expect(imported.stdout.contains("\"bytes_written\""), "snake_case keys")

        let list = try griditd(["models", "list", "--json"] + state)
        #expect(try JSONDecoder().decode(ModelListResult.self, from: Data(list.stdout.utf8)).models.count == 1)
        let table = try griditd(["models", "list"] + state)
        #expect(table.stdout.hasPrefix("NAME"))
        #expect(table.stdout.contains(String(result.digest.dropFirst(7).prefix(12))))

        let missing = try griditd(["models", "show", "nope:v1"] + state)
        #expect(missing.status == 66)
        #expect(missing.stderr.contains("error: not_found: no model nope:v1"))
        let bad = try griditd(["models", "show", "Bad:Ref"] + state)
        #expect(bad.status == 64)

        try flipByte(result.blobs[2].path!, at: 10)
        let verify = try griditd(["models", "verify", "--all", "--json"] + state)
        #expect(verify.status == 1)
        #expect(try JSONDecoder().decode(ModelVerifyResult.self, from: Data(verify.stdout.utf8)).ok == false)
    }

    @Test("with a daemon holding the state directory, mutating commands refuse and point at griditctl")
    func daemonRunning() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let pipeline = try writePipeline(in: dir.file("src"))
        let state = ["--state-dir", dir.file("state")]
        #expect(try griditd(["models", "import", pipeline] + state).status == 0)
        let daemon = try StateDirectoryLock(stateDirectory: dir.file("state"))
        defer { daemon.release() }
        let refused = try griditd(["models", "rm", "tiny:latest"] + state)
        #expect(refused.status == 75)
        #expect(refused.stderr.contains("griditctl models rm"))
        #expect(refused.stderr.contains("pid \(getpid())"))
        let list = try griditd(["models", "list"] + state)
        #expect(list.status == 0 && list.stdout.contains("tiny"))
    }

    @Test("a state directory this user cannot write: the message names the component and the fix")
    func permissionDenied() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let pipeline = try writePipeline(in: dir.file("src"))
        let locked = dir.file("locked")
        try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: false)
        chmod(locked, 0o555)
        chmod(dir.path, 0o755)
        chmod(dir.file("src"), 0o755)
        // As root, permission bits do not apply: run griditd as nobody through setpriv.
        let asNobody = geteuid() == 0 ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : []
        if !asNobody.isEmpty, !FileManager.default.isExecutableFile(atPath: asNobody[0]) {
            Issue.record("running as root needs setpriv (util-linux) to drop privileges")
            return
        }
        for file in try FileManager.default.contentsOfDirectory(atPath: dir.file("src")) {
            chmod(dir.file("src/" + file), 0o644)
        }
        let outcome = try griditd(["models", "import", pipeline, "--state-dir", locked + "/state"], prefix: asNobody)
        #expect(outcome.status == 77, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("cannot create it: \(locked) is owned by"), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("Fix:") && outcome.stderr.contains("--state-dir"))

        let check = try griditd(["models", "check", "--state-dir", locked + "/state"], prefix: asNobody)
        #expect(check.status == 77)
        #expect(check.stdout.contains("[error] state directory"))

        // A writable state directory, but a weights file this user may not read.
        let open = dir.file("open")
        try FileManager.default.createDirectory(atPath: open, withIntermediateDirectories: false)
        if geteuid() == 0 { chown(open, 65534, 65534) } else { chmod(open, 0o777) }
        chmod(dir.file("src/stage1.safetensors"), 0o600)
        if geteuid() != 0 { chmod(dir.file("src/stage1.safetensors"), 0o000) }
        let unreadable = try griditd(["models", "import", pipeline, "--state-dir", open + "/state"], prefix: asNobody)
        #expect(unreadable.status == 77, "\(unreadable.stderr)")
        #expect(unreadable.stderr.contains("stage1.weights"))
        #expect(
            unreadable.stderr.contains(dir.file("src/stage1.safetensors"))
                && unreadable.stderr.contains("Permission denied"))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: open + "/state/blobs/sha256")
        #expect(leftovers.isEmpty, "nothing was stored")
    }
}
