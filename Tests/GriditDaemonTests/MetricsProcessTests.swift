// GET /metrics, /healthz and /readyz with the real binaries, database and socket, and the
// optional TCP listener (issue 17, metrics and health). The scrape is parsed as Prometheus text.

import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One sample of a Prometheus text exposition.
struct Sample: Hashable {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// Parses Prometheus text format 0.0.4; fails on any line that is neither a comment nor a sample.
func parsePrometheus(_ text: String) throws -> [Sample] {
    var samples: [Sample] = []
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        var rest = Substring(line)
        let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }
        guard let first = name.first, !first.isNumber else { throw TestFailure("bad metric name in '\(line)'") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let key = rest.prefix { $0 != "=" }
                rest = rest.dropFirst(key.count)
                guard rest.hasPrefix("=\"") else { throw TestFailure("bad label in '\(line)'") }
                rest = rest.dropFirst(2)
                var value = ""
                while let c = rest.first, c != "\"" {
                    if c == "\\" { rest = rest.dropFirst() }
                    value.append(rest.first ?? " ")
                    rest = rest.dropFirst()
                }
                rest = rest.dropFirst()
                labels[String(key)] = value
                if rest.first == "," { rest = rest.dropFirst() }
                guard !rest.isEmpty else { throw TestFailure("unterminated labels in '\(line)'") }
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " " else { throw TestFailure("no value in '\(line)'") }
        let text = rest.dropFirst().split(separator: " ").first.map(String.init) ?? ""
        guard let value = text == "+Inf" ? Double.infinity : Double(text) else {
            throw TestFailure("bad value in '\(line)'")
        }
        samples.append(Sample(name: String(name), labels: labels, value: value))
    }
    return samples
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source` (any of 127/8).
func tcpConnect(port: Int, from source: String = "127.0.0.1") throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket()") }
    func withAddress<T>(_ host: String, _ port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr(host)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
    guard withAddress(source, 0, { bind(fd, $0, $1) }) == 0,
        withAddress("127.0.0.1", port, { connect(fd, $0, $1) }) == 0
    else {
        let reason = String(cString: strerror(errno))
        close(fd)
        throw TestFailure("connect from \(source) to port \(port): \(reason)")
    }
    return fd
}

/// An HTTP GET over TCP to 127.0.0.1; the whole answer.
func tcpGet(port: Int, _ path: String) throws -> String {
    let fd = try tcpConnect(port: port)
    defer { close(fd) }
    let request = Array(httpRequest("GET", path))
    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var received = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        received += buffer[0..<n]
    }
    return String(decoding: received, as: UTF8.self)
}

@Suite("metrics and health", .serialized, .offPool)
struct MetricsProcessTests {
    static func body(_ answer: String) -> String {
        answer.range(of: "\r\n\r\n").map { String(answer[$0.upperBound...]) } ?? ""
    }

    @Test(
        "a scrape after a job: queue depth, jobs started and finished, durations, frames, models, requests; health and readiness"
    )
    func scrape() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let launched = Date()
        let daemon = try DaemonProcess(
            directory: dir, arguments: ["--metrics-listen", "127.0.0.1:0"], model: tinyPipeline())
        defer { daemon.stop() }
        let submitted = Date()
        let id = try daemon.client.post(
            "/v1/jobs", SubmitJobRequest(spec: JobSpec(length: 8, parameters: .init(seed: 5))),
            as: SubmitJobResponse.self
        ).job.id
        #expect(try waitForJob(daemon, id).state == .succeeded)
        _ = try? daemon.client.get("/v1/jobs/999", as: JobInfo.self)  // a 404 to count

        let asked = Date()
        let answer = try rawExchange(daemon.socket, httpRequest("GET", "/metrics"))
        let scraped = Date()
        #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer.prefix(300))")
        #expect(answer.contains("Content-Type: text/plain; version=0.0.4"))
        let samples = try parsePrometheus(Self.body(answer))
        func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
            samples.first { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }?
                .value
        }
        #expect(value("gridit_jobs", ["state": "succeeded"]) == 1)
        #expect(value("gridit_jobs", ["state": "queued"]) == 0)
        #expect(value("gridit_jobs_started_total") == 1)
        #expect(value("gridit_jobs_finished_total", ["outcome": "succeeded"]) == 1)
        #expect(value("gridit_job_duration_seconds_count", ["outcome": "succeeded"]) == 1)
        #expect((value("gridit_job_duration_seconds_sum", ["outcome": "succeeded"]) ?? 0) > 0)
        #expect(value("gridit_frames_total") == 8)
        #expect((value("gridit_stage_unit_duration_seconds_count", ["stage": "sr"]) ?? 0) >= 1)
        #expect((value("gridit_stage_unit_duration_seconds_count", ["stage": "grid"]) ?? 0) >= 1)
        // The 8 frames (still in the window) over the time it covers, at most the daemon's uptime at
        // the scrape: longer than since the submission, shorter than since the launch.
        let framesPerSecond = try #require(value("gridit_frames_per_second"))
        let (upAtMost, upAtLeast) = (scraped.timeIntervalSince(launched), asked.timeIntervalSince(submitted))
        let jobAndScrape = scraped.timeIntervalSince(submitted)
        #expect(jobAndScrape < 59, "the job and the scrape took \(jobAndScrape) s: the frames may have left the minute")
        #expect(
            framesPerSecond >= 8 / upAtMost && framesPerSecond <= 8 / upAtLeast,
            "\(framesPerSecond) frames/s, up between \(upAtLeast) and \(upAtMost) s")
        // The engine's work: the job's plan is well over a megaflop, all evaluated within the minute.
        let flops = try #require(value("gridit_engine_flops_total"))
        #expect(flops > 1e6, "\(flops)")
        let gflops = try #require(value("gridit_engine_gflops_per_second"))
        #expect(
            gflops > 0 && abs(gflops * 1e9 / flops - framesPerSecond / 8) <= 1e-6 * framesPerSecond,
            "\(gflops) GFLOP/s of \(flops) over the same time as the frames")
        #expect(value("gridit_models_loaded") == 1)
        #expect(value("gridit_model_resident_bytes", ["model": "tiny:latest"]) != nil)
        #expect(value("gridit_lease_renewals_total") != nil && value("gridit_lease_losses_total") == 0)
        #expect(
            (value("gridit_http_requests_total", ["route": "/v1/jobs/{id}", "method": "GET", "status": "200"]) ?? 0)
                >= 1)
        #expect(value("gridit_http_requests_total", ["route": "/v1/jobs/{id}", "method": "GET", "status": "404"]) == 1)
        #expect(value("gridit_http_requests_total", ["route": "/v1/jobs", "method": "POST", "status": "201"]) == 1)
        #expect(value("gridit_ready") == 1 && value("gridit_queue_paused") == 0)
        #expect(value("gridit_build_info", ["version": griditVersion]) == 1)

        let health = try rawExchange(daemon.socket, httpRequest("GET", "/healthz"))
        #expect(health.hasPrefix("HTTP/1.1 200") && health.contains("\"status\" : \"ok\""), "\(health)")
        #expect(try rawExchange(daemon.socket, httpRequest("GET", "/readyz")).hasPrefix("HTTP/1.1 200"))
        _ = try daemon.client.post("/v1/queue/pause", as: QueueStatus.self)
        let notReady = try rawExchange(daemon.socket, httpRequest("GET", "/readyz"))
        #expect(notReady.hasPrefix("HTTP/1.1 503") && notReady.contains("the queue is paused"), "\(notReady)")

        // The TCP listener: metrics and health only.
        let port = try #require(
            daemon.log.split(separator: "\n").first { $0.contains("metrics listener on 127.0.0.1:") }
                .flatMap { $0.split(separator: "metrics.port=").last }.flatMap { Int($0.prefix { $0.isNumber }) })
        let overTCP = try tcpGet(port: port, "/metrics")
        #expect(overTCP.hasPrefix("HTTP/1.1 200"))
        let tcpSamples = try parsePrometheus(Self.body(overTCP))
        #expect(tcpSamples.contains { $0.name == "gridit_queue_paused" && $0.value == 1 })
        #expect(try tcpGet(port: port, "/readyz").hasPrefix("HTTP/1.1 503"))
        let refused = try tcpGet(port: port, "/v1/status")
        #expect(refused.hasPrefix("HTTP/1.1 404") && refused.contains("only GET /metrics"), "\(refused)")
        #expect(try tcpGet(port: port, "/v1/jobs/\(id)").hasPrefix("HTTP/1.1 404"))
        #expect(daemon.stop() == 0)
    }

    @Test("the TCP listener budgets connections per address: one address holding many does not shut a scraper out")
    func perAddress() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, arguments: ["--metrics-listen", "127.0.0.1:0"])
        defer { daemon.stop() }
        let port = try #require(
            daemon.log.split(separator: "\n").first { $0.contains("metrics listener on 127.0.0.1:") }
                .flatMap { $0.split(separator: "metrics.port=").last }.flatMap { Int($0.prefix { $0.isNumber }) })
        // 40 idle connections from 127.0.0.2, more than one user's 32 on the socket: 8 are held,
        // the other 32 are answered 503 at once.
        let held = try (0..<40).map { _ in try tcpConnect(port: port, from: "127.0.0.2") }
        defer { held.forEach { close($0) } }
        var refusals: [String] = []
        let deadline = Date().addingTimeInterval(8)
        var pending = Set(held)
        while refusals.count < 32, Date() < deadline {
            for fd in pending {
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n > 0 {
                    refusals.append(String(decoding: buffer[0..<n], as: UTF8.self))
                    pending.remove(fd)
                }
            }
            usleep(10_000)
        }
        #expect(refusals.count == 32, "\(refusals.count) of 40 refused")
        #expect(
            refusals.allSatisfy {
                $0.hasPrefix("HTTP/1.1 503")
                    && $0.contains("127.0.0.2 has 8 connections open to griditd's metrics listener")
            }, "\(refusals.first ?? "")")
        let scrape = try tcpGet(port: port, "/metrics")
        #expect(scrape.hasPrefix("HTTP/1.1 200"), "\(scrape.prefix(300))")
        #expect(daemon.stop() == 0)
    }

    @Test("no TCP listener by default")
    func offByDefault() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir)
        defer { daemon.stop() }
        #expect(!daemon.log.contains("metrics listener"))
        let answer = try rawExchange(daemon.socket, httpRequest("GET", "/metrics"))
        #expect(
            try parsePrometheus(Self.body(answer)).contains { $0.name == "gridit_jobs_started_total" && $0.value == 0 })
        #expect(daemon.stop() == 0)
    }
}
