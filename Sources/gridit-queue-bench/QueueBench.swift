// gridit-queue-bench: claims per second and claim latency (p50, p99) of the job stores, the
// PostgreSQL one (the multi-host queue) beside the SQLite one, with 1, 4 and 16 concurrent
// workers. Not a test: run it in release mode through tools/bench/queue_bench.sh, which starts a
// throwaway PostgreSQL server (docs/CLUSTER.md records the numbers).

import ArgumentParser
import Foundation
import GriditJobQueue
import GriditJobStorePostgres
import GriditStateDatabase
import Logging

@main
struct QueueBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gridit-queue-bench",
        abstract: "Claims per second and claim latency of the PostgreSQL and SQLite job stores.",
        discussion: """
            Each run fills a fresh queue (a new PostgreSQL schema, a new SQLite state directory) with --jobs \
            queued jobs, then W workers claim them as griditd's worker does (one claim statement each, \
            production clock, 120 s lease) until none is left. The PostgreSQL store gets W connections. \
            Claims only: heartbeats and outcomes are further writes of the same size.
            """)

    @Option(help: "postgres://USER@HOST:PORT/DATABASE of a server to use (its password from PGPASSWORD).")
    var database: String

    @Option(help: "Jobs per run.")
    var jobs = 2000

    @Option(help: "Concurrent workers of each run, comma-separated.")
    var workers = "1,4,16"

    @Option(help: "Runs of each configuration; the median run (by claims/s) is reported.")
    var repeats = 3

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    struct Result: Codable {
        var store: String
        var workers: Int
        var jobs: Int
        var claimsPerSecond: Double
        var p50Milliseconds: Double
        var p99Milliseconds: Double
    }

    func run() async throws {
        let counts = workers.split(separator: ",").compactMap { Int($0) }
        guard !counts.isEmpty, counts.allSatisfy({ $0 > 0 }) else { throw ValidationError("--workers: e.g. 1,4,16") }
        var results: [Result] = []
        print("store       workers   claims/s   p50 ms   p99 ms   (\(jobs) jobs, median of \(repeats))")
        for store in ["postgres", "sqlite"] {
            for count in counts {
                var runs: [Result] = []
                for _ in 0..<repeats {
                    let samples = try await store == "postgres" ? postgres(workers: count) : sqlite(workers: count)
                    runs.append(Self.summary(store: store, workers: count, samples))
                }
                let median = runs.sorted { $0.claimsPerSecond < $1.claimsPerSecond }[runs.count / 2]
                results.append(median)
                print(
                    String(
                        format: "%-10@ %8d %10.0f %8.2f %8.2f", store as NSString, count, median.claimsPerSecond,
                        median.p50Milliseconds, median.p99Milliseconds))
            }
        }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(results).write(to: URL(fileURLWithPath: json))
        }
    }

    /// Claim latencies (seconds) and the wall time of one run.
    struct Samples {
        var latencies: [Double]
        var wall: Double
    }

    static func summary(store: String, workers: Int, _ samples: Samples) -> Result {
        let sorted = samples.latencies.sorted()
        func percentile(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000 }
        return Result(
            store: store, workers: workers, jobs: sorted.count, claimsPerSecond: Double(sorted.count) / samples.wall,
            p50Milliseconds: percentile(0.50), p99Milliseconds: percentile(0.99))
    }

    func postgres(workers: Int) async throws -> Samples {
        let schema = "bench_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(12)
        let separator = database.contains("?") ? "&" : "?"
        guard let location = try PostgresLocation.configured(url: database + separator + "schema=" + schema) else {
            throw ValidationError("--database is empty")
        }
        var logger = Logger(label: "gridit.queue-bench")
        logger.logLevel = .error
        let store = PostgresJobStore(location: location, maximumConnections: workers, logger: logger)
        return try await store.withRunningPool {
            try await store.migrate()
            try await fill(store)
            return try await claimAll(store, workers: workers)
        }
    }

    func sqlite(workers: Int) async throws -> Samples {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("queue-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let (database, _) = try StateDatabase.openOwned(path: folder.path + "/jobs.sqlite")
        let store = SQLiteJobStore(database: database)
        defer { try? store.close() }
        try await fill(store)
        return try await claimAll(store, workers: workers)
    }

    func fill(_ store: any JobStore) async throws {
        for seed in 0..<jobs {
            _ = try await store.submit(
                JobSubmission(params: "{\"seed\":\(seed)}", length: 128), owner: 1, maxQueued: jobs + 1, now: Date())
        }
    }

    /// `workers` tasks claim until the queue is empty; each claim's latency is recorded.
    func claimAll(_ store: any JobStore, workers: Int) async throws -> Samples {
        let clock = ContinuousClock()
        let start = clock.now
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for worker in 0..<workers {
                group.addTask {
                    var mine: [Double] = []
                    while true {
                        let before = clock.now
                        let claimed = try await store.claim(
                            workerID: "bench/worker-\(worker)", leaseDuration: 120, now: Date())
                        guard claimed != nil else { return mine }
                        let took = before.duration(to: clock.now)
                        mine.append(took / .seconds(1))
                    }
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let wall = start.duration(to: clock.now)
        guard latencies.count == jobs else {
            throw ValidationError("claimed \(latencies.count) of \(jobs) jobs")
        }
        return Samples(
            latencies: latencies,
            wall: wall / .seconds(1))
    }
}
