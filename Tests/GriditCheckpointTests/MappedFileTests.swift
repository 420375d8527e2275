import Foundation
import GriditCheckpoint
import GriditTensor
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct MappedFileTests {
    let dir = TemporaryDirectory()

    @Test func mapsTheBytes() throws {
        let path = dir.write("bytes.bin", [1, 2, 3, 250])
        let file = try MappedFile(path: path, advice: .sequential)
        #expect(file.size == 4 && file.path == path)
        #expect(Array(file.bytes) == [1, 2, 3, 250])
        #expect(Int(bitPattern: file.base) % Int(sysconf(Int32(_SC_PAGESIZE))) == 0)
        file.advise(.willNeed, range: 1..<3)
        file.advise(.random, range: 10..<20)  // out of range: clamped, ignored
    }

    @Test func errorsNameTheCallAndThePath() {
        let missing = dir.file("missing.bin")
        expectCheckpointError(.fileNotFound, path: missing) { try MappedFile(path: missing) }
        do {
            _ = try MappedFile(path: missing)
        } catch {
            #expect(error.message.contains("open failed") && error.message.contains("No such file"), "\(error)")
        }
        let empty = dir.write("empty.bin", [])
        expectCheckpointError(.empty, path: empty) { try MappedFile(path: empty) }
        expectCheckpointError(.unreadable, path: dir.path) { try MappedFile(path: dir.path) }
        let throughFile = dir.write("plain.bin", [1]) + "/child"
        expectCheckpointError(.fileNotFound, path: throughFile) { try MappedFile(path: throughFile) }
    }

    /// Opening and validating a large checkpoint must not read its data: resident memory stays small.
    @Test func mappingDoesNotTouchThePages() throws {
        let floats = 64 << 20  // 256 MB of F32, written as a sparse file (no disk blocks)
        var header = #"{"big":{"dtype":"F32","shape":[\#(floats)],"data_offsets":[0,\#(floats * 4)]}}"#
        while (8 + header.utf8.count) % 64 != 0 { header += " " }  // aligned, so the tensor is borrowed
        let path = dir.write("sparse.safetensors", safetensorsBytes(header: header))
        #expect(truncate(path, off_t(8 + header.utf8.count + floats * 4)) == 0)

        let before = try #require(residentBytes())
        let file = try SafetensorsFile(path: path)
        let tensor = try file.tensor(named: "big")
        let after = try #require(residentBytes())
        #expect(tensor.isBorrowed && tensor.count == floats)
        #expect(after - before < 64 << 20, "resident memory grew by \(after - before) bytes")
    }
}
