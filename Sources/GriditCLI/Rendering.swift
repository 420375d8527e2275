// Human output of griditctl: tables, durations, the progress bar. Pure functions (tested).

import Foundation
import GriditAPI
import GriditJobSpec

enum Rendering {
    /// "12s", "4m05s", "2h10m", "3d4h".
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
        if s < 86_400 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
        return "\(s / 86_400)d\((s % 86_400) / 3600)h"
    }

    /// "just now", "5 minutes ago", "2 days ago" (docker's wording).
    static func ago(_ date: Date, now: Date = Date()) -> String {
        let s = max(0, now.timeIntervalSince(date))
        func unit(_ n: Int, _ name: String) -> String { "\(n) \(name)\(n == 1 ? "" : "s") ago" }
        if s < 2 { return "just now" }
        if s < 60 { return unit(Int(s), "second") }
        if s < 3600 { return unit(Int(s / 60), "minute") }
        if s < 86_400 { return unit(Int(s / 3600), "hour") }
        return unit(Int(s / 86_400), "day")
    }

    /// The job's progress in a few characters: "grid 2 · 8/128 frames", or the live step.
    static func progress(_ job: JobInfo) -> String {
        if let live = job.progress.live {
            return "\(live.stage) \(live.grid)/\(live.grids) step \(live.step)/\(live.steps)"
        }
        switch job.state {
        case .succeeded: return "done"
        case .queued where job.progress.gridsDone == 0 && job.progress.framesDone == 0: return "-"
        case _ where job.progress.stage == .grid: return "grid \(job.progress.gridsDone) done"
        default:
            // Official mode writes K² + 2K·N frames, at times more than the length asked for.
            let done = job.progress.framesDone
            return done <= job.length ? "sr \(done)/\(job.length) frames" : "sr \(done) frames"
        }
    }

    /// "alice", or the uid where this machine has no name for it.
    static func owner(_ uid: UInt32, _ userName: (UInt32) -> String?) -> String { userName(uid) ?? String(uid) }

    static func jobsTable(_ jobs: [JobInfo], now: Date = Date(), userName: (UInt32) -> String? = { _ in nil }) -> String
    {
        renderTable(
            headers: ["id", "state", "progress", "position", "priority", "length", "owner", "created", "host"],
            rows: jobs.map { job in
                [
                    String(job.id),
                    job.state.rawValue + (job.cancelRequested && job.state == .running ? " (canceling)" : ""),
                    progress(job), job.queuePosition.map(String.init) ?? "-", String(job.priority), String(job.length),
                    owner(job.ownerUID, userName), ago(job.createdAt, now: now), host(job),
                ]
            })
    }

    /// The griditd host running the job (ran it last): its hostname, else its node id's start.
    static func host(_ job: JobInfo, long: Bool = false) -> String {
        guard let node = job.node else { return "-" }
        guard let host = job.host else { return String(node.prefix(8)) }
        return long ? "\(host) (node \(node))" : host
    }

    /// Every griditd host sharing the queue; `*` marks the one that answered.
    static func nodesTable(_ nodes: [NodeInfo], now: Date = Date()) -> String {
        renderTable(
            headers: ["node", "hostname", "version", "state", "last seen", "running"],
            rows: nodes.map { node in
                [
                    String(node.id.prefix(8)) + (node.current ? " *" : ""), node.hostname, node.version,
                    [
                        node.gone ? "gone" : node.draining ? "draining" : "up",
                        node.gone && node.draining ? "drained" : nil,
                    ]
                    .compactMap { $0 }.joined(separator: ", "),
                    // The database's count where given: this machine's clock may disagree with it.
                    ago(node.unseenSeconds.map { now.addingTimeInterval(-$0) } ?? node.lastSeen, now: now),
                    String(node.runningJobs),
                ]
            })
    }

    /// `tags`: the model tags that point at the job's version now.
    static func jobDetail(
        _ job: JobInfo, tags: [String] = [], userName: (UInt32) -> String? = { _ in nil }, now: Date = Date()
    ) -> String {
        // The tag asked for first, then the others that name the same version.
        let names = (job.spec.model.map { [$0] } ?? []) + tags.filter { $0 != job.spec.model }
        var lines: [(String, String)] = [
            ("ID", String(job.id)),
            ("State", job.state.rawValue + (job.cancelRequested && !job.state.isTerminal ? " (cancel requested)" : "")),
            ("Owner", userName(job.ownerUID).map { "\($0) (uid \(job.ownerUID))" } ?? "uid \(job.ownerUID)"),
            (
                "Model",
                (names.isEmpty ? "default" : names.joined(separator: ", "))
                    + (job.pipelineDigest.map { " (\($0))" } ?? "")
            ),
            ("Length", "\(job.length) frames"),
            ("Seed", job.spec.parameters.seed.map(String.init) ?? "-"),
        ]
        let params = parameterList(job.spec.parameters)
        if !params.isEmpty { lines.append(("Parameters", params)) }
        lines.append(("Priority", String(job.priority)))
        if job.node != nil { lines.append((job.state == .running ? "Host" : "Last host", host(job, long: true))) }
        if let position = job.queuePosition { lines.append(("Queue position", String(position))) }
        if let reason = job.waitingFor { lines.append(("Waiting for", reason)) }
        lines.append(("Progress", progress(job)))
        lines.append(
            (
                "Attempts",
                "\(job.attempt) of \(job.maxAttempts)" + (job.crashCount > 0 ? ", \(job.crashCount) crash(es)" : "")
            ))
        lines.append(("Created", "\(iso(job.createdAt)) (\(ago(job.createdAt, now: now)))"))
        if let started = job.startedAt { lines.append(("Started", iso(started))) }
        if let finished = job.finishedAt { lines.append(("Finished", iso(finished))) }
        if job.state == .retryable { lines.append(("Next attempt", iso(job.notBefore))) }
        if let output = job.outputDir {
            lines.append(("Output", output))
        } else if let name = job.spec.output {
            lines.append(("Output name", name))
        }
        if let key = job.idempotencyKey { lines.append(("Idempotency key", key)) }
        if let message = job.errorMessage { lines.append(("Error", "\(job.errorClass ?? "error"): \(message)")) }
        let width = lines.map(\.0.count).max() ?? 0
        var text =
            lines.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "   " + $0.1 }.joined(
                separator: "\n") + "\n"
        if let errors = job.errors, !errors.isEmpty {
            text += "\nErrors:\n"
            text += renderTable(
                headers: ["attempt", "at", "class", "message"],
                rows: errors.map { [String($0.attempt), iso($0.at), $0.errorClass, $0.message] })
        }
        return text
    }

    static func iso(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: date)
    }

    /// The parameters a job gave besides its seed, as `key=value` in the API's names and order
    /// ("cfg_interval=700:999 context=clean eta=0.5"): whatever `JobSpec.Parameters` holds, as it
    /// holds it, a list as its flag writes it.
    static func parameterList(_ parameters: JobSpec.Parameters) -> String {
        guard let object = try? JSONSerialization.jsonObject(with: APICoding.encode(parameters)) as? [String: Any]
        else {
            return ""
        }
        return object.keys.sorted().filter { $0 != "seed" }.map { key in
            if key == "no_sr" { return key }
            let value = object[key]!
            return "\(key)=" + ((value as? [Any])?.map { "\($0)" }.joined(separator: ":") ?? "\(value)")
        }.joined(separator: " ")
    }

    /// The one-line progress bar for a terminal of `width` columns:
    /// `job 12  sr  grid 3/8  step 40/250  frame 17/128  ETA 1m20s  [######----]`.
    static func progressLine(jobID: Int64, step: StepProgress, width: Int) -> String {
        var text =
            "job \(jobID)  \(step.stage)  grid \(step.grid)/\(step.grids)  step \(step.step)/\(step.steps)"
            + "  frame \(step.frame)/\(step.frames)"
        if let eta = step.etaSeconds { text += "  ETA \(duration(eta))" }
        let done = step.fraction ?? (step.frames > 0 ? Double(step.frame) / Double(step.frames) : 0)
        let barWidth = min(30, width - text.count - 4)
        if barWidth >= 10 {
            let filled = Int((done * Double(barWidth)).rounded(.down))
            text +=
                "  [" + String(repeating: "#", count: filled) + String(repeating: "-", count: barWidth - filled) + "]"
        }
        return String(text.prefix(max(0, width - 1)))
    }

    /// A plain line per state change, for logs and non-terminals.
    static func stateLine(_ job: JobInfo) -> String {
        var line = "job \(job.id) \(job.state.rawValue)"
        switch job.state {
        case .queued: if let p = job.queuePosition { line += " (position \(p))" }
        case .running: line += " (\(progress(job)))"
        case .retryable: line += ": \(job.errorMessage ?? "") (next attempt \(iso(job.notBefore)))"
        case .succeeded: if let out = job.outputDir { line += ": \(out)" }
        case .failed, .canceled, .dead: if let m = job.errorMessage { line += ": \(m)" }
        }
        return line
    }
}
