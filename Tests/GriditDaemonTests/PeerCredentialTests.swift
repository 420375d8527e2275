// Authorization from SO_PEERCRED with real processes of other uids (setpriv). griditd runs as
// root here with `--group users`: the socket is 0660 root:users, members of `users` may submit
// and manage their own jobs.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GriditAPI
import GriditCLI
import Testing

@Suite("peer credentials", .serialized)
struct PeerCredentialTests {
    /// Root and setpriv are needed to run clients as other uids, and the Swift runtime must be
    /// readable by them (a toolchain under /root is not); everywhere else the suite is skipped
    /// (and says why).
    static let canSwitchUsers: Bool = {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), getgrnam("users") != nil,
              let dir = try? ShortTemporaryDirectory()
        else { return false }
        defer { dir.remove() }
        guard let client = try? installClient(in: dir),
              let probe = try? runProcess("/usr/bin/setpriv", ["--reuid=40001", "--regid=\(usersGID)", "--clear-groups", "--", client, "--version"])
        else { return false }
        return probe.status == 0
    }()

    static let usersGID: gid_t = getgrnam("users")?.pointee.gr_gid ?? 100

    /// griditctl copied where any uid may execute it.
    static func installClient(in dir: ShortTemporaryDirectory) throws -> String {
        let target = dir.file("griditctl")
        try FileManager.default.copyItem(atPath: binaryDirectory() + "/griditctl", toPath: target)
        chmod(target, 0o755)
        return target
    }

    /// Runs griditctl as `uid` with primary group `gid` and no supplementary groups.
    static func griditctl(_ client: String, uid: uid_t, gid: gid_t, _ arguments: [String], socket: String) throws -> ProcessResult {
        try runProcess(
            "/usr/bin/setpriv",
            ["--reuid=\(uid)", "--regid=\(gid)", "--clear-groups", "--", client] + arguments + ["--socket", socket, "--json"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": "/tmp"])
    }

    @Test(
        "a caller outside the group cannot connect; a member cannot cancel another member's job",
        .enabled(if: canSwitchUsers, "needs root, /usr/bin/setpriv, a 'users' group and a Swift runtime other uids can load"))
    func authorization() throws {
        let dir = try ShortTemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(
            directory: dir, arguments: ["--group", "users", "--admin-group", "root", "--start-paused"], model: tinyPipeline())
        defer { daemon.stop() }
        let client = try Self.installClient(in: dir)
        var st = stat()
        #expect(stat(daemon.socket, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o660)
        #expect(st.st_gid == Self.usersGID)

        let alice: uid_t = 40_001, bob: uid_t = 40_002, mallory: uid_t = 40_003
        let submitted = try Self.griditctl(client, uid: alice, gid: Self.usersGID, ["submit", "--length", "4"], socket: daemon.socket)
        #expect(submitted.status == 0, "\(submitted.stderr)")
        let job = try APICoding.decoder().decode(SubmitJobResponse.self, from: Data(submitted.stdout.utf8)).job
        #expect(job.ownerUID == alice)

        // Not in the group: the socket mode stops the connection itself.
        let outsider = try Self.griditctl(client, uid: mallory, gid: mallory, ["status"], socket: daemon.socket)
        #expect(outsider.status == 77, "\(outsider.stderr)")
        #expect(outsider.stderr.contains("permission denied on \(daemon.socket)"))

        // Another member: may not cancel, see or retry alice's job, nor pause the queue.
        let cancel = try Self.griditctl(client, uid: bob, gid: Self.usersGID, ["jobs", "cancel", String(job.id)], socket: daemon.socket)
        #expect(cancel.status == 77, "\(cancel.stderr)")
        #expect(cancel.stderr.contains("uid \(bob) may not cancel job \(job.id), which belongs to uid \(alice)"))
        let show = try Self.griditctl(client, uid: bob, gid: Self.usersGID, ["jobs", "show", String(job.id)], socket: daemon.socket)
        #expect(show.status == 77)
        let pause = try Self.griditctl(client, uid: bob, gid: Self.usersGID, ["queue", "pause"], socket: daemon.socket)
        #expect(pause.status == 77)
        #expect(pause.stderr.contains("needs root or a member of the group 'root'"))
        let bobsList = try Self.griditctl(client, uid: bob, gid: Self.usersGID, ["jobs", "list"], socket: daemon.socket)
        #expect(try APICoding.decoder().decode(JobList.self, from: Data(bobsList.stdout.utf8)).jobs.isEmpty)
        #expect(try daemon.client.get("/v1/jobs/\(job.id)", as: JobInfo.self).state == .queued)

        // Members read the model store but may not change it.
        let models = try Self.griditctl(client, uid: bob, gid: Self.usersGID, ["models", "list"], socket: daemon.socket)
        #expect(models.status == 0 && models.stdout.contains("tiny"), "\(models.stderr)")
        for command in [["models", "rm", "tiny:latest"], ["models", "gc"], ["models", "tag", "tiny:latest", "tiny:mine"],
                        ["models", "import", tinyPipeline(), "--name", "evil:v1"]] {
            let refused = try Self.griditctl(client, uid: bob, gid: Self.usersGID, command, socket: daemon.socket)
            #expect(refused.status == 77, "\(command): \(refused.stderr)")
            #expect(refused.stderr.contains("may not run `models \(command[1])`"), "\(refused.stderr)")
        }
        #expect(try daemon.client.get("/v1/models/tiny:latest", as: ModelShowEnvelope.self).result.digest == job.pipelineDigest)

        // The owner may.
        let own = try Self.griditctl(client, uid: alice, gid: Self.usersGID, ["jobs", "cancel", String(job.id)], socket: daemon.socket)
        #expect(own.status == 0, "\(own.stderr)")
        #expect(try APICoding.decoder().decode(JobInfo.self, from: Data(own.stdout.utf8)).state == .canceled)

        // Every request is logged with the caller's uid.
        #expect(daemon.log.contains("uid=\(bob)"))
        #expect(daemon.log.contains("uid=\(alice)"))
        #expect(daemon.stop() == 0)
    }
}

/// The body of a model command's answer.
struct ModelShowEnvelope: Decodable {
    var result: ModelShowResult
}
