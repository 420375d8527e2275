// Authorization from SO_PEERCRED with real processes of other uids (setpriv). griditd runs as
// root here with `--group users --admin-group root`: the socket is 0666 root:users, griditd
// refuses everyone outside both groups, members of `users` submit and manage their own jobs
// within their limits, members of `root` (the admin group here) do everything.

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

@Suite("peer credentials", .serialized, .offPool)
struct PeerCredentialTests {
    /// Root and setpriv are needed to run clients as other uids, and the Swift runtime must be
    /// readable by them (a toolchain under /root is not); everywhere else the suite is skipped
    /// (and says why).
    static let canSwitchUsers: Bool = {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), getgrnam("users") != nil,
            let dir = try? TemporaryDirectory()
        else { return false }
        defer { dir.remove() }
        guard let client = try? installClient(in: dir),
            let probe = try? runProcess(
                "/usr/bin/setpriv",
                ["--reuid=40001", "--regid=\(usersGID)", "--clear-groups", "--", client, "--version"])
        else { return false }
        return probe.status == 0
    }()

    static let usersGID: gid_t = getgrnam("users")?.pointee.gr_gid ?? 100

    /// griditctl copied where any uid may execute it.
    static func installClient(in dir: TemporaryDirectory) throws -> String {
        let target = dir.file("griditctl")
        try FileManager.default.copyItem(atPath: binaryDirectory() + "/griditctl", toPath: target)
        chmod(target, 0o755)
        return target
    }

    /// Runs griditctl as `uid` with primary group `gid` and no supplementary groups.
    static func griditctl(
        _ client: String, uid: uid_t, gid: gid_t, _ arguments: [String], socket: String
    ) throws -> ProcessResult {
        try runProcess(
            "/usr/bin/setpriv",
            ["--reuid=\(uid)", "--regid=\(gid)", "--clear-groups", "--", client] + arguments + [
                "--socket", socket, "--json",
            ],
            environment: ["PATH": "/usr/bin:/bin", "HOME": "/tmp"])
    }

    @Test(
        "a caller outside the groups is refused; a member cannot cancel another member's job",
        .enabled(
            if: canSwitchUsers, "needs root, /usr/bin/setpriv, a 'users' group and a Swift runtime other uids can load")
    )
    func authorization() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        // At debug, so that the request lines (uid=) are logged.
        let daemon = try DaemonProcess(
            directory: dir,
            arguments: ["--group", "users", "--admin-group", "root", "--start-paused", "--log-level", "debug"],
            model: tinyPipeline())
        defer { daemon.stop() }
        let client = try Self.installClient(in: dir)
        var st = stat()
        #expect(stat(daemon.socket, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o666, "griditd checks the groups itself")
        #expect(st.st_gid == Self.usersGID)

        let alice: uid_t = 40_001, bob: uid_t = 40_002, mallory: uid_t = 40_003
        let submitted = try Self.griditctl(
            client, uid: alice, gid: Self.usersGID, ["submit", "--length", "4"], socket: daemon.socket)
        #expect(submitted.status == 0, "\(submitted.stderr)")
        let job = try APICoding.decoder().decode(SubmitJobResponse.self, from: Data(submitted.stdout.utf8)).job
        #expect(job.ownerUID == alice)

        // In neither group: refused on connecting, before griditd reads a byte.
        let outsider = try Self.griditctl(client, uid: mallory, gid: mallory, ["status"], socket: daemon.socket)
        #expect(outsider.status == 77, "\(outsider.stderr)")
        #expect(outsider.stderr.contains("uid \(mallory) is not a member of the group 'users'"), "\(outsider.stderr)")

        // Another member: may not cancel, see or retry alice's job, nor pause the queue.
        let cancel = try Self.griditctl(
            client, uid: bob, gid: Self.usersGID, ["jobs", "cancel", String(job.id)], socket: daemon.socket)
        #expect(cancel.status == 77, "\(cancel.stderr)")
        #expect(cancel.stderr.contains("uid \(bob) may not cancel job \(job.id), which belongs to uid \(alice)"))
        let show = try Self.griditctl(
            client, uid: bob, gid: Self.usersGID, ["jobs", "show", String(job.id)], socket: daemon.socket)
        #expect(show.status == 77)
        let pause = try Self.griditctl(client, uid: bob, gid: Self.usersGID, ["queue", "pause"], socket: daemon.socket)
        #expect(pause.status == 77)
        #expect(pause.stderr.contains("needs root or a member of the group 'root'"))
        let bobsList = try Self.griditctl(
            client, uid: bob, gid: Self.usersGID, ["jobs", "list"], socket: daemon.socket)
        #expect(try APICoding.decoder().decode(JobList.self, from: Data(bobsList.stdout.utf8)).jobs.isEmpty)
        #expect(try daemon.client.get("/v1/jobs/\(job.id)", as: JobInfo.self).state == .queued)

        // Members read the model store but may not change it.
        let models = try Self.griditctl(
            client, uid: bob, gid: Self.usersGID, ["models", "list"], socket: daemon.socket)
        #expect(models.status == 0 && models.stdout.contains("tiny"), "\(models.stderr)")
        for command in [
            ["models", "rm", "tiny:latest"], ["models", "gc"], ["models", "tag", "tiny:latest", "tiny:mine"],
            ["models", "import", tinyPipeline(), "--name", "evil:v1"],
            ["models", "convert", "tiny:latest", "--precision", "bf16"],
        ] {
            let refused = try Self.griditctl(client, uid: bob, gid: Self.usersGID, command, socket: daemon.socket)
            #expect(refused.status == 77, "\(command): \(refused.stderr)")
            #expect(refused.stderr.contains("may not run `models \(command[1])`"), "\(refused.stderr)")
        }
        #expect(
            try daemon.client.get("/v1/models/tiny:latest", as: ModelShowEnvelope.self).result.digest
                == job.pipelineDigest)

        // The owner may.
        let own = try Self.griditctl(
            client, uid: alice, gid: Self.usersGID, ["jobs", "cancel", String(job.id)], socket: daemon.socket)
        #expect(own.status == 0, "\(own.stderr)")
        #expect(try APICoding.decoder().decode(JobInfo.self, from: Data(own.stdout.utf8)).state == .canceled)

        // Every request is logged (at debug) with the caller's uid.
        #expect(daemon.log.contains("uid=\(bob)"))
        #expect(daemon.log.contains("uid=\(alice)"))
        #expect(daemon.stop() == 0)
    }
}

/// The body of a model command's answer.
struct ModelShowEnvelope: Decodable {
    var result: ModelShowResult
}

/// Tests of limits that need several uids at once.
@Suite("per-user limits", .serialized, .offPool)
struct PerUserLimitTests {
    static let users = PeerCredentialTests.usersGID
    static let alice: uid_t = 40_011, bob: uid_t = 40_012, carol: uid_t = 40_013, dave: uid_t = 40_014

    @Test(
        "a user only in the admin group connects and administers",
        .enabled(if: PeerCredentialTests.canSwitchUsers, "needs root, /usr/bin/setpriv and a 'users' group"))
    func adminOnlyUser() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--group", "users", "--admin-group", "root"])
        defer { daemon.stop() }
        let client = try PeerCredentialTests.installClient(in: dir)
        // uid 40010 with the admin group (root, gid 0) and not `users`: a 0660 socket shut it out.
        let pause = try PeerCredentialTests.griditctl(
            client, uid: 40_010, gid: 0, ["queue", "pause"], socket: daemon.socket)
        #expect(pause.status == 0, "\(pause.stderr)")
        #expect(try daemon.client.get("/v1/queue", as: QueueStatus.self).paused)
        let doctor = try PeerCredentialTests.griditctl(client, uid: 40_010, gid: 0, ["doctor"], socket: daemon.socket)
        #expect(doctor.stdout.contains("may use griditd, as an admin"), "\(doctor.stdout)")
        #expect(daemon.stop() == 0)
    }

    @Test(
        "members: jobs and estimated compute per user, a priority range; admins are not bound by them",
        .enabled(if: PeerCredentialTests.canSwitchUsers, "needs root, /usr/bin/setpriv and a 'users' group"))
    func submitLimits() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        // The tiny pipeline's 4 frames: ~0.00004 s at the default steps, ~0.012 s at 1000 steps.
        let daemon = try DaemonProcess(
            directory: dir,
            arguments: [
                "--group", "users", "--admin-group", "root", "--max-queued-per-user", "2", "--max-work-per-user",
                "0.01s",
                "--member-priority-max", "5", "--start-paused",
            ],
            model: tinyPipeline())
        defer { daemon.stop() }
        let client = try PeerCredentialTests.installClient(in: dir)
        func alice(_ arguments: [String]) throws -> ProcessResult {
            try PeerCredentialTests.griditctl(
                client, uid: Self.alice, gid: Self.users, ["submit", "--length", "4"] + arguments, socket: daemon.socket
            )
        }
        let costly = try alice(["--steps", "1000", "--sr-steps", "1000"])
        #expect(costly.status == 75, "\(costly.stderr)")
        #expect(
            costly.stderr.contains("estimated compute") && costly.stderr.contains("--max-work-per-user"),
            "\(costly.stderr)")
        let urgent = try alice(["--priority", "6"])
        #expect(urgent.status == 77 && urgent.stderr.contains("--member-priority-max"), "\(urgent.stderr)")
        #expect(try alice(["--priority", "5"]).status == 0)
        #expect(try alice([]).status == 0)
        let third = try alice([])
        #expect(third.status == 75, "\(third.stderr)")
        #expect(
            third.stderr.contains("has 2 jobs queued or running") && third.stderr.contains("--max-queued-per-user"),
            "\(third.stderr)")
        // Another member has a share of their own; root is bound by the queue's size alone.
        let bob = try PeerCredentialTests.griditctl(
            client, uid: Self.bob, gid: Self.users, ["submit", "--length", "4"], socket: daemon.socket)
        #expect(bob.status == 0, "\(bob.stderr)")
        let root = try daemon.client.post(
            "/v1/jobs",
            SubmitJobRequest(
                spec: JobSpec(length: 4, parameters: .init(steps: "1000", srSteps: "1000")), priority: 1000),
            as: SubmitJobResponse.self)
        #expect(root.job.queuePosition == 1)
        #expect(daemon.stop() == 0)
    }

    @Test(
        "idle connections: a user holds at most its share, users never take the admins' reserve",
        .enabled(
            if: PeerCredentialTests.canSwitchUsers && FileManager.default.isExecutableFile(atPath: "/usr/bin/perl"),
            "needs root, /usr/bin/setpriv, a 'users' group and perl"))
    func connectionLimits() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(
            directory: dir,
            arguments: [
                "--group", "users", "--admin-group", "root", "--max-connections", "12", "--max-connections-per-user",
                "4",
                "--admin-connections", "4", "--header-timeout", "600",
            ])
        defer { daemon.stop() }
        let client = try PeerCredentialTests.installClient(in: dir)
        let script = dir.file("hold.pl")
        try Self.holder.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o644)
        var holders: [(Process, String)] = []
        // SIGKILL: the test process ignores SIGTERM (ServiceLifecycle's signal handling), and
        // its children inherit that.
        func stop(_ p: Process) {
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
        }
        defer { for (p, _) in holders { stop(p) } }
        func hold(_ uid: uid_t, refusedAtLeast refused: Int) throws -> String {
            let output = dir.file("hold-\(uid).txt")
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            chmod(output, 0o666)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = [
                "--reuid=\(uid)", "--regid=\(Self.users)", "--clear-groups", "--", "/usr/bin/perl", script,
                daemon.socket, "10", output,
            ]
            try p.run()
            holders.append((p, output))
            let deadline = Date().addingTimeInterval(60)
            while true {
                let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
                if text.components(separatedBy: "\n").filter({ $0.hasPrefix("closed 503") }).count >= refused {
                    return text
                }
                guard Date() < deadline, p.isRunning else { throw TestFailure("holder \(uid): \(text)") }
                usleep(20_000)
            }
        }
        // Ten idle connections each: alice and bob keep 4, the rest are refused at once.
        #expect(try hold(Self.alice, refusedAtLeast: 6).contains("max-connections-per-user"))
        _ = try hold(Self.bob, refusedAtLeast: 6)
        // 8 open = 12 - 4 kept for admins: carol gets none, root still gets in.
        let carol = try hold(Self.carol, refusedAtLeast: 10)
        #expect(carol.contains("kept for root and the group 'root'"), "\(carol)")
        #expect(try daemon.client.get("/v1/version", as: VersionInfo.self).version == griditVersion)
        let dave = try PeerCredentialTests.griditctl(
            client, uid: Self.dave, gid: Self.users, ["status"], socket: daemon.socket)
        #expect(dave.status == 75 && dave.stderr.contains("retry shortly"), "\(dave.stderr)")
        for (p, _) in holders { stop(p) }
        // Their connections closed, users get in again.
        let deadline = Date().addingTimeInterval(60)
        var again = try PeerCredentialTests.griditctl(
            client, uid: Self.dave, gid: Self.users, ["status"], socket: daemon.socket)
        while again.status != 0 && Date() < deadline {
            usleep(100_000)
            again = try PeerCredentialTests.griditctl(
                client, uid: Self.dave, gid: Self.users, ["status"], socket: daemon.socket)
        }
        #expect(again.status == 0, "\(again.stderr)")
        #expect(daemon.stop() == 0)
    }

    @Test(
        "a member's upload is refused without its body being read: 403, and the connection ends",
        .enabled(
            if: PeerCredentialTests.canSwitchUsers && FileManager.default.isExecutableFile(atPath: "/usr/bin/perl"),
            "needs root, /usr/bin/setpriv, a 'users' group and perl"))
    func memberUploadRefusedUnread() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--group", "users", "--admin-group", "root"])
        defer { daemon.stop() }
        let script = dir.file("upload.pl")
        try Self.uploader.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o644)
        let sent = try runProcess(
            "/usr/bin/setpriv",
            [
                "--reuid=\(Self.alice)", "--regid=\(Self.users)", "--clear-groups", "--", "/usr/bin/perl", script,
                daemon.socket,
            ],
            timeout: 300)
        #expect(sent.status == 0, "\(sent.stderr)")
        let lines = sent.stdout.split(separator: "\n", maxSplits: 1)
        let bytes = lines.first.flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
        #expect(lines.count == 2 && lines[1].hasPrefix("HTTP/1.1 403"), "\(sent.stdout.prefix(400))")
        #expect(sent.stdout.contains("may not run `models import`"), "\(sent.stdout.prefix(400))")
        #expect(bytes >= 0 && bytes < 1 << 30, "griditd read the whole 1 GiB body it refused (\(bytes) bytes sent)")
        #expect(try daemon.client.get("/v1/version", as: VersionInfo.self).version == griditVersion)
        #expect(daemon.stop() == 0)
    }

    /// Announces a 1 GiB upload and sends until griditd stops reading; prints `sent <bytes>`, then
    /// the answer.
    static let uploader = #"""
        use strict; use warnings; use IO::Socket::UNIX; use Socket;
        $SIG{PIPE} = 'IGNORE';
        my ($path) = @ARGV;
        my $c = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path) or die "connect: $!";
        my $total = 1 << 30;
        syswrite($c, "POST /v1/models/upload?kind=bundle HTTP/1.1\r\nHost: x\r\nContent-Length: $total\r\n"
            . "Content-Digest: sha-256=:n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=:\r\n\r\n") or die "send: $!";
        my $chunk = 'a' x 65536;
        my $sent = 0;
        while ($sent < $total) {
            my $n = syswrite($c, $chunk);
            last unless defined $n && $n > 0;
            $sent += $n;
        }
        my $answer = '';
        while (sysread($c, my $buffer, 65536)) { $answer .= $buffer; }
        print "sent $sent\n$answer";
        """#

    /// Opens N connections to a socket, sends nothing, and writes a line to a file for each one
    /// griditd closes: `closed <status> <body>` (status `none` when closed without an answer).
    static let holder = #"""
        use strict; use warnings; use IO::Socket::UNIX; use IO::Select; use Socket;
        my ($path, $n, $out) = @ARGV;
        open(my $log, '>>', $out) or die "open $out: $!";
        $log->autoflush(1);
        my $select = IO::Select->new;
        my %got;
        for (1 .. $n) {
            my $c = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path) or die "connect: $!";
            $select->add($c);
            $got{$c} = '';
        }
        print $log "connected $n\n";
        while ($select->count) {
            for my $c ($select->can_read(1)) {
                my $r = sysread($c, my $buffer, 65536);
                if ($r) { $got{$c} .= $buffer; next; }
                my ($status) = $got{$c} =~ m{^HTTP/1\.1 (\d+)};
                (my $body = $got{$c}) =~ s/\s+/ /g;
                print $log "closed " . ($status // 'none') . " $body\n";
                $select->remove($c);
                close $c;
            }
        }
        """#
}
