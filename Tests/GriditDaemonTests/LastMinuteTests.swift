// The one-minute window behind gridit_frames_per_second and gridit_engine_gflops_per_second.

import Synchronization
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

    @Test("the rate divides by the time the window covers: early in a second, and in the first minute")
    func rate() {
        var minute = LastMinute(origin: origin)
        // Ten events a second, at tenths, for two minutes.
        for s in 0..<120 {
            for k in 0..<10 { minute.add(1, at: at(Double(s) + Double(k) / 10)) }
        }
        // 0.05 s into second 120: seconds 61-119 (590 events) over 59.05 s; a flat /60 read 9.83.
        let early = minute.perSecond(at: at(120.05))
        print("rate 0.05 s into a second: \(early) (10 expected; a flat /60 read \(minute.sum(at: at(120.05)) / 60))")
        #expect(abs(early - 10) < 0.1)
        #expect(abs(minute.perSecond(at: at(120.5)) - 590.0 / 59.5) < 1e-9)  // seconds 61-120 over 59.5 s

        // Five seconds after a start: 50 events over 5 s, not over 60.
        var fresh = LastMinute(origin: origin)
        for i in 0..<50 { fresh.add(1, at: at(Double(i) / 10)) }
        #expect(abs(fresh.perSecond(at: at(5)) - 10) < 1e-9)
        #expect(LastMinute(origin: origin).perSecond(at: origin) == 0)
    }
}

@Suite("the TCP listener's shared scrape")
struct ScrapeCacheTests {
    @Test("scrapes while a rendering is made and within a second after share it; a later one renders again")
    func sharing() async {
        let origin = ContinuousClock.now
        let clock = Mutex(origin)
        let renderings = Mutex(0)
        // The first rendering waits until the second scrape has asked.
        let (gate, open) = AsyncStream.makeStream(of: Void.self)
        let cache = ScrapeCache(maxAge: .seconds(1), now: { clock.withLock { $0 } })
        let render: @Sendable () async -> String = {
            let n = renderings.withLock {
                $0 += 1
                return $0
            }
            if n == 1 { for await _ in gate { break } }
            return "rendering \(n)"
        }
        async let first = cache.text(render: render)
        while renderings.withLock({ $0 }) == 0 { await Task.yield() }
        async let second = cache.text(render: render)
        // `second` is queued on the actor behind nothing but `first`'s await: let it ask first.
        for _ in 0..<100 { await Task.yield() }
        open.yield()
        #expect(await [first, second] == ["rendering 1", "rendering 1"])
        clock.withLock { $0 = origin + .milliseconds(999) }
        #expect(await cache.text(render: render) == "rendering 1")
        clock.withLock { $0 = origin + .seconds(1) }
        #expect(await cache.text(render: render) == "rendering 2")
        #expect(renderings.withLock { $0 } == 2)
    }
}
