// The NumPy `.npy` format (numpy/lib/format.py, "NEP 1"), as read and written here:
//
//   1. bytes 0..<6   magic "\x93NUMPY"
//   2. bytes 6, 7    version major, minor: 1.0 (header length is a UInt16), 2.0 or 3.0 (UInt32;
//                    3.0 allows UTF-8 in the header)
//   3. then          the header length L (little-endian), then L bytes: a Python dict literal
//                    {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//                    padded with spaces and a final '\n' (numpy aligns the data to 64 bytes)
//   4. then          the data: product(shape) elements, C order, exactly filling the file.
//
// Read: little-endian '<f2' '<f4' '<f8' '<i4' '<i8', and '|u1' '|i1' '|b1'; C order only.
// Written: float32 ('<f4'), version 1.0, C order.

import GriditDurable
import GriditTensor

/// Element types of the `.npy` files this reader takes.
public enum NPYDType: String, Sendable, CaseIterable {
    case float16 = "<f2", float32 = "<f4", float64 = "<f8"
    case int8 = "|i1", int32 = "<i4", int64 = "<i8", uint8 = "|u1", bool = "|b1"

    public var size: Int {
        switch self {
        case .int8, .uint8, .bool: return 1
        case .float16: return 2
        case .float32, .int32: return 4
        case .float64, .int64: return 8
        }
    }

    public var isFloatingPoint: Bool { self == .float16 || self == .float32 || self == .float64 }

    /// numpy also spells single-byte types with '<' or '='; accept those spellings.
    init?(descr: String) {
        if let exact = NPYDType(rawValue: descr) {
            self = exact
            return
        }
        guard descr.count == 3, let first = descr.first, first == "<" || first == "=" || first == "|" else {
            return nil
        }
        let rest = descr.dropFirst()
        guard let match = NPYDType.allCases.first(where: { $0.size == 1 && $0.rawValue.dropFirst() == rest })
        else { return nil }
        self = match
    }
}

/// An array read from a `.npy` file: its shape and dtype, with the data still in the mapping.
public struct NPYArray: Sendable {
    public let path: String
    public let shape: [Int]
    public let dtype: NPYDType
    /// File offset of the first element.
    public let dataOffset: Int
    private let mapping: MappedFile

    public var count: Int { shape.reduce(1, *) }

    /// Reads and validates the header of `path`. Throws `CheckpointError` (`.badHeader`,
    /// `.unsupportedDType`, `.unsupportedLayout` for Fortran order, `.truncated`, `.shapeMismatch`,
    /// and the open errors of `MappedFile`).
    public init(path: String) throws(CheckpointError) {
        // A file of exactly 0 bytes is `.empty`; that comes from MappedFile.
        let mapping = try MappedFile(path: path)
        self.mapping = mapping
        self.path = path
        let parsed = try NPYHeader.parse(mapping)
        self.shape = parsed.shape
        self.dtype = parsed.dtype
        self.dataOffset = parsed.dataOffset
    }

    /// The values as a new owned float32 tensor of `shape` (f8 and integers converted, bool as 0/1).
    public func floatTensor() -> Tensor {
        let out = Tensor(zeros: shape)
        let destination = out.mutablePointer
        let source = mapping.base + dataOffset
        for i in 0..<count {
            destination[i] =
                switch dtype {
                case .float32:
                    Float(
                        bitPattern: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                case .float16:
                    HalfPrecision.float(
                        fromHalfBits: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    )
                case .float64:
                    Float(
                        Double(
                            bitPattern: UInt64(
                                littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                case .int32: Float(Int32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                case .int64: Float(Int64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                case .int8: Float(source.load(fromByteOffset: i, as: Int8.self))
                case .uint8: Float(source.load(fromByteOffset: i, as: UInt8.self))
                case .bool: source.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0
                }
        }
        return out
    }

    /// The values as integers, in C order. Throws `.unsupportedDType` for floating-point arrays.
    public func integers() throws(CheckpointError) -> [Int] {
        guard !dtype.isFloatingPoint else {
            throw CheckpointError(
                code: .unsupportedDType, path: path,
                message: "integers() of a floating-point array ('\(dtype.rawValue)')",
                hint: "use floatTensor(), or save the array with an integer dtype")
        }
        let source = mapping.base + dataOffset
        return (0..<count).map { i in
            switch dtype {
            case .int32: Int(Int32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
            case .int64: Int(Int64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
            case .int8: Int(source.load(fromByteOffset: i, as: Int8.self))
            case .uint8: Int(source.load(fromByteOffset: i, as: UInt8.self))
            case .bool: source.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0
            case .float16, .float32, .float64: 0  // excluded above
            }
        }
    }
}

/// Writes `.npy` files.
public enum NPY {
    /// Writes `tensor` as a float32, C-order, version 1.0 `.npy` file (header padded so that the data
    /// starts at a multiple of 64 bytes), atomically.
    public static func write(_ tensor: Tensor, to path: String) throws(CheckpointError) {
        let shape =
            tensor.shape.count == 1
            ? "(\(tensor.shape[0]),)"
            : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = Array("{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }".utf8)
        // magic(6) + version(2) + length(2) + header + '\n' is padded to a multiple of 64.
        let total = (10 + header.count + 1 + 63) / 64 * 64
        header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: total - 10 - header.count - 1))
        header.append(UInt8(ascii: "\n"))
        guard header.count <= Int(UInt16.max) else {
            throw CheckpointError(
                code: .invalidArgument, path: path, message: "shape \(tensor.shape) too long for .npy 1.0")
        }
        try DurableFile.write(to: path, failure: CheckpointError.durable) { (out) throws(CheckpointError) in
            try out.write([0x93] + Array("NUMPY".utf8) + [1, 0])
            try out.write([UInt8(header.count & 0xFF), UInt8(header.count >> 8)])
            try out.write(header)
            try out.write(UnsafeRawBufferPointer(start: tensor.pointer, count: tensor.count * 4))
        }
    }
}

// MARK: - Header parsing

struct NPYHeader {
    var shape: [Int]
    var dtype: NPYDType
    var dataOffset: Int

    static func parse(_ file: MappedFile) throws(CheckpointError) -> NPYHeader {
        let path = file.path
        let bytes = file.bytes
        func fail(_ code: CheckpointError.Code, _ message: String, hint: String = Hints.npyResave) -> CheckpointError {
            CheckpointError(code: code, path: path, message: message, hint: hint)
        }
        let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
        guard bytes.count >= 6, zip(bytes, magic).allSatisfy({ $0 == $1 }) else {
            if bytes.count < 6, zip(bytes, magic).allSatisfy({ $0 == $1 }) {
                throw fail(.truncated, "file has \(bytes.count) bytes, ends inside the .npy magic")
            }
            throw fail(.badHeader, "not an .npy file (no \\x93NUMPY magic)")
        }
        guard bytes.count >= 8 else { throw fail(.truncated, "file ends before the .npy version") }
        let (major, minor) = (bytes[6], bytes[7])
        guard (1...3).contains(major), minor == 0 else {
            throw fail(.badHeader, "unsupported .npy version \(major).\(minor) (supported: 1.0, 2.0, 3.0)")
        }
        let lengthSize = major == 1 ? 2 : 4
        guard bytes.count >= 8 + lengthSize else { throw fail(.truncated, "file ends inside the header length") }
        var headerLength = 0
        for k in 0..<lengthSize { headerLength |= Int(bytes[8 + k]) << (8 * k) }
        let headerStart = 8 + lengthSize
        guard headerLength <= bytes.count - headerStart else {
            throw fail(.truncated, "header length \(headerLength) runs past the end of the \(bytes.count)-byte file")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[headerStart..<(headerStart + headerLength)])
        if major < 3 {
            guard headerBytes.allSatisfy({ $0 < 0x80 }) else { throw fail(.badHeader, "header is not ASCII") }
        } else {
            guard String(validating: headerBytes.bindMemory(to: UInt8.self), as: UTF8.self) != nil else {
                throw fail(.badHeader, "header is not valid UTF-8")
            }
        }

        let dict: [(key: String, value: PyLiteral)]
        do {
            var parser = PyLiteralParser(bytes: headerBytes)
            dict = try parser.parseDictionary()
        } catch {
            throw fail(
                .badHeader, "header is not a Python dict literal: \(error.message) at header byte \(error.offset)")
        }
        var descr: PyLiteral?, fortranOrder: PyLiteral?, shapeValue: PyLiteral?
        for (key, value) in dict {
            switch key {
            case "descr" where descr == nil: descr = value
            case "fortran_order" where fortranOrder == nil: fortranOrder = value
            case "shape" where shapeValue == nil: shapeValue = value
            default: throw fail(.badHeader, "unexpected or repeated header key '\(key)'")
            }
        }
        guard let descr, let fortranOrder, let shapeValue else {
            throw fail(.badHeader, "header lacks one of 'descr', 'fortran_order', 'shape'")
        }
        guard case .string(let descrText) = descr else {
            throw fail(.unsupportedDType, "descr is not a simple dtype string (structured dtypes are not read)")
        }
        guard let dtype = NPYDType(descr: descrText) else {
            throw fail(
                .unsupportedDType,
                "dtype '\(descrText)' is not read (supported: \(NPYDType.allCases.map(\.rawValue).joined(separator: " ")))"
            )
        }
        guard case .bool(let isFortran) = fortranOrder else {
            throw fail(.badHeader, "fortran_order is not True/False")
        }
        guard !isFortran else {
            throw fail(.unsupportedLayout, "fortran_order is True; only C order is read")
        }
        guard case .tuple(let dims) = shapeValue else { throw fail(.badHeader, "shape is not a tuple") }
        var shape: [Int] = []
        var count = 1
        for dim in dims {
            guard case .integer(let n) = dim, n >= 0 else {
                throw fail(.badHeader, "shape has a dim that is not a non-negative integer")
            }
            let (product, overflow) = count.multipliedReportingOverflow(by: n)
            guard !overflow else { throw fail(.badHeader, "shape \(shape + [n]) overflows") }
            count = product
            shape.append(n)
        }
        let dataOffset = headerStart + headerLength
        let available = bytes.count - dataOffset
        let (needed, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, needed <= available else {
            throw fail(
                .truncated,
                "data has \(available) bytes, shape \(shape) of '\(dtype.rawValue)' needs \(overflow ? "more" : String(needed))"
            )
        }
        guard needed == available else {
            throw fail(
                .shapeMismatch, "data has \(available) bytes, shape \(shape) of '\(dtype.rawValue)' needs \(needed)")
        }
        return NPYHeader(shape: shape, dtype: dtype, dataOffset: dataOffset)
    }
}

/// The Python literals an `.npy` header uses.
enum PyLiteral: Sendable {
    case string(String)
    case integer(Int)
    case bool(Bool)
    case none
    /// A tuple or a list.
    case tuple([PyLiteral])
    case dictionary([(key: String, value: PyLiteral)])
}

/// Parses the dict literal of an `.npy` header: strings in '' or "", integers (an old `L` suffix
/// allowed), True/False/None, tuples, lists and dicts, with bounded nesting.
struct PyLiteralParser {
    private let bytes: UnsafeRawBufferPointer
    private var index = 0
    private static let maxDepth = 16

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }
    private func error(_ message: String) -> JSONSyntaxError { JSONSyntaxError(message: message, offset: index) }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { index += 1 }
    }

    /// The whole header must be one dict, followed only by whitespace.
    mutating func parseDictionary() throws(JSONSyntaxError) -> [(key: String, value: PyLiteral)] {
        skipWhitespace()
        guard current == UInt8(ascii: "{") else { throw error("expected '{'") }
        guard case .dictionary(let pairs) = try parseValue(depth: 0) else { throw error("expected a dict") }
        skipWhitespace()
        guard index == bytes.count else { throw error("unexpected data after the dict") }
        return pairs
    }

    private mutating func parseValue(depth: Int) throws(JSONSyntaxError) -> PyLiteral {
        guard depth < Self.maxDepth else { throw error("nesting too deep") }
        skipWhitespace()
        guard let byte = current else { throw error("unexpected end") }
        switch byte {
        case UInt8(ascii: "'"), UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "("): return .tuple(try parseSequence(closing: UInt8(ascii: ")"), depth: depth))
        case UInt8(ascii: "["): return .tuple(try parseSequence(closing: UInt8(ascii: "]"), depth: depth))
        case UInt8(ascii: "{"):
            index += 1
            var pairs: [(key: String, value: PyLiteral)] = []
            while true {
                skipWhitespace()
                if current == UInt8(ascii: "}") {
                    index += 1
                    return .dictionary(pairs)
                }
                guard case .string(let key) = try parseValue(depth: depth + 1) else {
                    throw error("dict key is not a string")
                }
                skipWhitespace()
                guard current == UInt8(ascii: ":") else { throw error("expected ':'") }
                index += 1
                pairs.append((key, try parseValue(depth: depth + 1)))
                skipWhitespace()
                if current == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard current == UInt8(ascii: "}") else { throw error("expected ',' or '}'") }
            }
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let start = index
            if byte == UInt8(ascii: "-") { index += 1 }
            while let d = current, d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") { index += 1 }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if current == UInt8(ascii: "L") { index += 1 }
            guard let value = Int(text) else { throw error("invalid integer '\(text)'") }
            return .integer(value)
        default:
            for (word, value) in [("True", PyLiteral.bool(true)), ("False", .bool(false)), ("None", .none)] {
                let utf8 = Array(word.utf8)
                if bytes.count - index >= utf8.count, zip(bytes[index...], utf8).allSatisfy({ $0 == $1 }) {
                    index += utf8.count
                    return value
                }
            }
            throw error("unexpected character '\(Unicode.Scalar(byte))'")
        }
    }

    private mutating func parseSequence(closing: UInt8, depth: Int) throws(JSONSyntaxError) -> [PyLiteral] {
        index += 1
        var items: [PyLiteral] = []
        while true {
            skipWhitespace()
            if current == closing {
                index += 1
                return items
            }
            items.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            if current == UInt8(ascii: ",") {
                index += 1
                continue
            }
            guard current == closing else { throw error("expected ',' or a closing bracket") }
        }
    }

    private mutating func parseString() throws(JSONSyntaxError) -> String {
        let quote = bytes[index]
        index += 1
        let start = index
        while let byte = current, byte != quote {
            guard byte != UInt8(ascii: "\\") else { throw error("escapes in strings are not supported") }
            index += 1
        }
        guard current == quote else { throw error("unterminated string") }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        index += 1
        return text
    }
}
