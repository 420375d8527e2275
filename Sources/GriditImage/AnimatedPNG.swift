// Animated PNG (APNG, https://wiki.mozilla.org/APNG_Specification): a PNG whose default image is
// the first frame, plus acTL (frame count), one fcTL (size, delay) per frame and fdAT chunks for
// frames after the first. libpng (without the APNG patch) does not write these chunks, so they
// are framed here; the image data is compressed by zlib (compress2) and checksummed by zlib's
// crc32. Viewers without APNG support show the first frame.

import CPNG

/// Writes an APNG frame by frame to `sink` (e.g. a file), so long previews never sit in memory.
///
///     let apng = try AnimatedPNGWriter(width: 64, height: 64, channels: 1, frameCount: n, fps: 8) { bytes in … }
///     for frame in frames { try apng.append(frame) }
///     try apng.finish()
public final class AnimatedPNGWriter {
    public let width: Int, height: Int, channels: Int, frameCount: Int
    private let delay: (numerator: UInt16, denominator: UInt16)
    private let sink: ([UInt8]) throws -> Void
    private var sequence: UInt32 = 0
    private var written = 0

    /// `fps` frames per second (delay 1/fps); `loops` 0 = forever. Grey (1) or RGB (3) channels.
    public init(
        width: Int, height: Int, channels: Int, frameCount: Int, fps: Int, loops: Int = 0,
        sink: @escaping ([UInt8]) throws -> Void
    ) throws {
        guard width >= 1, height >= 1, [1, 3].contains(channels), frameCount >= 1, (1...1000).contains(fps) else {
            throw ImageError("APNG: \(width)×\(height)×\(channels), \(frameCount) frames at \(fps) fps is not writable")
        }
        self.width = width
        self.height = height
        self.channels = channels
        self.frameCount = frameCount
        self.delay = (1, UInt16(fps))
        self.sink = sink
        var header: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        header += Self.chunk("IHDR", Self.be32(width) + Self.be32(height) + [8, channels == 1 ? 0 : 2, 0, 0, 0])
        header += Self.chunk("acTL", Self.be32(frameCount) + Self.be32(loops))
        try sink(header)
    }

    /// Appends the next frame (same size and channels as the animation).
    public func append(_ frame: Image8) throws {
        guard frame.width == width, frame.height == height, frame.channels == channels else {
            throw ImageError(
                "APNG: frame \(frame.width)×\(frame.height)×\(frame.channels), expected \(width)×\(height)×\(channels)")
        }
        guard written < frameCount else { throw ImageError("APNG: more than the \(frameCount) frames announced") }
        var control = Self.be32(Int(sequence)) + Self.be32(width) + Self.be32(height) + Self.be32(0) + Self.be32(0)
        control += [
            UInt8(delay.numerator >> 8), UInt8(delay.numerator & 0xFF),
            UInt8(delay.denominator >> 8), UInt8(delay.denominator & 0xFF), 0, 0,
        ]  // dispose none, blend source
        sequence += 1
        var bytes = Self.chunk("fcTL", control)
        let data = try Self.compressedScanlines(frame)
        if written == 0 {
            bytes += Self.chunk("IDAT", data)
        } else {
            bytes += Self.chunk("fdAT", Self.be32(Int(sequence)) + data)
            sequence += 1
        }
        written += 1
        try sink(bytes)
    }

    /// Writes IEND; every announced frame must have been appended.
    public func finish() throws {
        guard written == frameCount else { throw ImageError("APNG: \(written) of \(frameCount) frames appended") }
        try sink(Self.chunk("IEND", []))
    }

    /// Rows with filter byte 0 (none), deflated by zlib at its best compression.
    static func compressedScanlines(_ frame: Image8) throws -> [UInt8] {
        let rowBytes = frame.width * frame.channels
        var raw = [UInt8](repeating: 0, count: (rowBytes + 1) * frame.height)
        for y in 0..<frame.height {
            raw.replaceSubrange(
                (y * (rowBytes + 1) + 1)...(y * (rowBytes + 1) + rowBytes),
                with: frame.pixels[y * rowBytes..<(y + 1) * rowBytes])
        }
        var size = compressBound(uLong(raw.count))
        var out = [UInt8](repeating: 0, count: Int(size))
        let status = out.withUnsafeMutableBufferPointer { dst in
            raw.withUnsafeBufferPointer { src in
                compress2(dst.baseAddress, &size, src.baseAddress, uLong(src.count), Z_BEST_COMPRESSION)
            }
        }
        guard status == Z_OK else { throw ImageError("APNG: zlib compress2 failed (\(status))") }
        return Array(out[0..<Int(size)])
    }

    /// length, type, data, CRC-32 of type + data.
    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typeBytes = Array(type.utf8)
        precondition(typeBytes.count == 4, "chunk type \(type)")
        let body = typeBytes + data
        let crc = body.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) }
        return be32(data.count) + body + be32(Int(crc))
    }

    static func be32(_ v: Int) -> [UInt8] {
        let u = UInt32(truncatingIfNeeded: v)
        return [UInt8(u >> 24), UInt8((u >> 16) & 0xFF), UInt8((u >> 8) & 0xFF), UInt8(u & 0xFF)]
    }
}
