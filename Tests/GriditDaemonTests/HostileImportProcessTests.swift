// Hostile files handed to a real griditd over its socket, leftovers of a killed one, and
// `griditctl models verify` on a corrupt store. The FIFO case hung griditd's worker threads
// before: a liveness bound of runProcess (not a timing assertion) turns a hang into a failure.

import CDispatch  // declares `struct stat` and `timeval` first once Hummingbird is a dependency
import Foundation
import GriditAPI
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("griditd and hostile files", .serialized, .offPool)
struct HostileImportProcessTests {
    /// A copy of the tiny pipeline in `dir/name`, readable by everyone.
    static func pipelineCopy(in dir: TemporaryDirectory, _ name: String = "p") throws -> String {
        let folder = dir.file(name)
        try FileManager.default.copyItem(atPath: (tinyPipeline() as NSString).deletingLastPathComponent, toPath: folder)
        chmod(folder, 0o755)
        for file in try FileManager.default.contentsOfDirectory(atPath: folder) { chmod(folder + "/" + file, 0o644) }
        return folder
    }

    @Test("imports of a FIFO are refused at once; status, submit and SIGTERM work after them")
    func fifo() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--start-paused"], model: tinyPipeline())
        let folder = try Self.pipelineCopy(in: dir)
        unlink(folder + "/stage1.safetensors")
        #expect(mkfifo(folder + "/stage1.safetensors", 0o644) == 0)
        #expect(mkfifo(dir.file("bundle.tar"), 0o644) == 0)
        let ctl = binaryDirectory() + "/griditctl"
        func run(_ args: [String]) throws -> ProcessResult {
            try runProcess(ctl, args + ["--socket", daemon.socket], environment: ["PATH": "/usr/bin:/bin"])
        }
        for path in [folder, folder + "/stage1.safetensors", dir.file("bundle.tar"), folder] {
            let imported = try run(["models", "import", path, "--name", "fifo:v1"])
            #expect(imported.status == 65 && imported.stderr.contains("a FIFO"), "\(imported.stderr)")
        }
        #expect(try run(["status"]).status == 0)
        #expect(try run(["submit", "--length", "4"]).status == 0)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test(
        "a member's import cannot read root's private files: not directly, not through a link, not by an absolute path",
        .enabled(
            if: PeerCredentialTests.canSwitchUsers,
            "needs root, /usr/bin/setpriv, a 'users' group and a Swift runtime other uids can load"))
    func otherUsersFiles() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--group", "users", "--admin-group", "users"])
        defer { daemon.stop() }
        let client = try PeerCredentialTests.installClient(in: dir)
        let alice: uid_t = 40_001
        func importAsAlice(_ path: String) throws -> ProcessResult {
            try PeerCredentialTests.griditctl(
                client, uid: alice, gid: PeerCredentialTests.usersGID, ["models", "import", path, "--name", "x:v1"],
                socket: daemon.socket)
        }
        let secret = dir.file("secret")
        try Data("$6$root.only:hash".utf8).write(to: URL(fileURLWithPath: secret))
        chmod(secret, 0o600)

        // Root's 0600 file in alice's pipeline folder.
        let folder = try Self.pipelineCopy(in: dir)
        chmod(folder + "/stage1.safetensors", 0o600)
        let direct = try importAsAlice(folder)
        #expect(direct.status == 77 && direct.stderr.contains("uid \(alice) may not read"), "\(direct.stderr)")
        #expect(fileMode(folder + "/stage1.safetensors") == 0o600)

        // A link to it, and an absolute path to it.
        let linked = try Self.pipelineCopy(in: dir, "linked")
        unlink(linked + "/stage1.safetensors")
        #expect(symlink(secret, linked + "/stage1.safetensors") == 0)
        let viaLink = try importAsAlice(linked)
        #expect(viaLink.status == 65 && viaLink.stderr.contains("symbolic link"), "\(viaLink.stderr)")
        let absolute = try Self.pipelineCopy(in: dir, "absolute")
        let pipeline = absolute + "/pipeline.json"
        let text = try String(contentsOfFile: pipeline, encoding: .utf8)
            .replacingOccurrences(of: "\"stage1.safetensors\"", with: "\"\(secret)\"")
        try text.write(toFile: pipeline, atomically: true, encoding: .utf8)
        let viaPath = try importAsAlice(absolute)
        #expect(viaPath.status == 65 && viaPath.stderr.contains("absolute path"), "\(viaPath.stderr)")
        #expect(!viaPath.stderr.contains("root.only") && !direct.stderr.contains("root.only"))
        #expect(fileMode(secret) == 0o600, "the secret stays private")

        // What alice may read imports, and the source keeps its mode.
        let readable = try Self.pipelineCopy(in: dir, "readable")
        let ok = try importAsAlice(readable)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(fileMode(readable + "/stage1.safetensors") == 0o644)
    }

    @Test("a restart removes the half-written output folders and exports of a killed griditd, nothing else")
    func leftovers() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let state = dir.file("state")
        // A state directory griditd made (a directory with outputs and no database is refused as a lost database).
        #expect(try DaemonProcess(directory: dir).stop() == 0)
        let partial = state + "/outputs/.job-7.partial-Ab12Cd"
        let nested = state + "/outputs/cats/.run-1.partial-Qw34Er"
        let export = state + "/tmp/export-\(UUID().uuidString).tar"
        let kept = [
            state + "/outputs/job-3/sequence.json", state + "/outputs/job-3/.x.partial-Ab12Cd/y",
            state + "/outputs/.notes.partial-kept/x", dir.file("elsewhere/x"),
        ]
        for file in kept + [partial + "/frames/frame_00000.png", nested + "/sequence.json", export] {
            try FileManager.default.createDirectory(
                atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: file, contents: Data([1]))
        }
        let link = state + "/outputs/.job-9.partial-Zz99Yy"
        #expect(symlink(dir.file("elsewhere"), link) == 0)

        let daemon = try DaemonProcess(directory: dir)
        for gone in [partial, nested, export] {
            #expect(!FileManager.default.fileExists(atPath: gone), "\(gone) is left")
        }
        for file in kept { #expect(FileManager.default.fileExists(atPath: file), "\(file) was removed") }
        #expect(FileManager.default.fileExists(atPath: link), "a link is not griditd's folder")
        #expect(daemon.log.contains("leftover"), "\(daemon.log)")
        #expect(daemon.stop() == 0)
    }

    @Test("griditctl models verify exits 1 when it finds a corrupt blob")
    func verifyExitStatus() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        let ctl = binaryDirectory() + "/griditctl"
        func verify(_ extra: [String] = []) throws -> ProcessResult {
            try runProcess(ctl, ["models", "verify", "--all", "--socket", daemon.socket] + extra)
        }
        #expect(try verify().status == 0)
        let blobs = daemon.stateDir + "/blobs/sha256/"
        let largest = try #require(
            try FileManager.default.contentsOfDirectory(atPath: blobs).max {
                fileSize(blobs + $0) < fileSize(blobs + $1)
            })
        chmod(blobs + largest, 0o644)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: blobs + largest))
        try handle.seek(toOffset: 300)
        try handle.write(contentsOf: Data([0x5A, 0xA5]))
        try handle.close()

        let bad = try verify()
        #expect(bad.status == 1 && bad.stderr.contains("bad blob"), "\(bad.status) \(bad.stderr)")
        let json = try verify(["--json"])
        let result = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(json.status == 1 && result?["ok"] as? Bool == false, "\(json.stdout)")
    }
}

func fileMode(_ path: String) -> mode_t {
    var s = stat()
    return stat(path, &s) == 0 ? s.st_mode & 0o7777 : 0
}

func fileSize(_ path: String) -> Int64 {
    var s = stat()
    return stat(path, &s) == 0 ? Int64(s.st_size) : 0
}
