/// Seconds from "90s", "30m", "12h", "7d" or plain seconds (`jobs prune --older-than`, griditd's
/// duration options). Nil for anything else, a negative number, NaN or a number too large to be
/// finite, so that no caller ever converts a non-finite duration.
public func parseDuration(_ text: String) -> Double? {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
    let (number, unit) = text.last.flatMap { units[$0] }.map { (text.dropLast(), $0) } ?? (Substring(text), 1)
    guard let n = Double(number), n >= 0, (n * unit).isFinite else { return nil }
    return n * unit
}

/// "512M", "2G", "1048576" → bytes.
public func parseBytes(_ text: String) -> Int? {
    let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var digits = text.uppercased()
    if digits.hasSuffix("B") { digits.removeLast() }
    var scale = 1
    if let last = digits.last, let u = units[last] {
        scale = u
        digits.removeLast()
    }
    guard let n = Double(digits), n >= 0, n * Double(scale) < 0x1p62 else { return nil }  // Int(_:) traps past Int.max
    return Int(n * Double(scale))
}
