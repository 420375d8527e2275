// Human output of the CLIs: docker-style tables (upper-case headers, columns padded with spaces,
// no borders). Scripts use `--json` instead, so this format is for people and may change.

/// Renders `rows` under `headers` as left-aligned columns separated by three spaces; the last
/// column is not padded. Column widths count Unicode characters, not bytes.
public func renderTable(headers: [String], rows: [[String]]) -> String {
    let columns = headers.count
    precondition(rows.allSatisfy { $0.count == columns }, "renderTable: every row needs \(columns) cells")
    let all = [headers.map { $0.uppercased() }] + rows
    let widths = (0..<columns).map { c in all.map { $0[c].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { c, cell in
            c == columns - 1 ? cell : cell + String(repeating: " ", count: widths[c] - cell.count)
        }.joined(separator: "   ").trimmingTrailingSpaces()
    }.joined(separator: "\n") + "\n"
}

/// Sizes as people read them: 1023 B, 1.5 KB, 12 MB, 2.7 GB (decimal units, like docker).
public func formatBytes(_ bytes: Int64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var value = Double(bytes), unit = 0
    while value >= 1000 && unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    let digits = value < 10 ? 1 : 0
    return "\(value.rounded(toPlaces: digits)) \(units[unit])"
}

extension Double {
    fileprivate func rounded(toPlaces p: Int) -> String {
        let scale = p == 0 ? 1.0 : 10.0
        let r = (self * scale).rounded() / scale
        return p == 0 ? String(Int(r)) : String(r)
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
