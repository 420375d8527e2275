// JSON conventions of the control API and the error body every 4xx/5xx carries.

import Foundation
import GriditJobSpec

/// The version of the `/v1` wire protocol; bumped on additive changes so that clients can tell.
public let apiVersion = "1.0"

/// The product version, shown by `griditd --version`, `griditctl version` and `/v1/status`.
public let griditVersion = "0.1.0"

public enum APICoding {
    /// Sorted keys (stable output for tests and diffs), ISO 8601 dates.
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting =
            pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        // JSON has no NaN or infinity; spelt as strings, so encoding never fails (a request with
        // one is then refused by the reader's strict number decoding, with the field's name).
        e.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }

    public static func encode<T: Encodable>(_ value: T, pretty: Bool = false) -> Data {
        // Our own plain structs with non-finite floats spelt as strings: encoding cannot fail.
        try! encoder(pretty: pretty).encode(value)
    }

    /// Decodes `data` as `T`, turning decoding errors into one sentence that names the field.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws(APIError) -> T {
        do {
            return try decoder().decode(type, from: data)
        } catch let error as APIError {
            throw error
        } catch let error as JobSpecError {
            throw APIError(.badRequest, error.message)
        } catch let error as DecodingError {
            if case .dataCorrupted(let c) = error, c.codingPath.isEmpty, c.underlyingError as? APIError == nil,
                (try? JSONSerialization.jsonObject(with: data)) != nil
            {
                // Foundation reports a number it cannot represent (-1 for an unsigned field,
                // 1e30 for an integer) as corrupt data without a path.
                throw APIError(
                    .badRequest, "a number is out of range for its field (negative where it cannot be, or too large)")
            }
            throw APIError(.badRequest, describe(error))
        } catch {
            throw APIError(.badRequest, "malformed JSON: \(error)")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            let p = keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "the body" : "'\(p)'"
        }
        switch error {
        case .dataCorrupted(let c):
            if let underlying = c.underlyingError as? APIError { return underlying.message }
            if let underlying = c.underlyingError as? JobSpecError { return underlying.message }
            if c.codingPath.isEmpty { return "malformed JSON: the body is not a JSON document (\(c.debugDescription))" }
            return "\(path(c.codingPath)): \(c.debugDescription)"
        case .keyNotFound(let key, let c):
            return "missing field '\((c.codingPath + [key]).map(\.stringValue).joined(separator: "."))'"
        case .typeMismatch(let type, let c):
            return "\(path(c.codingPath)) has the wrong type: expected \(jsonTypeName(type))"
        case .valueNotFound(let type, let c):
            return "\(path(c.codingPath)) is null: expected \(jsonTypeName(type))"
        @unknown default:
            return "malformed request: \(error)"
        }
    }

    private static func jsonTypeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Int.Type, is Int64.Type, is UInt32.Type: "an integer"
        case is UInt64.Type: "a non-negative integer"
        case is Double.Type: "a number"
        default: "\(type)"
        }
    }
}

/// An API failure: a stable snake_case `code` (scripts switch on it; griditctl maps it to an exit
/// code), a message that names the problem and the fix, and the job concerned when there is one.
/// On the wire: `{"error": {"code": "...", "message": "...", "job_id": 12}}`.
public struct APIError: Error, Codable, Hashable, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Codable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        public static let badRequest = Code(rawValue: "bad_request")
        public static let notFound = Code(rawValue: "not_found")
        public static let forbidden = Code(rawValue: "forbidden")
        public static let conflict = Code(rawValue: "conflict")
        public static let invalidTransition = Code(rawValue: "invalid_transition")
        public static let payloadTooLarge = Code(rawValue: "payload_too_large")
        /// The request did not arrive within griditd's timeouts.
        public static let requestTimeout = Code(rawValue: "request_timeout")
        public static let methodNotAllowed = Code(rawValue: "method_not_allowed")
        public static let queueFull = Code(rawValue: "queue_full")
        /// The caller is at one of its per-user limits (jobs, estimated compute).
        public static let userLimit = Code(rawValue: "user_limit")
        public static let notImplemented = Code(rawValue: "not_implemented")
        public static let unavailable = Code(rawValue: "unavailable")
        public static let digestMismatch = Code(rawValue: "digest_mismatch")
        public static let internalError = Code(rawValue: "internal")

        /// The HTTP status the daemon answers with.
        public var httpStatus: Int {
            switch self {
            case .badRequest: 400
            case .forbidden: 403
            case .notFound: 404
            case .methodNotAllowed: 405
            case .requestTimeout: 408
            case .conflict, .invalidTransition: 409
            case .payloadTooLarge: 413
            case .userLimit: 429
            case .digestMismatch: 422
            case .notImplemented: 501
            case .queueFull, .unavailable: 503
            default: 500
            }
        }
    }

    public var code: Code
    public var message: String
    public var jobID: Int64?

    public init(_ code: Code, _ message: String, jobID: Int64? = nil) {
        self.code = code
        self.message = message
        self.jobID = jobID
    }

    public var description: String { "\(code.rawValue): \(message)" }

    enum CodingKeys: String, CodingKey {
        case code, message
        case jobID = "job_id"
    }
}

/// The body of every error response.
public struct ErrorResponse: Codable, Hashable, Sendable {
    public var error: APIError
    public init(error: APIError) { self.error = error }
}
