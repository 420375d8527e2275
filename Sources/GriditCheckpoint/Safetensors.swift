// The safetensors format (https://github.com/huggingface/safetensors), as read and written here:
//
//   1. bytes 0..<8    N, the header length, little-endian UInt64 (this reader caps it at 100 MB).
//   2. bytes 8..<8+N  the header: a UTF-8 JSON object. Each key is a tensor name mapped to
//                       {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
//                     plus an optional "__metadata__": {string: string}. Writers may pad it
//                     with trailing spaces (ours do, so that 8+N is a multiple of 64).
//   3. bytes 8+N...   the data section. `data_offsets` are relative to its start; a tensor's
//                     bytes are row-major, little-endian, end - begin = product(shape) × size(dtype).
//
// Checks made at open, before any tensor is used (every failure is a `CheckpointError`):
//   - the file is at least 8 bytes, N <= 100 MB and 8 + N <= file size;
//   - the header is valid UTF-8 and JSON, an object whose tensor entries are objects with exactly
//     dtype (a known safetensors dtype), shape (at most 8 non-negative integers) and data_offsets
//     (two non-negative integers), and no name appears twice (the JSON parser keeps duplicates);
//   - begin <= end <= data section size, end - begin equals the shape's byte count (overflow-
//     checked), and no two tensors' byte ranges overlap. Gaps are accepted (the reference
//     library requires full coverage; our writer pads between tensors for alignment).
// Dtypes: the header may hold any known safetensors dtype (BOOL, U8, I64, ...), so such files
// open; `tensor(named:)` converts F32, F16 and BF16 to float32 and throws `.unsupportedDType`
// for the others.
//
// Zero copy: an F32 tensor whose bytes are 4-byte aligned in memory is returned as a borrowed
// Tensor pointing into the mapping (no copy, read-only). Other F32 tensors, and F16/BF16, are
// converted into a new owned float32 Tensor on each call. `bfloat16(named:)` lends a BF16
// tensor's bits in place, for the bf16 layers to pack without a float32 copy.

import GriditTensor

#if canImport(Glibc)
import Glibc
#endif

/// Element types a safetensors header may name. `size` is bytes per element.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case bool = "BOOL", u8 = "U8", i8 = "I8", f8E5M2 = "F8_E5M2", f8E4M3 = "F8_E4M3", f8E8M0 = "F8_E8M0"
    case i16 = "I16", u16 = "U16", f16 = "F16", bf16 = "BF16"
    case i32 = "I32", u32 = "U32", f32 = "F32"
    case i64 = "I64", u64 = "U64", f64 = "F64"

    public var size: Int {
        switch self {
        case .bool, .u8, .i8, .f8E5M2, .f8E4M3, .f8E8M0: return 1
        case .i16, .u16, .f16, .bf16: return 2
        case .i32, .u32, .f32: return 4
        case .i64, .u64, .f64: return 8
        }
    }

    /// True for the dtypes `SafetensorsFile.tensor(named:)` turns into float32.
    public var isReadableAsFloat32: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

/// One tensor's entry in a safetensors header.
public struct SafetensorsTensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: SafetensorsDType
    public let shape: [Int]
    /// Byte range relative to the start of the data section (`data_offsets`).
    public let dataOffsets: Range<Int>
    /// Byte range in the file (`dataOffsets` shifted by the data section's start).
    public let fileRange: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A safetensors file, memory-mapped and fully validated at `init`, serving float32 tensors by name.
///
/// Immutable and `Sendable`; tensors it lends keep the mapping alive on their own, so this value
/// may be dropped while they are in use.
public struct SafetensorsFile: TensorSource, Sendable {
    /// Largest header accepted (the reference implementation's cap).
    public static let maxHeaderLength = 100_000_000
    /// Largest rank accepted.
    public static let maxRank = 8

    public let mapping: MappedFile
    public var path: String { mapping.path }
    /// Header entries ordered by `dataOffsets` (file order).
    public let tensors: [SafetensorsTensorInfo]
    /// The header's `__metadata__` (empty when absent).
    public let metadata: [String: String]
    /// N, the JSON header's length in bytes.
    public let headerLength: Int
    /// File offset of the data section (8 + N).
    public var dataStart: Int { 8 + headerLength }

    private let index: [String: Int]
    private let sortedNames: [String]

    /// Maps and validates `path`. See the format notes at the top of this file for what is checked.
    public init(path: String, advice: MappedFile.Advice? = nil) throws(CheckpointError) {
        try self.init(mapping: MappedFile(path: path, advice: advice))
    }

    /// Validates an existing mapping.
    public init(mapping: MappedFile) throws(CheckpointError) {
        let header = try SafetensorsHeader.parse(mapping)
        self.mapping = mapping
        self.tensors = header.tensors
        self.metadata = header.metadata
        self.headerLength = header.headerLength
        var index: [String: Int] = [:]
        for (i, info) in header.tensors.enumerated() { index[info.name] = i }
        self.index = index
        self.sortedNames = header.tensors.map(\.name).sorted()
    }

    // MARK: TensorSource

    /// Every tensor name, sorted.
    public var tensorNames: [String] { sortedNames }

    public func shape(of name: String) -> [Int]? { info(name)?.shape }

    /// The header entry for `name`, or nil.
    public func info(_ name: String) -> SafetensorsTensorInfo? { index[name].map { tensors[$0] } }

    /// Tensor `name` as float32: borrowed from the mapping for 4-byte aligned F32, otherwise a
    /// converted owned copy. Throws `.missingTensor` or `.unsupportedDType` (`CheckpointError`).
    public func tensor(named name: String) throws(CheckpointError) -> Tensor {
        guard let info = info(name) else {
            throw CheckpointError(
                code: .missingTensor, path: path, tensor: name,
                message: "no such tensor (the file holds \(tensors.count))",
                hint: "check the name against the model's binding table, or " + Hints.reexport)
        }
        let source = mapping.base + info.fileRange.lowerBound
        let count = info.elementCount
        switch info.dtype {
        case .f32:
            if Int(bitPattern: source) % MemoryLayout<Float>.alignment == 0 {
                let floats = source.assumingMemoryBound(to: Float.self)
                return Tensor(
                    storage: TensorStorage(borrowing: floats, count: count, owner: mapping), shape: info.shape)
            }
            let out = Tensor(zeros: info.shape)
            UnsafeMutableRawPointer(out.mutablePointer).copyMemory(from: source, byteCount: count * 4)
            return out
        case .f16, .bf16:
            let decode =
                info.dtype == .f16 ? HalfPrecision.float(fromHalfBits:) : HalfPrecision.float(fromBFloat16Bits:)
            let out = Tensor(zeros: info.shape)
            let destination = out.mutablePointer
            for i in 0..<count {
                destination[i] = decode(
                    UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
            return out
        default:
            throw CheckpointError(
                code: .unsupportedDType, path: path, tensor: name,
                message: "dtype \(info.dtype.rawValue) cannot be read as float32 (supported: F32, F16, BF16)",
                hint: Hints.toFloat32)
        }
    }

    /// Tensor `name`'s bits, borrowed from the mapping, when it is stored as BF16 (2-byte aligned,
    /// as every writer aligns it); nil for any other dtype (`tensor(named:)` serves those).
    public func bfloat16(named name: String) throws(CheckpointError) -> BF16Tensor? {
        guard let info = info(name), info.dtype == .bf16 else { return nil }
        let source = mapping.base + info.fileRange.lowerBound
        guard Int(bitPattern: source) % MemoryLayout<UInt16>.alignment == 0 else { return nil }
        return BF16Tensor(borrowing: source.assumingMemoryBound(to: UInt16.self), shape: info.shape, owner: mapping)
    }
}

// MARK: - Header validation

/// The validated contents of a safetensors header.
struct SafetensorsHeader {
    var headerLength: Int
    var tensors: [SafetensorsTensorInfo]
    var metadata: [String: String]

    static func parse(_ file: MappedFile) throws(CheckpointError) -> SafetensorsHeader {
        let path = file.path
        func fail(
            _ code: CheckpointError.Code, _ message: String, tensor: String? = nil,
            hint: String = Hints.reexport
        ) -> CheckpointError {
            CheckpointError(code: code, path: path, tensor: tensor, message: message, hint: hint)
        }

        guard file.size >= 8 else {
            throw fail(
                .truncated, "file has \(file.size) bytes, fewer than the 8-byte header length",
                hint: Hints.incomplete)
        }
        // Until the header parses, messages never quote the file's bytes (not even the length
        // they declare as a number): the file may be anything, /etc/shadow included.
        let declared = UInt64(littleEndian: file.base.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(SafetensorsFile.maxHeaderLength) else {
            throw fail(
                .headerTooLarge,
                "the declared header length exceeds the \(SafetensorsFile.maxHeaderLength)-byte cap (is it a safetensors file?)"
            )
        }
        let headerLength = Int(declared)
        guard headerLength <= file.size - 8 else {
            throw fail(
                .truncated, "the declared header length runs past the end of the \(file.size)-byte file",
                hint: Hints.incomplete)
        }
        guard headerLength > 0 else { throw fail(.badHeader, "header length is 0 (no JSON header)") }

        let headerBytes = UnsafeRawBufferPointer(start: file.base + 8, count: headerLength)
        guard String(validating: headerBytes.bindMemory(to: UInt8.self), as: UTF8.self) != nil else {
            throw fail(.badHeader, "header is not valid UTF-8")
        }
        let json: JSONValue
        do {
            json = try JSONParser.parse(headerBytes)
        } catch {
            throw fail(.badHeader, "header is not valid JSON: \(error.message) at header byte \(error.offset)")
        }
        guard case .object(let entries) = json else {
            throw fail(.badHeader, "header is \(json.kind), expected a JSON object")
        }

        let dataSize = file.size - 8 - headerLength
        var tensors: [SafetensorsTensorInfo] = []
        tensors.reserveCapacity(entries.count)
        var metadata: [String: String]?
        var seen = Set<String>()
        for (name, value) in entries {
            guard seen.insert(name).inserted else {
                throw fail(.duplicateTensor, "name appears more than once in the header", tensor: name)
            }
            if name == "__metadata__" {
                metadata = try parseMetadata(value, fail: fail)
                continue
            }
            tensors.append(
                try parseEntry(
                    name: name, value: value, dataStart: 8 + headerLength,
                    dataSize: dataSize, fail: fail))
        }

        // Overlaps: sort by start; each non-empty range must begin at or after the previous end.
        tensors.sort {
            ($0.dataOffsets.lowerBound, $0.dataOffsets.upperBound) < (
                $1.dataOffsets.lowerBound, $1.dataOffsets.upperBound
            )
        }
        var previous: SafetensorsTensorInfo?
        for info in tensors where !info.dataOffsets.isEmpty {
            if let previous, info.dataOffsets.lowerBound < previous.dataOffsets.upperBound {
                throw fail(
                    .overlap,
                    "bytes \(info.dataOffsets) overlap tensor '\(previous.name)' at \(previous.dataOffsets)",
                    tensor: info.name)
            }
            previous = info
        }
        return SafetensorsHeader(headerLength: headerLength, tensors: tensors, metadata: metadata ?? [:])
    }

    private static func parseMetadata(
        _ value: JSONValue, fail: (CheckpointError.Code, String, String?, String) -> CheckpointError
    ) throws(CheckpointError) -> [String: String] {
        guard case .object(let pairs) = value else {
            throw fail(.badHeader, "__metadata__ is \(value.kind), expected an object of strings", nil, Hints.reexport)
        }
        var metadata: [String: String] = [:]
        for (key, item) in pairs {
            guard case .string(let text) = item else {
                throw fail(.badHeader, "__metadata__['\(key)'] is \(item.kind), expected a string", nil, Hints.reexport)
            }
            guard metadata.updateValue(text, forKey: key) == nil else {
                throw fail(.badHeader, "__metadata__ key '\(key)' appears more than once", nil, Hints.reexport)
            }
        }
        return metadata
    }

    private static func parseEntry(
        name: String, value: JSONValue, dataStart: Int, dataSize: Int,
        fail: (CheckpointError.Code, String, String?, String) -> CheckpointError
    ) throws(CheckpointError) -> SafetensorsTensorInfo {
        func bad(_ message: String) -> CheckpointError { fail(.badHeader, message, name, Hints.reexport) }

        guard case .object(let fields) = value else { throw bad("entry is \(value.kind), expected an object") }
        var dtypeValue: JSONValue?, shapeValue: JSONValue?, offsetsValue: JSONValue?
        for (key, field) in fields {
            switch key {
            case "dtype" where dtypeValue == nil: dtypeValue = field
            case "shape" where shapeValue == nil: shapeValue = field
            case "data_offsets" where offsetsValue == nil: offsetsValue = field
            case "dtype", "shape", "data_offsets": throw bad("field '\(key)' appears more than once")
            default: throw bad("unknown field '\(key)' (expected dtype, shape, data_offsets)")
            }
        }

        guard let dtypeValue else { throw bad("missing field 'dtype'") }
        guard case .string(let dtypeName) = dtypeValue else {
            throw bad("dtype is \(dtypeValue.kind), expected a string")
        }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            throw fail(.unsupportedDType, "unknown dtype '\(dtypeName)'", name, Hints.toFloat32)
        }

        guard let shapeValue else { throw bad("missing field 'shape'") }
        guard case .array(let dims) = shapeValue else { throw bad("shape is \(shapeValue.kind), expected an array") }
        guard dims.count <= SafetensorsFile.maxRank else {
            throw bad("shape has \(dims.count) dims, more than \(SafetensorsFile.maxRank)")
        }
        var shape: [Int] = []
        for dim in dims {
            guard case .integer(let n) = dim, n >= 0 else {
                throw bad("shape \(describe(dims)) has a dim that is not a non-negative integer")
            }
            shape.append(n)
        }

        guard let offsetsValue else { throw bad("missing field 'data_offsets'") }
        guard case .array(let offsets) = offsetsValue, offsets.count == 2,
            case .integer(let begin) = offsets[0], case .integer(let end) = offsets[1], begin >= 0, end >= 0
        else {
            throw fail(.badOffsets, "data_offsets is not [begin, end] of non-negative integers", name, Hints.reexport)
        }
        guard begin <= end else {
            throw fail(.badOffsets, "data_offsets [\(begin), \(end)] has begin > end", name, Hints.reexport)
        }
        guard end <= dataSize else {
            throw fail(
                .badOffsets,
                "data_offsets [\(begin), \(end)] end past the data section (\(dataSize) bytes)", name, Hints.incomplete)
        }

        var byteCount = dtype.size
        for n in shape {
            let (product, overflow) = byteCount.multipliedReportingOverflow(by: n)
            guard !overflow else {
                throw fail(.shapeMismatch, "shape \(shape) overflows the byte count", name, Hints.reexport)
            }
            byteCount = product
        }
        guard end - begin == byteCount else {
            throw fail(
                .shapeMismatch,
                "data_offsets [\(begin), \(end)] hold \(end - begin) bytes, shape \(shape) of \(dtype.rawValue) needs \(byteCount)",
                name, Hints.reexport)
        }
        return SafetensorsTensorInfo(
            name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end,
            fileRange: (dataStart + begin)..<(dataStart + end))
    }

    private static func describe(_ dims: [JSONValue]) -> String {
        "["
            + dims.map { dim -> String in
                switch dim {
                case .integer(let n): return String(n)
                case .number(let text): return text
                default: return dim.kind
                }
            }.joined(separator: ", ") + "]"
    }
}
