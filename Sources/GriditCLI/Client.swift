// griditctl's typed view of the API, and the one place API errors become exit codes.

import ArgumentParser
import Foundation
import GriditAPI

/// griditctl's exit codes (documented in the README and in `griditctl --help`), after
/// sysexits.h where one fits.
public enum ExitStatus {
    public static let ok: Int32 = 0
    /// A job it waited for failed, was canceled or died; or another error.
    public static let failure: Int32 = 1
    /// Bad command line.
    public static let usage: Int32 = 2
    /// The daemon refused the input (bad parameters, unknown id or model, conflict). EX_DATAERR.
    public static let badInput: Int32 = 65
    /// The daemon cannot be reached. EX_UNAVAILABLE.
    public static let unreachable: Int32 = 69
    /// The daemon failed internally. EX_SOFTWARE.
    public static let daemonError: Int32 = 70
    /// The queue is full, the caller at a per-user limit, or the daemon busy: retry later. EX_TEMPFAIL.
    public static let retryLater: Int32 = 75
    /// Not allowed: the socket's group, or another user's job, or an admin action. EX_NOPERM.
    public static let permissionDenied: Int32 = 77

    static func forAPIError(_ code: APIError.Code) -> Int32 {
        switch code {
        case .badRequest, .notFound, .conflict, .invalidTransition, .payloadTooLarge, .methodNotAllowed,
            .digestMismatch:
            badInput
        case .forbidden: permissionDenied
        case .queueFull, .userLimit, .unavailable: retryLater
        case .notImplemented: unreachable
        default: daemonError
        }
    }
}

/// An error griditctl prints as `griditctl: <message>` and exits with `status`.
public struct CLIError: Error, CustomStringConvertible {
    public var message: String
    public var status: Int32
    public var code: String?

    public init(_ message: String, status: Int32, code: String? = nil) {
        self.message = message
        self.status = status
        self.code = code
    }

    public var description: String { message }
}

/// What griditctl's commands need of griditd: HTTP exchanges. `UnixHTTPClient` speaks them over
/// the control socket; a test passes a stand-in and runs the commands without a daemon.
public protocol ControlClient: Sendable {
    /// One request; the reply whatever its status (a connection that fails throws).
    func send(_ method: String, _ path: String, body: Data?) throws(ConnectionError) -> HTTPReply
    /// A GET whose body is read line by line (`onLine` returns false to stop); the reply's status.
    func stream(_ path: String, onLine: (Data) -> Bool) throws(ConnectionError) -> HTTPReply
    /// A GET whose body goes to `file` when the status is 200 (replaced atomically).
    func download(_ path: String, to file: String) throws(ConnectionError) -> HTTPReply
    /// A POST of `length` bytes that `body` writes piece by piece (a model upload), with no
    /// deadline for the answer; the reply whatever its status.
    func upload(
        _ path: String, headers: [String: String], length: Int64, body: (_ write: (Data) -> Void) throws -> Void
    ) throws -> HTTPReply
}

extension ControlClient {
    /// The body gathered in memory and sent with `send` (stand-ins in tests).
    public func upload(
        _ path: String, headers: [String: String], length: Int64, body: (_ write: (Data) -> Void) throws -> Void
    ) throws -> HTTPReply {
        var data = Data()
        try body { data.append($0) }
        return try send("POST", path, body: data)
    }
}

/// Requests griditctl makes, decoded into GriditAPI types.
public struct GriditClient: Sendable {
    public let http: any ControlClient

    public init(_ http: any ControlClient) { self.http = http }

    public init(socketPath: String, timeout: Double = 120) {
        self.init(UnixHTTPClient(socketPath: socketPath, timeout: timeout))
    }

    public func get<T: Decodable>(_ path: String, as type: T.Type = T.self) throws(CLIError) -> T {
        try decode(try call("GET", path), as: type)
    }

    public func post<T: Decodable, B: Encodable>(
        _ path: String, _ body: B, as type: T.Type = T.self
    ) throws(CLIError) -> T {
        try decode(try call("POST", path, body: APICoding.encode(body)), as: type)
    }

    public func post<T: Decodable>(_ path: String, as type: T.Type = T.self) throws(CLIError) -> T {
        try decode(try call("POST", path, body: Data("{}".utf8)), as: type)
    }

    public func delete<T: Decodable>(_ path: String, as type: T.Type = T.self) throws(CLIError) -> T {
        try decode(try call("DELETE", path), as: type)
    }

    /// The raw reply of a successful request (2xx); API errors become `CLIError`.
    public func call(_ method: String, _ path: String, body: Data? = nil) throws(CLIError) -> HTTPReply {
        let reply: HTTPReply
        do {
            reply = try http.send(method, path, body: body)
        } catch {
            throw Self.cliError(error)
        }
        try Self.check(reply)
        return reply
    }

    /// A GET whose body goes to `file` (replaced atomically).
    public func download(_ path: String, to file: String) throws(CLIError) {
        let reply: HTTPReply
        do {
            reply = try http.download(path, to: file)
        } catch {
            throw Self.cliError(error)
        }
        try Self.check(reply)
    }

    /// Throws the API error a non-2xx reply carries.
    static func check(_ reply: HTTPReply) throws(CLIError) {
        guard !(200..<300).contains(reply.status) else { return }
        if let body = try? APICoding.decoder().decode(ErrorResponse.self, from: reply.body) {
            throw CLIError(
                body.error.message, status: ExitStatus.forAPIError(body.error.code), code: body.error.code.rawValue)
        }
        throw CLIError("griditd answered HTTP \(reply.status)", status: ExitStatus.daemonError)
    }

    static func cliError(_ error: ConnectionError) -> CLIError {
        switch error.kind {
        case .unreachable: CLIError(error.message, status: ExitStatus.unreachable, code: "unreachable")
        case .permissionDenied: CLIError(error.message, status: ExitStatus.permissionDenied, code: "forbidden")
        case .protocolError: CLIError(error.message, status: ExitStatus.unreachable, code: "protocol")
        case .localFile: CLIError(error.message, status: ExitStatus.failure, code: "local")
        }
    }

    private func decode<T: Decodable>(_ reply: HTTPReply, as type: T.Type) throws(CLIError) -> T {
        do {
            return try APICoding.decoder().decode(type, from: reply.body)
        } catch {
            throw CLIError(
                "griditd sent a reply this griditctl \(griditVersion) cannot read (\(error)); are the versions the same?",
                status: ExitStatus.daemonError)
        }
    }
}

/// `path?key=value&...` with percent-encoding.
func withQuery(_ path: String, _ items: [(String, String?)]) -> String {
    let present = items.compactMap { key, value in value.map { (key, $0) } }
    guard !present.isEmpty else { return path }
    var allowed = CharacterSet.urlQueryAllowed
    allowed.remove(charactersIn: "&=+?#")
    return path + "?"
        + present.map { "\($0)=\($1.addingPercentEncoding(withAllowedCharacters: allowed) ?? $1)" }
        .joined(separator: "&")
}

/// A path segment with `/`, `?`, `#`, `%` encoded (model references contain `:` and `@`).
func segment(_ text: String) -> String {
    var allowed = CharacterSet.urlPathAllowed
    allowed.remove(charactersIn: "/?#%")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
}
