import Foundation

extension Date {
    /// Milliseconds since the Unix epoch, the unit of every timestamp column (the job queue's and
    /// the model store's). Saturates rather than trapping: a date a huge user-given duration
    /// points at (`jobs prune --older-than 1e300s`) lies before or after every stored timestamp,
    /// and so does Int64.min/max. NaN (never reached: durations are checked where they enter)
    /// reads as the epoch.
    public var unixMillis: Int64 {
        let ms = (timeIntervalSince1970 * 1000).rounded()
        if ms.isNaN { return 0 }
        if ms >= 0x1p63 { return .max }
        if ms < -0x1p63 { return .min }
        return Int64(ms)
    }
    public init(unixMillis: Int64) { self.init(timeIntervalSince1970: Double(unixMillis) / 1000) }
}
