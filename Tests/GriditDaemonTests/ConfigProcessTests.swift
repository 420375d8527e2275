// griditd's settings with the real binary: config file, environment and flags, their precedence,
// `config show`, and `serve` honouring GRIDIT_STATE_DIR (issue 17, configuration).

import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

@testable import GriditDaemon

@Suite("griditd configuration", .serialized, .offPool)
struct ConfigProcessTests {
    /// The process environment without any GRIDIT_ setting of the machine running the tests.
    static func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment.filter {
            !$0.key.hasPrefix("GRIDIT_") || $0.key == "GRIDIT_BIN_DIR"
        }
        env.merge(extra) { $1 }
        return env
    }

    @Test("flags > environment > config file > defaults, as `config show` prints and --json says")
    func precedence() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let file = dir.write(
            "griditd.conf",
            Array(
                """
                # a comment
                GRIDIT_MAX_QUEUED=7
                GRIDIT_MAX_LENGTH=50
                GRIDIT_MAX_BATCH=9
                GRIDIT_KEEP_FAILED=off

                """.utf8))
        let env = Self.environment(["GRIDIT_CONFIG": file, "GRIDIT_MAX_LENGTH": "60", "GRIDIT_MAX_BATCH": "3"])
        let shown = try runProcess(
            binaryDirectory() + "/griditd", ["config", "show", "--max-batch", "2"], environment: env)
        #expect(shown.status == 0, "\(shown.stderr)")
        let lines = shown.stdout.split(separator: "\n").map(String.init)
        func line(_ name: String) -> String { lines.first { $0.hasPrefix(name + "=") } ?? "" }
        #expect(line("GRIDIT_MAX_QUEUED").hasSuffix("# config file \(file)"), "\(shown.stdout)")
        #expect(line("GRIDIT_MAX_QUEUED").hasPrefix("GRIDIT_MAX_QUEUED=7 "))
        #expect(
            line("GRIDIT_MAX_LENGTH").hasPrefix("GRIDIT_MAX_LENGTH=60 ")
                && line("GRIDIT_MAX_LENGTH").hasSuffix("# environment"))
        #expect(
            line("GRIDIT_MAX_BATCH").hasPrefix("GRIDIT_MAX_BATCH=2 ")
                && line("GRIDIT_MAX_BATCH").hasSuffix("# flag --max-batch"))
        #expect(line("GRIDIT_KEEP_FAILED").hasPrefix("GRIDIT_KEEP_FAILED=off "))
        #expect(line("GRIDIT_LEASE").hasPrefix("GRIDIT_LEASE=120 ") && line("GRIDIT_LEASE").hasSuffix("# default"))
        #expect(line("GRIDIT_MEMORY_BUDGET").hasPrefix("GRIDIT_MEMORY_BUDGET=2G "))
        #expect(lines.filter { $0.hasPrefix("GRIDIT_") }.count == DaemonSettings.all.count)

        let json = try runProcess(binaryDirectory() + "/griditd", ["config", "show", "--json"], environment: env)
        struct Shown: Decodable {
            var config_file: String
            var settings: [SettingValue]
        }
        let decoded = try JSONDecoder().decode(Shown.self, from: Data(json.stdout.utf8))
        #expect(decoded.config_file == file)
        let batch = try #require(decoded.settings.first { $0.key == "max-batch" })
        #expect(batch.value == "3" && batch.source == .environment && batch.origin == "GRIDIT_MAX_BATCH")

        // Bad values name where they came from; unknown keys in the file are refused (exit 78).
        let bad = try runProcess(
            binaryDirectory() + "/griditd", ["config", "show"], environment: env.merging(["GRIDIT_LEASE": "1"]) { $1 })
        #expect(
            bad.status == 78 && bad.stderr.contains("GRIDIT_LEASE '1': expected seconds in 5...86400"), "\(bad.stderr)")
        let typo = dir.write("typo.conf", Array("GRIDIT_MAX_QUEUD=5\n".utf8))
        let unknown = try runProcess(
            binaryDirectory() + "/griditd", ["config", "show", "--config", typo], environment: Self.environment())
        #expect(
            unknown.status == 78 && unknown.stderr.contains("\(typo) line 1: unknown setting 'GRIDIT_MAX_QUEUD'"),
            "\(unknown.stderr)")
    }

    @Test("griditd serve takes its state directory from GRIDIT_STATE_DIR and its limits from the config file")
    func serveFromEnvironmentAndFile() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let state = dir.file("from-env")
        let file = dir.write("griditd.conf", Array("GRIDIT_MAX_LENGTH=50\nGRIDIT_START_PAUSED=yes\n".utf8))
        let daemon = try DaemonProcess(
            directory: dir, environment: Self.environment(["GRIDIT_STATE_DIR": state, "GRIDIT_CONFIG": file]),
            stateDirFlag: false)
        defer { daemon.stop() }
        let status = try daemon.client.get("/v1/status", as: DaemonStatus.self)
        #expect(status.stateDirectory == state)
        #expect(status.queue.paused)
        #expect(FileManager.default.fileExists(atPath: state + "/jobs.sqlite"))
        do {
            _ = try daemon.client.post("/v1/jobs", SubmitJobRequest(length: 51), as: SubmitJobResponse.self)
            Issue.record("a 51-frame job passed a 50-frame limit")
        } catch {
            #expect(error.message.contains("max 50 frames"), "\(error.message)")
        }
        #expect(daemon.stop() == 0)
    }

    @Test("database: a setting like the others (flag > environment > file); a URL with a password is refused, unechoed")
    func databaseSetting() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let file = dir.write(
            "griditd.conf",
            Array("GRIDIT_DATABASE=postgres://gridit@file.example/gridit\nGRIDIT_SHARED_ROOT=/srv/gridit\n".utf8))
        func shown(
            _ arguments: [String], _ extra: [String: String], key: String = "GRIDIT_DATABASE", config: String? = nil
        ) throws -> (status: Int32, line: String, stderr: String) {
            let run = try runProcess(
                binaryDirectory() + "/griditd", ["config", "show"] + arguments,
                environment: Self.environment(extra.merging(["GRIDIT_CONFIG": config ?? file]) { $1 }))
            let line = run.stdout.split(separator: "\n").first { $0.hasPrefix(key + "=") }.map(String.init)
            return (run.status, line ?? "", run.stderr)
        }
        let fromFile = try shown([], [:])
        #expect(fromFile.status == 0, "\(fromFile.stderr)")
        #expect(
            fromFile.line.hasPrefix("GRIDIT_DATABASE=postgres://gridit@file.example/gridit ")
                && fromFile.line.hasSuffix("# config file \(file)"), "\(fromFile.line)")
        let fromEnvironment = try shown([], ["GRIDIT_DATABASE": "postgres://gridit@env.example/gridit"])
        #expect(fromEnvironment.line.hasPrefix("GRIDIT_DATABASE=postgres://gridit@env.example/gridit "))
        #expect(fromEnvironment.line.hasSuffix("# environment"))
        let fromFlag = try shown(
            ["--database", "postgresql://gridit@flag.example/gridit"],
            ["GRIDIT_DATABASE": "postgres://gridit@env.example/gridit"])
        #expect(fromFlag.line.hasPrefix("GRIDIT_DATABASE=postgresql://gridit@flag.example/gridit "))
        #expect(fromFlag.line.hasSuffix("# flag --database"))

        let secret = try shown(["--database", "postgres://gridit:s3cret@flag.example/gridit"], [:])
        #expect(secret.status == 78 && secret.stderr.contains("without a password"), "\(secret.stderr)")
        #expect(!secret.stderr.contains("s3cret"), "\(secret.stderr)")
        let notPostgres = try shown([], ["GRIDIT_DATABASE": "mysql://gridit@db/gridit"])
        #expect(notPostgres.status == 78 && notPostgres.stderr.contains("GRIDIT_DATABASE"), "\(notPostgres.stderr)")

        // A shared queue needs the shared root, and only a shared queue takes one.
        let sharedRoot = try shown([], [:], key: "GRIDIT_SHARED_ROOT")
        #expect(sharedRoot.line.hasPrefix("GRIDIT_SHARED_ROOT=/srv/gridit ") && sharedRoot.line.hasSuffix(file))
        let relative = try shown(["--shared-root", "shared"], [:], key: "GRIDIT_SHARED_ROOT")
        #expect(
            relative.line.hasPrefix("GRIDIT_SHARED_ROOT=\(FileManager.default.currentDirectoryPath)/shared "),
            "\(relative.line)")
        let empty = dir.write("empty.conf", [])
        let noRoot = try shown(["--database", "postgres://gridit@db.example/gridit"], [:], config: empty)
        #expect(
            noRoot.status == 78 && noRoot.stderr.contains("needs shared-root")
                && noRoot.stderr.contains("--shared-root DIR"), "\(noRoot.stderr)")
        let noDatabase = try shown(["--shared-root", "/srv/gridit"], [:], config: empty)
        #expect(
            noDatabase.status == 78 && noDatabase.stderr.contains("shared-root (/srv/gridit) is for several hosts"),
            "\(noDatabase.stderr)")
        let inside = try shown(["--state-dir", "/srv/state", "--shared-root", "/srv/state/shared"], [:])
        #expect(inside.status == 78 && inside.stderr.contains("lies in the state directory"), "\(inside.stderr)")
    }

    @Test("the shipped config file documents every setting at its default; the unit starts griditd without flags")
    func shippedFiles() throws {
        let root = repositoryRoot()
        let shipped = try String(contentsOf: root.appendingPathComponent("systemd/griditd.conf"), encoding: .utf8)
        #expect(shipped == DaemonSettings.template(), "regenerate it: griditd config template > systemd/griditd.conf")
        for setting in DaemonSettings.all { #expect(shipped.contains("#\(setting.environmentName)=")) }
        let unit = try String(contentsOf: root.appendingPathComponent("systemd/griditd.service"), encoding: .utf8)
        #expect(unit.contains("\nExecStart=/usr/local/bin/griditd serve\n"))
        let install = try String(contentsOf: root.appendingPathComponent("systemd/install.sh"), encoding: .utf8)
        #expect(install.contains("systemd/griditd.conf"))
    }
}
