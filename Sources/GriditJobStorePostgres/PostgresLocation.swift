import Foundation
import GriditStateDatabase
import PostgresNIO

/// Where the shared job database is: parsed from a `postgres://` URL, with the password kept out
/// of it (and so out of `ps`, the journal and the unit's ExecStart).
///
/// `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require&schema=NAME]`, or a
/// Unix socket: `postgres://USER@/DATABASE?host=/run/postgresql`. The password comes from
/// `passwordFile` (a systemd credential), else `PGPASSWORD`, else the URL itself (tests only).
public struct PostgresLocation: Hashable, Sendable, CustomStringConvertible {
    public enum Endpoint: Hashable, Sendable {
        case tcp(host: String, port: Int)
        case unixSocket(path: String)
    }

    public enum TLSMode: String, Hashable, Sendable {
        case disable, prefer, require
    }

    public var endpoint: Endpoint
    public var user: String
    public var password: String?
    public var database: String
    /// griditd's tables live in this schema (created if missing), so a database can hold other
    /// applications' tables, and tests get a fresh schema each.
    public var schema: String
    public var tls: TLSMode
    /// How the server lists these connections (`pg_stat_activity.application_name`).
    public var applicationName = "griditd"

    public init(
        endpoint: Endpoint, user: String, password: String? = nil, database: String, schema: String = "gridit",
        tls: TLSMode = .prefer
    ) {
        self.endpoint = endpoint
        self.user = user
        self.password = password
        self.database = database
        self.schema = schema
        self.tls = tls
    }

    /// True for `postgres://` and `postgresql://` URLs: what `--database` tells apart from a path.
    public static func isURL(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    /// Parses `url`; `environment` supplies `PGPASSWORD`, `passwordFile` a password file (its
    /// trailing newline dropped). Throws `invalidArgument` with what to fix.
    public init(
        url text: String, passwordFile: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(StateError) {
        guard Self.isURL(text), let components = URLComponents(string: text) else {
            throw StateError(
                .invalidArgument,
                "'\(Self.redacted(text))' is not a PostgreSQL URL; expected postgres://USER@HOST:PORT/DATABASE")
        }
        var query: [String: String] = [:]
        for item in components.queryItems ?? [] { query[item.name] = item.value ?? "" }
        let unknown = Set(query.keys).subtracting(["sslmode", "schema", "host"])
        guard unknown.isEmpty else {
            throw StateError(
                .invalidArgument,
                "unknown PostgreSQL URL option(s) \(unknown.sorted().joined(separator: ", ")); "
                    + "griditd knows sslmode, schema and host")
        }
        if let socket = query["host"], socket.hasPrefix("/") {
            endpoint = .unixSocket(path: socket + "/.s.PGSQL.\(components.port ?? 5432)")
        } else if let host = components.host, !host.isEmpty {
            endpoint = .tcp(host: host, port: components.port ?? 5432)
        } else {
            throw StateError(.invalidArgument, "the PostgreSQL URL names no host (or ?host=/socket/folder)")
        }
        guard let user = components.user, !user.isEmpty else {
            throw StateError(.invalidArgument, "the PostgreSQL URL names no user (postgres://USER@HOST/DATABASE)")
        }
        self.user = user.removingPercentEncoding ?? user
        let path = String(components.path.drop { $0 == "/" })
        database = path.isEmpty ? self.user : (path.removingPercentEncoding ?? path)
        schema = query["schema"] ?? "gridit"
        guard Self.isPlainIdentifier(schema) else {
            throw StateError(
                .invalidArgument, "schema '\(schema)' must be lower-case letters, digits and _ (starting with a letter)"
            )
        }
        guard let mode = TLSMode(rawValue: query["sslmode"] ?? "prefer") else {
            throw StateError(.invalidArgument, "sslmode must be disable, prefer or require")
        }
        tls = mode
        if let passwordFile {
            do {
                let text = try String(contentsOfFile: passwordFile, encoding: .utf8)
                password = String(text.trimmingSuffix { $0 == "\n" || $0 == "\r" })
            } catch {
                throw StateError(.io, "cannot read the database password file \(passwordFile): \(error)")
            }
        } else if let fromEnvironment = environment["PGPASSWORD"] {
            password = fromEnvironment
        } else {
            password = components.password?.removingPercentEncoding
        }
    }

    /// The job database griditd is told to use: `url` (`serve --database`), else `GRIDIT_DATABASE`
    /// (an EnvironmentFile=); nil when neither names one (the state directory's SQLite queue).
    /// The password comes from `GRIDIT_DATABASE_PASSWORD_FILE`, else the systemd credential
    /// `database-password` (LoadCredential=), else `PGPASSWORD`.
    public static func configured(
        url: String?, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(StateError) -> PostgresLocation? {
        guard let text = url ?? environment["GRIDIT_DATABASE"], !text.isEmpty else { return nil }
        var passwordFile = environment["GRIDIT_DATABASE_PASSWORD_FILE"]
        if passwordFile == nil, let credentials = environment["CREDENTIALS_DIRECTORY"] {
            let credential = credentials + "/database-password"
            if FileManager.default.fileExists(atPath: credential) { passwordFile = credential }
        }
        return try PostgresLocation(url: text, passwordFile: passwordFile, environment: environment)
    }

    /// PostgreSQL identifiers griditd creates (schema names) are kept plain, so they need no quoting.
    static func isPlainIdentifier(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, ("a"..."z").contains(first), name.utf8.count <= 63 else {
            return false
        }
        return name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }

    /// The URL without its password, for logs and messages.
    public var description: String {
        switch endpoint {
        case .tcp(let host, let port): "postgres://\(user)@\(host):\(port)/\(database)?schema=\(schema)"
        case .unixSocket(let path): "postgres://\(user)@/\(database)?host=\(path)&schema=\(schema)"
        }
    }

    /// `text` with any password replaced by `***`.
    static func redacted(_ text: String) -> String {
        guard var components = URLComponents(string: text), components.password != nil else { return text }
        components.password = "***"
        return components.string ?? text
    }

    /// The connection pool's settings: few connections (each PostgreSQL backend is a process),
    /// griditd's schema first on the search path, and server-side limits matching the client's
    /// `deadline`. A backend does not watch its socket while it waits on a lock or sits in a
    /// transaction, so without them one a client gave up on, or whose host died mid-transaction,
    /// would keep its place in the lock queue or its locks (the submit lock, a job's row) for the
    /// two hours of the kernel's keepalive, holding every host up.
    func clientConfiguration(maximumConnections: Int, deadline: Duration) -> PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        switch endpoint {
        case .tcp(let host, let port):
            let tls: PostgresClient.Configuration.TLS =
                switch self.tls {
                case .disable: .disable
                case .prefer: .prefer(.makeClientConfiguration())
                case .require: .require(.makeClientConfiguration())
                }
            configuration = PostgresClient.Configuration(
                host: host, port: port, username: user, password: password, database: database, tls: tls)
        case .unixSocket(let path):
            configuration = PostgresClient.Configuration(
                unixSocketPath: path, username: user, password: password, database: database)
        }
        configuration.options.maximumConnections = maximumConnections
        // A second past the client's deadline: the client gives up first (and retries), as before.
        let serverLimit = String(Int((deadline + .seconds(1)) / .milliseconds(1)))
        configuration.options.additionalStartupParameters = [
            ("search_path", schema), ("application_name", applicationName),
            ("statement_timeout", serverLimit), ("idle_in_transaction_session_timeout", serverLimit),
            ("tcp_keepalives_idle", "30"), ("tcp_keepalives_interval", "10"), ("tcp_keepalives_count", "3"),
        ]
        return configuration
    }
}

extension StringProtocol {
    fileprivate func trimmingSuffix(while drop: (Character) -> Bool) -> SubSequence {
        var end = endIndex
        while end > startIndex, drop(self[index(before: end)]) { end = index(before: end) }
        return self[startIndex..<end]
    }
}
