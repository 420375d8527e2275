// griditd's metrics: swift-metrics instruments on a Prometheus registry (swift-prometheus) that
// `GET /metrics` writes as Prometheus text. The registry is griditd's own, not the process-wide
// `MetricsSystem`: in-process tests run several daemons, and bootstrapping twice traps.

import Foundation
import GriditAPI
import GriditJobSpec
import Metrics
import Synchronization

import class Prometheus.PrometheusCollectorRegistry
import struct Prometheus.PrometheusMetricsFactory

public final class DaemonMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    /// Per running job: when it started here, and when and where its last durable unit was.
    private let jobs = Mutex<[Int64: JobTimes]>([:])
    /// Frames finished in the last minute, for `gridit_frames_per_second`.
    private let recentFrames: Mutex<LastMinute>
    /// Floating-point operations the engine evaluated in the last minute, for
    /// `gridit_engine_gflops_per_second`.
    private let recentFlops: Mutex<LastMinute>
    /// The gauges of the models loaded at the last scrape (removed when a model unloads).
    private let modelGauges = Mutex<[ModelSeries: Gauge]>([:])

    /// A loaded model's labels: a version loaded in fp32 and in bf16 is two series.
    struct ModelSeries: Hashable {
        var name: String
        var precision: String
    }

    struct JobTimes {
        var started: ContinuousClock.Instant
        var lastUnit: ContinuousClock.Instant
        var gridsDone: Int
        var framesDone: Int
        /// The engine's operations for the job so far (`StepProgress.flops`).
        var flops = 0.0
    }

    public init() {
        let started = ContinuousClock.now
        recentFrames = Mutex(LastMinute(origin: started))
        recentFlops = Mutex(LastMinute(origin: started))
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            "gridit_job_duration_seconds": [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21_600, 86_400].map {
                .seconds($0)
            },
            "gridit_stage_unit_duration_seconds": [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300].map {
                .seconds($0)
            },
            "gridit_http_request_duration_seconds": [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30].map { .seconds($0) },
        ]
        self.factory = factory
        // Counters a scraper should see at 0 before anything happened.
        for label in [
            "gridit_jobs_started_total", "gridit_frames_total", "gridit_lease_renewals_total",
            "gridit_lease_losses_total",
            "gridit_leases_expired_total", "gridit_jobs_pruned_total", "gridit_engine_flops_total",
        ] {
            Counter(label: label, factory: factory).increment(by: 0)
        }
        Gauge(label: "gridit_build_info", dimensions: [("version", griditVersion)], factory: factory).record(1)
        Gauge(label: "gridit_start_time_seconds", factory: factory).record(Date().timeIntervalSince1970)
    }

    // MARK: - Events

    /// Jobs handed to the engine, each from the progress it resumes from.
    func jobsStarted(_ items: [ExecutionItem]) {
        let now = ContinuousClock.now
        jobs.withLock {
            for item in items {
                $0[item.jobID] = JobTimes(
                    started: now, lastUnit: now, gridsDone: item.resumeFrom.gridsDone,
                    framesDone: item.resumeFrom.framesDone)
            }
        }
        Counter(label: "gridit_jobs_started_total", factory: factory).increment(by: items.count)
    }

    /// A durable unit (a grid or a frame) of a running job: the time since its previous one (in
    /// a batch, the job's own pace) and the frames made.
    func unitDone(_ id: Int64, _ progress: JobProgress) {
        let now = ContinuousClock.now
        guard
            let (elapsed, grids, frames) = jobs.withLock({ jobs -> (Duration, Int, Int)? in
                guard var times = jobs[id] else { return nil }
                defer { jobs[id] = times }
                let made = (
                    now - times.lastUnit, max(0, progress.gridsDone - times.gridsDone),
                    max(0, progress.framesDone - times.framesDone)
                )
                (times.lastUnit, times.gridsDone, times.framesDone) = (now, progress.gridsDone, progress.framesDone)
                return made
            })
        else { return }
        // What grew says which stage the unit was (the progress already names the next one).
        for (stage, units) in [(Stage.grid, grids), (Stage.sr, frames)] where units > 0 {
            Timer(
                label: "gridit_stage_unit_duration_seconds", dimensions: [("stage", stage.rawValue)], factory: factory
            )
            .record(duration: elapsed / units)
        }
        if frames > 0 {
            Counter(label: "gridit_frames_total", factory: factory).increment(by: frames)
            recentFrames.withLock { $0.add(Double(frames), at: now) }
        }
    }

    /// A denoising step: the operations the engine evaluated for the job since its last step (the
    /// step reports a running total per job; a batch's jobs add up to the engine's work).
    func stepDone(_ id: Int64, _ step: StepProgress) {
        guard let total = step.flops, total.isFinite else { return }
        let now = ContinuousClock.now
        let added =
            jobs.withLock { jobs -> Double? in
                guard let previous = jobs[id]?.flops else { return nil }
                jobs[id]?.flops = total
                return total >= previous ? total - previous : total  // a new session counts from 0
            } ?? 0
        guard added > 0 else { return }
        Counter(label: "gridit_engine_flops_total", factory: factory).increment(by: Int64(added.rounded()))
        recentFlops.withLock { $0.add(added, at: now) }
    }

    /// A job left the engine with `outcome` (succeeded, failed, retried, crashed, requeued,
    /// canceled, handed_back, unrecorded: a run whose outcome could not be recorded, fenced or on a lost
    /// database); `errorClass` for a failure.
    func jobFinished(_ id: Int64, outcome: String, errorClass: String? = nil) {
        let started = jobs.withLock { $0.removeValue(forKey: id)?.started }
        Counter(label: "gridit_jobs_finished_total", dimensions: [("outcome", outcome)], factory: factory).increment()
        if let errorClass {
            Counter(label: "gridit_jobs_failed_total", dimensions: [("class", errorClass)], factory: factory)
                .increment()
        }
        if let started {
            Timer(label: "gridit_job_duration_seconds", dimensions: [("outcome", outcome)], factory: factory)
                .record(duration: ContinuousClock.now - started)
        }
    }

    func leaseRenewed() { Counter(label: "gridit_lease_renewals_total", factory: factory).increment() }
    func leaseLost() { Counter(label: "gridit_lease_losses_total", factory: factory).increment() }
    func leasesExpired(_ n: Int) { Counter(label: "gridit_leases_expired_total", factory: factory).increment(by: n) }
    func jobsPruned(_ n: Int) { Counter(label: "gridit_jobs_pruned_total", factory: factory).increment(by: n) }

    /// One API request: its route template (never the raw path: ids would make a series each).
    func request(route: String, method: String, status: UInt, duration: Duration) {
        let dimensions = [("route", route), ("method", method), ("status", "\(status)")]
        Counter(label: "gridit_http_requests_total", dimensions: dimensions, factory: factory).increment()
        Timer(label: "gridit_http_request_duration_seconds", dimensions: [("route", route)], factory: factory)
            .record(duration: duration)
    }

    // MARK: - The scrape

    /// What is read at each scrape rather than counted.
    struct Snapshot {
        var counts: [JobState: Int]
        var paused: Bool
        var running: Int
        var ready: Bool
        var diskFreeBytes: Int64?
        var models: [LoadedModel]
    }

    /// The Prometheus text of every metric, the snapshot's gauges set first.
    func render(_ snapshot: Snapshot) -> String {
        for state in JobState.allCases {
            Gauge(label: "gridit_jobs", dimensions: [("state", state.rawValue)], factory: factory)
                .record(snapshot.counts[state] ?? 0)
        }
        Gauge(label: "gridit_queue_paused", factory: factory).record(snapshot.paused ? 1 : 0)
        Gauge(label: "gridit_running_jobs", factory: factory).record(snapshot.running)
        Gauge(label: "gridit_ready", factory: factory).record(snapshot.ready ? 1 : 0)
        if let free = snapshot.diskFreeBytes { Gauge(label: "gridit_disk_free_bytes", factory: factory).record(free) }
        let now = ContinuousClock.now
        Gauge(label: "gridit_frames_per_second", factory: factory).record(
            recentFrames.withLock { $0.perSecond(at: now) })
        Gauge(label: "gridit_engine_gflops_per_second", factory: factory)
            .record(recentFlops.withLock { $0.perSecond(at: now) } / 1e9)

        Gauge(label: "gridit_models_loaded", factory: factory).record(snapshot.models.count)
        modelGauges.withLock { gauges in
            var seen: Set<ModelSeries> = []
            for model in snapshot.models {
                let series = ModelSeries(name: model.names.first ?? model.digest, precision: model.precision ?? "fp32")
                seen.insert(series)
                let gauge =
                    gauges[series]
                    ?? Gauge(
                        label: "gridit_model_resident_bytes",
                        dimensions: [("model", series.name), ("precision", series.precision)], factory: factory)
                gauges[series] = gauge
                gauge.record(model.residentBytes ?? 0)
            }
            for (series, gauge) in gauges where !seen.contains(series) {
                gauge.destroy()
                gauges[series] = nil
            }
        }
        return registry.emitToString()
    }
}

/// Amounts of the last minute in one-second buckets: a rate a scrape can show in fixed memory.
/// (A list of events pruned at each scrape grew by one per denoising step in a daemon nobody
/// scraped: 8 KiB a job.)
struct LastMinute {
    private let origin: ContinuousClock.Instant
    /// Bucket `s % 60` holds the amount added during whole second `s` after `origin`.
    private var buckets = [(second: Int64, amount: Double)](repeating: (-1, 0), count: 60)

    init(origin: ContinuousClock.Instant = .now) { self.origin = origin }

    private func second(_ instant: ContinuousClock.Instant) -> Int64 {
        max(0, (instant - origin).components.seconds)
    }

    mutating func add(_ amount: Double, at now: ContinuousClock.Instant) {
        let s = second(now)
        let i = Int(s % 60)
        if buckets[i].second != s { buckets[i] = (s, 0) }
        buckets[i].amount += amount
    }

    /// What was added in the current second and the 59 before it.
    func sum(at now: ContinuousClock.Instant) -> Double {
        let s = second(now)
        return buckets.reduce(0) { total, bucket in
            bucket.second > s - 60 && bucket.second <= s ? total + bucket.amount : total
        }
    }

    /// `sum` over the time it covers: 59 whole seconds and the elapsed part of the current one, or
    /// less in the first minute after `origin` (dividing by a flat 60 read up to 1.7 % low, and far
    /// lower just after a start).
    func perSecond(at now: ContinuousClock.Instant) -> Double {
        let elapsed = now - origin
        let (whole, atto) = elapsed.components
        let covered = min(Double(whole) + Double(atto) * 1e-18, 59 + Double(atto) * 1e-18)
        return covered > 0 ? sum(at: now) / covered : 0
    }
}

/// One rendering of the metrics, shared by the scrapes that ask while it is made and within
/// `maxAge` after: anyone who reaches the TCP listener may scrape, and a rendering reads the job
/// database and the models' residency, so a flood of scrapes costs one rendering a second.
actor ScrapeCache {
    let maxAge: Duration
    private let now: @Sendable () -> ContinuousClock.Instant
    private var latest: (rendering: Task<String, Never>, finished: ContinuousClock.Instant?)?

    init(maxAge: Duration, now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.maxAge = maxAge
        self.now = now
    }

    func text(render: @escaping @Sendable () async -> String) async -> String {
        if let latest, latest.finished.map({ now() - $0 < maxAge }) ?? true { return await latest.rendering.value }
        let rendering = Task { await render() }
        latest = (rendering, nil)
        let text = await rendering.value
        if latest?.rendering == rendering { latest?.finished = now() }
        return text
    }
}
