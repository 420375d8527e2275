// The one-minute window behind gridit_frames_per_second and gridit_engine_gflops_per_second.

import Testing

@testable import GriditDaemon

@Suite("the last minute's amounts")
struct LastMinuteTests {
    let origin = ContinuousClock.now

    func at(_ seconds: Double) -> ContinuousClock.Instant { origin + .milliseconds(Int64(seconds * 1000)) }

    @Test("counts the current second and the 59 before it")
    func window() {
        var minute = LastMinute(origin: origin)
        minute.add(1, at: at(0.5))
        minute.add(2, at: at(30))
        minute.add(4, at: at(59.9))
        #expect(minute.sum(at: at(59.9)) == 7)
        #expect(minute.sum(at: at(60.2)) == 6)  // second 0 left the window
        #expect(minute.sum(at: at(90.0)) == 4)
        #expect(minute.sum(at: at(120.0)) == 0)
    }

    @Test("hours of amounts with no scrape in between: the sum is the last minute's")
    func noScrape() {
        var minute = LastMinute(origin: origin)
        // Ten events a second for two hours, each second's amount its own index: buckets are
        // reused 120 times over, and a stale one must never count.
        let seconds = 7200
        for s in 0..<seconds {
            for k in 0..<10 { minute.add(Double(s), at: at(Double(s) + Double(k) / 10)) }
        }
        let expected = (seconds - 60..<seconds).reduce(0.0) { $0 + 10 * Double($1) }
        #expect(minute.sum(at: at(Double(seconds - 1) + 0.95)) == expected)
        // Gaps: a quiet half minute, then one event.
        minute.add(5, at: at(Double(seconds) + 30))
        let inWindow = (seconds - 29..<seconds).reduce(0.0) { $0 + 10 * Double($1) }
        #expect(minute.sum(at: at(Double(seconds) + 30)) == inWindow + 5)
    }
}
