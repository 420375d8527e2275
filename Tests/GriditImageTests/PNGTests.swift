import CPNG
import GriditImage
import Testing

private func pattern(width: Int, height: Int, channels: Int, seed: Int) -> Image8 {
    var state = UInt32(truncatingIfNeeded: seed &* 2_654_435_761 &+ 12345)
    let pixels = (0..<(width * height * channels)).map { _ -> UInt8 in
        state = state &* 1_103_515_245 &+ 12345
        return UInt8(truncatingIfNeeded: state >> 16)
    }
    return Image8(width: width, height: height, channels: channels, pixels: pixels)
}

@Test(arguments: [(1, 1, 1), (7, 5, 1), (16, 9, 3), (3, 11, 4), (64, 64, 1)])
func pngRoundTripsThroughLibpng(shape: (Int, Int, Int)) throws {
    let image = pattern(width: shape.0, height: shape.1, channels: shape.2, seed: shape.0 * 31 + shape.2)
    let bytes = try PNG.encode(image)
    #expect(Array(bytes.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    #expect(try PNG.decode(bytes) == image)
    // Deterministic: the same pixels give the same file.
    #expect(try PNG.encode(image) == bytes)
}

@Test func pngDecodeRejectsGarbageAndTruncation() throws {
    #expect(throws: ImageError.self) { try PNG.decode([1, 2, 3]) }
    let bytes = try PNG.encode(pattern(width: 8, height: 8, channels: 3, seed: 1))
    #expect(throws: ImageError.self) { try PNG.decode(Array(bytes.prefix(bytes.count / 2))) }
}

@Test func quantizationIsRoundHalfUpOfTheUnitMapping() {
    #expect(PixelMapping.quantize(-1) == 0 && PixelMapping.quantize(1) == 255)
    #expect(PixelMapping.quantize(-5) == 0 && PixelMapping.quantize(7) == 255 && PixelMapping.quantize(.nan) == 0)
    #expect(PixelMapping.quantize(0) == 128)  // 127.5 + 0.5 = 128
    for u in 0...255 {
        let x = PixelMapping.dequantize(UInt8(u))
        #expect(PixelMapping.quantize(x) == UInt8(u), "round trip of \(u)")
        // Matches the formula in Double.
        let expected = min(max(((Double(x) + 1) / 2 * 255 + 0.5).rounded(.down), 0), 255)
        #expect(Double(PixelMapping.quantize(x)) == expected)
    }
}

@Test func planarFloatsBecomeInterleavedBytes() {
    // (C = 3, H = 1, W = 2): red plane, green plane, blue plane.
    let planar: [Float] = [-1, 1, 0, 0, 1, -1]
    let image = planar.withUnsafeBufferPointer { Image8(planar: $0.baseAddress!, channels: 3, height: 1, width: 2) }
    #expect(image.pixels == [0, 128, 255, 255, 128, 0])
    var back = [Float](repeating: 9, count: 6)
    back.withUnsafeMutableBufferPointer { image.dequantized(into: $0.baseAddress!) }
    #expect(back == planar.map { PixelMapping.dequantize(PixelMapping.quantize($0)) })
}

/// The chunks of a PNG file: (type, data), with every CRC checked.
private func chunks(_ bytes: [UInt8]) -> [(type: String, data: [UInt8])] {
    var out: [(String, [UInt8])] = []
    var i = 8
    func be32(_ at: Int) -> Int {
        Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
    }
    while i + 12 <= bytes.count {
        let length = be32(i)
        let type = String(decoding: bytes[(i + 4)..<(i + 8)], as: UTF8.self)
        let data = Array(bytes[(i + 8)..<(i + 8 + length)])
        let body = Array(bytes[(i + 4)..<(i + 8 + length)])
        let crc = body.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) }
        #expect(Int(crc) == be32(i + 8 + length), "CRC of \(type)")
        out.append((type, data))
        i += 12 + length
    }
    #expect(i == bytes.count)
    return out
}

private func inflate(_ data: [UInt8], size: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: size)
    var outSize = uLong(size)
    let status = out.withUnsafeMutableBufferPointer { dst in
        data.withUnsafeBufferPointer { uncompress(dst.baseAddress, &outSize, $0.baseAddress, uLong($0.count)) }
    }
    #expect(status == Z_OK && Int(outSize) == size)
    return out
}

@Test(arguments: [1, 3])
func animatedPNGHoldsEveryFrameInOrder(channels: Int) throws {
    let frames = (0..<5).map { pattern(width: 6, height: 4, channels: channels, seed: $0 + 10 * channels) }
    var file: [UInt8] = []
    let writer = try AnimatedPNGWriter(width: 6, height: 4, channels: channels, frameCount: 5, fps: 8) { file += $0 }
    for f in frames { try writer.append(f) }
    try writer.finish()

    // A viewer without APNG support (plain libpng) sees the first frame.
    #expect(try PNG.decode(file) == frames[0])

    let list = chunks(file)
    #expect(
        list.map(\.type) == ["IHDR", "acTL", "fcTL", "IDAT"]
            + Array(repeating: ["fcTL", "fdAT"], count: 4).flatMap { $0 }
            + ["IEND"])
    #expect(list[1].data == [0, 0, 0, 5, 0, 0, 0, 0])  // 5 frames, loop forever
    // Sequence numbers run 0, 1, 2, … over fcTL and fdAT.
    var sequence: [Int] = []
    var decoded: [[UInt8]] = []
    let rowBytes = 6 * channels
    for (type, data) in list where type == "fcTL" || type == "fdAT" || type == "IDAT" {
        if type != "IDAT" {
            sequence.append(Int(data[0]) << 24 | Int(data[1]) << 16 | Int(data[2]) << 8 | Int(data[3]))
        }
        if type == "fcTL" { #expect(Array(data[20..<24]) == [0, 1, 0, 8]) }  // delay 1/8 s
        if type != "fcTL" {
            let raw = inflate(type == "IDAT" ? data : Array(data.dropFirst(4)), size: (rowBytes + 1) * 4)
            var pixels: [UInt8] = []
            for y in 0..<4 {
                #expect(raw[y * (rowBytes + 1)] == 0)  // filter none
                pixels += raw[(y * (rowBytes + 1) + 1)...(y * (rowBytes + 1) + rowBytes)]
            }
            decoded.append(pixels)
        }
    }
    #expect(sequence == Array(0..<9))
    #expect(decoded == frames.map(\.pixels))
}

@Test func animatedPNGRejectsWrongFrames() throws {
    let writer = try AnimatedPNGWriter(width: 2, height: 2, channels: 1, frameCount: 1, fps: 4) { _ in }
    #expect(throws: ImageError.self) { try writer.append(Image8(width: 3, height: 2, channels: 1, fill: 0)) }
    #expect(throws: ImageError.self) { try writer.finish() }
    try writer.append(Image8(width: 2, height: 2, channels: 1, fill: 0))
    #expect(throws: ImageError.self) { try writer.append(Image8(width: 2, height: 2, channels: 1, fill: 0)) }
    try writer.finish()
}

@Test func contactSheetTilesFramesInTimeOrder() {
    let tiles = (0..<5).map { Image8(width: 3, height: 2, channels: 1, fill: UInt8(10 * ($0 + 1))) }
    let sheet = ContactSheet.render(tiles, columns: 2, gap: 1, background: 7)
    #expect(sheet.width == 2 * 4 + 1 && sheet.height == 3 * 3 + 1)
    func px(_ x: Int, _ y: Int) -> UInt8 { sheet.pixels[y * sheet.width + x] }
    #expect(px(0, 0) == 7 && px(4, 1) == 7)  // gaps
    #expect(px(1, 1) == 10 && px(5, 1) == 20)  // row 0: frames 0, 1
    #expect(px(1, 4) == 30 && px(5, 4) == 40)  // row 1: frames 2, 3
    #expect(px(1, 7) == 50 && px(5, 7) == 7)  // row 2: frame 4, then background
    #expect(ContactSheet.selection(count: 5, maxTiles: 8) == [0, 1, 2, 3, 4])
    #expect(ContactSheet.selection(count: 101, maxTiles: 5) == [0, 25, 50, 75, 100])
    #expect(
        ContactSheet.shrinkFactor(size: 512, maxSize: 128) == 4
            && ContactSheet.shrinkFactor(size: 96, maxSize: 128) == 1)
    #expect(ContactSheet.shrinkFactor(size: 200, maxSize: 128) == 2)
}

@Test func downsamplingAveragesBlocks() {
    let image = Image8(width: 4, height: 2, channels: 1, pixels: [0, 2, 10, 11, 4, 6, 12, 13])
    #expect(image.downsampled(by: 2).pixels == [3, 12])  // (0+2+4+6)/4 = 3; (10+11+12+13)/4 = 11.5 -> 12
}
