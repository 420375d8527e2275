// `griditctl`: the command line of griditd, over its Unix socket (docker/ollama style).

import ArgumentParser
import Foundation
import GriditAPI

#if canImport(Glibc)
import Glibc
#endif

public struct Griditctl: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "griditctl",
        abstract: "Submit and manage gridit jobs and models on the local griditd.",
        discussion: """
            griditctl talks to griditd over its Unix socket (--socket, or GRIDIT_SOCKET; default /run/gridit/griditd.sock). Every command takes --json for scripts.

            Exit codes:
              0   success
              1   the job failed, was canceled or died; other errors
              2   bad command line
              65  the daemon refused the input (parameters, unknown id, conflict)
              69  griditd cannot be reached (not running, wrong --socket)
              70  griditd failed internally
              75  the queue is full, you are at a per-user limit, or griditd is busy: retry later
              77  permission denied (group, another user's job, admin only)
            """,
        version: griditVersion,
        subcommands: [
            Submit.self, Jobs.self, Queue.self, Nodes.self, Status.self, Doctor.self, Models.self, Version.self,
        ])

    public init() {}

    /// Parses, runs, prints errors as `griditctl: <message>` and exits with the documented code.
    public static func run(_ arguments: [String]? = nil) -> Never {
        let arguments = moveGlobalOptions(arguments ?? Array(CommandLine.arguments.dropFirst()))
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
            Glibc.exit(ExitStatus.ok)
        } catch let error as CLIError {
            if Output.jsonRequested(arguments) {
                let body = ErrorResponse(error: APIError(APIError.Code(rawValue: error.code ?? "error"), error.message))
                Output.standard.printJSON(body)
            }
            Output.standard.stderr("griditctl: \(error.message)\n")
            Glibc.exit(error.status)
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)
        } catch {
            if exitCode(for: error) == .validationFailure {
                Output.standard.stderr(fullMessage(for: error) + "\n")
                Glibc.exit(ExitStatus.usage)
            }
            exit(withError: error)
        }
    }
}

extension Griditctl {
    /// `griditctl --socket S --json jobs list` means `griditctl jobs list --socket S --json`, as
    /// with docker: global options may come before the command.
    static func moveGlobalOptions(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var rest = arguments[...]
        while let first = rest.first {
            if first == "--json" {
                leading.append(first)
                rest = rest.dropFirst()
            } else if first == "--socket", rest.count >= 2 {
                leading += rest.prefix(2)
                rest = rest.dropFirst(2)
            } else if first.hasPrefix("--socket=") {
                leading.append(first)
                rest = rest.dropFirst()
            } else {
                break
            }
        }
        guard !leading.isEmpty, !rest.isEmpty else { return arguments }
        if let dash = rest.firstIndex(of: "--") {
            return Array(rest[..<dash]) + leading + Array(rest[dash...])
        }
        return Array(rest) + leading
    }
}

/// Options every command takes.
public struct GlobalOptions: ParsableArguments {
    @Option(help: ArgumentHelp("griditd's control socket.", valueName: "path"))
    var socket: String = ProcessInfo.processInfo.environment["GRIDIT_SOCKET"] ?? "/run/gridit/griditd.sock"

    @Flag(help: "Print JSON (the API's objects) instead of text.")
    var json = false

    public init() {}

    var client: GriditClient { GriditClient(UnixHTTPClient(socketPath: socket, timeout: 120)) }
}

/// A command that talks to griditd: `run()` runs it against the socket and the terminal, and
/// `run(client:output:)` against any `ControlClient` and output, so that tests need no daemon.
protocol ClientCommand: ParsableCommand {
    var global: GlobalOptions { get }
    func run(client: GriditClient, output: Output) throws
}

extension ClientCommand {
    func run() throws { try run(client: global.client, output: .standard) }
}

/// Where a command's text goes: the terminal, or a test's buffer.
struct Output: Sendable {
    var stdout: @Sendable (String) -> Void
    var stderr: @Sendable (String) -> Void
    /// Whether a progress bar may be drawn on stderr.
    var stderrIsTerminal: Bool
    /// Asks a yes/no question (true: yes); nil without a terminal to ask on.
    var confirm: (@Sendable (String) -> Bool)? = nil
    /// What Ctrl-C prints from now on before griditctl exits 130.
    var onInterrupt: @Sendable (String) -> Void = { _ in }
    /// A uid's user name on this machine (the daemon's answers carry uids).
    var userName: @Sendable (UInt32) -> String? = { _ in nil }

    static let standard = Output(
        stdout: { FileHandle.standardOutput.write(Data($0.utf8)) },
        stderr: { FileHandle.standardError.write(Data($0.utf8)) },
        stderrIsTerminal: isatty(STDERR_FILENO) == 1,
        confirm: isatty(STDIN_FILENO) == 1 ? askOnTerminal : nil,
        onInterrupt: Interrupt.say,
        userName: { uid in getpwuid(uid).map { String(cString: $0.pointee.pw_name) } })

    /// The question on stderr, the answer from stdin: y or yes (any case) is yes.
    @Sendable static func askOnTerminal(_ question: String) -> Bool {
        FileHandle.standardError.write(Data(question.utf8))
        guard let answer = readLine() else { return false }
        return ["y", "yes"].contains(answer.trimmingCharacters(in: .whitespaces).lowercased())
    }

    func printJSON<T: Encodable>(_ value: T) {
        stdout(String(decoding: APICoding.encode(value, pretty: true), as: UTF8.self) + "\n")
    }

    /// `value` as JSON with `--json`, else the human `text`: every command's one output rule.
    func emit<T: Encodable>(_ value: T, json: Bool, _ text: () -> String) {
        if json { printJSON(value) } else { stdout(text()) }
    }

    /// Pretty-prints raw JSON bytes (a model command's result).
    func printRawJSON(_ data: Data) {
        if let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]),
            let pretty = try? JSONSerialization.data(
                withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .fragmentsAllowed])
        {
            stdout(String(decoding: pretty, as: UTF8.self) + "\n")
        } else {
            stdout(String(decoding: data, as: UTF8.self))
        }
    }

    static func jsonRequested(_ arguments: [String]) -> Bool { arguments.contains("--json") }
}

struct Version: ClientCommand {
    static let configuration = CommandConfiguration(abstract: "Show griditctl's and griditd's versions.")

    @OptionGroup var global: GlobalOptions

    func run(client: GriditClient, output: Output) throws {
        let daemon = try? client.get("/v1/version", as: VersionInfo.self)
        let client = VersionInfo()
        if global.json {
            struct Both: Encodable {
                var client: VersionInfo
                var daemon: VersionInfo?
            }
            output.printJSON(Both(client: client, daemon: daemon))
            return
        }
        output.stdout("griditctl \(client.version) (API \(client.apiVersion))\n")
        output.stdout(
            daemon.map { "griditd   \($0.version) (API \($0.apiVersion))\n" }
                ?? "griditd   not reachable at \(global.socket)\n")
    }
}

/// SIGINT prints a message set beforehand and exits 130: a signal handler may only write(2) and
/// _exit(2), so the text waits in a C string of its own.
enum Interrupt {
    nonisolated(unsafe) private static var text: UnsafeMutablePointer<CChar>?

    @Sendable static func say(_ message: String) {
        let old = text
        text = strdup(message)
        free(old)
        signal(SIGINT) { _ in
            if let text = Interrupt.text { _ = write(STDERR_FILENO, text, strlen(text)) }
            _exit(130)
        }
        // A parent may hand its blocked signals down (a test runner, a supervisor).
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}
