import GriditDurable
import GriditTensor

/// Writes safetensors files (format notes at the top of Safetensors.swift), atomically.
///
/// Layout: the JSON header is padded with spaces so that the data section starts at a multiple
/// of 64 bytes, and each tensor starts at a multiple of `alignment` bytes from the data start.
/// The default `alignment` 1 writes tensors back to back: the reference safetensors library
/// (Python `safe_open`/`load_file`) rejects files with gaps between tensors, and F32 tensors of a
/// file of F32 tensors are still 4-byte aligned, enough to load zero-copy. A larger alignment
/// inserts zero padding (gaps) for callers that want, e.g., 64-byte aligned tensors.
public enum SafetensorsWriter {
    /// One tensor of a streamed file: its name, shape and on-disk dtype (F32, F16 or BF16).
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var dtype: SafetensorsDType

        public init(name: String, shape: [Int], dtype: SafetensorsDType = .f32) {
            self.name = name
            self.shape = shape
            self.dtype = dtype
        }
    }

    /// Alignment of the data section start in the file.
    public static let dataSectionAlignment = 64

    /// Writes `tensors` in order, stored as `dtype` (F32, or F16/BF16 rounded to nearest even).
    public static func write(
        path: String, tensors: [(name: String, tensor: Tensor)], dtype: SafetensorsDType = .f32,
        metadata: [String: String] = [:], alignment: Int = 1
    ) throws(CheckpointError) {
        let entries = tensors.map { Entry(name: $0.name, shape: $0.tensor.shape, dtype: dtype) }
        try write(path: path, entries: entries, metadata: metadata, alignment: alignment) { index, offset, chunk in
            let source = tensors[index].tensor.pointer + offset
            chunk.baseAddress!.update(from: source, count: chunk.count)
        }
    }

    /// Streams a file tensor by tensor without holding the tensors in memory.
    ///
    /// `fill(index, elementOffset, chunk)` is called for each tensor `entries[index]` in order,
    /// with consecutive chunks of at most `chunkElements` floats: it must write elements
    /// `elementOffset ..< elementOffset + chunk.count` of that tensor (row-major) into `chunk`.
    /// Memory use is one chunk (4 × `chunkElements` bytes, plus half that for F16/BF16).
    public static func write(
        path: String, entries: [Entry], metadata: [String: String] = [:], alignment: Int = 1,
        chunkElements: Int = 1 << 20,
        fill: (_ index: Int, _ elementOffset: Int, _ chunk: UnsafeMutableBufferPointer<Float>) -> Void
    ) throws(CheckpointError) {
        func invalid(_ message: String, tensor: String? = nil) -> CheckpointError {
            CheckpointError(code: .invalidArgument, path: path, tensor: tensor, message: message)
        }
        guard alignment >= 1, alignment <= 4096 else { throw invalid("alignment \(alignment) is not in 1...4096") }
        guard chunkElements >= 1 else { throw invalid("chunkElements \(chunkElements) is not positive") }

        // Plan the data section: offsets of every tensor, aligned.
        var seen = Set<String>()
        var ranges: [Range<Int>] = []
        var counts: [Int] = []
        var cursor = 0
        for entry in entries {
            guard entry.name != "__metadata__" else { throw invalid("the name '__metadata__' is reserved") }
            guard seen.insert(entry.name).inserted else {
                throw CheckpointError(
                    code: .duplicateTensor, path: path, tensor: entry.name,
                    message: "name given more than once to the writer")
            }
            guard entry.dtype.isReadableAsFloat32 else {
                throw CheckpointError(
                    code: .unsupportedDType, path: path, tensor: entry.name,
                    message: "the writer stores F32, F16 or BF16, not \(entry.dtype.rawValue)")
            }
            guard entry.shape.count <= SafetensorsFile.maxRank, entry.shape.allSatisfy({ $0 >= 0 }) else {
                throw invalid(
                    "shape \(entry.shape) needs at most \(SafetensorsFile.maxRank) non-negative dims",
                    tensor: entry.name)
            }
            var count = 1
            for n in entry.shape {
                let (product, overflow) = count.multipliedReportingOverflow(by: n)
                guard !overflow else { throw invalid("shape \(entry.shape) overflows", tensor: entry.name) }
                count = product
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: entry.dtype.size)
            guard !overflow else { throw invalid("shape \(entry.shape) overflows", tensor: entry.name) }
            cursor = roundUp(cursor, to: alignment)
            ranges.append(cursor..<(cursor + bytes))
            counts.append(count)
            cursor += bytes
        }

        let header = headerBytes(entries: entries, ranges: ranges, metadata: metadata)

        try DurableFile.write(to: path, failure: CheckpointError.durable) { (out) throws(CheckpointError) in
            let length = UInt64(header.count)
            try out.write((0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) })
            try out.write(header)

            let floats = UnsafeMutableBufferPointer<Float>.allocate(capacity: chunkElements)
            let halves = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: chunkElements)
            defer {
                floats.deallocate()
                halves.deallocate()
            }
            let dataStart = out.offset
            for (index, entry) in entries.enumerated() {
                try out.writeZeros(dataStart + ranges[index].lowerBound - out.offset)
                var done = 0
                while done < counts[index] {
                    let n = min(chunkElements, counts[index] - done)
                    let chunk = UnsafeMutableBufferPointer(rebasing: floats[0..<n])
                    fill(index, done, chunk)
                    switch entry.dtype {
                    case .f16, .bf16:
                        for i in 0..<n {
                            let bits =
                                entry.dtype == .f16
                                ? HalfPrecision.halfBits(from: chunk[i]) : HalfPrecision.bfloat16Bits(from: chunk[i])
                            halves[i] = bits.littleEndian
                        }
                        try out.write(UnsafeRawBufferPointer(UnsafeMutableBufferPointer(rebasing: halves[0..<n])))
                    default:
                        try out.write(UnsafeRawBufferPointer(chunk))  // little-endian hosts only (x86-64, arm64)
                    }
                    done += n
                }
            }
        }
    }

    /// The JSON header, padded with spaces so that 8 + its length is a multiple of 64.
    static func headerBytes(entries: [Entry], ranges: [Range<Int>], metadata: [String: String]) -> [UInt8] {
        var parts: [String] = []
        if !metadata.isEmpty {
            let items = metadata.sorted { $0.key < $1.key }.map { "\(jsonQuoted($0.key)):\(jsonQuoted($0.value))" }
            parts.append("\"__metadata__\":{" + items.joined(separator: ",") + "}")
        }
        for (entry, range) in zip(entries, ranges) {
            let shape = entry.shape.map(String.init).joined(separator: ",")
            parts.append(
                "\(jsonQuoted(entry.name)):{\"dtype\":\"\(entry.dtype.rawValue)\",\"shape\":[\(shape)],"
                    + "\"data_offsets\":[\(range.lowerBound),\(range.upperBound)]}")
        }
        var bytes = Array(("{" + parts.joined(separator: ",") + "}").utf8)
        let padded = roundUp(8 + bytes.count, to: dataSectionAlignment) - 8
        bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: padded - bytes.count))
        return bytes
    }

    static func roundUp(_ value: Int, to alignment: Int) -> Int { (value + alignment - 1) / alignment * alignment }
}

#if !_endian(little)
#error("GriditCheckpoint writes and reads little-endian data with plain memory copies")
#endif
