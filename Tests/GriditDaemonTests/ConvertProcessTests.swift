// `griditctl models convert` against a real griditd over its socket: the conversion the offline
// `griditd models convert` runs, as a route (admins), idempotent, with a job run on its result;
// and the refusals, each naming the problem and the fix.

import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing

@Suite("models convert over the socket", .serialized, .offPool)
struct ConvertProcessTests {
    @Test("griditctl models convert: a new bf16 version that lists, runs a job and converts again to the same digest")
    func convertOverTheSocket() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        func run(_ args: [String]) throws -> ProcessResult { try UploadProcessTests.griditctl(daemon, args) }
        func decode(_ result: ProcessResult) throws -> ModelImportResult {
            try APICoding.decoder().decode(ModelImportResult.self, from: Data(result.stdout.utf8))
        }

        let converted = try run(["models", "convert", "tiny:latest", "--precision", "bf16", "--json"])
        #expect(converted.status == 0, "\(converted.stderr)")
        let first = try decode(converted)
        #expect(first.reference == "tiny:latest-bf16")
        let source = try daemon.client.get("/v1/models/tiny:latest", as: ModelShowEnvelope.self).result.digest
        #expect(first.digest != source)

        // Idempotent: the same source converted again, under the default tag or another, is the same version.
        let again = try run(["models", "convert", "tiny:latest", "--precision", "bf16"])
        #expect(again.status == 0 && again.stdout.contains("tiny:latest-bf16 -> \(first.digest)"), "\(again.stdout)")
        let tagged = try run([
            "models", "convert", "tiny:latest", "--precision", "bf16", "--tag", "tiny:small", "--json",
        ])
        #expect(tagged.status == 0, "\(tagged.stderr)")
        #expect(try decode(tagged).digest == first.digest && decode(tagged).reference == "tiny:small")

        let list = try run(["models", "list"])
        #expect(list.stdout.contains("latest-bf16") && list.stdout.contains("small"), "\(list.stdout)")

        // A job on the converted version runs (in bf16, its default) and records its digest.
        let submitted = try run(["submit", "--length", "4", "--seed", "3", "--model", "tiny:small", "--json"])
        #expect(submitted.status == 0, "\(submitted.stderr)")
        let job = try APICoding.decoder().decode(SubmitJobResponse.self, from: Data(submitted.stdout.utf8)).job
        #expect(job.pipelineDigest == first.digest)
        #expect(try waitForJob(daemon, job.id).state == .succeeded)
        #expect(daemon.stop() == 0)
    }

    @Test("unknown version, already bf16, unknown precision: refused with the problem and the fix, store unchanged")
    func refusals() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        func run(_ args: [String]) throws -> ProcessResult { try UploadProcessTests.griditctl(daemon, args) }
        let before = try run(["models", "list", "--json"]).stdout

        let unknown = try run(["models", "convert", "nope:v1", "--precision", "bf16"])
        #expect(unknown.status != 0 && unknown.stderr.contains("no model nope:v1"), "\(unknown.stderr)")
        #expect(unknown.stderr.contains("models list"), "the fix: \(unknown.stderr)")
        let unknownJSON = try run(["models", "convert", "nope:v1", "--precision", "bf16", "--json"])
        #expect(
            try APICoding.decoder().decode(ErrorResponse.self, from: Data(unknownJSON.stdout.utf8)).error.code
                == .notFound)

        let precision = try run(["models", "convert", "tiny:latest", "--precision", "fp16"])
        #expect(precision.status != 0 && precision.stderr.contains("unknown precision 'fp16'"), "\(precision.stderr)")
        #expect(precision.stderr.contains("convert to one of: bf16"), "\(precision.stderr)")

        let unnamed = try run(["models", "convert", "tiny:latest", "--precision", "bf16", "--json"])
        let digest = try APICoding.decoder().decode(ModelImportResult.self, from: Data(unnamed.stdout.utf8)).digest
        let twice = try run(["models", "convert", "\(digest)", "--precision", "bf16", "--tag", "tiny:twice"])
        #expect(
            twice.status != 0 && twice.stderr.contains("already stores its weights in bf16"), "\(twice.stderr)")
        #expect(twice.stderr.contains("models tag"), "the fix: \(twice.stderr)")
        let noName = try run(["models", "convert", "\(digest)", "--precision", "bf16"])
        #expect(noName.status != 0 && noName.stderr.contains("--tag NAME:TAG"), "\(noName.stderr)")

        let after = try run(["models", "list", "--json"]).stdout
        #expect(!after.contains("twice") && after != before)
        #expect(daemon.stop() == 0)
    }
}
