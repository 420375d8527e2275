// `griditctl models import` of a path griditd cannot see (issue 17, models from anywhere): the
// daemon runs in a mount namespace where the model's folder is an empty tmpfs, as the unit's
// ProtectHome= hides /home, and griditctl streams the pipeline or bundle over the socket.
// Also: hostile uploads, a damaged stream, and leftovers of a killed upload.

import Crypto
import Foundation
import GriditAPI
import GriditCLI
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("models import over the socket", .serialized, .offPool)
struct UploadProcessTests {
    static let ctl = binaryDirectory() + "/griditctl"

    static func griditctl(_ daemon: DaemonProcess, _ args: [String]) throws -> ProcessResult {
        try runProcess(ctl, args + ["--socket", daemon.socket], environment: ["PATH": "/usr/bin:/bin"])
    }

    /// A raw upload: `body` with a Content-Digest of `digestOf` (the body itself by default).
    static func upload(_ daemon: DaemonProcess, kind: String, body: [UInt8], digestOf: [UInt8]? = nil) throws -> String
    {
        let digest = Data(SHA256.hash(data: digestOf ?? body)).base64EncodedString()
        let head =
            "POST /v1/models/upload?kind=\(kind)&name=raw:v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + "Content-Length: \(body.count)\r\nContent-Digest: sha-256=:\(digest):\r\n\r\n"
        return try rawExchange(daemon.socket, Array(head.utf8) + body, timeout: 60)
    }

    static func digests(_ daemon: DaemonProcess, _ reference: String) throws -> [String: String] {
        let show = try daemon.client.get("/v1/models/" + reference, as: JSONValue.self)
        guard case .array(let blobs)? = show["result"]?["blobs"] else { throw TestFailure("no blobs: \(show)") }
        var byRole: [String: String] = [:]
        for blob in blobs {
            if case .string(let role)? = blob["role"], case .string(let digest)? = blob["digest"] {
                byRole[role] = digest
            }
        }
        return byRole
    }

    @Test(
        "a pipeline folder and a bundle griditd cannot see are streamed, hash-checked, and imported as by path",
        .enabled(if: DaemonProcess.canHide, "needs root and mount namespaces (unshare -m)"))
    func hiddenFromTheDaemon() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let hidden = dir.file("home")
        try FileManager.default.createDirectory(atPath: hidden, withIntermediateDirectories: true)
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline(), hiding: hidden)
        defer { daemon.stop() }
        let folder = try HostileImportProcessTests.pipelineCopy(in: dir, "home/pix")

        // By path alone, griditd finds nothing there, and says that it may be hidden from it.
        let byPath = try daemon.client.http.send(
            "POST", "/v1/models/import", body: APICoding.encode(ImportModelRequest(path: folder, name: "no:v1")))
        #expect(byPath.status == 404)
        #expect(String(decoding: byPath.body, as: UTF8.self).contains("griditd's unit hides it"))

        let imported = try Self.griditctl(daemon, ["models", "import", folder, "--name", "up:v1"])
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(
            imported.stderr.contains("griditd cannot see \(folder)/pipeline.json: it exists here"), "\(imported.stderr)"
        )
        let tiny = try Self.digests(daemon, "tiny:latest")
        #expect(try Self.digests(daemon, "up:v1") == tiny)

        // A bundle: exported into the hidden folder by griditctl, streamed back under another name.
        let bundle = hidden + "/tiny.tar"
        #expect(try Self.griditctl(daemon, ["models", "export", "tiny:latest", "-o", bundle]).status == 0)
        let fromBundle = try Self.griditctl(daemon, ["models", "import", bundle, "--name", "bun:v1", "--json"])
        #expect(fromBundle.status == 0, "\(fromBundle.stderr)")
        #expect(try Self.digests(daemon, "bun:v1") == tiny)

        // What exists nowhere is named so, without asking griditd.
        let missing = try Self.griditctl(daemon, ["models", "import", hidden + "/nope", "--name", "x:v1"])
        #expect(missing.status != 0 && missing.stderr.contains("does not exist"), "\(missing.stderr)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("models export stages nothing: it works while griditd's tmp folder cannot take a file (as when full)")
    func exportStagesNothing() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        let tmp = dir.file("state/tmp")
        try FileManager.default.removeItem(atPath: tmp)
        #expect(FileManager.default.createFile(atPath: tmp, contents: Data("not a folder".utf8)))
        let bundle = dir.file("tiny.tar")
        let exported = try Self.griditctl(daemon, ["models", "export", "tiny:latest", "-o", bundle])
        #expect(exported.status == 0, "\(exported.stderr)")
        try FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: false)
        let back = try Self.griditctl(daemon, ["models", "import", bundle, "--name", "back:v1"])
        #expect(back.status == 0, "\(back.stderr)")
        #expect(try Self.digests(daemon, "back:v1") == Self.digests(daemon, "tiny:latest"))
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("--upload streams a visible folder too; links are refused before sending, and by griditd in a tar")
    func hostileUploads() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        let folder = try HostileImportProcessTests.pipelineCopy(in: dir)
        let streamed = try Self.griditctl(daemon, ["models", "import", folder, "--name", "up:v1", "--upload"])
        #expect(streamed.status == 0, "\(streamed.stderr)")
        #expect(try Self.digests(daemon, "up:v1") == Self.digests(daemon, "tiny:latest"))
        // A pipeline with a guide model: its files travel too.
        let guided = (fixturePipeline("pixel_guide") as NSString).deletingLastPathComponent
        let withGuide = try Self.griditctl(daemon, ["models", "import", guided, "--name", "guided:v1", "--upload"])
        #expect(withGuide.status == 0, "\(withGuide.stderr)")
        let roles = try Self.digests(daemon, "guided:v1").keys.sorted()
        #expect(roles == ["guide.config", "guide.weights", "manifest", "stage1.config", "stage1.weights"], "\(roles)")

        // File names longer than a tar header holds: split into its prefix field, or (no split
        // fits) carried by a pax record. Before, the second arrived cut to 100 bytes.
        let long = try HostileImportProcessTests.pipelineCopy(in: dir, "long")
        let split = String(repeating: "d", count: 120) + "/" + String(repeating: "s", count: 80) + ".safetensors"
        let wide = String(repeating: "w", count: 150) + ".safetensors"
        try FileManager.default.createDirectory(
            atPath: long + "/" + String(repeating: "d", count: 120), withIntermediateDirectories: false)
        #expect(rename(long + "/stage1.safetensors", long + "/" + split) == 0)
        #expect(rename(long + "/stage2.safetensors", long + "/" + wide) == 0)
        let spec = try String(contentsOfFile: long + "/pipeline.json", encoding: .utf8)
            .replacingOccurrences(of: "\"stage1.safetensors\"", with: "\"\(split)\"")
            .replacingOccurrences(of: "\"stage2.safetensors\"", with: "\"\(wide)\"")
        try spec.write(toFile: long + "/pipeline.json", atomically: true, encoding: .utf8)
        let longNames = try Self.griditctl(daemon, ["models", "import", long, "--name", "long:v1", "--upload"])
        #expect(longNames.status == 0, "\(longNames.stderr)")
        let (got, tiny) = (try Self.digests(daemon, "long:v1"), try Self.digests(daemon, "tiny:latest"))
        #expect(got["stage1.weights"] == tiny["stage1.weights"] && got["stage2.weights"] == tiny["stage2.weights"])

        // A weights file that is a link: griditctl refuses to send it.
        let linked = try HostileImportProcessTests.pipelineCopy(in: dir, "linked")
        unlink(linked + "/stage2.safetensors")
        symlink(folder + "/stage2.safetensors", linked + "/stage2.safetensors")
        let refused = try Self.griditctl(daemon, ["models", "import", linked, "--name", "l:v1", "--upload"])
        #expect(refused.status != 0 && refused.stderr.contains("not a regular file"), "\(refused.stderr)")

        // The same as a tar sent by hand: griditd refuses the link entry.
        let tar = dir.file("linked.tar")
        let made = try runProcess("/usr/bin/tar", ["-cf", tar, "-C", linked, "."])
        #expect(made.status == 0, "\(made.stderr)")
        let answer = try Self.upload(
            daemon, kind: "pipeline", body: Array(try Data(contentsOf: URL(fileURLWithPath: tar))))
        #expect(answer.hasPrefix("HTTP/1.1 400") && answer.contains("is a symbolic link"), "\(answer)")

        // A tar that lacks a file its pipeline.json names (an old client's, without the guide's):
        // the answer names the file, not griditd's staging folder.
        let partial = dir.file("partial")
        try FileManager.default.copyItem(atPath: guided, toPath: partial)
        try FileManager.default.removeItem(atPath: partial + "/guide.config.json")
        let partialTar = dir.file("partial.tar")
        #expect(try runProcess("/usr/bin/tar", ["-cf", partialTar, "-C", partial, "."]).status == 0)
        let lacking = try Self.upload(
            daemon, kind: "pipeline", body: Array(try Data(contentsOf: URL(fileURLWithPath: partialTar))))
        #expect(
            lacking.hasPrefix("HTTP/1.1 400") && lacking.contains("lacks 'guide.config.json'")
                && lacking.contains("guide.config") && !lacking.contains("/tmp/upload-"), "\(lacking)")

        // A stream damaged on the way (its digest is another's) imports nothing.
        let good = Array(try Data(contentsOf: URL(fileURLWithPath: tar)))
        let damaged = try Self.upload(daemon, kind: "bundle", body: good, digestOf: good + [0])
        #expect(damaged.hasPrefix("HTTP/1.1 422") && damaged.contains("digest_mismatch"), "\(damaged)")
        let noDigest = try rawExchange(
            daemon.socket,
            Array("POST /v1/models/upload?kind=bundle HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".utf8))
        #expect(noDigest.hasPrefix("HTTP/1.1 400") && noDigest.contains("Content-Digest"), "\(noDigest)")

        // Nothing of these uploads is left behind.
        let tmp = daemon.stateDir + "/tmp"
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []).filter {
            $0.hasPrefix("upload-")
        }
        #expect(left.isEmpty, "\(left)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("a restart removes the staged body and unpacked folder of a killed upload")
    func leftovers() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var daemon = try DaemonProcess(directory: dir)
        #expect(daemon.stop() == 0)
        let tmp = daemon.stateDir + "/tmp"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let id = UUID().uuidString.lowercased()
        _ = FileManager.default.createFile(atPath: "\(tmp)/upload-\(id).part", contents: Data([1, 2, 3]))
        try FileManager.default.createDirectory(
            atPath: "\(tmp)/upload-\(id).part.d/sub", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: "\(tmp)/keep-me", contents: Data())
        daemon = try DaemonProcess(directory: dir)
        defer { daemon.stop() }
        let names = try FileManager.default.contentsOfDirectory(atPath: tmp)
        #expect(names == ["keep-me"], "\(names)")
    }
}
