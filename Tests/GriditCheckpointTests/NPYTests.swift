import Foundation
import GriditCheckpoint
import GriditTensor
import GriditTestSupport
import Testing

/// An `.npy` file by hand: magic, version, header length, `header` padded as numpy pads it, data.
func npyBytes(_ header: String, version: UInt8 = 1, data: [UInt8], pad: Bool = true) -> [UInt8] {
    let lengthSize = version == 1 ? 2 : 4
    var text = Array(header.utf8)
    if pad {
        let total = (8 + lengthSize + text.count + 1 + 63) / 64 * 64
        text += [UInt8](repeating: 0x20, count: total - 8 - lengthSize - text.count - 1) + [0x0A]
    }
    let length = (0..<lengthSize).map { UInt8(truncatingIfNeeded: text.count >> (8 * $0)) }
    return [0x93] + Array("NUMPY".utf8) + [version, 0] + length + text + data
}

private func littleEndian<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { v in (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

@Suite struct NPYTests {
    let dir = TemporaryDirectory()

    @Test func float32RoundTrip() throws {
        let path = dir.file("x.npy")
        let tensor = Tensor((0..<24).map { Float($0) * 0.25 - 3 }, shape: [2, 3, 4])
        try NPY.write(tensor, to: path)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let header = String(decoding: bytes[10..<(10 + Int(bytes[8]) + Int(bytes[9]) << 8)], as: UTF8.self)
        #expect(header.hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }"))
        #expect(header.hasSuffix("\n"))

        let array = try NPYArray(path: path)
        #expect(array.shape == [2, 3, 4] && array.dtype == .float32)
        #expect(array.dataOffset % 64 == 0)
        #expect(array.floatTensor().toArray() == tensor.toArray())
        #expect(array.floatTensor().shape == [2, 3, 4])
    }

    @Test func oneDimensionalAndScalarShapes() throws {
        let vector = dir.file("v.npy"), scalar = dir.file("s.npy")
        try NPY.write(Tensor([1, 2, 3], shape: [3]), to: vector)
        try NPY.write(Tensor([7], shape: []), to: scalar)
        #expect(try NPYArray(path: vector).shape == [3])
        let s = try NPYArray(path: scalar)
        #expect(s.shape == [] && s.floatTensor().toArray() == [7])
    }

    @Test func readsOtherDTypes() throws {
        let f8 = dir.write(
            "f8.npy",
            npyBytes(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                data: littleEndian([1.5, -2.25, 1e10].map(\.bitPattern))))
        #expect(try NPYArray(path: f8).floatTensor().toArray() == [1.5, -2.25, 1e10])
        #expect(throws: CheckpointError.self) { try NPYArray(path: f8).integers() }

        let i8 = dir.write(
            "i8.npy",
            npyBytes(
                "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }",
                data: littleEndian([Int64(-1), 2, 1 << 40, 0])))
        #expect(try NPYArray(path: i8).integers() == [-1, 2, 1 << 40, 0])
        #expect(try NPYArray(path: i8).floatTensor().toArray() == [-1, 2, 0x1p40, 0])

        let i4 = dir.write(
            "i4.npy",
            npyBytes(
                "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }",
                data: littleEndian([Int32(-7), 0, 123456])))
        #expect(try NPYArray(path: i4).integers() == [-7, 0, 123456])

        let u1 = dir.write(
            "u1.npy",
            npyBytes(
                "{'descr': '|u1', 'fortran_order': False, 'shape': (4,), }",
                data: [0, 1, 128, 255]))
        #expect(try NPYArray(path: u1).integers() == [0, 1, 128, 255])
        #expect(try NPYArray(path: u1).floatTensor().toArray() == [0, 1, 128, 255])

        let b1 = dir.write(
            "b1.npy",
            npyBytes(
                "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }",
                data: [1, 0, 1]))
        #expect(try NPYArray(path: b1).integers() == [1, 0, 1])
        #expect(try NPYArray(path: b1).dtype == .bool)
    }

    @Test func readsVersion2AndOldHeaderSpellings() throws {
        let v2 = dir.write(
            "v2.npy",
            npyBytes(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", version: 2,
                data: floatBytes([3, 4])))
        #expect(try NPYArray(path: v2).floatTensor().toArray() == [3, 4])
        // Python 2 era: long integers with an L suffix, double quotes, no trailing comma, no padding.
        let old = dir.write(
            "old.npy",
            npyBytes(
                #"{"descr": "<i8", "shape": (2L,), "fortran_order": False}"#,
                data: littleEndian([Int64(5), 6]), pad: false))
        #expect(try NPYArray(path: old).integers() == [5, 6])
    }

    @Test func rejectsFortranOrder() {
        let path = dir.write(
            "f.npy",
            npyBytes(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                data: floatBytes([1, 2, 3, 4])))
        expectCheckpointError(.unsupportedLayout, path: path) { try NPYArray(path: path) }
    }

    @Test func rejectsUnknownDTypes() {
        for descr in ["<c8", ">f4", "<U3", "<M8[ns]", "O"] {
            let path = dir.write(
                "d.npy",
                npyBytes(
                    "{'descr': '\(descr)', 'fortran_order': False, 'shape': (1,), }",
                    data: [0, 0, 0, 0, 0, 0, 0, 0]))
            expectCheckpointError(.unsupportedDType, path: path) { try NPYArray(path: path) }
        }
        let structured = dir.write(
            "s.npy",
            npyBytes(
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                data: [0, 0, 0, 0]))
        expectCheckpointError(.unsupportedDType, path: structured) { try NPYArray(path: structured) }
    }

    @Test func rejectsTruncatedAndOversizedData() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }"
        let short = dir.write("short.npy", npyBytes(header, data: floatBytes([1, 2, 3])))
        expectCheckpointError(.truncated, path: short) { try NPYArray(path: short) }
        let long = dir.write("long.npy", npyBytes(header, data: floatBytes([1, 2, 3, 4, 5])))
        expectCheckpointError(.shapeMismatch, path: long) { try NPYArray(path: long) }
        let cutHeader = dir.write("cut.npy", Array(npyBytes(header, data: [])[0..<40]))
        expectCheckpointError(.truncated, path: cutHeader) { try NPYArray(path: cutHeader) }
    }

    @Test func rejectsMalformedHeaders() {
        let cases: [(String, [UInt8])] = [
            ("magic", Array("NOTNUMPY-file-of-some-length".utf8)),
            (
                "version",
                npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", version: 4, data: floatBytes([1]))
            ),
            ("syntax", npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), ", data: floatBytes([1]))),
            ("keys", npyBytes("{'descr': '<f4', 'shape': (1,), }", data: floatBytes([1]))),
            (
                "extra",
                npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1, }", data: floatBytes([1]))
            ),
            ("dim", npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", data: floatBytes([1]))),
            ("shape", npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': 3, }", data: floatBytes([1, 2, 3]))),
            ("order", npyBytes("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }", data: floatBytes([1]))),
            ("deep", npyBytes("{'descr': " + String(repeating: "(", count: 5000), data: [])),
        ]
        for (name, bytes) in cases {
            let path = dir.write("\(name).npy", bytes)
            expectCheckpointError(.badHeader, path: path) { try NPYArray(path: path) }
        }
        let empty = dir.write("empty.npy", [])
        expectCheckpointError(.empty, path: empty) { try NPYArray(path: empty) }
        let tiny = dir.write("tiny.npy", [0x93, 0x4E, 0x55])
        expectCheckpointError(.truncated, path: tiny) { try NPYArray(path: tiny) }
    }
}
