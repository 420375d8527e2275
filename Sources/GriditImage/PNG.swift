// PNG encoding and decoding through libpng's simplified API (png_image_*), which reports errors
// in the image struct instead of longjmp-ing, so it is safe to call from Swift.

import CPNG

/// A PNG that could not be encoded or decoded; `message` is libpng's.
public struct ImageError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum PNG {
    /// The PNG file bytes of `image` (8-bit grey, RGB or RGBA, no interlace, libpng's default
    /// compression: the bytes are a pure function of the pixels for a given libpng/zlib).
    public static func encode(_ image: Image8) throws -> [UInt8] {
        var png = pngImage(image)
        var size = 0
        let ok = image.pixels.withUnsafeBytes { px in
            png_image_write_to_memory(&png, nil, &size, 0, px.baseAddress, 0, nil)
        }
        guard ok != 0, size > 0 else { throw ImageError("PNG encode: \(message(&png))") }
        var out = [UInt8](repeating: 0, count: size)
        let written = out.withUnsafeMutableBytes { dst in
            image.pixels.withUnsafeBytes { px in
                png_image_write_to_memory(&png, dst.baseAddress, &size, 0, px.baseAddress, 0, nil)
            }
        }
        guard written != 0 else { throw ImageError("PNG encode: \(message(&png))") }
        return Array(out[0..<size])
    }

    /// Decodes PNG bytes to 8-bit pixels: grey stays grey, colour becomes RGB, alpha is kept
    /// (grey + alpha becomes RGBA). 16-bit files are reduced to 8 bits by libpng.
    public static func decode(_ bytes: [UInt8]) throws -> Image8 {
        // libpng reads from the buffer until png_image_finish_read, so both happen inside one borrow.
        try bytes.withUnsafeBytes { raw throws -> Image8 in
            var png = png_image()
            png.version = UInt32(gridit_png_image_version())
            guard png_image_begin_read_from_memory(&png, raw.baseAddress, raw.count) != 0 else {
                throw ImageError("PNG decode: \(message(&png))")
            }
            defer { png_image_free(&png) }
            let hasColor = png.format & gridit_png_format_flag_color() != 0
            let hasAlpha = png.format & gridit_png_format_flag_alpha() != 0
            let channels = hasAlpha ? 4 : (hasColor ? 3 : 1)
            png.format =
                hasAlpha ? gridit_png_format_rgba() : (hasColor ? gridit_png_format_rgb() : gridit_png_format_gray())
            let (width, height) = (Int(png.width), Int(png.height))
            guard width >= 1, height >= 1, width * height <= 1 << 28 else {
                throw ImageError("PNG decode: unsupported size \(width)×\(height)")
            }
            var pixels = [UInt8](repeating: 0, count: gridit_png_image_size(&png))
            let done = pixels.withUnsafeMutableBytes { png_image_finish_read(&png, nil, $0.baseAddress, 0, nil) }
            guard done != 0 else { throw ImageError("PNG decode: \(message(&png))") }
            return Image8(width: width, height: height, channels: channels, pixels: pixels)
        }
    }

    private static func pngImage(_ image: Image8) -> png_image {
        var png = png_image()
        png.version = UInt32(gridit_png_image_version())
        png.width = UInt32(image.width)
        png.height = UInt32(image.height)
        png.format =
            switch image.channels {
            case 1: gridit_png_format_gray()
            case 3: gridit_png_format_rgb()
            default: gridit_png_format_rgba()
            }
        return png
    }

    private static func message(_ png: inout png_image) -> String {
        withUnsafeBytes(of: &png.message) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return bytes.isEmpty ? "libpng failed" : String(decoding: bytes, as: UTF8.self)
        }
    }
}
