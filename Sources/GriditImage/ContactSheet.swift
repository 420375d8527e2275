// A contact sheet: frames laid out in time order, left to right and top to bottom, with a thin
// gap between tiles, so a whole sequence can be judged at a glance.

public enum ContactSheet {
    /// Which frames of `count` a sheet of at most `maxTiles` shows: all of them, or `maxTiles`
    /// evenly spaced ones including the first and the last.
    public static func selection(count: Int, maxTiles: Int) -> [Int] {
        precondition(count >= 0 && maxTiles >= 1, "selection: \(count) frames, \(maxTiles) tiles")
        guard count > maxTiles else { return Array(0..<count) }
        guard maxTiles > 1 else { return [0] }
        return (0..<maxTiles).map { ($0 * (count - 1) + (maxTiles - 1) / 2) / (maxTiles - 1) }
    }

    /// The sheet of `tiles` (all the same size and channels): `columns` per row, `gap` pixels of
    /// `background` between tiles and around the edge.
    public static func render(_ tiles: [Image8], columns: Int, gap: Int = 2, background: UInt8 = 96) -> Image8 {
        precondition(
            !tiles.isEmpty && columns >= 1 && gap >= 0, "ContactSheet.render: \(tiles.count) tiles, \(columns) columns")
        let (w, h, c) = (tiles[0].width, tiles[0].height, tiles[0].channels)
        precondition(
            tiles.allSatisfy { $0.width == w && $0.height == h && $0.channels == c }, "ContactSheet: mixed tile sizes")
        let cols = min(columns, tiles.count), rows = (tiles.count + cols - 1) / cols
        var sheet = Image8(width: cols * (w + gap) + gap, height: rows * (h + gap) + gap, channels: c, fill: background)
        for (i, tile) in tiles.enumerated() {
            sheet.paste(tile, x: gap + (i % cols) * (w + gap), y: gap + (i / cols) * (h + gap))
        }
        return sheet
    }

    /// The integer factor that brings a `size`-pixel tile to at most `maxSize` pixels (a divisor
    /// of `size`, so the box downsampling is exact).
    public static func shrinkFactor(size: Int, maxSize: Int) -> Int {
        guard size > maxSize else { return 1 }
        return (2...size).first { size % $0 == 0 && size / $0 <= maxSize } ?? size
    }
}
