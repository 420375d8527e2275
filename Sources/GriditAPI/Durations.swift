/// Seconds from "90s", "30m", "12h", "7d" or plain seconds (`jobs prune --older-than`, griditd's
/// duration options). Nil for anything else, a negative number, NaN or a number too large to be
/// finite, so that no caller ever converts a non-finite duration.
public func parseDuration(_ text: String) -> Double? {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
    let (number, unit) = text.last.flatMap { units[$0] }.map { (text.dropLast(), $0) } ?? (Substring(text), 1)
    guard let n = Double(number), n >= 0, (n * unit).isFinite else { return nil }
    return n * unit
}
