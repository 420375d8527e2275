// Who may hold a connection to the control socket, and for how long a client may keep one
// without sending a request or reading the answer: the defence against slow and idle clients
// (slowloris), which once locked everyone out with 600 idle connections, root included.

import GriditAPI
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Synchronization

/// Open connections in all and per peer, and whether one more may open. A value type, so the
/// rules are tested without sockets; `ConnectionLimiter` holds it under a lock.
struct ConnectionTable {
    /// Whom a connection counts against: its uid on the Unix socket; its address on the TCP
    /// metrics listener, whose peers have no credentials (one budget for all of them would let
    /// anyone who reaches the port shut the scraper out).
    enum Peer: Hashable, CustomStringConvertible {
        case uid(UInt32)
        case address(String)

        var description: String {
            switch self {
            case .uid(let uid): "uid \(uid)"
            case .address(let address): address
            }
        }
    }

    enum Refusal: Equatable {
        /// All `maxConnections` are open.
        case full
        /// The free ones are the admins' reserve.
        case reservedForAdmins
        /// This peer holds `maxConnectionsPerUser` already.
        case perPeer(open: Int)
    }

    private(set) var total = 0
    private(set) var byPeer: [Peer: Int] = [:]

    /// Takes a connection for `peer`, or says why not. Admins are bounded by `maxConnections`
    /// alone; everyone else by their own limit and by the total less the admins' reserve.
    mutating func enter(_ peer: Peer, isAdmin: Bool, limits: HTTPServerLimits) -> Refusal? {
        let mine = byPeer[peer, default: 0]
        if isAdmin {
            guard total < limits.maxConnections else { return .full }
        } else {
            guard mine < limits.maxConnectionsPerUser else { return .perPeer(open: mine) }
            guard total < limits.maxConnections - limits.adminConnections else {
                return total < limits.maxConnections ? .reservedForAdmins : .full
            }
        }
        total += 1
        byPeer[peer] = mine + 1
        return nil
    }

    mutating func leave(_ peer: Peer) {
        total -= 1
        let left = byPeer[peer, default: 1] - 1
        byPeer[peer] = left > 0 ? left : nil
    }
}

/// `ConnectionTable` shared by the connections' tasks.
final class ConnectionLimiter: Sendable {
    private let table = Mutex(ConnectionTable())
    let limits: HTTPServerLimits
    let adminGroup: String?

    init(limits: HTTPServerLimits, adminGroup: String?) {
        self.limits = limits
        self.adminGroup = adminGroup
    }

    /// Nil when `caller` may open one more connection as `peer` (then `leave` it once closed);
    /// else the answer that names the limit.
    func enter(_ caller: Caller, as peer: ConnectionTable.Peer) -> APIError? {
        let limits = self.limits
        guard let refusal = table.withLock({ $0.enter(peer, isAdmin: caller.isAdmin, limits: limits) }) else {
            return nil
        }
        let admins = "root and the group '\(adminGroup ?? "gridit-admin")'"
        switch refusal {
        case .full:
            return APIError(
                .unavailable,
                "griditd is serving \(limits.maxConnections) connections already (--max-connections); retry shortly")
        case .reservedForAdmins:
            return APIError(
                .unavailable,
                "griditd is serving every connection users may open (the last \(limits.adminConnections) of "
                    + "--max-connections \(limits.maxConnections) are kept for \(admins)); retry shortly")
        case .perPeer(let open):
            if case .address = peer {
                return APIError(
                    .unavailable,
                    "\(peer) has \(open) connections open to griditd's metrics listener already, the most one "
                        + "address may have; a scraper needs one (close the others and retry)")
            }
            return APIError(
                .unavailable,
                "\(peer) has \(open) connections open to griditd already, the most one user may have "
                    + "(--max-connections-per-user); close some (each `griditctl jobs watch` holds one) and retry")
        }
    }

    func leave(_ peer: ConnectionTable.Peer) { table.withLock { $0.leave(peer) } }
}

/// The deadlines of one connection: the request head must arrive within `headerTimeout` (from
/// connecting, or from the first byte of a request on a kept-alive connection), its body within
/// `bodyTimeout` of the head; a connection waiting for its next request, or whose client stops
/// reading the answer, is closed after `idleTimeout`. Pure: the handler feeds it events and
/// instants and acts on what `expired` says.
struct ConnectionTimeouts {
    enum Expiry: Equatable { case header, body, idle }

    enum Phase: Equatable {
        case waitingForHead, readingBody, responding, idle
    }

    let limits: HTTPServerLimits
    private(set) var phase = Phase.waitingForHead
    /// An upload's body may take as long as it needs while bytes keep coming: each part gives
    /// the next one `bodyTimeout`.
    private var streamedBody = false
    /// When the current phase runs out; nil while griditd answers and the client reads.
    private(set) var deadline: NIODeadline?

    init(limits: HTTPServerLimits, connectedAt now: NIODeadline) {
        self.limits = limits
        deadline = now + TimeAmount(limits.headerTimeout)
    }

    /// Bytes came in: on an idle connection they start the next request's head.
    mutating func bytesArrived(at now: NIODeadline) {
        guard phase == .idle else { return }
        phase = .waitingForHead
        deadline = now + TimeAmount(limits.headerTimeout)
    }

    mutating func headReceived(at now: NIODeadline, streamed: Bool = false) {
        phase = .readingBody
        streamedBody = streamed
        deadline = now + TimeAmount(limits.bodyTimeout)
    }

    mutating func bodyArrived(at now: NIODeadline) {
        guard phase == .readingBody, streamedBody else { return }
        deadline = now + TimeAmount(limits.bodyTimeout)
    }

    mutating func requestEnded() {
        phase = .responding
        deadline = nil
    }

    mutating func responseEnded(at now: NIODeadline) {
        phase = .idle
        deadline = now + TimeAmount(limits.idleTimeout)
    }

    /// While griditd answers, a client that stops reading has `idleTimeout` to start again.
    mutating func writabilityChanged(writable: Bool, at now: NIODeadline) {
        guard phase == .responding else { return }
        deadline = writable ? nil : now + TimeAmount(limits.idleTimeout)
    }

    func expired(at now: NIODeadline) -> Expiry? {
        guard let deadline, now >= deadline else { return nil }
        switch phase {
        case .waitingForHead: return .header
        case .readingBody: return .body
        case .responding, .idle: return .idle
        }
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// Below Hummingbird's request handling, on each connection: applies `ConnectionTimeouts`
/// (closing the connection when a deadline passes, with a 408 when a request's body was too slow
/// to arrive), cuts off a body past what griditd reads (413, then closed), and answers a request
/// NIO's parser rejects (not HTTP, a bad Content-Length, oversized headers) with a JSON error body
/// like every other error, where Hummingbird would send a bare 400.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var timeouts: ConnectionTimeouts
    private var timer: Scheduled<Void>?
    private let uploads: UploadPolicy?
    /// The current request's body: whether it is an upload, how much may come (an upload's
    /// limit, or what griditd drains after a 413) and how much did.
    private var upload = false
    private var bodyLimit: Int64 = 0
    private var received: Int64 = 0
    /// Whole requests received and responses ended: more of the first, a request awaits its answer.
    private var requestsEnded = 0
    private var responsesEnded = 0
    /// A response head went out and its end has not.
    private var responseInFlight = false
    /// A malformed request that follows requests still being answered (pipelined): its error
    /// answer goes out after theirs, then the connection closes.
    private var pendingError: (HTTPResponse.Status, APIError)?
    /// An answer of this handler is on its way and the connection closes after it.
    private var closing = false
    /// The response in flight says `Connection: close`: the connection closes once it is written
    /// (Hummingbird would only half-close and wait for the client to hang up).
    private var closeAfterResponse = false

    init(limits: HTTPServerLimits, uploads: UploadPolicy? = nil) {
        timeouts = ConnectionTimeouts(limits: limits, connectedAt: .now())
        self.uploads = uploads
    }

    func handlerAdded(context: ChannelHandlerContext) { rearm(context) }

    func handlerRemoved(context: ChannelHandlerContext) { timer?.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let limits = timeouts.limits
        switch unwrapInboundIn(data) {
        case .head(let head):
            upload = uploads?.accepts(head.method, head.path ?? "") == true
            timeouts.headReceived(at: .now(), streamed: upload)
            bodyLimit = upload ? limits.maxUploadBytes : Int64(limits.maxDrainBytes)
            received = 0
            if let declared = head.headerFields[.contentLength].flatMap({ Int64($0) }), declared > bodyLimit {
                return answerAndClose(context, status: .contentTooLarge, error: Self.tooLarge(limits, upload: upload))
            }
        case .body(let buffer):
            timeouts.bodyArrived(at: .now())
            received += Int64(buffer.readableBytes)
            if received > bodyLimit {
                return answerAndClose(context, status: .contentTooLarge, error: Self.tooLarge(limits, upload: upload))
            }
        case .end:
            requestsEnded += 1
            timeouts.requestEnded()
        }
        rearm(context)
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Also reached when the decoder has taken bytes without a whole head yet.
        timeouts.bytesArrived(at: .now())
        rearm(context)
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        timeouts.writabilityChanged(writable: context.channel.isWritable, at: .now())
        rearm(context)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else { return context.fireErrorCaught(error) }
        let tooLarge = parserError == .headerOverflow
        let status: HTTPResponse.Status = tooLarge ? .requestHeaderFieldsTooLarge : .badRequest
        let error = APIError(
            .badRequest,
            tooLarge
                ? "the request headers are larger than griditd allows (64 KiB)"
                : "malformed HTTP request (\(parserError))")
        if requestsEnded > responsesEnded && pendingError == nil {
            pendingError = (status, error)
        } else {
            answerAndClose(context, status: status, error: error)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closing else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            responseInFlight = true
            closeAfterResponse = head.headerFields[.connection]?.lowercased() == "close"
        case .end where closeAfterResponse:
            closing = true
            timer?.cancel()
            let written = promise ?? context.eventLoop.makePromise()
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
            return context.writeAndFlush(data, promise: written)
        case .end:
            responseInFlight = false
            responsesEnded += 1
            if let (status, error) = pendingError, responsesEnded == requestsEnded {
                context.write(data, promise: promise)
                return answerAndClose(context, status: status, error: error)
            }
            timeouts.responseEnded(at: .now())
            rearm(context)
        default: break
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        context.fireChannelInactive()
    }

    /// Writes `error` and closes, unless a response has started: then the connection just closes.
    private func answerAndClose(_ context: ChannelHandlerContext, status: HTTPResponse.Status, error: APIError) {
        guard !closing else { return }
        closing = true
        timer?.cancel()
        guard !responseInFlight else { return context.close(promise: nil) }
        let (head, body) = ErrorAnswer.parts(status: status, error: error)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
    }

    private func rearm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        guard let deadline = timeouts.deadline else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.fire(context)
        }
    }

    private func fire(_ context: ChannelHandlerContext) {
        guard let expiry = timeouts.expired(at: .now()) else { return rearm(context) }
        switch expiry {
        case .header, .idle:
            // No request to answer, so the connection just closes, as nginx does on its header timeout.
            context.close(promise: nil)
        case .body:
            let error = APIError(
                .requestTimeout,
                "the request's body did not arrive within \(timeouts.limits.bodyTimeout.components.seconds) s "
                    + "(--body-timeout of griditd); send the whole request at once")
            answerAndClose(context, status: .requestTimeout, error: error)
        }
    }

    static func tooLarge(_ limits: HTTPServerLimits, upload: Bool) -> APIError {
        upload
            ? APIError(
                .payloadTooLarge,
                "the upload is larger than \(limits.maxUploadBytes >> 30) GiB, the most griditd takes")
            : APIError(
                .payloadTooLarge,
                "the request body is larger than \(limits.maxBodyBytes) bytes (10 MiB), the limit of griditd's API; "
                    + "no request needs that much (models are imported by path, or streamed to POST /v1/models/upload)")
    }
}

/// HTTP/1.0 closes after each answer unless the request asks to keep the connection alive; the
/// HTTP-types request Hummingbird sees has no version, so this marks such a request
/// `Connection: close` before it is converted (a 1.0 client reading to the end of the answer
/// would otherwise wait out the idle timeout).
final class HTTP10Close: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data), head.version.major == 1, head.version.minor == 0,
            !head.isKeepAlive
        else { return context.fireChannelRead(data) }
        head.headers.replaceOrAdd(name: "Connection", value: "close")
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    /// Adds the handler right after `channel`'s HTTP/1 request decoder.
    static func add(to channel: any Channel) throws {
        let pipeline = channel.pipeline.syncOperations
        let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        try pipeline.addHandler(HTTP10Close(), position: .after(decoder))
    }
}

/// Error answers for failures found below the request handler.
enum ErrorAnswer {
    /// Written below the HTTP handlers, for a connection refused before its request.
    static func refuse(_ channel: any Channel, _ error: APIError) async {
        let status = HTTPResponse.Status(code: error.code.httpStatus)
        let (head, body) = parts(status: status, error: error)
        var bytes = ByteBuffer(string: "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n")
        for field in head.headerFields { bytes.writeString("\(field.name.rawName): \(field.value)\r\n") }
        bytes.writeString("\r\n")
        bytes.writeImmutableBuffer(body)
        let answer = bytes
        let written: EventLoopFuture<Void> = channel.eventLoop.flatSubmit {
            do {
                let encoder = try channel.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self)
                return encoder.writeAndFlush(NIOAny(IOData.byteBuffer(answer)))
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
        }
        try? await written.get()
    }

    static func parts(status: HTTPResponse.Status, error: APIError) -> (HTTPResponse, ByteBuffer) {
        var body = APICoding.encode(ErrorResponse(error: error), pretty: true)
        body.append(0x0A)
        let headers: HTTPFields = [
            .contentType: "application/json", .contentLength: String(body.count), .connection: "close",
            .server: "griditd/\(griditVersion)",
        ]
        return (HTTPResponse(status: status, headerFields: headers), ByteBuffer(bytes: body))
    }
}
