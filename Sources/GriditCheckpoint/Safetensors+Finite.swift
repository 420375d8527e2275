// Finding NaN and infinite weights: a checkpoint holding one makes every output NaN, which an
// 8-bit image mapping would silently turn into flat grey frames. A float is non-finite exactly
// when all its exponent bits are set, so one mask per dtype finds both, on the raw bits.

extension SafetensorsFile {
    /// The first floating-point tensor (in file order) holding a NaN or an infinity, and the
    /// element's flat index; nil when every float is finite. Integer and 8-bit float tensors are
    /// not inspected.
    public func firstNonFinite() -> (tensor: String, index: Int)? {
        for info in tensors {
            let start = mapping.base + info.fileRange.lowerBound
            let count = info.elementCount
            let found: Int? =
                switch info.dtype {
                case .f32: firstAllSet(start, count: count, mask: UInt32(0x7F80_0000))
                case .f16: firstAllSet(start, count: count, mask: UInt16(0x7C00))
                case .bf16: firstAllSet(start, count: count, mask: UInt16(0x7F80))
                case .f64: firstAllSet(start, count: count, mask: UInt64(0x7FF0_0000_0000_0000))
                default: nil
                }
            if let found { return (info.name, found) }
        }
        return nil
    }
}

/// Index of the first of `count` little-endian `T`s at `start` with every bit of `mask` set.
/// Blocks are reduced without branches (so the loop vectorizes); only a block with a hit is rescanned.
private func firstAllSet<T: FixedWidthInteger & UnsignedInteger>(_ start: UnsafeRawPointer, count: Int, mask: T) -> Int?
{
    let width = MemoryLayout<T>.size
    func element(_ i: Int) -> T { T(littleEndian: start.loadUnaligned(fromByteOffset: i * width, as: T.self)) }
    var block = 0
    while block < count {
        let end = min(block + 4096, count)
        var hits: T = 0
        for i in block..<end { hits |= (element(i) & mask) == mask ? 1 : 0 }
        if hits != 0 { return (block..<end).first { element($0) & mask == mask } }
        block = end
    }
    return nil
}
