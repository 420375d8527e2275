// The daemon's view of a job row: what it stores in the store's opaque `params` JSON, and the
// mapping to the API's `JobInfo`.
import Foundation
import GriditAPI
import GriditStore

/// The `params` column: everything about a job the store does not interpret.
struct StoredParameters: Codable, Hashable, Sendable {
    /// The reference as submitted (nil: the default model).
    var model: String?
    /// With the seed filled in at submit.
    var parameters: GenerationParameters
    /// Output folder name the submitter chose (below its own folder of `outputs/named/`); nil
    /// means the automatic `job-<id>`.
    var output: String?
    /// The caller gave the seed (a retry of an idempotent submit without one matches any seed).
    var seedGiven: Bool

    enum CodingKeys: String, CodingKey {
        case model, parameters, output
        case seedGiven = "seed_given"
    }

    var json: String { String(decoding: APICoding.encode(self), as: UTF8.self) }

    static func decode(_ job: Job) -> StoredParameters {
        (try? APICoding.decoder().decode(StoredParameters.self, from: Data(job.params.utf8)))
            ?? StoredParameters(model: nil, parameters: GenerationParameters(), output: nil, seedGiven: false)
    }

    /// Whether a repeated submit with the same idempotency key asks for the same job.
    func matches(_ request: SubmitJobRequest, length: Int, jobLength: Int) -> Bool {
        var theirs = request.parameters
        if theirs.seed == nil { theirs.seed = parameters.seed }
        return length == jobLength && request.model == model && request.output == output && theirs == parameters
    }
}

extension Job {
    var stored: StoredParameters { StoredParameters.decode(self) }

    /// Where the job's output goes (`StateLayout.outputs`).
    func outputDirectory(in layout: StateLayout) -> String {
        stored.output.map { layout.namedOutputDirectory(owner: ownerUID, name: $0) } ?? layout.automaticOutputDirectory(job: id)
    }

    func info(live: StepProgress? = nil, errors: [JobErrorRecord]? = nil) -> JobInfo {
        let stored = self.stored
        return JobInfo(
            id: id, state: JobStateName(rawValue: state.rawValue) ?? .failed, ownerUID: ownerUID, priority: priority,
            length: length, model: stored.model, pipelineDigest: pipelineDigest, parameters: stored.parameters,
            output: stored.output, idempotencyKey: idempotencyKey, createdAt: createdAt, updatedAt: updatedAt,
            startedAt: startedAt, finishedAt: finishedAt, attempt: attempt, maxAttempts: maxAttempts,
            crashCount: crashCount, cancelRequested: cancelRequested, queuePosition: queuePosition,
            notBefore: notBefore,
            progress: JobProgressInfo(
                stage: progress.stage.rawValue, gridsDone: progress.gridsDone, framesDone: progress.framesDone,
                live: state == .running ? live : nil),
            errorClass: errorClass, errorMessage: errorMessage, outputDir: outputDir,
            errors: errors?.map {
                JobErrorInfo(attempt: $0.attempt, at: $0.at, errorClass: $0.errorClass, message: $0.message)
            })
    }
}

extension JobProgress {
    init(_ info: JobProgressInfo) {
        self.init(stage: Stage(rawValue: info.stage) ?? .grid, gridsDone: info.gridsDone, framesDone: info.framesDone)
    }

    var info: JobProgressInfo {
        JobProgressInfo(stage: stage.rawValue, gridsDone: gridsDone, framesDone: framesDone)
    }
}

/// Checks of a submit that need no engine: ranges, names, the output path.
enum SubmitValidation {
    static let maxAttempts = 20

    static func validate(_ request: SubmitJobRequest, maxLength: Int) throws(APIError) {
        guard request.length >= 1 else {
            throw APIError(.badRequest, "length must be at least 1 frame (got \(request.length))")
        }
        guard request.length <= maxLength else {
            throw APIError(.badRequest, "length \(request.length) is more than this griditd allows (max \(maxLength) frames)")
        }
        let priorities = DaemonConfiguration.priorities
        if let p = request.priority, !priorities.contains(p) {
            throw APIError(.badRequest, "priority must be between \(priorities.lowerBound) and \(priorities.upperBound) (got \(p))")
        }
        if let a = request.maxAttempts, !(1...maxAttempts).contains(a) {
            throw APIError(.badRequest, "max_attempts must be between 1 and \(maxAttempts) (got \(a))")
        }
        if let key = request.idempotencyKey, key.isEmpty || key.utf8.count > 200 || key.contains(where: \.isNewline) {
            throw APIError(.badRequest, "idempotency_key must be 1 to 200 bytes on one line")
        }
        if let model = request.model, model.isEmpty || model.utf8.count > 300 {
            throw APIError(.badRequest, "model must be NAME:TAG, NAME@sha256:<hex> or sha256:<hex> (at most 300 bytes)")
        }
        if let output = request.output { try validateOutput(output) }
        let p = request.parameters
        for (name, value) in [("steps", p.steps), ("sr_steps", p.srSteps)] {
            if let value { try validateSteps(value, name: name) }
        }
        if let eta = p.eta, !(eta.isFinite && eta >= 0 && eta <= 1) {
            throw APIError(.badRequest, "eta must be between 0 and 1 (got \(eta))")
        }
        if let rows = p.contextRows, !(0...64).contains(rows) {
            throw APIError(.badRequest, "context_rows must be between 0 and 64 (got \(rows))")
        }
        for (name, value) in [("mode", p.mode), ("sampler", p.sampler), ("sr_sampler", p.srSampler), ("precision", p.precision),
                              ("context", p.context)] {
            if let value, value.isEmpty || value.utf8.count > 32 || !value.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) {
                throw APIError(.badRequest, "\(name) '\(value.prefix(40))' is not a valid name")
            }
        }
    }

    /// "250", "ddim50" or a diffusers spacing ("trailing20", "linspace20", "leading20"), 1...10000 steps.
    static func validateSteps(_ value: String, name: String) throws(APIError) {
        let prefix = ["ddim", "linspace", "leading", "trailing"].first { value.hasPrefix($0) } ?? ""
        guard let n = Int(value.dropFirst(prefix.count)), (1...10_000).contains(n) else {
            throw APIError(.badRequest, "\(name) must be a step count 1...10000, ddimN or trailingN (got '\(value.prefix(40))')")
        }
    }

    /// A relative folder name below the output root: `name` or `a/b`, letters, digits, `.`, `_`,
    /// `-`; no `..`, no absolute path, at most 8 levels and 200 bytes.
    static func validateOutput(_ output: String) throws(APIError) {
        let hint = "output must be a folder name relative to griditd's output root, like 'run-1' or 'cats/run-1'"
        guard !output.isEmpty, output.utf8.count <= 200 else {
            throw APIError(.badRequest, "\(hint) (1 to 200 bytes)")
        }
        guard !output.hasPrefix("/") else {
            throw APIError(.badRequest, "\(hint); '\(output.prefix(60))' is an absolute path. Use `griditctl submit --out DIR` to copy the frames to a folder of yours")
        }
        let components = output.split(separator: "/", omittingEmptySubsequences: false)
        guard components.count <= 8 else { throw APIError(.badRequest, "\(hint) (at most 8 levels)") }
        for c in components {
            if c == ".." || c == "." {
                throw APIError(.badRequest, "\(hint); '..' and '.' are not allowed (got '\(output.prefix(60))')")
            }
            let allowed = c.allSatisfy { ch in ch.isASCII && (ch.isLetter || ch.isNumber || ch == "." || ch == "_" || ch == "-") }
            guard !c.isEmpty, allowed, !c.hasPrefix(".") else {
                throw APIError(.badRequest, "\(hint); '\(c.prefix(60))' has characters outside A-Z a-z 0-9 . _ - or starts with '.'")
            }
        }
    }
}
