// The daemon's view of a job row: the spec it stores in the job queue's opaque `params` column,
// and the mapping to the API's `JobInfo`.

import Foundation
import GriditAPI
import GriditJobQueue
import GriditJobSpec

extension JobSpec {
    /// The `params` column: the spec's JSON as it is.
    var storedJSON: String { String(decoding: APICoding.encode(self), as: UTF8.self) }

    /// The spec a row stores. Rows written before `JobSpec` (gridit 0.1) hold
    /// `{"model", "parameters", "output", "seed_given"}`, the length in its own column only: the
    /// spec's layout but for `length`, which comes from the column (`seed_given` was never read).
    /// Anything that does not decode is an error: a job never runs on parameters it did not ask for.
    init(storedJSON params: String, length: Int) throws(StoredJobError) {
        struct Layout: Decodable { var length: Int? }
        struct Legacy: Decodable {
            var model: String?
            var output: String?
            var parameters: JobSpec.Parameters
        }
        let data = Data(params.utf8)
        do {
            let decoder = APICoding.decoder()
            if try decoder.decode(Layout.self, from: data).length != nil {
                self = try decoder.decode(JobSpec.self, from: data)
            } else {
                let legacy = try decoder.decode(Legacy.self, from: data)
                self.init(length: length, model: legacy.model, output: legacy.output, parameters: legacy.parameters)
            }
        } catch {
            throw StoredJobError("its stored spec does not decode (\(error)): \(params.prefix(200))")
        }
    }

    /// Whether a repeated submit with the same idempotency key asks for this job: the same spec,
    /// where a repeat without a seed matches the seed the daemon picked.
    func matches(_ repeated: JobSpec) -> Bool {
        var theirs = repeated
        if theirs.parameters.seed == nil { theirs.parameters.seed = parameters.seed }
        return theirs == self
    }
}

/// A job row the daemon cannot read (a stored spec that does not decode).
struct StoredJobError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

extension Job {
    /// The job's spec (see `JobSpec.init(storedJSON:length:)`).
    func spec() throws(StoredJobError) -> JobSpec {
        do {
            return try JobSpec(storedJSON: params, length: length)
        } catch {
            throw StoredJobError("job \(id): \(error.message)")
        }
    }

    func info(live: StepProgress? = nil, errors: [JobErrorRecord]? = nil) throws(StoredJobError) -> JobInfo {
        var progress = self.progress
        progress.live = state == .running ? live : nil
        return JobInfo(
            id: id, state: state, ownerUID: ownerUID, priority: priority, spec: try spec(),
            pipelineDigest: pipelineDigest, idempotencyKey: idempotencyKey, createdAt: createdAt, updatedAt: updatedAt,
            startedAt: startedAt, finishedAt: finishedAt, attempt: attempt, maxAttempts: maxAttempts,
            crashCount: crashCount, cancelRequested: cancelRequested, queuePosition: queuePosition,
            notBefore: notBefore, progress: progress, errorClass: errorClass, errorMessage: errorMessage,
            outputDir: outputDir,
            errors: errors?.map {
                JobErrorInfo(attempt: $0.attempt, at: $0.at, errorClass: $0.errorClass, message: $0.message)
            })
    }
}

/// Checks of a submit that need no engine.
enum SubmitValidation {
    static let maxAttempts = 20

    /// The spec's own rules (`JobSpec.validate`), this griditd's length limit, and the queue's fields.
    static func validate(_ request: SubmitJobRequest, maxLength: Int) throws(APIError) {
        do { try request.spec.validate() } catch { throw APIError(.badRequest, error.message) }
        guard request.spec.length <= maxLength else {
            throw APIError(
                .badRequest, "length \(request.spec.length) is more than this griditd allows (max \(maxLength) frames)")
        }
        let priorities = DaemonConfiguration.priorities
        if let p = request.priority, !priorities.contains(p) {
            throw APIError(
                .badRequest, "priority must be between \(priorities.lowerBound) and \(priorities.upperBound) (got \(p))"
            )
        }
        if let a = request.maxAttempts, !(1...maxAttempts).contains(a) {
            throw APIError(.badRequest, "max_attempts must be between 1 and \(maxAttempts) (got \(a))")
        }
        if let key = request.idempotencyKey, key.isEmpty || key.utf8.count > 200 || key.contains(where: \.isNewline) {
            throw APIError(.badRequest, "idempotency_key must be 1 to 200 bytes on one line")
        }
    }
}
