// HTTP/1.1 over a Unix socket on SwiftNIO (NIOHTTP1): the Docker convention, so that
// `curl --unix-socket /run/gridit/griditd.sock http://localhost/v1/status` works.
//
// NIO rather than Hummingbird: the probe build of NIO alone took 58 s against 122 s for
// Hummingbird (style.md §4), the peer's SO_PEERCRED is read straight from the accepted child
// channel, socket activation adopts systemd's fd with `bind(_ socket:)`, and the body limit is
// ours to enforce (413 with a message, the connection drained so the client reads the answer).

import Foundation
import GriditAPI
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A parsed request with its caller.
public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    /// Percent-decoded path components after the leading `/` (`["v1", "jobs", "12"]`).
    public var path: [String]
    public var rawPath: String
    public var query: [String: String]
    public var headers: HTTPHeaders
    public var body: Data
    /// The body of an upload (`UploadPolicy`), streamed to this file instead of `body`; the
    /// server removes it once the handler has answered.
    public var bodyFile: String?
    public var caller: Caller
}

/// Requests whose bodies are streamed to a file rather than held in memory (model uploads):
/// their own size limit, and a body timeout that only asks that bytes keep coming.
public struct UploadPolicy: Sendable {
    /// Where bodies are staged (`upload-<uuid>.part`; a restart removes leftovers).
    public var directory: String
    /// Whether a request target (`/v1/models/upload?...`) is an upload.
    public var accepts: @Sendable (_ method: HTTPMethod, _ uri: String) -> Bool

    public init(directory: String, accepts: @escaping @Sendable (HTTPMethod, String) -> Bool) {
        self.directory = directory
        self.accepts = accepts
    }
}

/// What a handler answers.
public enum HTTPResponseBody: Sendable {
    case data(Data, contentType: String)
    /// Chunks (newline-delimited JSON) sent with chunked encoding as `producer` writes them; it
    /// runs in the connection's task and ends the response when it returns.
    case stream(
        contentType: String, producer: @Sendable (_ write: @Sendable (Data) async throws -> Void) async throws -> Void)
    /// A file streamed from disk; `deleteAfter` removes it once sent (a temporary export).
    case file(path: String, contentType: String, deleteAfter: Bool)
}

public struct HTTPResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: [(String, String)]
    public var body: HTTPResponseBody

    public init(status: HTTPResponseStatus, headers: [(String, String)] = [], body: HTTPResponseBody) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func json<T: Encodable>(_ value: T, status: HTTPResponseStatus = .ok) -> HTTPResponse {
        var data = APICoding.encode(value, pretty: true)
        data.append(0x0A)
        return HTTPResponse(status: status, body: .data(data, contentType: "application/json"))
    }

    public static func error(_ error: APIError) -> HTTPResponse {
        var response = json(ErrorResponse(error: error), status: HTTPResponseStatus(statusCode: error.code.httpStatus))
        if error.code == .queueFull { response.headers.append(("Retry-After", "30")) }
        return response
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
    /// Bodies up to this size are read and discarded before the 413, so that a client that
    /// sends the whole body first still reads the answer; larger ones are cut off.
    public var maxDrainBytes = 64 * 1024 * 1024
    public var maxHeaderBytes = 64 * 1024
    /// Connections beyond this are answered 503 and closed.
    public var maxConnections = 512
    /// The same for the connections of one uid (admins are bounded by `maxConnections` alone).
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
}

/// Serves requests on a Unix socket until the task is cancelled; one child task per connection.
public struct HTTPServer: Sendable {
    public typealias Handler = @Sendable (HTTPRequest) async -> HTTPResponse

    let limits: HTTPServerLimits
    let authorizer: Authorizer
    let logger: Logger
    let handler: Handler
    /// TCP peers have no credentials: every one is `Caller.anonymous`, and the handler must
    /// serve only what anyone may read (the metrics listener).
    let anonymous: Bool
    let uploads: UploadPolicy?

    public init(
        limits: HTTPServerLimits = HTTPServerLimits(), authorizer: Authorizer, logger: Logger, anonymous: Bool = false,
        uploads: UploadPolicy? = nil, handler: @escaping Handler
    ) {
        self.limits = limits
        self.authorizer = authorizer
        self.logger = logger
        self.anonymous = anonymous
        self.uploads = uploads
        self.handler = handler
    }

    public typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    /// An accepted connection and its peer, read from the kernel before any byte of the request.
    public struct AcceptedConnection: Sendable {
        var channel: Connection
        var credentials: PeerCredentials?
    }

    /// Binds (or adopts) the socket and returns the bound server channel; call `serve` next.
    /// Binding happens before READY=1, so a client that starts after READY always connects.
    public func bind(
        _ socket: ListenSocket, group: MultiThreadedEventLoopGroup
    ) async throws -> NIOAsyncChannel<AcceptedConnection, Never> {
        let limits = self.limits
        // A client that half-closes after its request (shutdown(SHUT_WR)) still reads the answer.
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderListSize = limits.maxHeaderBytes
        decoderLimits.maxHeaderFieldCount = 100
        let finalDecoderLimits = decoderLimits
        let anonymous = self.anonymous
        let uploads = self.uploads
        let initializer: @Sendable (any Channel) -> EventLoopFuture<AcceptedConnection> = { channel in
            let peer =
                anonymous
                ? channel.eventLoop.makeSucceededFuture(Caller.anonymous.credentials)
                : PeerCredentials.read(from: channel)
            return peer.flatMapThrowing { credentials in
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                    withPipeliningAssistance: true, withErrorHandling: false, withOutboundHeaderValidation: true,
                    withEncoderConfiguration: HTTPResponseEncoder.Configuration(),
                    withDecoderLimitConfiguration: finalDecoderLimits)
                try channel.pipeline.syncOperations.addHandler(ParserErrorHandler())
                try channel.pipeline.syncOperations.addHandler(
                    ConnectionTimeoutHandler(limits: limits, uploads: uploads))
                let connection = try Connection(
                    wrappingChannelSynchronously: channel,
                    configuration: .init(isOutboundHalfClosureEnabled: true))
                return AcceptedConnection(channel: connection, credentials: credentials)
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
                        guard let credentials = accepted.credentials else {
                            logger.warning("could not read the peer's credentials; closing")
                            try? await accepted.channel.channel.close()
                            return
                        }
                        let caller = anonymous ? Caller.anonymous : authorizer.caller(for: credentials)
                        if let refusal = limiter.enter(caller) {
                            logger.notice(
                                "connection refused",
                                metadata: ["uid": "\(caller.uid)", "reason": "\(refusal.message)"])
                            return await reject(accepted.channel, refusal)
                        }
                        defer { limiter.leave(caller) }
                        guard caller.isMember || anonymous else {
                            let error = caller.notMemberError(
                                userGroup: authorizer.userGroup, adminGroup: authorizer.adminGroup)
                            return await reject(accepted.channel, error)
                        }
                        await handle(accepted.channel, caller: caller)
                    }
                }
            }
        }
    }

    private func reject(_ connection: Connection, _ error: APIError) async {
        await ErrorAnswer.refuse(
            connection.channel, status: HTTPResponseStatus(statusCode: error.code.httpStatus), error: error)
    }

    private func handle(_ connection: Connection, caller: Caller) async {
        do {
            let channel = connection.channel
            try await connection.executeThenClose { inbound, outbound in
                // Only admins may import, so only their bodies are streamed to disk.
                var reader = RequestReader(limits: limits, uploads: caller.isAdmin ? uploads : nil)
                defer { reader.discardUpload() }
                var parts = inbound.makeAsyncIterator()
                // Closing a channel drops what the kernel has not taken yet, so a last answer ends
                // with a half-close (sent once everything is flushed) and griditd waits for the
                // client to hang up, at most 10 s.
                func finishAfterFlush() async throws {
                    outbound.finish()
                    let deadline = channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
                    while try await parts.next() != nil {}
                    try? await channel.closeFuture.get()
                    deadline.cancel()
                }
                while let part = try await parts.next() {
                    guard let event = reader.consume(part) else { continue }
                    switch event {
                    case .expectContinue(let head):
                        try await outbound.write(.head(HTTPResponseHead(version: head.version, status: .continue)))
                    case .complete(let head, let body, let file):
                        let keepAlive = head.isKeepAlive
                        let started = ContinuousClock.now
                        let response = await respond(head: head, body: body, file: file, caller: caller)
                        reader.discardUpload()
                        log(head: head, response: response, caller: caller, started: started)
                        try await write(response, to: outbound, keepAlive: keepAlive, head: head)
                        if !keepAlive { return try await finishAfterFlush() }
                    case .reject(let head, let error, let close):
                        let response = HTTPResponse.error(error)
                        log(head: head, response: response, caller: caller, started: ContinuousClock.now)
                        try await write(response, to: outbound, keepAlive: !close && head.isKeepAlive, head: head)
                        if close || !head.isKeepAlive { return try await finishAfterFlush() }
                    }
                }
            }
        } catch {
            // A client that hangs up mid-answer is normal (Ctrl-C on `jobs watch`).
            logger.debug("connection ended", metadata: ["error": "\(error)", "uid": "\(caller.uid)"])
        }
    }

    private func respond(head: HTTPRequestHead, body: Data, file: String?, caller: Caller) async -> HTTPResponse {
        guard let (path, query) = Self.parseTarget(head.uri) else {
            return .error(APIError(.badRequest, "malformed request target '\(head.uri.prefix(200))'"))
        }
        let request = HTTPRequest(
            method: head.method, path: path, rawPath: head.uri, query: query, headers: head.headers, body: body,
            bodyFile: file, caller: caller)
        return await handler(request)
    }

    private func log(head: HTTPRequestHead, response: HTTPResponse, caller: Caller, started: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - started
        let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        // Every request at debug: at info the journal would be mostly `jobs watch` and status polls.
        logger.debug(
            "\(head.method.rawValue) \(head.uri.prefix(300)) \(response.status.code) uid \(caller.uid)",
            metadata: [
                "http.method": "\(head.method.rawValue)", "http.path": "\(head.uri.prefix(300))",
                "http.status": "\(response.status.code)", "uid": "\(caller.uid)", "pid": "\(caller.pid)",
                "duration_ms": "\(String(format: "%.1f", ms))",
            ])
    }

    private func write(
        _ response: HTTPResponse, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
        keepAlive: Bool, head: HTTPRequestHead?
    ) async throws {
        var headers = HTTPHeaders()
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        headers.add(name: "Server", value: "griditd/\(griditVersion)")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let version = head?.version ?? .http1_1
        let isHead = head?.method == .HEAD
        switch response.body {
        case .data(let data, let contentType):
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(data.count))
            try await outbound.write(
                .head(HTTPResponseHead(version: version, status: response.status, headers: headers)))
            if !isHead && !data.isEmpty { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: data)))) }
            try await outbound.write(.end(nil))
        case .stream(let contentType, let producer):
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Transfer-Encoding", value: "chunked")
            headers.add(name: "Cache-Control", value: "no-store")
            try await outbound.write(
                .head(HTTPResponseHead(version: version, status: response.status, headers: headers)))
            if !isHead {
                try await producer { chunk in try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: chunk)))) }
            }
            try await outbound.write(.end(nil))
        case .file(let path, let contentType, let deleteAfter):
            defer { if deleteAfter { try? FileManager.default.removeItem(atPath: path) } }
            guard let file = FileHandle(forReadingAtPath: path) else {
                let error = HTTPResponse.error(APIError(.notFound, "the file \(path) is gone"))
                try await write(error, to: outbound, keepAlive: keepAlive, head: head)
                return
            }
            defer { try? file.close() }
            let size = (try? file.seekToEnd()) ?? 0
            try? file.seek(toOffset: 0)
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(size))
            try await outbound.write(
                .head(HTTPResponseHead(version: version, status: response.status, headers: headers)))
            var sent: UInt64 = 0
            while !isHead, sent < size {
                guard let chunk = try file.read(upToCount: 256 * 1024), !chunk.isEmpty else { break }
                try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: chunk))))
                sent += UInt64(chunk.count)
            }
            try await outbound.write(.end(nil))
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

/// Accumulates one request at a time and enforces the body limit.
struct RequestReader {
    enum Event {
        case expectContinue(HTTPRequestHead)
        /// A whole request: its body in memory, or in a file for an upload.
        case complete(HTTPRequestHead, Data, file: String?)
        /// Answer `error` instead of handling the request; `close` when the rest of the body was
        /// not read.
        case reject(HTTPRequestHead, APIError, close: Bool)
    }

    let limits: HTTPServerLimits
    let uploads: UploadPolicy?
    private var head: HTTPRequestHead?
    private var body = Data()
    private var received = 0
    private var tooLarge = false
    /// The current upload's file: its path and descriptor.
    private var upload: (path: String, fd: Int32)?

    init(limits: HTTPServerLimits, uploads: UploadPolicy? = nil) {
        self.limits = limits
        self.uploads = uploads
    }

    /// Closes and removes the current upload's file (once answered, or when the connection ends).
    mutating func discardUpload() {
        guard let upload else { return }
        close(upload.fd)
        unlink(upload.path)
        self.upload = nil
    }

    mutating func consume(_ part: HTTPServerRequestPart) -> Event? {
        if case .head(let h) = part, let uploads, uploads.accepts(h.method, h.uri) { return startUpload(h, uploads) }
        if upload != nil, let h = head { return continueUpload(part, h) }
        switch part {
        case .head(let h):
            discardUpload()
            head = h
            body = Data()
            received = 0
            tooLarge = false
            let lengthHeader = h.headers.first(name: "content-length")
            if let lengthHeader {
                guard let declared = Int(lengthHeader), declared >= 0 else {
                    return .reject(
                        h, APIError(.badRequest, "invalid Content-Length '\(lengthHeader.prefix(40))'"), close: true)
                }
                if declared > limits.maxBodyBytes {
                    tooLarge = true
                    if declared > limits.maxDrainBytes {
                        return .reject(h, Self.tooLargeError(limits), close: true)
                    }
                    return nil  // drained below, then answered
                }
            }
            if h.headers.first(name: "expect")?.lowercased() == "100-continue" { return .expectContinue(h) }
            return nil
        case .body(let buffer):
            guard let h = head else { return nil }
            received += buffer.readableBytes
            if received > limits.maxBodyBytes {
                tooLarge = true
                body = Data()
                if received > limits.maxDrainBytes {
                    head = nil
                    return .reject(h, Self.tooLargeError(limits), close: true)
                }
            }
            if !tooLarge { body.append(contentsOf: buffer.readableBytesView) }
            return nil
        case .end:
            guard let h = head else { return nil }
            head = nil
            if tooLarge { return .reject(h, Self.tooLargeError(limits), close: false) }
            return .complete(h, body, file: nil)
        }
    }

    private mutating func startUpload(_ h: HTTPRequestHead, _ uploads: UploadPolicy) -> Event? {
        discardUpload()
        head = h
        received = 0
        let lengthHeader = h.headers.first(name: "content-length")
        if let lengthHeader, Int64(lengthHeader).map({ $0 < 0 || $0 > limits.maxUploadBytes }) ?? true {
            head = nil
            guard let declared = Int64(lengthHeader), declared >= 0 else {
                return .reject(
                    h, APIError(.badRequest, "invalid Content-Length '\(lengthHeader.prefix(40))'"), close: true)
            }
            return .reject(h, Self.uploadTooLargeError(limits), close: true)
        }
        let path = uploads.directory + "/upload-\(UUID().uuidString.lowercased()).part"
        try? FileManager.default.createDirectory(atPath: uploads.directory, withIntermediateDirectories: true)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            head = nil
            let why = String(cString: strerror(errno))
            return .reject(
                h, APIError(.internalError, "griditd cannot stage the upload in \(path): \(why)"), close: true)
        }
        upload = (path, fd)
        if h.headers.first(name: "expect")?.lowercased() == "100-continue" { return .expectContinue(h) }
        return nil
    }

    private mutating func continueUpload(_ part: HTTPServerRequestPart, _ h: HTTPRequestHead) -> Event? {
        guard let (path, fd) = upload else { return nil }
        switch part {
        case .head: return nil
        case .body(let buffer):
            received += buffer.readableBytes
            guard Int64(received) <= limits.maxUploadBytes else {
                discardUpload()
                head = nil
                return .reject(h, Self.uploadTooLargeError(limits), close: true)
            }
            let failure: Int32? = buffer.withUnsafeReadableBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { return errno }
                    offset += n
                }
                return nil
            }
            if let failure {
                discardUpload()
                head = nil
                let code: APIError.Code = failure == ENOSPC ? .unavailable : .internalError
                return .reject(
                    h, APIError(code, "griditd cannot stage the upload: \(String(cString: strerror(failure)))"),
                    close: true)
            }
            return nil
        case .end:
            head = nil
            return .complete(h, Data(), file: path)
        }
    }

    static func uploadTooLargeError(_ limits: HTTPServerLimits) -> APIError {
        APIError(
            .payloadTooLarge, "the upload is larger than \(limits.maxUploadBytes >> 30) GiB, the most griditd takes")
    }

    static func tooLargeError(_ limits: HTTPServerLimits) -> APIError {
        APIError(
            .payloadTooLarge,
            "the request body is larger than \(limits.maxBodyBytes) bytes (10 MiB), the limit of griditd's API; "
                + "no request needs that much (models are imported by path, or streamed to POST /v1/models/upload)")
    }
}

/// Answers a request NIO's parser rejects (not HTTP, a bad Content-Length, oversized headers)
/// with a JSON error body, like every other error, then closes. Replaces NIO's
/// HTTPServerProtocolErrorHandler, which sends a bare 400.
final class ParserErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = Never
    typealias InboundOut = Never
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var responseInFlight = false

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if !responseInFlight {
            let tooLarge = parserError == .headerOverflow
            let apiError = APIError(
                .badRequest,
                tooLarge
                    ? "the request headers are larger than griditd allows (64 KiB)"
                    : "malformed HTTP request (\(parserError))")
            let status: HTTPResponseStatus = tooLarge ? .requestHeaderFieldsTooLarge : .badRequest
            ErrorAnswer.writeAndClose(context, status: status, error: apiError, wrap: wrapOutboundOut)
        } else {
            context.close(promise: nil)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200: responseInFlight = true
        case .end: responseInFlight = false
        default: break
        }
        context.write(data, promise: promise)
    }
}
