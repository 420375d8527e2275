// Human output of the CLIs: docker-style tables (upper-case headers, columns padded with spaces,
// no borders). Scripts use `--json` instead, so this format is for people and may change. Sizes
// in them are GriditJobSpec's `formatBytes`.

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

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
