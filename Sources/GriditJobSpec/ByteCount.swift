// Sizes in messages and tables, one spelling for every layer (the CLIs' tables, the daemon's
// notices, the model store's errors).

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
