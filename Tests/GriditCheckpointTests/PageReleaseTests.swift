import Foundation
import GriditCheckpoint
import GriditTensor
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Resident bytes of this process's mapping that starts at `base` (`Rss:` of /proc/self/smaps).
func mappingResidentBytes(_ base: UnsafeRawPointer) -> Int? {
    // Read to the end with read(2): /proc files stat as 0 bytes.
    guard let handle = FileHandle(forReadingAtPath: "/proc/self/smaps") else { return nil }
    defer { try? handle.close() }
    let smaps = String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
    let start = String(UInt(bitPattern: base), radix: 16)
    var inside = false
    for line in smaps.split(separator: "\n") {
        if let dash = line.firstIndex(of: "-"), line[..<dash].allSatisfy(\.isHexDigit) {
            inside = line[..<dash].drop { $0 == "0" } == start.drop { $0 == "0" }
        } else if inside, line.hasPrefix("Rss:") {
            return (line.split(separator: " ").compactMap { Int($0) }.first ?? 0) * 1024
        }
    }
    return nil
}

@Suite struct PageReleaseTests {
    let dir = TemporaryDirectory()

    @Test("released pages stop counting as resident and read back the same bytes from the file")
    func releasedPagesReadBackTheFile() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let bytes = (0..<(64 * page + 100)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 12) }
        let file = try MappedFile(path: dir.write("pages.bin", bytes))
        #expect(Array(file.bytes) == bytes)  // every page touched
        let before = try #require(mappingResidentBytes(file.base))
        #expect(before >= 64 * page)

        // Only whole pages inside the range go: a range within one page drops nothing.
        #expect(!file.releasePages(in: 10..<page - 10))
        #expect(file.releasePages(in: page / 2..<(40 * page + 7)))
        let partly = try #require(mappingResidentBytes(file.base))
        #expect(partly <= before - 39 * page, "resident \(partly) of \(before) after releasing 39 pages")
        // The rest, through the PageReleasing entry point the models use (a range to the end
        // includes the last, partial page).
        file.releasePages(file.base, byteCount: file.size)
        #expect(try #require(mappingResidentBytes(file.base)) == 0)
        #expect(Array(file.bytes) == bytes, "released pages fault the same bytes back in")
        file.releasePages(file.base + file.size, byteCount: 10)  // outside: ignored
    }

    @Test("a borrowed tensor hands its pages back; an owned one is left alone")
    func tensorsReleaseBorrowedPages() throws {
        let values = (0..<(1 << 16)).map { Float($0) * 0.5 }
        let path = dir.file("w.safetensors")
        try SafetensorsWriter.write(path: path, tensors: [("w", Tensor(values, shape: [256, 256]))])
        let file = try SafetensorsFile(path: path)
        let w = try file.tensor(named: "w")
        #expect(w.isBorrowed && w.toArray() == values)
        w.releaseBorrowedPages()
        // The header page stays (it holds no whole tensor page); the tensor's 64 pages are gone.
        #expect(try #require(mappingResidentBytes(file.mapping.base)) <= 2 * Int(sysconf(Int32(_SC_PAGESIZE))))
        #expect(w.toArray() == values)
        let owned = Tensor(values, shape: [256, 256])
        owned.releaseBorrowedPages()
        #expect(owned.toArray() == values)
    }

    @Test("a BF16 conversion stores the chosen tensors as the bf16 kernels round them, the rest as they were")
    func conversionRoundsLikeTheKernels() throws {
        // Subnormals go to a zero of their sign (VCVTNEPS2BF16 flushes them), the rest to nearest even.
        let w: [Float] = [
            Float(bitPattern: 0x0001_16C2), Float(bitPattern: 0x8001_16C2), Float(bitPattern: 0x007F_FFFF),
            3, Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), -1.5e38, 0x1p-126,
        ]
        let expected: [UInt16] = [0x0000, 0x8000, 0x0000, 0x4040, 0x3F80, 0x3F82, 0xFEE2, 0x0080]
        let bias: [Float] = [0.1, 1e-40, -2]
        let source = dir.file("src.safetensors")
        try SafetensorsWriter.write(
            path: source, tensors: [("w", Tensor(w, shape: [2, 4])), ("b", Tensor(bias, shape: [3]))],
            metadata: ["format": "pt"])
        let half = dir.file("half.safetensors")
        try SafetensorsWriter.write(path: half, tensors: [("h", Tensor([0.25, -3], shape: [2]))], dtype: .f16)

        let out = dir.file("out.safetensors")
        try SafetensorsFile(path: source).writeConverted(to: out, bf16: ["w"])
        let converted = try SafetensorsFile(path: out)
        #expect(converted.metadata == ["format": "pt"])
        #expect(converted.info("w")?.dtype == .bf16 && converted.info("b")?.dtype == .f32)
        let bits = try #require(try converted.bfloat16(named: "w"))
        #expect(bits.shape == [2, 4])
        #expect(Array(UnsafeBufferPointer(start: bits.pointer, count: 8)) == expected)
        #expect(try converted.tensor(named: "b").toArray().map(\.bitPattern) == bias.map(\.bitPattern))
        #expect(try converted.bfloat16(named: "b") == nil)

        // Converting again keeps the bits; F16 stays F16; unknown names are refused.
        let again = dir.file("again.safetensors")
        try converted.writeConverted(to: again, bf16: ["w"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: again)) == Data(contentsOf: URL(fileURLWithPath: out)))
        let halfOut = dir.file("half-out.safetensors")
        try SafetensorsFile(path: half).writeConverted(to: halfOut, bf16: [])
        #expect(try SafetensorsFile(path: halfOut).info("h")?.dtype == .f16)
        #expect(try SafetensorsFile(path: halfOut).tensor(named: "h").toArray() == [0.25, -3])
        expectCheckpointError(.missingTensor, path: source) {
            try SafetensorsFile(path: source).writeConverted(to: dir.file("x.safetensors"), bf16: ["nope"])
        }
    }
}
