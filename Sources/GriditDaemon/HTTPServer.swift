// HTTP/1.1 over a Unix socket on Hummingbird 2: the Docker convention, so that
// `curl --unix-socket /run/gridit/griditd.sock http://localhost/v1/status` works.
//
// Hummingbird's HTTP1Channel parses and writes, its Router dispatches (`ControlAPI.router`). The
// listening socket is griditd's own ServerBootstrap: Hummingbird's Server cannot adopt the socket
// systemd passes (`bind(_ socket:)`), and the peer's SO_PEERCRED is read from the accepted channel
// before a byte of the request, then travels in `APIContext`.

import Foundation
import GriditAPI
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// What a route's handler sees of a request: the decoded target, the body, the caller.
public struct APIRequest: Sendable {
    public var query: [String: String]
    public var headers: HTTPFields
    public var body: Data
    /// The body of an upload (`UploadPolicy`), staged in this file instead of `body`; removed
    /// once the handler has answered.
    public var bodyFile: String?
    public var caller: Caller
}

/// The request context: Hummingbird's storage, the connection's caller, the parsed target.
public struct APIContext: RequestContext {
    public struct Source: RequestContextSource, Sendable {
        public var logger: Logger
        public var caller: Caller
        public var limits: HTTPServerLimits
    }

    public var coreContext: CoreRequestContextStorage
    public let caller: Caller
    let limits: HTTPServerLimits
    /// Set by `APIGate` before routing.
    var target: (path: [String], query: [String: String])?

    public init(source: Source) {
        coreContext = CoreRequestContextStorage(source: source)
        caller = source.caller
        limits = source.limits
    }

    /// Larger bodies get 413 (10 MiB; uploads have their own limit).
    public var maxUploadSize: Int { limits.maxBodyBytes }
}

/// Requests whose bodies are streamed to a file rather than held in memory (model uploads):
/// their own size limit, and a body timeout that only asks that bytes keep coming.
public struct UploadPolicy: Sendable {
    /// Where bodies are staged (`upload-<uuid>.part`; a restart removes leftovers).
    public var directory: String
    /// Whether a request target (`/v1/models/upload?...`) is an upload.
    public var accepts: @Sendable (_ method: HTTPRequest.Method, _ target: String) -> Bool

    public init(directory: String, accepts: @escaping @Sendable (HTTPRequest.Method, String) -> Bool) {
        self.directory = directory
        self.accepts = accepts
    }

    /// Writes the body to a new file and returns its path (the caller removes it).
    func stage(_ body: RequestBody) async throws(APIError) -> String {
        let path = directory + "/upload-\(UUID().uuidString.lowercased()).part"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw APIError(
                .internalError, "griditd cannot stage the upload in \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        // Writes wait on the disk (dirty-page throttling): on a thread of the upload's own, not
        // on one of Swift's few cooperative threads.
        let writer = WorkerThread(name: "gridit-upload", stackSize: 1 << 20)
        defer { writer.stop() }
        var failure: Int32?
        do {
            for try await buffer in body {
                failure = await writer.run {
                    buffer.withUnsafeReadableBytes { raw in
                        var offset = 0
                        while offset < raw.count {
                            let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                            if n < 0 && errno == EINTR { continue }
                            guard n > 0 else { return errno }
                            offset += n
                        }
                        return nil
                    }
                }
                if failure != nil { break }  // answered now: the rest of the body is not read
            }
        } catch {
            unlink(path)
            throw APIError(.badRequest, "the upload ended early: \(error)")
        }
        if let failure {
            unlink(path)
            throw APIError(
                failure == ENOSPC ? .unavailable : .internalError,
                "griditd cannot stage the upload: \(String(cString: strerror(failure)))")
        }
        return path
    }
}

extension Response {
    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        var data = APICoding.encode(value, pretty: true)
        data.append(0x0A)
        return .data(data, contentType: "application/json", status: status)
    }

    static func error(_ error: APIError) -> Response {
        var response = json(ErrorResponse(error: error), status: HTTPResponse.Status(code: error.code.httpStatus))
        if error.code == .queueFull { response.headers[.retryAfter] = "30" }
        return response
    }

    static func data(_ data: Data, contentType: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: contentType],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// Chunks (newline-delimited JSON) sent with chunked encoding as `producer` writes them; the
    /// response ends when it returns.
    static func stream(
        contentType: String, producer: @escaping @Sendable (_ write: (Data) async throws -> Void) async throws -> Void
    ) -> Response {
        Response(
            status: .ok, headers: [.contentType: contentType, .cacheControl: "no-store"],
            body: ResponseBody { writer in
                try await producer { try await writer.write(ByteBuffer(bytes: $0)) }
                try await writer.finish(nil)
            })
    }

    /// A file streamed from disk.
    static func file(path: String, contentType: String) -> Response {
        guard let file = FileHandle(forReadingAtPath: path) else {
            return .error(APIError(.notFound, "the file \(path) is gone"))
        }
        let size = (try? file.seekToEnd()) ?? 0
        try? file.seek(toOffset: 0)
        return Response(
            status: .ok, headers: [.contentType: contentType],
            body: ResponseBody(contentLength: Int(size)) { writer in
                defer { try? file.close() }
                var sent: UInt64 = 0
                while sent < size, let chunk = try file.read(upToCount: 256 * 1024), !chunk.isEmpty {
                    try await writer.write(ByteBuffer(bytes: chunk))
                    sent += UInt64(chunk.count)
                }
                try await writer.finish(nil)
            })
    }
}

/// The listening socket: bound by the daemon, or inherited from systemd; or the optional TCP
/// listener of metrics and health.
public enum ListenSocket: Sendable {
    case path(String)
    case inherited(fd: Int32, path: String?)
    case tcp(host: String, port: Int)
}

public struct HTTPServerLimits: Sendable {
    /// Larger bodies get 413 (10 MiB).
    public var maxBodyBytes = 10 * 1024 * 1024
    /// The same for an upload's body (a model bundle or pipeline): 256 GiB.
    public var maxUploadBytes: Int64 = 256 << 30
    /// Bodies up to this size are read and discarded after the 413, so that a client that
    /// sends the whole body first still reads the answer; larger ones are cut off.
    public var maxDrainBytes = 64 * 1024 * 1024
    public var maxHeaderBytes = 64 * 1024
    /// Connections beyond this are answered 503 and closed.
    public var maxConnections = 512
    /// The same for the connections of one uid (admins are bounded by `maxConnections` alone), or
    /// of one address on the TCP metrics listener.
    public var maxConnectionsPerUser = 32
    /// Of `maxConnections`, how many only root, griditd's user and the admin group may use, so
    /// that no number of users' connections locks the admins out.
    public var adminConnections = 32
    /// From connecting (or from a request's first byte on a kept-alive connection) to its whole head.
    public var headerTimeout: Duration = .seconds(10)
    /// From a request's head to the end of its body.
    public var bodyTimeout: Duration = .seconds(30)
    /// A connection waiting for its next request, or whose client stops reading the answer.
    public var idleTimeout: Duration = .seconds(60)

    public init() {}

    /// The TCP metrics listener's: a scraper needs a connection or two, and anyone who reaches
    /// the port may connect, so one address holds at most 8 of 128, none kept for admins.
    public var metricsListener: HTTPServerLimits {
        var limits = self
        limits.maxConnections = min(maxConnections, 128)
        limits.maxConnectionsPerUser = min(maxConnectionsPerUser, 8)
        limits.adminConnections = 0
        return limits
    }
}

/// Serves requests on a socket until the task is cancelled; one child task per connection.
public struct HTTPServer: Sendable {
    let limits: HTTPServerLimits
    let authorizer: Authorizer
    let logger: Logger
    let responder: any HTTPResponder<APIContext>
    /// TCP peers have no credentials: every one is `Caller.anonymous`, and the responder must
    /// serve only what anyone may read (the metrics listener).
    let anonymous: Bool
    let uploads: UploadPolicy?

    public init(
        limits: HTTPServerLimits = HTTPServerLimits(), authorizer: Authorizer, logger: Logger, anonymous: Bool = false,
        uploads: UploadPolicy? = nil, responder: any HTTPResponder<APIContext>
    ) {
        self.limits = limits
        self.authorizer = authorizer
        self.logger = logger
        self.anonymous = anonymous
        self.uploads = uploads
        self.responder = responder
    }

    /// An accepted connection and its peer, read from the kernel before any byte of the request.
    public struct AcceptedConnection: Sendable {
        var channel: HTTP1Channel.Value
        var credentials: PeerCredentials?
        /// A TCP peer's IP address.
        var address: String?
    }

    /// Hummingbird's HTTP/1 channel with griditd's limits and `ConnectionGuard`; `responder`
    /// answers each request.
    private func http1(_ responder: @escaping HTTPChannelHandler.Responder = { _, _, _ in }) -> HTTP1Channel {
        let limits = self.limits, uploads = self.uploads
        return HTTP1Channel(
            responder: responder,
            configuration: .init(
                additionalChannelHandlers: [ConnectionGuard(limits: limits, uploads: uploads)],
                httpDecoderConfiguration: .init(
                    maxHeaderFieldSize: limits.maxHeaderBytes, maxHeaderListSize: limits.maxHeaderBytes,
                    maxHeaderFieldCount: 100)))
    }

    /// Binds (or adopts) the socket and returns the bound server channel; call `serve` next.
    /// Binding happens before READY=1, so a client that starts after READY always connects.
    public func bind(
        _ socket: ListenSocket, group: MultiThreadedEventLoopGroup
    ) async throws -> NIOAsyncChannel<AcceptedConnection, Never> {
        // A client that half-closes after its request (shutdown(SHUT_WR)) still reads the answer.
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
        let anonymous = self.anonymous, http1 = self.http1(), logger = self.logger
        let initializer: @Sendable (any Channel) -> EventLoopFuture<AcceptedConnection> = { channel in
            let peer =
                anonymous
                ? channel.eventLoop.makeSucceededFuture(Caller.anonymous.credentials)
                : PeerCredentials.read(from: channel)
            return peer.flatMap { credentials in
                http1.setup(channel: channel, logger: logger).flatMapThrowing {
                    try HTTP10Close.add(to: channel)
                    return AcceptedConnection(
                        channel: $0, credentials: credentials, address: channel.remoteAddress.flatMap(Self.peerKey))
                }
            }
        }
        switch socket {
        case .path(let path):
            return try await bootstrap.bind(
                unixDomainSocketPath: path, cleanupExistingSocketFile: true, childChannelInitializer: initializer)
        case .inherited(let fd, _):
            return try await bootstrap.bind(fd, childChannelInitializer: initializer)
        case .tcp(let host, let port):
            return try await bootstrap.serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port, childChannelInitializer: initializer)
        }
    }

    /// Accepts connections until cancelled (graceful shutdown cancels it). Before reading a byte
    /// of a request, a connection is refused (answered and closed) when its caller is at a
    /// connection limit or may not use griditd at all.
    public func serve(_ server: NIOAsyncChannel<AcceptedConnection, Never>) async throws {
        let limiter = ConnectionLimiter(limits: limits, adminGroup: authorizer.adminGroup)
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { inbound in
                for try await accepted in inbound {
                    group.addTask {
                        // Refused: answered below the HTTP handlers (or not at all), then closed.
                        func refuse(_ error: APIError?) async {
                            try? await accepted.channel.executeThenClose { _, _ in
                                if let error { await ErrorAnswer.refuse(accepted.channel.channel, error) }
                            }
                        }
                        guard let credentials = accepted.credentials else {
                            logger.warning("could not read the peer's credentials; closing")
                            return await refuse(nil)
                        }
                        let caller = anonymous ? Caller.anonymous : authorizer.caller(for: credentials)
                        let peer: ConnectionTable.Peer =
                            anonymous ? .address(accepted.address ?? "unknown") : .uid(caller.uid)
                        if let refusal = limiter.enter(caller, as: peer) {
                            logger.notice(
                                "connection refused", metadata: ["peer": "\(peer)", "reason": "\(refusal.message)"])
                            return await refuse(refusal)
                        }
                        defer { limiter.leave(peer) }
                        guard caller.isMember || anonymous else {
                            return await refuse(
                                caller.notMemberError(
                                    userGroup: authorizer.userGroup, adminGroup: authorizer.adminGroup))
                        }
                        await http1(respond(for: caller)).handle(value: accepted.channel, logger: logger)
                    }
                }
            }
        }
    }

    /// A TCP peer as the metrics listener's connection budget counts it: an IPv4 address, or an
    /// IPv6 /64 (one host may use any address of its /64; an IPv4-mapped one is its IPv4 address).
    static func peerKey(_ address: SocketAddress) -> String? {
        guard case .v6(let v6) = address else { return address.ipAddress }
        let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
            return bytes[12...].map(String.init).joined(separator: ".")
        }
        let groups = stride(from: 0, to: 8, by: 2).map {
            String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16)
        }
        return groups.joined(separator: ":") + "::/64"
    }

    /// Runs the router for each request of one caller's connection.
    private func respond(for caller: Caller) -> HTTPChannelHandler.Responder {
        let source = APIContext.Source(logger: logger, caller: caller, limits: limits)
        let responder = self.responder
        return { request, writer, _ in
            if request.headers[.expect]?.lowercased() == "100-continue" {
                try await writer.writeInformationalHead(HTTPResponse(status: .continue))
            }
            var response: Response
            do {
                response = try await responder.respond(to: request, context: APIContext(source: source))
            } catch {
                response = .error(APIError(.internalError, "internal error: \(error)"))
            }
            response.headers[.server] = "griditd/\(griditVersion)"
            // `ConnectionGuard` closes the connection once a `Connection: close` answer is written
            // (a handler's own stops reading its request: the body is not drained).
            if request.headers[.connection] == "close" { response.headers[.connection] = "close" }
            try await writer.write(response: response.head, body: response.body)
        }
    }

    /// Splits `/v1/jobs/12?state=queued` into decoded components and query items. Nil when the
    /// target is not an absolute path or has a component that decodes to `.`/`..` or has NUL.
    static func parseTarget(_ uri: String) -> ([String], [String: String])? {
        guard uri.hasPrefix("/"), uri.utf8.count <= 8192 else { return nil }
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var components: [String] = []
        for raw in parts[0].split(separator: "/", omittingEmptySubsequences: true) {
            guard let decoded = String(raw).removingPercentEncoding, !decoded.contains("\0") else { return nil }
            components.append(decoded)
        }
        var query: [String: String] = [:]
        if parts.count == 2 {
            for item in parts[1].split(separator: "&") where !item.isEmpty {
                let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let decode = { (s: Substring) in
                    String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
                }
                guard let key = decode(kv[0]), let value = kv.count == 2 ? decode(kv[1]) : "" else { return nil }
                query[key] = value
            }
        }
        return (components, query)
    }
}
