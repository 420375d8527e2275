// A small blocking HTTP/1.1 client over a Unix socket: griditctl sends one request per
// connection and waits for the answer, so plain POSIX sockets are enough and the CLI links no
// event loop.

import Foundation
import GriditAPI
import GriditDurable

#if canImport(Glibc)
import Glibc
#endif

public struct HTTPReply: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: Data
}

/// Why a request got no HTTP answer.
public struct ConnectionError: Error, CustomStringConvertible, Sendable {
    /// `localFile`: writing the reply to a file of the caller's failed (griditd answered).
    public enum Kind: Sendable { case unreachable, permissionDenied, protocolError, localFile }
    public var kind: Kind
    public var message: String
    public var description: String { message }
}

public struct UnixHTTPClient: ControlClient {
    public var socketPath: String
    /// Seconds to wait for a reply (not for a stream's next line).
    public var timeout: Double

    public init(socketPath: String, timeout: Double = 120) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    /// One request, the whole reply.
    public func send(_ method: String, _ path: String, body: Data? = nil) throws(ConnectionError) -> HTTPReply {
        try exchange(method, path, body: body) { (reader, headers) throws(ConnectionError) in
            try reader.readBody(headers: headers)
        }
    }

    /// A streaming GET: `onLine` gets each newline-delimited line until the server ends the
    /// reply or `onLine` returns false. Returns the status (and the body, when not 200).
    public func stream(_ path: String, onLine: (Data) -> Bool) throws(ConnectionError) -> HTTPReply {
        try exchange("GET", path, streaming: true) { (reader, headers) throws(ConnectionError) in
            var pending = Data()
            try reader.readBody(headers: headers) { chunk in
                pending.append(chunk)
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = pending[pending.startIndex..<newline]
                    pending = Data(pending[(newline + 1)...])
                    if !line.isEmpty, !onLine(Data(line)) { return false }
                }
                return true
            }
            return Data()
        }
    }

    /// A GET whose body goes to `file` (created, or replaced atomically, with the mode the
    /// caller's umask gives a new file); returns the status (and the error body when not 200).
    public func download(_ path: String, to file: String) throws(ConnectionError) -> HTTPReply {
        let mask = currentUmask()
        return try exchange("GET", path) { (reader, headers) throws(ConnectionError) in
            try DurableFile.write(
                to: file, permissions: 0o666 & ~mask,
                failure: { ConnectionError(kind: .localFile, message: "saving \(file): \($0)") }
            ) { (out) throws(ConnectionError) in
                var failed: ConnectionError?
                try reader.readBody(headers: headers) { chunk in
                    chunk.withUnsafeBytes { raw in
                        do throws(ConnectionError) {
                            try out.write(raw)
                            return true
                        } catch {
                            failed = error
                            return false
                        }
                    }
                }
                if let failed { throw failed }
            }
            return Data()
        }
    }

    /// A POST whose body `body` writes in pieces, `length` bytes in all; no deadline for the
    /// answer (griditd hashes and checks the whole model before it answers). A server that
    /// answers early (a refusal) stops the sending; its answer is returned.
    public func upload(
        _ path: String, headers: [String: String], length: Int64, body: (_ write: (Data) -> Void) throws -> Void
    ) throws -> HTTPReply {
        let connection = try connect(streaming: true)
        defer { close(connection.fd) }
        var head =
            "POST \(path) HTTP/1.1\r\nHost: griditd\r\nUser-Agent: griditctl/\(griditVersion)\r\nConnection: close\r\n"
            + "Content-Length: \(length)\r\n"
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { head += "\(name): \(value)\r\n" }
        try connection.write(Data((head + "\r\n").utf8))
        var peerStopped = false
        try body { chunk in
            guard !peerStopped else { return }
            peerStopped = !connection.send(chunk)
        }
        var reader = ResponseReader(fd: connection.fd)
        let (status, replyHeaders) = try reader.readHead()
        return HTTPReply(status: status, headers: replyHeaders, body: try reader.readBody(headers: replyHeaders))
    }

    /// Sends one request on a new connection and reads the reply's head. A 200's body is read by
    /// `readOK` (what it returns is the reply's body); any other status's body is read whole.
    private func exchange(
        _ method: String, _ path: String, body: Data? = nil, streaming: Bool = false,
        readOK: (inout ResponseReader, _ headers: [String: String]) throws(ConnectionError) -> Data
    ) throws(ConnectionError) -> HTTPReply {
        let connection = try connect(streaming: streaming)
        defer { close(connection.fd) }
        try connection.write(request(method, path, body: body))
        var reader = ResponseReader(fd: connection.fd)
        let (status, headers) = try reader.readHead()
        guard status == 200 else {
            return HTTPReply(status: status, headers: headers, body: try reader.readBody(headers: headers))
        }
        return HTTPReply(status: status, headers: headers, body: try readOK(&reader, headers))
    }

    // MARK: - Plumbing

    private func request(_ method: String, _ path: String, body: Data?) -> Data {
        var head =
            "\(method) \(path) HTTP/1.1\r\nHost: griditd\r\nUser-Agent: griditctl/\(griditVersion)\r\nConnection: close\r\n"
        if let body {
            head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        }
        var data = Data((head + "\r\n").utf8)
        if let body { data.append(body) }
        return data
    }

    struct Connection {
        var fd: Int32

        /// Sends all of `data`; false when the peer stopped reading.
        func send(_ data: Data) -> Bool {
            data.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return false }
                    offset += n
                }
                return true
            }
        }

        func write(_ data: Data) throws(ConnectionError) {
            let ok = send(data)
            // A server that answered early (413) and stopped reading: its answer is still there.
            if !ok && errno != EPIPE && errno != ECONNRESET {
                throw ConnectionError(
                    kind: .protocolError, message: "sending the request failed: \(String(cString: strerror(errno)))")
            }
        }
    }

    private func connect(streaming: Bool = false) throws(ConnectionError) -> Connection {
        guard socketPath.utf8.count < 108 else {
            throw ConnectionError(
                kind: .unreachable, message: "the socket path \(socketPath) is too long for a Unix socket")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw ConnectionError(kind: .unreachable, message: "socket(): \(String(cString: strerror(errno)))")
        }
        if !UnixSocket.connect(fd, to: socketPath) {
            let err = errno
            close(fd)
            switch err {
            case EACCES, EPERM:
                throw ConnectionError(
                    kind: .permissionDenied,
                    message: "permission denied on \(socketPath): only root and members of the group 'gridit' may talk "
                        + "to griditd; ask an admin to run `usermod -aG gridit $USER`, then log in again")
            default:
                throw ConnectionError(
                    kind: .unreachable,
                    message: "cannot reach griditd at \(socketPath): \(String(cString: strerror(err))). Is it running? "
                        + "(`systemctl status griditd`, or start `griditd serve`; --socket or GRIDIT_SOCKET pick another socket)"
                )
            }
        }
        if !streaming {
            var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        return Connection(fd: fd)
    }
}

/// Reads one HTTP/1.1 response: status line, headers, then a Content-Length, chunked or
/// read-to-close body.
struct ResponseReader {
    let fd: Int32
    private var buffer = Data()
    private var closed = false

    init(fd: Int32) { self.fd = fd }

    private mutating func fill() throws(ConnectionError) -> Bool {
        guard !closed else { return false }
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                buffer.append(contentsOf: chunk[0..<n])
                return true
            }
            if n == 0 {
                closed = true
                return false
            }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK {
                throw ConnectionError(kind: .protocolError, message: "griditd did not answer in time")
            }
            throw ConnectionError(
                kind: .protocolError, message: "reading the reply failed: \(String(cString: strerror(errno)))")
        }
    }

    private mutating func readLine() throws(ConnectionError) -> String {
        while true {
            if let range = buffer.range(of: Data("\r\n".utf8)) {
                let line = String(decoding: buffer[buffer.startIndex..<range.lowerBound], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex..<range.upperBound)
                return line
            }
            guard try fill() else {
                throw ConnectionError(kind: .protocolError, message: "griditd closed the connection mid-reply")
            }
        }
    }

    mutating func readHead() throws(ConnectionError) -> (Int, [String: String]) {
        while true {
            let statusLine = try readLine()
            let parts = statusLine.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
                throw ConnectionError(kind: .protocolError, message: "not an HTTP reply: '\(statusLine.prefix(80))'")
            }
            var headers: [String: String] = [:]
            while true {
                let line = try readLine()
                if line.isEmpty { break }
                if let colon = line.firstIndex(of: ":") {
                    headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                        in: .whitespaces)
                }
            }
            if status == 100 { continue }  // 100 Continue, then the real answer
            return (status, headers)
        }
    }

    mutating func readBody(headers: [String: String]) throws(ConnectionError) -> Data {
        var all = Data()
        try readBody(headers: headers) { chunk in
            all.append(chunk)
            return true
        }
        return all
    }

    /// Delivers the body in pieces; `sink` returning false stops reading.
    mutating func readBody(headers: [String: String], sink: (Data) -> Bool) throws(ConnectionError) {
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            while true {
                let sizeLine = try readLine()
                guard let size = Int(sizeLine.split(separator: ";")[0].trimmingCharacters(in: .whitespaces), radix: 16)
                else {
                    throw ConnectionError(kind: .protocolError, message: "bad chunk size '\(sizeLine.prefix(20))'")
                }
                if size == 0 {
                    _ = try? readLine()
                    return
                }
                while buffer.count < size + 2 {
                    guard try fill() else {
                        throw ConnectionError(kind: .protocolError, message: "griditd closed the stream")
                    }
                }
                let chunk = Data(buffer.prefix(size))
                buffer.removeSubrange(buffer.startIndex..<(buffer.startIndex + size + 2))
                if !sink(chunk) { return }
            }
        } else if let lengthText = headers["content-length"], let length = Int(lengthText) {
            var remaining = length
            while remaining > 0 {
                if buffer.isEmpty {
                    guard try fill() else {
                        throw ConnectionError(kind: .protocolError, message: "the reply was cut short")
                    }
                }
                let take = min(remaining, buffer.count)
                let chunk = Data(buffer.prefix(take))
                buffer.removeSubrange(buffer.startIndex..<(buffer.startIndex + take))
                remaining -= take
                if !sink(chunk) { return }
            }
        } else {
            while true {
                if !buffer.isEmpty {
                    let chunk = buffer
                    buffer = Data()
                    if !sink(chunk) { return }
                }
                guard try fill() else { return }
            }
        }
    }
}

/// The process's umask (reading it means setting it: set back at once).
func currentUmask() -> mode_t {
    let mask = umask(0)
    umask(mask)
    return mask
}
