// The systemd protocol with the real binary, without systemd: a notify socket of our own
// ($NOTIFY_SOCKET, $WATCHDOG_USEC) and socket activation through systemd-socket-activate.

import CDispatch  // declares `struct stat` and `timeval` first once Hummingbird is a dependency
import Foundation
import GriditAPI
import GriditCLI
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket that collects sd_notify messages.
final class NotifyListener {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let b = Array(path.utf8)
            raw.copyBytes(from: b)
            raw[b.count] = 0
        }
        let ok = withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
        guard fd >= 0, ok else { throw TestFailure("notify socket \(path): \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Messages received until `done` says so or `timeout` passes.
    func collect(timeout: Double, until done: ([String]) -> Bool) -> [String] {
        var messages: [String] = []
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline && !done(messages) {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { messages.append(String(decoding: buffer[0..<n], as: UTF8.self)) }
        }
        return messages
    }

    deinit { close(fd) }
}

@Suite("systemd protocol", .serialized, .offPool)
struct SystemdProtocolTests {
    @Test("READY=1 after the socket is bound, STATUS= lines, WATCHDOG=1 from the worker loop, STOPPING=1 on SIGTERM")
    func notify() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let listener = try NotifyListener(path: dir.file("notify"))
        let daemon = try DaemonProcess(
            directory: dir, arguments: ["--start-paused"],
            environment: ["NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "1000000"], model: tinyPipeline())
        defer { daemon.stop() }
        var messages = listener.collect(timeout: 20) { m in
            m.contains { $0.contains("READY=1") } && m.filter { $0 == "WATCHDOG=1" }.count >= 2
        }
        let ready = try #require(messages.firstIndex { $0.contains("READY=1") }, "no READY=1 in \(messages)")
        #expect(messages[ready].contains("STATUS="))
        #expect(messages.filter { $0 == "WATCHDOG=1" }.count >= 2, "\(messages)")
        // A submit changes the STATUS= line within a few seconds (queue depth).
        _ = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 4), as: SubmitJobResponse.self)
        messages = listener.collect(timeout: 20) { m in m.contains { $0.contains("STATUS=") && $0.contains("1 queued") }
        }
        #expect(messages.contains { $0.contains("STATUS=idle · 1 queued") }, "\(messages)")
        kill(daemon.pid, SIGTERM)
        messages = listener.collect(timeout: 30) { m in m.contains { $0.contains("STOPPING=1") } }
        #expect(messages.contains { $0.contains("STOPPING=1") }, "\(messages)")
        #expect(daemon.stop() == 0)
    }

    @Test("an idle griditd with a poll interval longer than the watchdog's keeps telling systemd it is alive")
    func watchdogWhileIdle() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let listener = try NotifyListener(path: dir.file("notify"))
        // Nothing to claim, nothing to wake it: the worker loop waits out its 600 s poll interval.
        let daemon = try DaemonProcess(
            directory: dir, arguments: ["--poll-interval", "600"],
            environment: ["NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "2000000"])
        defer { daemon.stop() }
        let messages = listener.collect(timeout: 60) { m in
            guard let ready = m.firstIndex(where: { $0.contains("READY=1") }) else { return false }
            return m[ready...].filter { $0 == "WATCHDOG=1" }.count >= 4
        }
        let ready = try #require(messages.firstIndex { $0.contains("READY=1") }, "no READY=1 in \(messages)")
        #expect(messages[ready...].filter { $0 == "WATCHDOG=1" }.count >= 4, "\(messages)")
        #expect(daemon.stop() == 0)
    }

    @Test(
        "socket activation: griditd serves the socket systemd passes (systemd-socket-activate)",
        .enabled(
            if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-socket-activate"),
            "needs systemd-socket-activate (package systemd)"))
    func socketActivation() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let socket = dir.file("activated.sock")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-socket-activate")
        process.arguments = [
            "-l", socket, binaryDirectory() + "/griditd", "serve", "--state-dir", dir.file("state"), "--socket",
            dir.file("unused.sock"),
        ]
        let log = dir.file("log")
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = process.standardError
        try process.run()
        defer {
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }
        // The first connection starts griditd; it waits in the backlog meanwhile.
        let client = GriditClient(socketPath: socket, timeout: 60)
        var version: VersionInfo?
        let deadline = Date().addingTimeInterval(60)
        while version == nil && Date() < deadline {
            version = try? client.get("/v1/version", as: VersionInfo.self)
            if version == nil { usleep(50_000) }
        }
        #expect(version?.version == griditVersion)
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(text.contains("fd 3 from systemd"), "\(text)")
        #expect(
            !FileManager.default.fileExists(atPath: dir.file("unused.sock")),
            "an activated griditd binds nothing itself")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    @Test(
        "a stop held up past --stop-timeout exits 1 with a log line, not a core dump; a second SIGTERM ends a long one in seconds; stop-grace must be below stop-timeout"
    )
    func stopsThatOutlastTheirLimit() throws {
        let refused = try runProcess(
            binaryDirectory() + "/griditd", ["config", "show", "--stop-timeout", "20", "--stop-grace", "30"],
            environment: ConfigProcessTests.environment())
        #expect(
            refused.status == 78
                && refused.stderr.contains("stop-grace (30 s) must be shorter than stop-timeout (20 s)"),
            "\(refused.stderr)")
        // The default stop-grace fits inside a short stop-timeout (such a config started before).
        let fitted = try runProcess(
            binaryDirectory() + "/griditd", ["config", "show", "--stop-timeout", "20"],
            environment: ConfigProcessTests.environment())
        #expect(fitted.status == 0 && fitted.stdout.contains("GRIDIT_STOP_GRACE=10 "), "\(fitted.stdout)")

        /// A daemon whose import over the socket never ends: the pause-at fault holds its thread,
        /// as a copy from a hung mount would. Returns once the import is held.
        func holdingAnImport(_ dir: TemporaryDirectory, stopTimeout: Int) throws -> (DaemonProcess, Process) {
            let daemon = try DaemonProcess(
                directory: dir, arguments: ["--stop-timeout", "\(stopTimeout)", "--stop-grace", "1"],
                environment: ["GRIDIT_TEST_FAULTS": "pause-at=import.ingested"])
            let ctl = Process()
            ctl.executableURL = URL(fileURLWithPath: binaryDirectory() + "/griditctl")
            ctl.arguments = ["models", "import", tinyPipeline(), "--name", "held:v1", "--socket", daemon.socket]
            ctl.standardOutput = FileHandle.nullDevice
            ctl.standardError = FileHandle.nullDevice
            try ctl.run()
            try waitForFile(daemon.stateDir + "/test-paused", daemon)
            return (daemon, ctl)
        }
        /// Exits (within a generous 120 s) with status 1, its log saying `why`.
        func expectForcedExit(_ daemon: DaemonProcess, saying why: String) {
            let deadline = Date().addingTimeInterval(120)
            while daemon.process.isRunning && Date() < deadline { usleep(20_000) }
            #expect(!daemon.process.isRunning, "griditd did not exit:\n\(daemon.log)")
            #expect(
                daemon.process.terminationReason == .exit && daemon.process.terminationStatus == 1,
                "\(daemon.process.terminationReason) \(daemon.process.terminationStatus):\n\(daemon.log)")
            #expect(daemon.log.contains(why), "\(daemon.log)")
        }

        let dirA = TemporaryDirectory()
        defer { dirA.remove() }
        let (a, ctlA) = try holdingAnImport(dirA, stopTimeout: 2)
        defer { kill(ctlA.processIdentifier, SIGKILL) }
        kill(a.pid, SIGTERM)
        expectForcedExit(a, saying: "exiting: stopping took longer than --stop-timeout (2 s)")

        // With 600 s to stop, a second SIGTERM: the operator wants it over.
        let dirB = TemporaryDirectory()
        defer { dirB.remove() }
        let (b, ctlB) = try holdingAnImport(dirB, stopTimeout: 600)
        defer { kill(ctlB.processIdentifier, SIGKILL) }
        kill(b.pid, SIGTERM)
        _ = try b.logLine(containing: "a second SIGTERM or SIGINT stops sooner")
        kill(b.pid, SIGTERM)
        expectForcedExit(b, saying: "exiting: a second stop signal")
    }
}
