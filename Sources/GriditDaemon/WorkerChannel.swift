// The wire between griditd and its engine worker process: a socketpair, one frame per message
// (4-byte big-endian length, then JSON). griditd sends batches, admissions, stop requests; the
// worker answers with the engine's hooks as they happen.

import CProcess
import Foundation
import GriditAPI
import GriditJobSpec
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// griditd → worker.
enum WorkerRequest: Codable, Sendable {
    /// Run a batch (the worker runs one at a time).
    case run(ExecutionBatch)
    /// The answer to `admit`: jobs joining the running batch (possibly none).
    case admitted([ExecutionItem])
    /// Stop a job of the running batch at its next step.
    case stop(jobID: Int64, reason: StopReason)
    /// No more batches: exit.
    case exit
}

/// Worker → griditd.
enum WorkerEvent: Codable, Sendable {
    /// Started, set up, waiting for a batch.
    case ready(pid: Int32)
    /// The engine asks for jobs to join the batch; griditd answers `admitted`.
    case admit
    case finished(jobID: Int64, outcome: ExecutionOutcome)
    case durable(jobID: Int64, progress: JobProgress)
    case step(jobID: Int64, progress: StepProgress)
    /// `ExecutionHooks.working`: alive, no progress to show.
    case working(jobID: Int64)
    /// The batch is over (every job reported).
    case done
    /// What the engine has loaded now, in the engine's own encoding (opaque to the daemon).
    case models(Data)
}

/// One end of the socketpair. Sends are whole frames under a lock (several threads send);
/// one thread receives.
final class WorkerChannel: Sendable {
    /// A frame larger than this is a broken peer, not a message.
    static let maxFrame = 64 << 20

    let fd: Int32
    /// Released: the descriptor is closed (its number may be another file's now) and sends fail.
    private let released = Mutex(false)

    init(fd: Int32) { self.fd = fd }

    struct Closed: Error {}

    func send<T: Encodable>(_ message: T) throws {
        let body = try JSONEncoder().encode(message)
        var frame = Data(count: 4)
        let n = UInt32(body.count)
        frame[0] = UInt8(n >> 24)
        frame[1] = UInt8((n >> 16) & 0xFF)
        frame[2] = UInt8((n >> 8) & 0xFF)
        frame[3] = UInt8(n & 0xFF)
        frame.append(body)
        try released.withLock { released in
            guard !released else { throw Closed() }
            try frame.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let sent = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                    if sent < 0 && errno == EINTR { continue }
                    guard sent > 0 else { throw Closed() }
                    offset += sent
                }
            }
        }
    }

    /// The next frame, blocking; nil once the peer is gone (end of file, error, broken frame).
    func receive<T: Decodable>(_ type: T.Type) -> T? {
        guard let header = read(4) else { return nil }
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        guard length <= Self.maxFrame, let body = read(length) else { return nil }
        return try? JSONDecoder().decode(T.self, from: Data(body))
    }

    private func read(_ count: Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + offset, count - offset, 0) }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { return nil }
            offset += got
        }
        return buffer
    }

    func close() { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    /// Closes the descriptor once no send is under way; every later send fails with `Closed`
    /// instead of writing to whatever file reuses the number. Only by the receiving thread,
    /// after its last `receive`.
    func release() {
        released.withLock { released in
            guard !released else { return }
            released = true
            _ = Glibc.close(fd)
        }
    }
}

/// How griditd starts its engine worker: normally its own executable (`/proc/self/exe`, the
/// binary running now even if a package upgrade replaced the file) with the hidden `worker`
/// subcommand.
public struct WorkerLaunch: Sendable {
    public var executable: String
    public var arguments: [String]
    /// Nil: griditd's own, without the variables systemd meant for griditd alone.
    public var environment: [String: String]?

    public init(executable: String = "/proc/self/exe", arguments: [String], environment: [String: String]? = nil) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
    }

    /// The descriptor the worker finds its end of the socketpair on.
    public static let channelDescriptor: Int32 = 3

    /// Starts the worker; returns its pid and griditd's end of the socketpair.
    func spawn() throws(DaemonError) -> (pid: pid_t, channel: WorkerChannel) {
        var ends: [Int32] = [-1, -1]
        // SOCK_STREAM | SOCK_CLOEXEC: Swift's Glibc shows neither here; SOCK_CLOEXEC is O_CLOEXEC.
        guard socketpair(AF_UNIX, 1 | O_CLOEXEC, 0, &ends) == 0 else {
            throw DaemonError("socketpair for the engine worker: \(String(cString: strerror(errno)))")
        }
        defer { Glibc.close(ends[1]) }
        // dup2 onto itself would keep close-on-exec: move the worker's end off descriptor 3 first.
        if ends[1] == Self.channelDescriptor {
            let moved = fcntl(ends[1], F_DUPFD_CLOEXEC, 10)
            Glibc.close(ends[1])
            ends[1] = moved
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, ends[1], Self.channelDescriptor)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        // Nothing else of griditd's: closed before the worker's program runs, not by the worker,
        // whose runtime has opened descriptors of its own by then.
        gridit_spawn_close_from(&actions, Self.channelDescriptor + 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))

        var env = environment ?? ProcessInfo.processInfo.environment
        for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            env.removeValue(forKey: name)
        }
        // argv[0] names the binary, not /proc/self/exe, so that ps shows what runs.
        let name = (try? FileManager.default.destinationOfSymbolicLink(atPath: executable)) ?? executable
        let argv = ([name] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            Glibc.close(ends[0])
            throw DaemonError("starting the engine worker (\(executable)): \(String(cString: strerror(rc)))")
        }
        return (pid, WorkerChannel(fd: ends[0]))
    }
}

/// How a worker process ended, from its wait status.
struct WorkerExit: Sendable, CustomStringConvertible {
    /// The signal that ended it, 0 if it exited.
    var signal: Int32
    /// Its exit code, -1 if a signal ended it.
    var code: Int32

    init(status: Int32) {
        signal = gridit_exit_signal(status)
        code = gridit_exit_code(status)
    }

    /// A signal the engine's own code raises when it breaks: a crash, not an outside kill.
    var isCrashSignal: Bool { [SIGSEGV, SIGBUS, SIGILL, SIGABRT, SIGFPE, SIGTRAP, SIGSYS].contains(signal) }

    var description: String {
        signal != 0 ? "killed by \(Self.name(of: signal))" : "exited with status \(code)"
    }

    static func name(of signal: Int32) -> String {
        let names: [Int32: String] = [
            SIGSEGV: "SIGSEGV", SIGBUS: "SIGBUS", SIGILL: "SIGILL", SIGABRT: "SIGABRT", SIGFPE: "SIGFPE",
            SIGTRAP: "SIGTRAP", SIGSYS: "SIGSYS", SIGKILL: "SIGKILL", SIGTERM: "SIGTERM", SIGINT: "SIGINT",
            SIGHUP: "SIGHUP", SIGQUIT: "SIGQUIT", SIGUSR1: "SIGUSR1", SIGUSR2: "SIGUSR2", SIGPIPE: "SIGPIPE",
        ]
        return names[signal] ?? "signal \(signal)"
    }
}

/// The kernel's count of OOM kills that can reach griditd's worker: its cgroup's (v2
/// `memory.events`, v1 `memory.oom_control`), else the machine's (`/proc/vmstat`). A SIGKILL
/// while the count rose is the OOM killer's; nil when no count is readable.
enum OOMKills {
    /// The cgroup's file under `mount`, most specific first: in a container the hierarchy is
    /// mounted from some ancestor down, so leading components of `path` may not be there (v1
    /// counts are not summed up the hierarchy, so the cgroup's own file is the one that counts).
    static func own(_ mount: String, _ path: String, _ file: String) -> [String] {
        let components = path.split(separator: "/").map(String.init)
        return (0...components.count).map { drop in
            ([mount] + components.dropFirst(drop) + [file]).joined(separator: "/")
        }
    }

    static func count() -> Int? {
        let cgroups = (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? ""
        var candidates: [String] = []
        for line in cgroups.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3 else { continue }
            if parts[0] == "0" && parts[1].isEmpty {
                candidates += own("/sys/fs/cgroup", parts[2], "memory.events")
            } else if parts[1].split(separator: ",").contains("memory") {
                candidates += own("/sys/fs/cgroup/memory", parts[2], "memory.oom_control")
            }
        }
        candidates.append("/proc/vmstat")
        for path in candidates where FileManager.default.fileExists(atPath: path) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") where line.hasPrefix("oom_kill ") {
                if let n = Int(line.dropFirst("oom_kill ".count).trimmingCharacters(in: .whitespaces)) { return n }
            }
        }
        return nil
    }
}
