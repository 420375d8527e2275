// Human output of the model commands (the same for `griditd models` and `griditctl models`).
// Scripts use `--json`; this text is for people and may change.

import Foundation
import GriditJobSpec

/// `3f2a9c1e0b4d` from `sha256:3f2a9c1e0b4d…`.
public func shortDigest(_ digest: String) -> String {
    String((digest.hasPrefix("sha256:") ? digest.dropFirst(7) : Substring(digest)).prefix(12))
}

extension ModelListResult {
    public func render(now: Date = Date()) -> String {
        guard !models.isEmpty else { return "No models. Add one with `models import PATH --name NAME:TAG`.\n" }
        let site = models.contains { $0.root != nil }
        var headers = ["name", "tag", "digest", "size", "created", "loaded", "jobs"]
        if site { headers.append("root") }
        return renderTable(
            headers: headers,
            rows: models.map { m in
                var row = [
                    m.name ?? "<none>", m.tag ?? "<none>", shortDigest(m.digest), formatBytes(m.size),
                    formatAge(m.created.date, now: now), m.loaded ? "yes" : "no", String(m.jobs),
                ]
                if site { row.append(m.root ?? "local") }
                return row
            })
    }
}

extension ModelShowResult {
    public func render(now: Date = Date()) -> String {
        var out = ""
        func line(_ key: String, _ value: String) {
            out += (key + ":").padding(toLength: 10, withPad: " ", startingAt: 0) + value + "\n"
        }
        line("Digest", digest)
        line(
            "Tags",
            references.isEmpty
                ? "(none: gc removes this version unless a job pins it)" : references.joined(separator: ", "))
        line("Created", "\(created) (\(formatAge(created.date, now: now)))")
        line("Size", formatBytes(size))
        if let root { line("Root", "\(root) (read-only site root)") }
        if let source { line("Source", source) }
        line("Loaded", loaded ? "yes" : "no")
        line(
            "Jobs", jobs.isEmpty ? "none" : "\(jobs.count) live (ids \(jobs.map(String.init).joined(separator: ", ")))")
        if let p = manifest["pipeline"] {
            var parts: [String] = []
            if let g = p["grid"], case .integer(let k)? = g["k"], case .integer(let f)? = g["frame_size"],
                case .integer(let c)? = g["channels"]
            {
                parts.append("\(k)×\(k) grids of \(f)×\(f) frames, \(c) channel\(c == 1 ? "" : "s")")
            }
            if case .integer(let scale)? = p["stage2"]?["scale"] { parts.append("×\(scale) super-resolution") }
            parts.append(p["vae"].map { $0 == .null ? "pixel space" : "latent (VAE)" } ?? "pixel space")
            line("Pipeline", parts.joined(separator: ", "))
            if let d = p["defaults"], case .object(let o) = d {
                line(
                    "Defaults",
                    o.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.scalar($0.value))" }.joined(separator: " "))
            }
        }
        out +=
            "\n"
            + renderTable(
                headers: ["role", "digest", "size", "media type", "path"],
                rows: blobs.map { b in
                    [b.role, shortDigest(b.digest), formatBytes(b.size), b.mediaType, b.path ?? "-"]
                })
        for (role, config) in configs.sorted(by: { $0.key < $1.key }) {
            if case .object(let o) = config {
                out +=
                    "\n\(role): "
                    + o.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.scalar($0.value))" }.joined(separator: " ")
                    + "\n"
            }
        }
        if !history.isEmpty {
            out +=
                "\n"
                + renderTable(
                    headers: ["when", "tag", "action", "digest", "previous"],
                    rows: history.map { e in
                        [
                            e.at.description, e.reference, e.action, e.digest.map(shortDigest) ?? "-",
                            e.previous.map(shortDigest) ?? "-",
                        ]
                    })
        }
        return out
    }

    static func scalar(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .bool(let b): return String(b)
        case .integer(let i): return String(i)
        case .number(let d): return String(d)
        case .string(let s): return s
        case .array(let a): return "[" + a.map(scalar).joined(separator: ",") + "]"
        case .object: return "{…}"
        }
    }
}

extension ModelImportResult {
    public func render() -> String {
        let counts = Dictionary(grouping: blobs.compactMap(\.stored), by: { $0 }).mapValues(\.count)
        let how = counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        var out = "Imported \(reference) -> \(digest)\n"
        out += "  \(formatBytes(size)) in \(blobs.count) blobs (\(how)); \(formatBytes(bytesWritten)) written\n"
        if let previous, previous != digest { out += "  \(reference) pointed at \(previous) before\n" }
        if previous == digest { out += "  \(reference) already pointed at this version\n" }
        if let published { out += "  published to the model origin \(published): every host pulls it from there\n" }
        for w in warnings { out += "warning: \(w)\n" }
        return out
    }
}

extension ModelTagResult {
    public func render() -> String {
        var out = "Tagged \(reference) -> \(digest)\n"
        if let previous, previous != digest { out += "  (it pointed at \(previous) before)\n" }
        return out
    }
}

extension ModelRemoveResult {
    public func render() -> String {
        var out = "Untagged \(removed.joined(separator: ", ")) (\(digest))\n"
        if !remaining.isEmpty { out += "  still tagged \(remaining.joined(separator: ", "))\n" }
        if jobs > 0 {
            out +=
                "  \(jobs) live job\(jobs == 1 ? "" : "s") still use\(jobs == 1 ? "s" : "") it; gc keeps its blobs until they finish\n"
        }
        if remaining.isEmpty && jobs == 0 { out += "  its blobs stay until `models gc`\n" }
        return out
    }
}

extension ModelVerifyResult {
    public func render() -> String {
        var out = renderTable(
            headers: ["digest", "status", "size", "used by"],
            rows: entries.map { e in
                [
                    shortDigest(e.digest), e.status.rawValue, e.size.map(formatBytes) ?? "-",
                    e.usedBy.isEmpty ? "(unreferenced)" : e.usedBy.joined(separator: "; "),
                ]
            })
        for e in entries where e.status != .ok { out += "\(e.status.rawValue): \(e.digest): \(e.message ?? "")\n" }
        let bad = entries.filter { $0.status != .ok }.count
        out +=
            "\(entries.count) blob\(entries.count == 1 ? "" : "s") checked, \(formatBytes(bytesHashed)) hashed: "
            + (bad == 0 ? "all intact\n" : "\(bad) bad\n")
        return out
    }
}

extension ModelGCResult {
    public func render() -> String {
        let verb = dryRun ? "Would delete" : "Deleted"
        var out =
            "\(verb) \(removedBlobs.count) blob\(removedBlobs.count == 1 ? "" : "s"), "
            + "\(removedManifests.count) untagged version\(removedManifests.count == 1 ? "" : "s") and "
            + "\(removedTemporary.count) temporary file\(removedTemporary.count == 1 ? "" : "s"): \(formatBytes(freedBytes))"
            + (dryRun ? " would be freed\n" : " freed\n")
        for d in removedManifests { out += "  version \(d)\n" }
        for p in removedTemporary { out += "  temporary \(p)\n" }
        if !keptMapped.isEmpty { out += "Kept \(keptMapped.count) unreferenced blob(s) that are mapped right now\n" }
        return out
    }
}

extension ModelExportResult {
    public func render() -> String {
        "Exported \(references.isEmpty ? digest : references.joined(separator: ", ")) (\(digest)) to \(path)"
            + (path == "-" ? "" : " (\(formatBytes(size)), \(blobs) blobs)") + "\n"
    }
}

extension ModelPSResult {
    public func render(now: Date = Date()) -> String {
        guard !entries.isEmpty else { return "No models are mapped.\n" }
        return renderTable(
            headers: ["name", "key", "size", "resident", "leases", "until"],
            rows: entries.map { e in
                let until: String
                if let expires = e.expiresAt {
                    let s = max(0, Int(expires.date.timeIntervalSince(now)))
                    until = s >= 60 ? "\(s / 60) min" : "\(s) s"
                } else {
                    until = e.pid != nil ? "-" : (e.leases > 0 ? "in use" : "-")
                }
                return [
                    e.references.first ?? "-", e.key.hasPrefix("sha256:") ? shortDigest(e.key) : e.key,
                    formatBytes(e.size),
                    formatBytes(e.resident), String(e.leases), until,
                ]
            })
    }
}

extension ModelStoreCheckResult {
    public func render() -> String {
        var out = ""
        for c in checks {
            out += "[\(c.status.rawValue)] \(c.name): \(c.message)\n"
            if let fix = c.fix, c.status != .ok { out += "    fix: \(fix)\n" }
        }
        return out
    }
}
