// 8-bit images and the one mapping between model space and 8-bit pixels.
//
// Model space: float values in [-1, 1], planar (C, H, W). 8-bit: interleaved rows of C bytes per pixel.
//   quantize:   u8 = clamp(floor((x + 1) / 2 · 255 + 0.5), 0, 255)   (round half up; NaN → 0)
//   dequantize: x  = u8 / 255 · 2 − 1
// The training tools (tools/train) and torchvision's save_image use the same quantisation.

/// An 8-bit image: `height` rows of `width` pixels of `channels` bytes (1 grey, 3 RGB, 4 RGBA).
public struct Image8: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public let channels: Int
    /// Row-major, interleaved: pixel (x, y) channel c at `(y · width + x) · channels + c`.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(
            width >= 1 && height >= 1 && [1, 3, 4].contains(channels), "Image8: \(width)×\(height)×\(channels)")
        precondition(
            pixels.count == width * height * channels,
            "Image8: \(pixels.count) bytes for \(width)×\(height)×\(channels)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// A uniform image.
    public init(width: Int, height: Int, channels: Int, fill: UInt8) {
        self.init(
            width: width, height: height, channels: channels,
            pixels: [UInt8](repeating: fill, count: width * height * channels))
    }

    /// An image from a planar model-space float plane stack (C, H, W), by `PixelMapping.quantize`.
    public init(planar values: UnsafePointer<Float>, channels: Int, height: Int, width: Int) {
        let plane = height * width
        var bytes = [UInt8](repeating: 0, count: plane * channels)
        for c in 0..<channels {
            for i in 0..<plane { bytes[i * channels + c] = PixelMapping.quantize(values[c * plane + i]) }
        }
        self.init(width: width, height: height, channels: channels, pixels: bytes)
    }

    /// Writes the model-space values of this image, planar (C, H, W), into `into`.
    public func dequantized(into out: UnsafeMutablePointer<Float>) {
        let plane = height * width
        for c in 0..<channels {
            for i in 0..<plane { out[c * plane + i] = PixelMapping.dequantize(pixels[i * channels + c]) }
        }
    }

    /// The image shrunk by an integer `factor` (mean of each factor × factor block, rounded half up);
    /// the size must be a multiple of the factor.
    public func downsampled(by factor: Int) -> Image8 {
        precondition(
            factor >= 1 && width % factor == 0 && height % factor == 0, "downsampled: \(width)×\(height) by \(factor)")
        guard factor > 1 else { return self }
        let (w, h, n) = (width / factor, height / factor, factor * factor)
        var out = [UInt8](repeating: 0, count: w * h * channels)
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<channels {
                    var sum = 0
                    for dy in 0..<factor {
                        for dx in 0..<factor {
                            sum += Int(pixels[((y * factor + dy) * width + x * factor + dx) * channels + c])
                        }
                    }
                    out[(y * w + x) * channels + c] = UInt8((sum + n / 2) / n)
                }
            }
        }
        return Image8(width: w, height: h, channels: channels, pixels: out)
    }

    /// Copies `tile` into this image with its top-left corner at (x, y); same channel count.
    public mutating func paste(_ tile: Image8, x: Int, y: Int) {
        precondition(
            tile.channels == channels && x >= 0 && y >= 0 && x + tile.width <= width && y + tile.height <= height,
            "paste: \(tile.width)×\(tile.height) at (\(x), \(y)) into \(width)×\(height)")
        let rowBytes = tile.width * channels
        for ty in 0..<tile.height {
            let dst = ((y + ty) * width + x) * channels
            pixels.replaceSubrange(dst..<dst + rowBytes, with: tile.pixels[ty * rowBytes..<(ty + 1) * rowBytes])
        }
    }
}

/// The mapping between model space and 8-bit pixels (stated once; see the top of this file).
public enum PixelMapping {
    @inline(__always)
    public static func quantize(_ x: Float) -> UInt8 {
        let v = (x + 1) / 2 * 255 + 0.5
        if !(v >= 1) { return 0 }  // also NaN
        if v >= 255 { return 255 }
        return UInt8(v)  // truncation = floor for v >= 1
    }

    @inline(__always)
    public static func dequantize(_ u: UInt8) -> Float { Float(u) / 255 * 2 - 1 }
}
