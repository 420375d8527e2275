// The rules a spec keeps whatever the pipeline: the one place they are written. Rules that need
// the pipeline (context rows below its k, a class for a class-conditional model, the length
// limit) are the engine's `RunSettings`, which applies these first.

import Foundation

extension JobSpec {
    /// Throws the first broken rule, naming the field and what it may be.
    public func validate() throws(JobSpecError) {
        guard length >= 1 else { throw JobSpecError("length must be at least 1 frame (got \(length))") }
        if let model, model.isEmpty || model.utf8.count > 300 {
            throw JobSpecError("model must be NAME:TAG, NAME@sha256:<hex> or sha256:<hex> (at most 300 bytes)")
        }
        if let output { try Self.validateOutput(output) }
        try parameters.validate()
    }

    /// A relative folder name below the output root: `name` or `a/b`, letters, digits, `.`, `_`,
    /// `-`; no `..`, no absolute path, at most 8 levels and 200 bytes.
    /// Folder levels an output name may have ("cats/run-1" has 2).
    public static let maxOutputLevels = 8

    static func validateOutput(_ output: String) throws(JobSpecError) {
        let hint = "output must be a folder name relative to griditd's output root, like 'run-1' or 'cats/run-1'"
        guard !output.isEmpty, output.utf8.count <= 200 else { throw JobSpecError("\(hint) (1 to 200 bytes)") }
        guard !output.hasPrefix("/") else {
            throw JobSpecError(
                "\(hint); '\(output.prefix(60))' is an absolute path. Use `griditctl submit --out DIR` to copy the frames to a folder of yours"
            )
        }
        let components = output.split(separator: "/", omittingEmptySubsequences: false)
        guard components.count <= maxOutputLevels else {
            throw JobSpecError("\(hint) (at most \(maxOutputLevels) levels)")
        }
        for c in components {
            if c == ".." || c == "." {
                throw JobSpecError("\(hint); '..' and '.' are not allowed (got '\(output.prefix(60))')")
            }
            let allowed = c.allSatisfy { ch in
                ch.isASCII && (ch.isLetter || ch.isNumber || ch == "." || ch == "_" || ch == "-")
            }
            guard !c.isEmpty, allowed, !c.hasPrefix(".") else {
                throw JobSpecError(
                    "\(hint); '\(c.prefix(60))' has characters outside A-Z a-z 0-9 . _ - or starts with '.'")
            }
        }
    }
}

extension JobSpec.Parameters {
    public func validate() throws(JobSpecError) {
        for (name, value) in [("steps", steps), ("sr_steps", srSteps)] {
            if let value { try Self.validateSteps(value, name: name) }
        }
        if let t = srTemperature, !(t.isFinite && t >= 0 && t <= 1) {
            throw JobSpecError(
                "sr_temperature must be in 0...1 (got \(t)); 1 samples stage 2 as trained, lower values flicker less (--sr-temperature)"
            )
        }
        if let eta, !(eta.isFinite && eta >= 0 && eta <= 1) {
            throw JobSpecError("eta must be in 0...1 (got \(eta)); use a DDIM η in 0...1 (--eta)")
        }
        if let rows = contextRows, !(0...64).contains(rows) {
            throw JobSpecError("context_rows must be between 0 and 64 (got \(rows))")
        }
        if let precision,
            precision.isEmpty || precision.utf8.count > 32
                || !precision.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" })
        {
            throw JobSpecError("precision '\(precision.prefix(40))' is not a valid name")
        }
        if let n = jumpLength, !(1...10_000).contains(n) {
            throw JobSpecError("jump_length must be 1...10000 (got \(n))")
        }
        if let n = jumpCount, !(1...50).contains(n) {
            throw JobSpecError("jump_count is \(n); use 1 (no resampling) ... 50 passes")
        }
        if let label = classLabel, label < 0 { throw JobSpecError("class_label must be 0 or more (got \(label))") }
        if let scale = cfgScale, !(0...Self.maxCFGScale).contains(scale) {
            throw JobSpecError(
                "cfg_scale is \(scale); use a scale from 0 to \(Int(Self.maxCFGScale)) (1 = no guidance)")
        }
        try cfgInterval?.validate()
    }

    /// The largest guidance scale: far above any useful one, and small enough that the guided
    /// prediction stays finite in float32.
    public static let maxCFGScale = 100.0

    /// "250", "ddim50", a diffusers spacing ("trailing20", "linspace20", "leading20") or section
    /// counts ("10,20,30"), each 1...10000 steps. Whether they fit the 1000 training steps is the
    /// diffusion's to say.
    static func validateSteps(_ value: String, name: String) throws(JobSpecError) {
        let prefix = ["ddim", "linspace", "leading", "trailing"].first { value.hasPrefix($0) } ?? ""
        let counts = value.dropFirst(prefix.count).split(separator: ",", omittingEmptySubsequences: false)
        guard counts.count <= (prefix.isEmpty ? 1000 : 1),
            counts.allSatisfy({ Int($0).map { (1...10_000).contains($0) } ?? false })
        else {
            throw JobSpecError(
                "\(name) '\(value.prefix(40))': \(name) must be a step count 1...10000, ddimN or trailingN")
        }
    }
}
