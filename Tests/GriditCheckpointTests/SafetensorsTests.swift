import Foundation
import GriditCheckpoint
import GriditTensor
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One valid tensor: "a", F32, shape [2], 8 bytes.
private let validEntry = #""a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#

/// Hostile and malformed files: each must throw the specific `CheckpointError` code, naming the file.
@Suite struct SafetensorsRejectionTests {
    let dir = TemporaryDirectory()

    private func open(_ name: String, _ bytes: [UInt8]) -> (String, () throws -> SafetensorsFile) {
        let path = dir.write(name, bytes)
        return (path, { try SafetensorsFile(path: path) })
    }

    @Test func validBaselineOpens() throws {
        let (_, load) = open("ok.safetensors", safetensorsBytes(header: "{\(validEntry)}", data: floatBytes([1, 2])))
        let file = try load()
        #expect(file.tensorNames == ["a"])
        #expect(try file.tensor(named: "a").toArray() == [1, 2])
    }

    @Test func headerLengthPastTheEnd() {
        let header = "{\(validEntry)}"
        let (path, load) = open(
            "past.safetensors",
            safetensorsBytes(header: header, data: floatBytes([1, 2]), declaredLength: UInt64(header.utf8.count + 100)))
        expectCheckpointError(.truncated, path: path, load)
    }

    @Test func headerLengthTwoToThe63() {
        let (path, load) = open(
            "huge.safetensors",
            safetensorsBytes(header: "{\(validEntry)}", data: floatBytes([1, 2]), declaredLength: 1 << 63))
        expectCheckpointError(.headerTooLarge, path: path, load)
    }

    @Test func headerLengthMaxUInt64() {
        let (path, load) = open("max.safetensors", safetensorsBytes(header: "{}", declaredLength: .max))
        expectCheckpointError(.headerTooLarge, path: path, load)
    }

    @Test func headerLengthOverTheCap() {
        let (path, load) = open(
            "cap.safetensors",
            safetensorsBytes(header: "{}", declaredLength: UInt64(SafetensorsFile.maxHeaderLength + 1)))
        expectCheckpointError(.headerTooLarge, path: path, load)
    }

    @Test func headerLengthZero() {
        let (path, load) = open("zero.safetensors", safetensorsBytes(header: "", data: [1, 2, 3]))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func offsetsOutsideTheData() {
        let header = #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        let (path, load) = open("outside.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        expectCheckpointError(.badOffsets, path: path, load)
    }

    @Test func offsetsBeginAfterEnd() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#
        let (path, load) = open(
            "reversed.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2, 3, 4])))
        expectCheckpointError(.badOffsets, path: path, load)
    }

    @Test func offsetsNotAPair() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}}"#
        let (path, load) = open("triple.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2, 3, 4])))
        expectCheckpointError(.badOffsets, path: path, load)
    }

    @Test func overlappingOffsets() throws {
        let header =
            #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        let (path, load) = open("overlap.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2, 3])))
        let error = expectCheckpointError(.overlap, path: path, load)
        #expect(
            error?.description.contains("'a'") == true && error?.description.contains("'b'") == true,
            "\(String(describing: error))")
    }

    @Test func gapsAreAccepted() throws {
        let header =
            #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        let (_, load) = open("gap.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 0, 3])))
        let file = try load()
        #expect(try file.tensor(named: "b").toArray() == [3])
    }

    @Test func unknownDType() {
        let header = #"{"w":{"dtype":"F8_E9","shape":[2],"data_offsets":[0,2]}}"#
        let (path, load) = open("unknown.safetensors", safetensorsBytes(header: header, data: [0, 0]))
        let error = expectCheckpointError(.unsupportedDType, path: path, load)
        #expect(error?.tensor == "w")
        #expect(error?.description.contains("F8_E9") == true && error?.description.contains("'w'") == true)
    }

    @Test func unsupportedDTypeI64OpensButDoesNotConvert() throws {
        let header = #"{"steps":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}"#
        let (path, load) = open("i64.safetensors", safetensorsBytes(header: header, data: [1, 0, 0, 0, 0, 0, 0, 0]))
        let file = try load()
        #expect(file.shape(of: "steps") == [])
        #expect(file.info("steps")?.dtype == .i64)
        let error = expectCheckpointError(.unsupportedDType, path: path) { try file.tensor(named: "steps") }
        #expect(error?.tensor == "steps")
        #expect(error?.description.contains("I64") == true && error?.description.contains("'steps'") == true)
    }

    @Test func badJSON() {
        let (path, load) = open("badjson.safetensors", safetensorsBytes(header: #"{"a": {"dtype": "F32", "shape": [2"#))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func jsonTrailingGarbage() {
        let (path, load) = open(
            "trailing.safetensors", safetensorsBytes(header: "{\(validEntry)} x", data: floatBytes([1, 2])))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func jsonNotAnObject() {
        let (path, load) = open("array.safetensors", safetensorsBytes(header: "[1, 2, 3]"))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func entryNotAnObject() {
        let (path, load) = open(
            "entry.safetensors", safetensorsBytes(header: #"{"a": [0, 8]}"#, data: floatBytes([1, 2])))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func missingField() {
        let (path, load) = open(
            "missing.safetensors",
            safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[2]}}"#, data: floatBytes([1, 2])))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func mistypedField() {
        let (path, load) = open(
            "mistyped.safetensors",
            safetensorsBytes(header: #"{"a":{"dtype":5,"shape":[2],"data_offsets":[0,8]}}"#, data: floatBytes([1, 2])))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func unknownField() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}}"#
        let (path, load) = open("extra.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func negativeDim() {
        let header = #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#
        let (path, load) = open("negative.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func nonIntegerDim() {
        let header = #"{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}"#
        let (path, load) = open("fraction.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func tooManyDims() {
        let header = #"{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]}}"#
        let (path, load) = open("rank9.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func invalidUTF8() {
        var bytes = safetensorsBytes(
            header: #"{"a\#u{00E9}":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            data: floatBytes([1, 2]))
        let accent = bytes.firstIndex(of: 0xC3)!
        bytes[accent] = 0xFF  // breaks the two-byte sequence
        let (path, load) = open("utf8.safetensors", bytes)
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func deepNestingDoesNotOverflowTheStack() {
        let header = String(repeating: "[", count: 200_000)
        let (path, load) = open("deep.safetensors", safetensorsBytes(header: header))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func metadataValueNotAString() {
        let header = #"{"__metadata__":{"format":1},\#(validEntry)}"#
        let (path, load) = open("meta.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        expectCheckpointError(.badHeader, path: path, load)
    }

    @Test func truncatedData() throws {
        // A correct file written by our writer, with its last 4 bytes cut off.
        let path = dir.file("cut.safetensors")
        try SafetensorsWriter.write(path: path, tensors: [("a", Tensor([1, 2, 3], shape: [3]))])
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        dir.write("cut.safetensors", Array(bytes.dropLast(4)))
        expectCheckpointError(.badOffsets, path: path) { try SafetensorsFile(path: path) }
    }

    @Test func zeroLengthFile() {
        let (path, load) = open("empty.safetensors", [])
        expectCheckpointError(.empty, path: path, load)
    }

    @Test func fiveByteFile() {
        let (path, load) = open("five.safetensors", [1, 2, 3, 4, 5])
        expectCheckpointError(.truncated, path: path, load)
    }

    @Test func duplicateNames() {
        let header =
            #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        let (path, load) = open("dup.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        let error = expectCheckpointError(.duplicateTensor, path: path, load)
        #expect(error?.tensor == "a")
    }

    @Test func duplicateNamesThroughEscapes() {
        // "a" and "\u0061" are the same key once decoded.
        let header =
            #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\u0061":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        let (path, load) = open("dup2.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        expectCheckpointError(.duplicateTensor, path: path, load)
    }

    @Test func shapeBytesMismatch() {
        let header = #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#
        let (path, load) = open("mismatch.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        expectCheckpointError(.shapeMismatch, path: path, load)
    }

    @Test func shapeByteCountOverflow() {
        let header = #"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#
        let (path, load) = open("overflow.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        expectCheckpointError(.shapeMismatch, path: path, load)
    }

    @Test func hugeOffsetNumbers() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,99999999999999999999999]}}"#
        let (path, load) = open("bignum.safetensors", safetensorsBytes(header: header, data: floatBytes([1, 2])))
        expectCheckpointError(.badOffsets, path: path, load)
    }

    @Test func nonexistentPath() {
        let path = dir.file("no-such-file.safetensors")
        expectCheckpointError(.fileNotFound, path: path) { try SafetensorsFile(path: path) }
    }

    @Test func missingTensor() throws {
        let (path, load) = open(
            "ok.safetensors", safetensorsBytes(header: "{\(validEntry)}", data: floatBytes([1, 2])))
        let file = try load()
        #expect(file.shape(of: "b") == nil)
        expectCheckpointError(.missingTensor, path: path) { try file.tensor(named: "b") }
    }

    @Test func unreadableFile() throws {
        let path = dir.write(
            "secret.safetensors", safetensorsBytes(header: "{\(validEntry)}", data: floatBytes([1, 2])))
        #expect(chmod(path, 0) == 0)
        defer { chmod(path, 0o644) }
        if getuid() != 0 {
            expectCheckpointError(.unreadable, path: path) { try SafetensorsFile(path: path) }
        }
        // Root reads through chmod 000; a directory is unreadable as a checkpoint for everyone.
        let directory = dir.path
        expectCheckpointError(.unreadable, path: directory) { try SafetensorsFile(path: directory) }
    }
}

/// Writing then reading back.
@Suite struct SafetensorsRoundTripTests {
    let dir = TemporaryDirectory()

    @Test func float32RoundTripIsZeroCopy() throws {
        let path = dir.file("rt.safetensors")
        let a = Tensor((0..<12).map { Float($0) * 0.5 - 2 }, shape: [3, 4])
        let b = Tensor([Float.pi, -0.0, .infinity, -.greatestFiniteMagnitude, .leastNonzeroMagnitude], shape: [5])
        let c = Tensor([42], shape: [])  // scalar
        let d = Tensor(zeros: [0, 3])  // no elements
        let weird = "blocks.0.\"attn\"\\qkv\n\u{1F600}"
        try SafetensorsWriter.write(
            path: path, tensors: [("a", a), ("b", b), ("c", c), ("d", d), (weird, a)],
            metadata: ["format": "pt", "note": "quote \" and \\ and \u{00E9}"], alignment: 64)

        let file = try SafetensorsFile(path: path)
        #expect(file.tensorNames == ["a", "b", "c", "d", weird].sorted())
        #expect(file.metadata == ["format": "pt", "note": "quote \" and \\ and \u{00E9}"])
        #expect(file.dataStart % 64 == 0)
        let mapped =
            UInt(bitPattern: file.mapping.base)..<(UInt(bitPattern: file.mapping.base) + UInt(file.mapping.size))
        for (name, original) in [("a", a), ("b", b), ("c", c), ("d", d), (weird, a)] {
            let info = try #require(file.info(name))
            #expect(info.dtype == .f32)
            #expect(info.shape == original.shape)
            #expect(info.dataOffsets.lowerBound % 64 == 0)
            let loaded = try file.tensor(named: name)
            #expect(loaded.shape == original.shape)
            #expect(loaded.toArray().map(\.bitPattern) == original.toArray().map(\.bitPattern))
            #expect(loaded.isBorrowed)
            #expect(mapped.contains(UInt(bitPattern: loaded.pointer)) || loaded.count == 0)
            #expect(UInt(bitPattern: loaded.pointer) % 64 == 0)
        }
    }

    @Test func borrowedTensorOutlivesTheFileValue() throws {
        let path = dir.file("owner.safetensors")
        try SafetensorsWriter.write(path: path, tensors: [("w", Tensor([1, 2, 3, 4], shape: [2, 2]))])
        var tensor: Tensor?
        do {
            let file = try SafetensorsFile(path: path)
            tensor = try file.tensor(named: "w")
        }
        #expect(tensor?.toArray() == [1, 2, 3, 4])
    }

    @Test func worksThroughTheTensorSourceProtocol() throws {
        let path = dir.file("source.safetensors")
        try SafetensorsWriter.write(path: path, tensors: [("x.weight", Tensor([1, 2], shape: [1, 2]))])
        let source: any TensorSource = try SafetensorsFile(path: path)
        #expect(source.tensorNames == ["x.weight"])
        #expect(source.shape(of: "x.weight") == [1, 2])
        #expect(try source.tensor(named: "x.weight").toArray() == [1, 2])
        #expect(throws: CheckpointError.self) { try source.tensor(named: "y") }
    }

    @Test func alignmentOneIsContiguousAndCoversTheData() throws {
        let path = dir.file("packed.safetensors")
        let tensors = [
            ("a", Tensor([1, 2, 3], shape: [3])), ("b", Tensor([4], shape: [1])), ("c", Tensor([5, 6], shape: [2])),
        ]
        try SafetensorsWriter.write(path: path, tensors: tensors, alignment: 1)
        let file = try SafetensorsFile(path: path)
        var end = 0
        for info in file.tensors {
            #expect(info.dataOffsets.lowerBound == end)
            end = info.dataOffsets.upperBound
        }
        #expect(file.dataStart + end == file.mapping.size)
        #expect(try file.tensor(named: "c").isBorrowed)
        #expect(try file.tensor(named: "c").toArray() == [5, 6])
    }

    @Test func alignment64PadsBetweenTensors() throws {
        let path = dir.file("padded.safetensors")
        try SafetensorsWriter.write(
            path: path, tensors: [("a", Tensor([1, 2, 3], shape: [3])), ("b", Tensor([4], shape: [1]))],
            alignment: 64)
        let file = try SafetensorsFile(path: path)
        #expect(file.info("a")?.dataOffsets == 0..<12)
        #expect(file.info("b")?.dataOffsets == 64..<68)
        #expect(file.mapping.size == file.dataStart + 68)
    }

    @Test func unalignedFloat32IsCopied() throws {
        // Header of 9 bytes puts the data section at file offset 17: not 4-byte aligned.
        var header = #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}"#
        while (8 + header.utf8.count) % 4 != 1 { header += " " }
        let path = dir.write(
            "unaligned.safetensors", safetensorsBytes(header: header, data: floatBytes([1.5, -2, 3e30])))
        let tensor = try SafetensorsFile(path: path).tensor(named: "a")
        #expect(!tensor.isBorrowed)
        #expect(tensor.toArray() == [1.5, -2, 3e30])
    }

    @Test func handWrittenHalfAndBFloat16Decode() throws {
        let halves: [UInt16] = [0x3C00, 0x7BFF, 0x0001, 0x03FF, 0x0400, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xC000]
        let bfloats: [UInt16] = [0x3F80, 0x4049, 0x0001, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F7F]
        let halfBytes = halves.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let bfBytes = bfloats.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let header =
            #"{"h":{"dtype":"F16","shape":[10],"data_offsets":[0,20]},"b":{"dtype":"BF16","shape":[2,4],"data_offsets":[20,36]}}"#
        let path = dir.write("halves.safetensors", safetensorsBytes(header: header, data: halfBytes + bfBytes))
        let file = try SafetensorsFile(path: path)
        let h = try file.tensor(named: "h").toArray()
        #expect(Array(h[0..<4]) == [1, 65504, 0x1p-24, 1023 * 0x1p-24])
        #expect(h[4] == 0x1p-14)
        #expect(h[5] == 0 && h[5].sign == .minus)
        #expect(h[6] == .infinity && h[7] == -.infinity && h[8].isNaN && h[9] == -2)
        let b = try file.tensor(named: "b")
        #expect(b.shape == [2, 4] && !b.isBorrowed)
        let bv = b.toArray()
        #expect(bv[0] == 1 && bv[1] == Float(bitPattern: 0x4049_0000) && bv[2] == Float(bitPattern: 0x0001_0000))
        #expect(bv[3].sign == .minus && bv[3] == 0 && bv[4] == .infinity && bv[5] == -.infinity && bv[6].isNaN)
        #expect(bv[7] == Float(bitPattern: 0x7F7F_0000))
    }

    @Test(arguments: [SafetensorsDType.f16, .bf16])
    func halfPrecisionRoundTripRoundsToNearestEven(dtype: SafetensorsDType) throws {
        var values: [Float] = [
            0, -0.0, 1, -1, 65504, 65519.99, 65520, 1e-7, -1e-7, 5.96e-8, 2.98e-8, 2.99e-8, 6.1e-5,
            .infinity, -.infinity, .nan, 3.14159, -123.456, 1e38, 3.4e38, .leastNonzeroMagnitude,
        ]
        var rng = SplitMix64(seed: 7)
        for _ in 0..<500 { values.append(Float.random(in: -70000...70000, using: &rng)) }
        for _ in 0..<500 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))) }
        let path = dir.file("half-\(dtype.rawValue).safetensors")
        try SafetensorsWriter.write(path: path, tensors: [("v", Tensor(values, shape: [values.count]))], dtype: dtype)
        let file = try SafetensorsFile(path: path)
        #expect(file.info("v")?.dtype == dtype)
        let loaded = try file.tensor(named: "v").toArray()
        for (value, got) in zip(values, loaded) {
            let expected = dtype == .f16 ? NaiveReference.roundToHalf(value) : NaiveReference.roundToBFloat16(value)
            if expected.isNaN {
                #expect(got.isNaN, "\(value)")
            } else {
                #expect(
                    got.bitPattern == expected.bitPattern, "\(dtype.rawValue) of \(value): got \(got), want \(expected)"
                )
            }
        }
        if dtype == .f16 {
            #expect(loaded[4] == 65504 && loaded[5] == 65504 && loaded[6] == .infinity)
            // float16 subnormals are multiples of 2^-24 (about 5.96e-8).
            #expect(loaded[7] == 0x1p-23 && loaded[8] == -0x1p-23)
            #expect(loaded[9] == 0x1p-24 && loaded[10] == 0 && loaded[11] == 0x1p-24)
            #expect(loaded[1].sign == .minus && loaded[1] == 0)
        }
    }

    @Test func streamingWriterMatchesTheTensorWriter() throws {
        let a = Tensor((0..<37).map { Float($0) }, shape: [37])
        let b = Tensor((0..<20).map { -Float($0) / 3 }, shape: [4, 5])
        let whole = dir.file("whole.safetensors")
        let streamed = dir.file("streamed.safetensors")
        try SafetensorsWriter.write(path: whole, tensors: [("a", a), ("b", b)], dtype: .bf16, metadata: ["k": "v"])
        var calls: [(Int, Int, Int)] = []
        try SafetensorsWriter.write(
            path: streamed,
            entries: [.init(name: "a", shape: [37], dtype: .bf16), .init(name: "b", shape: [4, 5], dtype: .bf16)],
            metadata: ["k": "v"], chunkElements: 8
        ) { index, offset, chunk in
            calls.append((index, offset, chunk.count))
            let source = [a, b][index].pointer + offset
            for i in 0..<chunk.count { chunk[i] = source[i] }
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: whole)) == Data(contentsOf: URL(fileURLWithPath: streamed)))
        #expect(calls.map(\.0) == [0, 0, 0, 0, 0, 1, 1, 1])
        #expect(calls.map(\.1) == [0, 8, 16, 24, 32, 0, 8, 16])
        #expect(calls.map(\.2) == [8, 8, 8, 8, 5, 8, 8, 4])
    }

    @Test func writeReplacesAtomicallyAndLeavesNoTemporaryFiles() throws {
        let path = dir.file("model.safetensors")
        try SafetensorsWriter.write(path: path, tensors: [("a", Tensor([1], shape: [1]))])
        let first = try SafetensorsFile(path: path)  // keeps the old inode mapped
        try SafetensorsWriter.write(path: path, tensors: [("a", Tensor([2], shape: [1]))])
        #expect(try first.tensor(named: "a").toArray() == [1])
        #expect(try SafetensorsFile(path: path).tensor(named: "a").toArray() == [2])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["model.safetensors"])
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o644)
    }

    @Test func writerRejectsBadInput() throws {
        let path = dir.file("bad.safetensors")
        expectCheckpointError(.duplicateTensor, path: path) {
            try SafetensorsWriter.write(
                path: path, tensors: [("a", Tensor([1], shape: [1])), ("a", Tensor([2], shape: [1]))])
        }
        expectCheckpointError(.invalidArgument, path: path) {
            try SafetensorsWriter.write(path: path, tensors: [("__metadata__", Tensor([1], shape: [1]))])
        }
        expectCheckpointError(.unsupportedDType, path: path) {
            try SafetensorsWriter.write(path: path, tensors: [("a", Tensor([1], shape: [1]))], dtype: .i64)
        }
        expectCheckpointError(.invalidArgument, path: path) {
            try SafetensorsWriter.write(path: path, entries: [.init(name: "a", shape: [-1])]) { _, _, _ in }
        }
        let nowhere = dir.file("no/such/dir/x.safetensors")
        expectCheckpointError(.writeFailed, path: nowhere) {
            try SafetensorsWriter.write(path: nowhere, tensors: [("a", Tensor([1], shape: [1]))])
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }
}
