import Foundation

/// Any JSON document, for wire fields whose schema belongs to another module (a pipeline
/// manifest, a model config) that this Foundation-only target does not link.
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .integer(i)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .integer(let i): try c.encode(i)
        case .number(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Parses a JSON text (nil if it is not JSON).
    public init?(json data: Data) {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: data) else { return nil }
        self = value
    }

    /// The member `key` of an object (nil otherwise).
    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    /// Pretty, key-sorted JSON text.
    public var prettyText: String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? e.encode(self)) ?? Data("null".utf8), as: UTF8.self)
    }
}

/// An instant on the wire: an RFC 3339 UTC string with milliseconds (`2026-05-01T12:00:00.000Z`),
/// whatever date strategy the encoder uses.
public struct Timestamp: Codable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var date: Date

    public init(_ date: Date) { self.date = date }

    public init(unixMillis: Int64) { date = Date(timeIntervalSince1970: Double(unixMillis) / 1000) }

    public var unixMillis: Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let text = try c.decode(String.self)
        guard let date = Self.parse(text) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an RFC 3339 timestamp: \(text)")
        }
        self.date = date
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    public var description: String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: date)
    }

    private static func parse(_ text: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: text) { return d }
        f.formatOptions = [.withInternetDateTime]
        return f.date(from: text)
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.date < b.date }
}

/// "just now", "5 minutes ago", "3 days ago": how old `date` is at `now`, for tables.
public func formatAge(_ date: Date, now: Date) -> String {
    let s = max(0, Int(now.timeIntervalSince(date)))
    func unit(_ n: Int, _ name: String) -> String { "\(n) \(name)\(n == 1 ? "" : "s") ago" }
    switch s {
    case ..<10: return "just now"
    case ..<60: return unit(s, "second")
    case ..<3600: return unit(s / 60, "minute")
    case ..<86_400: return unit(s / 3600, "hour")
    case ..<(86_400 * 60): return unit(s / 86_400, "day")
    case ..<(86_400 * 730): return unit(s / (86_400 * 30), "month")
    default: return unit(s / (86_400 * 365), "year")
    }
}
