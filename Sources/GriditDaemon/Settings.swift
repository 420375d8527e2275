// griditd serve's settings: one table of keys, defaults and rules, read from the flags, the
// environment and the config file (flags > environment > file > defaults) through
// swift-configuration's providers, so that `griditd config show` and the daemon agree.

import Configuration
import Foundation
import GriditAPI
import Logging
import SystemPackage

/// Where a setting's value came from.
public enum SettingSource: String, Codable, Sendable {
    case flag, environment, file, `default`
}

/// One setting of `griditd serve`. Its key is the flag without `--` (`max-queued`); the
/// environment and the config file name it `GRIDIT_MAX_QUEUED`.
public struct Setting: Sendable {
    public let key: String
    /// The default as the documentation states it.
    public let defaultText: String
    public let help: String
    /// Parses a value into the configuration; the problem when it is not valid.
    let apply: @Sendable (inout DaemonConfiguration, String) -> String?
    /// The value in effect, in the syntax the setting takes.
    let show: @Sendable (DaemonConfiguration) -> String

    public var flag: String { "--" + key }
    public var environmentName: String { "GRIDIT_" + key.uppercased().replacingOccurrences(of: "-", with: "_") }
}

/// A setting's effective value and where it came from (`griditd config show`).
public struct SettingValue: Codable, Hashable, Sendable {
    public var key: String
    public var environmentName: String
    public var value: String
    public var source: SettingSource
    /// The flag, variable or file that set it; nil for a default.
    public var origin: String?

    enum CodingKeys: String, CodingKey {
        case key, value, source, origin
        case environmentName = "environment_name"
    }
}

/// A setting that cannot be used; names where it came from.
public struct SettingError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The configuration griditd will run with, and each setting's value and source.
public struct ResolvedSettings: Sendable {
    public var configuration: DaemonConfiguration
    public var values: [SettingValue]
    /// The config file read, and whether it exists (the default one may be missing).
    public var configFile: String
    public var configFileExists: Bool
}

public enum DaemonSettings {
    /// The config file when neither `--config` nor `GRIDIT_CONFIG` names one (may be missing).
    public static let defaultConfigFile = "/etc/gridit/griditd.conf"

    /// Every setting, in the order `config show` and the shipped config file list them.
    public static let all: [Setting] = [
        Setting("state-dir", "/var/lib/gridit", "Database, lock, work and output folders.", \.stateDirectory, .path),
        Setting(
            "database", "(the state directory's SQLite database)",
            "The job queue on PostgreSQL, shared by several hosts: postgres://USER@HOST:PORT/DATABASE (docs/CLUSTER.md). Never the password: it comes from the systemd credential database-password, GRIDIT_DATABASE_PASSWORD_FILE or PGPASSWORD.",
            \.databaseURL, .postgresURL),
        Setting(
            "database-notify", "true",
            "With database: hosts wake each other at once through LISTEN/NOTIFY (one more connection per host). false: poll only, for a transaction pooler (PgBouncer's transaction mode) between griditd and PostgreSQL.",
            \.databaseNotify, .bool),
        Setting(
            "poll-interval", "1",
            "Seconds between looks at the queue for jobs to claim, besides the wake-ups of submits and retries (and, on PostgreSQL, of other hosts' writes).",
            \.pollInterval, .seconds(0.05...3_600)),
        Setting(
            "shared-root", "(none)",
            "With database: a folder mounted on every host (NFS, CephFS) for the jobs' work folders and outputs, so that a job resumes on any host and its output is readable from any host (docs/CLUSTER.md). Required with database, refused without it.",
            \.sharedRoot, .optionalPath),
        Setting(
            "socket", "/run/gridit/griditd.sock", "Control socket to bind when not socket-activated.", \.socketPath,
            .path),
        Setting(
            "group", "(gridit if that group exists)",
            "Group whose members may use the API (none: no check beyond the socket's mode).",
            \.userGroup, .name),
        Setting(
            "admin-group", "(gridit-admin if that group exists)",
            "Group whose members manage every job and the models.", \.adminGroup, .name),
        Setting("socket-group", "(the group)", "Group of a self-bound socket.", \.socketGroup, .name),
        Setting(
            "blas-threads", "(the number of CPUs)", "Threads of the engine's matrix products.", \.blasThreads,
            .int(1...1024)),
        Setting(
            "start-paused", "false", "Pause the queue (persistently) before starting: jobs are accepted, none runs.",
            \.startPaused, .bool),
        Setting(
            "max-queued", "1000", "Most waiting + running jobs; beyond, a submit gets queue_full.", \.maxQueued,
            .int(1...10_000_000)),
        Setting(
            "max-queued-per-user", "100",
            "Most waiting + running jobs of one user who is not an admin; beyond, a submit gets user_limit.",
            \.maxQueuedPerUser, .int(1...10_000_000)),
        Setting(
            "max-jobs-per-user", "100000",
            "Most jobs one non-admin user may have recorded, finished ones included (they go after --keep-succeeded/--keep-failed or `griditctl jobs rm`); beyond, a submit gets user_limit.",
            \.maxJobsPerUser, .int(1...10_000_000)),
        Setting(
            "max-work-per-user", "24h",
            "Most estimated compute of one non-admin user's waiting + running jobs (90m, 24h, 2d), at the nominal rate of `griditd run --dry-run`.",
            \.maxWorkPerUser, .duration),
        Setting(
            "max-job-time", "off",
            "Most estimated compute of one job (90m, 6h; off: no limit), at the same rate; a longer job is refused with its estimate (`griditctl submit --dry-run` shows it).",
            \.maxJobTime, .durationOrOff("a duration like 90m or 6h, or off")),
        Setting(
            "member-priority-min", "-1000", "Lowest priority a user who is not an admin may give a job.",
            \.memberPriorityMin, .int(DaemonConfiguration.priorities)),
        Setting(
            "member-priority-max", "0",
            "Highest priority a user who is not an admin may give a job (admins' default is 0).",
            \.memberPriorityMax, .int(DaemonConfiguration.priorities)),
        Setting(
            "max-connections", "512", "Most open connections to the socket; beyond, a client gets 503.",
            \.http.maxConnections, .int(1...100_000)),
        Setting(
            "max-connections-per-user", "32", "Most open connections of one user (uid).", \.http.maxConnectionsPerUser,
            .int(1...100_000)),
        Setting(
            "admin-connections", "32",
            "Connections of max-connections kept for root, griditd's user and the admin group.",
            \.http.adminConnections, .int(0...100_000)),
        Setting(
            "header-timeout", "10",
            "Seconds a client has to send a request's headers (from connecting, or from its first byte on a reused connection).",
            \.http.headerTimeout, .timeout(1...3600)),
        Setting(
            "body-timeout", "30", "Seconds a client has to send a request's body after its headers.",
            \.http.bodyTimeout, .timeout(1...3600)),
        Setting(
            "idle-timeout", "60",
            "Seconds an open connection may wait without a request, or without reading the answer, before it is closed.",
            \.http.idleTimeout, .timeout(1...86_400)),
        Setting(
            "max-length", "100000", "Longest sequence a job may ask for, in frames.", \.maxLength, .int(1...100_000_000)
        ),
        Setting(
            "default-model", "(the store's only model, NAME:latest)", "Model used when a submit names none.",
            \.defaultModel, .name),
        Setting(
            "site-roots", "(none)",
            "Read-only model store roots searched before the state directory (':'-separated; the flag --site-root repeats).",
            \.siteRoots, .paths),
        Setting(
            "memory-budget", "2G", "Bytes of activations one batched forward may take (K, M, G suffixes).",
            \.memoryBudget,
            .bytes(minimum: 1 << 20)),
        Setting("max-batch", "16", "Most grids or frames in one batched forward.", \.maxBatchItems, .int(1...1024)),
        Setting(
            "max-batch-jobs", "4", "Most jobs (of one model and priority) run together.", \.maxBatchJobs, .int(1...64)),
        Setting(
            "keep-alive", "600", "Seconds a model stays loaded after its last job.", \.modelKeepAlive,
            .seconds(0...(365 * 86_400))),
        Setting(
            "lease", "120", "Lease of a running job in seconds (heartbeats every third of it while it progresses).",
            \.leaseDuration, .seconds(5...86_400)),
        Setting(
            "stop-timeout", "75", "Seconds a SIGTERM waits for the running jobs to checkpoint before griditd exits.",
            \.stopTimeout, .seconds(1...86_400)),
        Setting(
            "stop-grace", "30",
            "Seconds a canceled or stopping job may take to stop before griditd kills the engine's worker process.",
            \.stopGrace, .seconds(1...86_400)),
        Setting(
            "events-keepalive", "15",
            "Seconds between re-reads of a job that `jobs watch` follows; an empty line goes out when nothing changed, so a client that left frees its connection.",
            \.eventsKeepalive, .seconds(1...3_600)),
        Setting(
            "min-free", "256M",
            "Free space (K, M, G) below which no job starts; queued jobs wait without using attempts.",
            \.minFreeBytes, .bytes64),
        Setting(
            "db-reserve", "32M",
            "Space (K, M, G; 0: none) set aside for the job database, released when the disk fills up.",
            \.databaseReserveBytes, .bytes64),
        Setting(
            "keep-succeeded", "7d",
            "Delete succeeded jobs and their output folders this long after they finished (90m, 24h, 7d; off: keep them until `griditctl jobs prune`).",
            \.keepSucceeded, .retention),
        Setting(
            "keep-failed", "30d", "The same for failed, canceled and dead jobs (off: keep them).", \.keepFailed,
            .retention),
        Setting(
            "metrics-listen", "(off)",
            "HOST:PORT of a TCP listener serving only GET /metrics, /healthz and /readyz, for scrapers that cannot reach the Unix socket (e.g. 127.0.0.1:9464; the shipped unit allows no network: see the README).",
            \.metricsListen, .hostPort),
        Setting("log-level", "info", "Log level: trace, debug, info, notice, warning, error.", \.logLevel, .logLevel),
    ]

    public static func setting(_ key: String) -> Setting {
        guard let setting = all.first(where: { $0.key == key }) else { preconditionFailure("no setting \(key)") }
        return setting
    }

    /// A flag's help: the setting's, its default and its variable.
    public static func help(_ key: String) -> String {
        let s = setting(key)
        let text = s.defaultText.hasPrefix("(") ? String(s.defaultText.dropFirst().dropLast()) : s.defaultText
        return "\(s.help) (default: \(text); env and config file: \(s.environmentName))"
    }

    /// The documented config file (`systemd/griditd.conf`, `griditd config template`): every
    /// setting commented out at its default, with what it does and its flag.
    public static func template() -> String {
        var text = """
            # \(defaultConfigFile): griditd's settings, read when `griditd serve` starts (restart
            # griditd after a change: systemctl restart griditd). Written by `griditd config template`.
            #
            # One GRIDIT_<NAME>=value per line, without quotes; a commented or empty line keeps the
            # default, as does an empty value. Precedence: flags of `griditd serve` > environment
            # variables of the same names > this file > defaults. `griditd config show` prints what is in
            # effect and where each value comes from. The format is also systemd's EnvironmentFile=.

            """
        for setting in all {
            // Defaults that depend on the machine are described, in parentheses, not written.
            let literal = !setting.defaultText.hasPrefix("(")
            text +=
                "\n# \(setting.help) Flag: \(setting.flag).\(literal ? "" : " Default: \(setting.defaultText.dropFirst().dropLast()).")\n"
            text += "#\(setting.environmentName)=\(literal ? setting.defaultText : "")\n"
        }
        return text
    }

    /// Reads every setting: `flags` (key → text, only those given), then `environment`, then
    /// the config file (`configFile`, else `GRIDIT_CONFIG`, else `defaultConfigFile`, which
    /// alone may be missing), then the defaults. Relative paths are taken from `workingDirectory`.
    public static func resolve(
        flags: [String: String], environment: [String: String], configFile: String? = nil,
        workingDirectory: String = FileManager.default.currentDirectoryPath
    ) async throws(SettingError) -> ResolvedSettings {
        let named = configFile ?? environment["GRIDIT_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
        let path = named ?? defaultConfigFile
        let exists = FileManager.default.fileExists(atPath: path)
        if named != nil && !exists {
            throw SettingError(
                message:
                    "the config file \(path) does not exist (named by \(configFile != nil ? "--config" : "GRIDIT_CONFIG"))"
            )
        }
        if exists { try checkFile(path) }
        let fileProvider: EnvironmentVariablesProvider
        do {
            fileProvider = try await EnvironmentVariablesProvider(
                environmentFilePath: FilePath(path), allowMissing: true)
        } catch {
            throw SettingError(message: "cannot read the config file \(path): \(error)")
        }
        let flagValues = Dictionary(
            uniqueKeysWithValues: flags.map {
                (AbsoluteConfigKey(["gridit", $0.key]), ConfigValue(.string($0.value), isSecret: false))
            })
        // Highest precedence first.
        let layers: [(SettingSource, ConfigReader, (Setting) -> String)] = [
            (.flag, ConfigReader(provider: InMemoryProvider(name: "flags", values: flagValues)), { $0.flag }),
            (
                .environment, ConfigReader(provider: EnvironmentVariablesProvider(environmentVariables: environment)),
                { $0.environmentName }
            ),
            (.file, ConfigReader(provider: fileProvider), { "\($0.environmentName) in \(path)" }),
        ]

        var configuration = DaemonConfiguration()
        var sources: [String: (SettingSource, String?)] = [:]
        for setting in all {
            var found: (SettingSource, String, String)?
            for (source, reader, origin) in layers {
                // An empty value (`GRIDIT_GROUP=`) counts as not set.
                if let text = reader.string(forKey: ConfigKey(["gridit", setting.key])), !text.isEmpty {
                    found = (source, text, origin(setting))
                    break
                }
            }
            guard let (source, text, origin) = found else {
                sources[setting.key] = (.default, nil)
                continue
            }
            var value = text
            if ["state-dir", "socket", "shared-root"].contains(setting.key), !value.hasPrefix("/") {
                value = workingDirectory + "/" + value
            }
            if let problem = setting.apply(&configuration, value) {
                // A password put in the URL is not echoed back.
                let shown = setting.key == "database" ? Self.withoutPassword(text) : text
                throw SettingError(message: "\(origin) '\(shown.prefix(200))': \(problem)")
            }
            sources[setting.key] = (source, origin)
        }
        // Defaults that depend on the machine: the groups that exist.
        if sources["group"]?.0 == .default {
            configuration.userGroup = Authorizer.gid(of: "gridit") != nil ? "gridit" : nil
        }
        if sources["admin-group"]?.0 == .default {
            configuration.adminGroup = Authorizer.gid(of: "gridit-admin") != nil ? "gridit-admin" : nil
        }
        if sources["socket-group"]?.0 == .default { configuration.socketGroup = configuration.userGroup }
        // A short stop-timeout with the default stop-grace: the grace fits inside (a config that
        // started before stop-grace was checked still starts); one set by hand is refused.
        if sources["stop-grace"]?.0 == .default, configuration.stopGrace >= configuration.stopTimeout {
            configuration.stopGrace = max(configuration.stopTimeout / 2, 0.5)
        }
        configuration.socketMode = configuration.userGroup == nil ? 0o660 : 0o666
        if let problem = configuration.inconsistency() { throw SettingError(message: problem) }

        let values = all.map { setting in
            let (source, origin) = sources[setting.key] ?? (.default, nil)
            return SettingValue(
                key: setting.key, environmentName: setting.environmentName, value: setting.show(configuration),
                source: source,
                origin: origin)
        }
        return ResolvedSettings(
            configuration: configuration, values: values, configFile: path, configFileExists: exists)
    }

    /// `text` with a URL's password replaced by `***`.
    static func withoutPassword(_ text: String) -> String {
        guard var components = URLComponents(string: text), components.password != nil else { return text }
        components.password = "***"
        return components.string ?? "(a URL with a password)"
    }

    /// The config file holds only known `GRIDIT_` keys, `KEY=value` lines and comments: the
    /// environment-file parser skips what it does not understand, and a misspelt key must not
    /// go unnoticed.
    static func checkFile(_ path: String) throws(SettingError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw SettingError(message: "cannot read the config file \(path): \(error.localizedDescription)")
        }
        let known = Set(all.map(\.environmentName))
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let at = "\(path) line \(number + 1)"
            guard let equals = line.firstIndex(of: "=") else {
                throw SettingError(message: "\(at): '\(line.prefix(80))' is not KEY=value")
            }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            guard known.contains(key) else {
                throw SettingError(
                    message: "\(at): unknown setting '\(key.prefix(80))' (`griditd config show` lists them)")
            }
            if let first = value.first, first == "\"" || first == "'" {
                throw SettingError(message: "\(at): write \(key)'s value without quotes")
            }
        }
    }
}

extension DaemonConfiguration {
    /// Rules between settings; the message when one is broken.
    func inconsistency() -> String? {
        if memberPriorityMin > memberPriorityMax {
            return "member-priority-min (\(memberPriorityMin)) is above member-priority-max (\(memberPriorityMax))"
        }
        if http.maxConnectionsPerUser > http.maxConnections {
            return "max-connections-per-user is above max-connections"
        }
        if http.adminConnections >= http.maxConnections { return "admin-connections must be less than max-connections" }
        if stopGrace >= stopTimeout {
            return
                "stop-grace (\(Int(stopGrace)) s) must be shorter than stop-timeout (\(Int(stopTimeout)) s): a job that "
                + "does not stop is killed after stop-grace, before griditd stops waiting for it; lower stop-grace "
                + "or raise stop-timeout (and the unit's TimeoutStopSec above it)"
        }
        if databaseURL != nil && sharedRoot == nil {
            return "the job queue on PostgreSQL (database) is shared by several hosts and needs shared-root: "
                + "a folder mounted on every host (NFS, CephFS) for work folders and outputs, so that a job "
                + "resumes on any host. Pass --shared-root DIR or set GRIDIT_SHARED_ROOT (docs/CLUSTER.md)"
        }
        if let sharedRoot, databaseURL == nil {
            return "shared-root (\(sharedRoot)) is for several hosts on one PostgreSQL queue (database); "
                + "on one host the state directory holds work folders and outputs: remove shared-root, or set database"
        }
        if let sharedRoot, sharedRoot == stateDirectory || sharedRoot.hasPrefix(stateDirectory + "/") {
            return
                "shared-root (\(sharedRoot)) lies in the state directory (\(stateDirectory)), which is this host's own; "
                + "choose the folder mounted on every host"
        }
        return nil
    }
}

/// How a setting's text becomes a value (nil: not a valid one) and back.
struct SettingRule<Value>: Sendable {
    let expected: String
    let parse: @Sendable (String) -> Value?
    let format: @Sendable (Value) -> String
}

extension Setting {
    init<Value>(
        _ key: String, _ defaultText: String, _ help: String,
        _ path: any WritableKeyPath<DaemonConfiguration, Value> & Sendable,
        _ rule: SettingRule<Value>
    ) {
        self.key = key
        self.defaultText = defaultText
        self.help = help
        apply = { configuration, text in
            guard let value = rule.parse(text) else { return "expected \(rule.expected)" }
            configuration[keyPath: path] = value
            return nil
        }
        show = { rule.format($0[keyPath: path]) }
    }
}

extension SettingRule where Value == Int {
    static func int(_ range: ClosedRange<Int>) -> Self {
        SettingRule(
            expected: "a whole number in \(range.lowerBound)...\(range.upperBound)",
            parse: { Int($0).flatMap { range.contains($0) ? $0 : nil } }, format: { "\($0)" })
    }
    static func bytes(minimum: Int) -> Self {
        SettingRule(
            expected: "a size of at least \(formatSize(Int64(minimum))) (e.g. 512M, 2G)",
            parse: { parseBytes($0).flatMap { $0 >= minimum ? $0 : nil } }, format: { formatSize(Int64($0)) })
    }
}

extension SettingRule where Value == Int64 {
    static var bytes64: Self {
        SettingRule(expected: "a size (e.g. 0, 32M, 1G)", parse: { parseBytes($0).map(Int64.init) }, format: formatSize)
    }
}

extension SettingRule where Value == Double {
    static func seconds(_ range: ClosedRange<Double>) -> Self {
        SettingRule(
            expected: "seconds in \(Int(range.lowerBound))...\(Int(range.upperBound))",
            parse: { Double($0).flatMap { range.contains($0) ? $0 : nil } }, format: formatSeconds)
    }
    static var duration: Self {
        SettingRule(expected: "a duration like 90m, 24h or 2d", parse: parseDuration, format: formatAge)
    }
}

extension SettingRule where Value == Duration {
    static func timeout(_ range: ClosedRange<Double>) -> Self {
        SettingRule(
            expected: "seconds in \(Int(range.lowerBound))...\(Int(range.upperBound))",
            parse: { Double($0).flatMap { range.contains($0) ? .seconds($0) : nil } },
            format: { formatSeconds($0 / .seconds(1)) })
    }
}

extension SettingRule where Value == TimeInterval? {
    static var retention: Self { durationOrOff("an age like 12h or 7d, or off") }

    static func durationOrOff(_ expected: String) -> Self {
        SettingRule(
            expected: expected,
            parse: { $0 == "off" ? .some(nil) : parseDuration($0).map { .some($0) } },
            format: { $0.map(formatAge) ?? "off" })
    }
}

extension SettingRule where Value == Bool {
    static var bool: Self {
        SettingRule(
            expected: "true or false",
            parse: {
                ["true": true, "yes": true, "1": true, "false": false, "no": false, "0": false][$0.lowercased()]
            },
            format: { "\($0)" })
    }
}

extension SettingRule where Value == String {
    static var path: Self { SettingRule(expected: "a path", parse: { $0 }, format: { $0 }) }
    static var logLevel: Self {
        SettingRule(
            expected: "trace, debug, info, notice, warning or error",
            parse: { Logger.Level(rawValue: $0) != nil ? $0 : nil },
            format: { $0 })
    }
}

extension SettingRule where Value == String? {
    /// An absolute path (relative ones are made absolute from the working directory first),
    /// standardized: stored names are cut at `path + "/"`, so `/mnt/shared/` must read `/mnt/shared`.
    static var optionalPath: Self {
        SettingRule(
            expected: "an absolute path",
            parse: { $0.hasPrefix("/") ? .some(URL(fileURLWithPath: $0).standardizedFileURL.path) : nil },
            format: { $0 ?? "" })
    }
    static var name: Self { SettingRule(expected: "a name", parse: { .some($0) }, format: { $0 ?? "" }) }
}

extension SettingRule where Value == String? {
    /// A `postgres://` or `postgresql://` URL without a password (GriditJobStorePostgres parses
    /// the rest when griditd opens it).
    static var postgresURL: Self {
        SettingRule(
            expected:
                "a URL postgres://USER@HOST:PORT/DATABASE without a password (the password comes from the credential database-password, GRIDIT_DATABASE_PASSWORD_FILE or PGPASSWORD)",
            parse: { text in
                guard let components = URLComponents(string: text),
                    components.scheme == "postgres" || components.scheme == "postgresql",
                    components.password == nil
                else { return nil }
                return .some(text)
            },
            format: { $0 ?? "" })
    }

    /// `127.0.0.1:9464`, `[::1]:9464`, `localhost:9464`; `off` for none.
    static var hostPort: Self {
        SettingRule(
            expected: "HOST:PORT (e.g. 127.0.0.1:9464) or off",
            parse: { text in
                if text == "off" { return .some(nil) }
                guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                    (0...65_535).contains(port)
                else { return nil }
                let host = text[..<colon]
                return host.isEmpty ? nil : .some(text)
            },
            format: { $0 ?? "off" })
    }
}

extension DaemonConfiguration {
    /// `metricsListen` as host and port (brackets of an IPv6 address removed).
    public var metricsHostPort: (host: String, port: Int)? {
        guard let text = metricsListen, let colon = text.lastIndex(of: ":"),
            let port = Int(text[text.index(after: colon)...])
        else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }
}

extension SettingRule where Value == [String] {
    static var paths: Self {
        SettingRule(
            expected: "absolute paths separated by ':'",
            parse: { text in
                let paths = text.split(separator: ":").map(String.init)
                return paths.allSatisfy { $0.hasPrefix("/") } ? paths : nil
            },
            format: { $0.joined(separator: ":") })
    }
}

/// "2G", "256M", "0": the largest unit that divides the size, as the size settings take it.
func formatSize(_ bytes: Int64) -> String {
    for (unit, size) in [("T", Int64(1) << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)]
    where bytes >= size && bytes % size == 0 {
        return "\(bytes / size)\(unit)"
    }
    return "\(bytes)"
}

/// "90m", "24h", "7d", "45s": the largest whole unit, as the duration settings take it.
func formatAge(_ seconds: TimeInterval) -> String {
    for (unit, size) in [("d", 86_400.0), ("h", 3600), ("m", 60)]
    where seconds >= size && seconds.truncatingRemainder(dividingBy: size) == 0 {
        return "\(Int(seconds / size))\(unit)"
    }
    return formatSeconds(seconds) + "s"
}

/// Whole seconds without a fraction ("120"), others as they are ("0.5").
func formatSeconds(_ seconds: Double) -> String {
    seconds == seconds.rounded() && abs(seconds) < 1e15 ? "\(Int(seconds))" : "\(seconds)"
}
