import Foundation
import GriditAPI
import GriditDaemon
import GriditDiffusion
import GriditEngine
import GriditJobSpec
import GriditModelStore
import GriditTensor
import GriditTestSupport
import Synchronization
import Testing

@testable import GriditBackend

// The engine and model store adapters on a real state directory: a real SQLite file, the model
// store's blobs and mappings, the engine running the tiny random-weight pipeline.
#if canImport(Glibc)
import Glibc
#endif

@Suite("engine engine", .serialized)
struct InProcessEngineTests {
    @Test("submits are checked against the pipeline: bad parameters and missing models fail with their class")
    func validation() async throws {
        let h = try Harness()
        // The estimate (what the per-user work limit adds up) grows with the frames and the steps.
        func spec(_ length: Int, _ parameters: JobSpec.Parameters = .init(seed: 1)) -> JobSpec {
            JobSpec(length: length, parameters: parameters)
        }
        let estimate = try await h.engine.validate(spec(40), pipelineDigest: h.digest)
        #expect(estimate > 0)
        let longer = try await h.engine.validate(spec(400), pipelineDigest: h.digest)
        #expect(longer > 5 * estimate, "\(estimate) s for 40 frames, \(longer) s for 400")
        let slower = try await h.engine.validate(
            spec(40, .init(seed: 1, steps: "1000", srSteps: "1000")), pipelineDigest: h.digest)
        #expect(slower > 5 * estimate, "\(estimate) s at the default steps, \(slower) s at 1000")
        func failure(_ spec: JobSpec, digest: String?) async -> JobFailure? {
            do {
                _ = try await h.engine.validate(spec, pipelineDigest: digest)
                return nil
            } catch {
                return error
            }
        }
        let rows = await failure(spec(40, .init(seed: 1, contextRows: 9)), digest: h.digest)
        #expect(
            rows?.errorClass == .invalidInput && rows?.message.contains("context_rows") == true,
            "\(String(describing: rows))")
        // A sampler name outside the set does not make a spec at all: decoding it fails, naming the set.
        let euler = #"{"length": 40, "parameters": {"seed": 1, "sampler": "euler"}}"#
        let sampler = #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(JobSpec.self, from: Data(euler.utf8))
        }
        #expect("\(String(describing: sampler))".contains("sampler 'euler' is not ddpm or ddim"))
        let long = await failure(spec(5000), digest: h.digest)
        #expect(long?.errorClass == .invalidInput, "the pipeline allows 1000 frames: \(String(describing: long))")
        #expect(await failure(spec(40), digest: nil)?.errorClass == .modelMissing)
        let unknown = "sha256:" + String(repeating: "ab", count: 32)
        #expect(await failure(spec(40), digest: unknown)?.errorClass == .modelMissing)
    }

    @Test("jobs batched together, one joining midway, write the same bytes as each run alone")
    func batchedMatchesSolo() throws {
        let batched = try Harness()
        let recorder = batched.run(
            [batched.item(1, length: 20, seed: 1), batched.item(2, length: 36, seed: 2)],
            joining: [batched.item(3, length: 20, seed: 3)])
        #expect(recorder.outcomes == [1: [.succeeded], 2: [.succeeded], 3: [.succeeded]])
        let solo = try Harness()
        for (id, length, seed) in [(Int64(1), 20, UInt64(1)), (2, 36, 2), (3, 20, 3)] {
            #expect(solo.run([solo.item(id, length: length, seed: seed)]).outcomes == [id: [.succeeded]])
            let frames = try batched.frameDigests(id)
            #expect(frames.count == length)
            #expect(frames == (try solo.frameDigests(id)), "job \(id): batching changed its frames")
        }
        // Progress: durable units in order up to the whole plan; steps within their totals.
        let durable = recorder.durable(2)
        #expect(durable.last?.framesDone == 36 && durable.last?.stage == .sr)
        #expect(
            zip(durable, durable.dropFirst()).allSatisfy {
                $0.framesDone <= $1.framesDone && $0.gridsDone <= $1.gridsDone
            })
        let steps = recorder.steps(2)
        #expect(steps.contains { $0.stage == .grid } && steps.contains { $0.stage == .sr })
        #expect(
            steps.allSatisfy { s in
                s.grid >= 0 && s.grid <= s.grids && s.frame <= s.frames && s.step <= s.steps
                    && (s.fraction ?? -1) >= 0 && (s.fraction ?? 2) <= 1
            })
        #expect(batched.cache.keys == [batched.digest], "the pipeline stays loaded for the next job")
    }

    @Test("jobs of one model in other precisions run as batches of their own, each on its own loaded pipeline")
    func precisionsSplitTheBatch() async throws {
        let bf16 = Precision.bf16.effective  // fp32 on CPUs without AVX512_BF16
        let mixed = try Harness()
        let recorder = mixed.run(
            [mixed.item(1, length: 20, seed: 1), mixed.item(2, length: 20, seed: 2, precision: "bf16")],
            joining: [mixed.item(3, length: 20, seed: 3, precision: "bf16")])
        #expect(recorder.outcomes == [1: [.succeeded], 2: [.succeeded], 3: [.succeeded]])
        #expect(try mixed.summary(1).settings.precisionUsed == "fp32")
        for id: Int64 in [2, 3] {
            #expect(try mixed.summary(id).settings.precisionUsed == bf16.rawValue)
            #expect(try mixed.summary(id).settings.precisionRequested == "bf16")
        }
        let digest: String = mixed.digest
        let keys = bf16 == .bf16 ? [digest, digest + "+bf16"] : [digest]
        #expect(mixed.cache.keys == keys.sorted())
        // Listed (status, metrics) by the version's digest and names, each copy with its precision.
        let loaded = await mixed.catalog.loadedModels().map { "\($0.names) \($0.digest) \($0.precision ?? "-")" }
        let precisions = bf16 == .bf16 ? ["fp32", "bf16"] : ["fp32"]
        #expect(Set(loaded) == Set(precisions.map { "[\"tiny:latest\"] \(digest) \($0)" }), "\(loaded)")
        // Each job's bytes are those of the job run alone.
        let solo = try Harness()
        #expect(solo.run([solo.item(3, length: 20, seed: 3, precision: "bf16")]).outcomes == [3: [.succeeded]])
        #expect(try mixed.frameDigests(3) == solo.frameDigests(3))
    }

    @Test(
        "a job waiting behind another precision's batch is kept alive, a stop ends it at once, and nothing joins ahead of it"
    )
    func waitingPrecision() throws {
        let split = Precision.bf16.effective == .bf16  // else every job runs in fp32, as one batch
        let h = try Harness()
        // Job 3 (fp32) is offered at the engine's second admit, while job 2 (bf16) waits.
        let recorder = h.run(
            [h.item(1, length: 20, seed: 1), h.item(2, length: 20, seed: 2, precision: "bf16")],
            joining: [h.item(3, length: 20, seed: 3)])
        #expect(recorder.outcomes == [1: [.succeeded], 2: [.succeeded], 3: [.succeeded]])
        let steps = recorder.state.withLock { $0.steps.map(\.0) }
        if split {
            #expect(recorder.working(2) > 0, "job 2 waited without a sign of life (its lease would lapse)")
            // Job 3 came after job 2 had waited since the claim: it runs after job 2.
            #expect(steps.lastIndex(of: 2)! < steps.firstIndex(of: 3)!, "job 3 ran ahead of job 2")
        } else {
            #expect(steps.firstIndex(of: 3)! < steps.lastIndex(of: 1)!, "job 3 joined the running batch")
        }
        // Stopped (a cancel) while it waits: it leaves at once, without a step.
        let stopped = try Harness()
        let stops = stopped.run(
            [stopped.item(1, length: 20, seed: 1), stopped.item(2, length: 20, seed: 2, precision: "bf16")],
            stop: { id, _ in id == 2 })
        #expect(stops.outcomes[1] == [.succeeded] && stops.outcomes[2] == [.interrupted])
        if split {
            #expect(stops.state.withLock { $0.order } == [2, 1], "job 2's stop waited for job 1's batch to end")
            #expect(stops.steps(2).isEmpty)
        }
    }

    @Test("waiting jobs are tended at most once a second unless asked now: stopped ones leave, the others signal life")
    func waitingJobsTending() async throws {
        let h = try Harness()
        let stops = Mutex<Set<Int64>>([])
        let seen = Mutex<(finished: [Int64: ExecutionOutcome], working: [Int64])>(([:], []))
        let hooks = ExecutionHooks(
            finished: { id, outcome in seen.withLock { $0.finished[id] = outcome } }, durable: { _, _ in },
            step: { _, _ in }, shouldStop: { id in stops.withLock { $0.contains(id) } ? .cancel : nil },
            working: { id in seen.withLock { $0.working.append(id) } })
        let waiting = InProcessEngine.WaitingJobs(
            [
                (h.item(1, length: 8, seed: 1), .bf16), (h.item(2, length: 8, seed: 2), .bf16),
                (h.item(3, length: 8, seed: 3), .fp32),
            ], hooks: hooks)
        stops.withLock { $0 = [2] }
        waiting.tend(now: true)
        #expect(seen.withLock { $0.finished } == [2: .interrupted] && seen.withLock { $0.working } == [1, 3])
        // A second later, from a step: the others again.
        try await Task.sleep(for: .milliseconds(1100))
        waiting.tend()
        #expect(seen.withLock { $0.working } == [1, 3, 1, 3])
        let group = try #require(waiting.nextGroup())
        #expect(group.0 == .bf16 && group.1.map(\.jobID) == [1])
        // Jobs of the running group's precision join only while nothing else waits.
        #expect(waiting.admit([(h.item(4, length: 8, seed: 4), .bf16)], joining: .bf16).isEmpty)
        #expect(waiting.nextGroup()?.1.map(\.jobID) == [3])
        #expect(waiting.nextGroup()?.1.map(\.jobID) == [4])
        #expect(waiting.admit([(h.item(5, length: 8, seed: 5), .bf16)], joining: .bf16).map(\.jobID) == [5])
        #expect(waiting.nextGroup() == nil)
    }

    @Test("a stopped job resumes from its work directory and writes the frames an uninterrupted run writes")
    func resumeAfterStop() throws {
        let h = try Harness(maxBatch: 4)
        let interrupted = h.run([h.item(1, length: 40, seed: 9)], stop: { id, r in r.durable(id).count >= 5 })
        #expect(interrupted.outcomes == [1: [.interrupted]])
        let frames = try FileManager.default.contentsOfDirectory(atPath: h.workDirectory(1) + "/frames").count
        #expect(frames > 0 && frames < 40, "stopped midway (\(frames) frames written)")
        #expect(h.run([h.item(1, length: 40, seed: 9)]).outcomes == [1: [.succeeded]])
        #expect(h.run([h.item(2, length: 40, seed: 9)]).outcomes == [2: [.succeeded]])
        #expect(try h.frameDigests(1) == (try h.frameDigests(2)))
        // The output was already complete (griditd died before recording it): a success, nothing rewritten.
        #expect(h.run([h.item(1, length: 40, seed: 9)]).outcomes == [1: [.succeeded]])
    }

    @Test("an output another run of the job put in place while it ran makes it a success, not invalid_input")
    func outputFinishedElsewhereMeanwhile() throws {
        let h = try Harness(maxBatch: 4)
        #expect(h.run([h.item(1, length: 20, seed: 9)]).outcomes == [1: [.succeeded]])
        // Job 2 is job 1 again (a shared root's stale host: stopped past its lease, it resumed and
        // renamed its output into place while the job's next host ran it): job 1's folder appears
        // at job 2's output once job 2 has started, before it writes its own.
        let copied = Mutex(false)
        let root = h.root
        let recorder = h.run([h.item(2, length: 20, seed: 9)]) { _, _ in
            copied.withLock { done in
                if !done {
                    done = true
                    try? FileManager.default.copyItem(atPath: root + "/outputs/job-1", toPath: root + "/outputs/job-2")
                }
            }
            return false
        }
        #expect(copied.withLock { $0 })
        #expect(recorder.outcomes == [2: [.succeeded]])
        #expect(try h.frameDigests(2) == (try h.frameDigests(1)))
        // Something else in its place is still not this job's output.
        try FileManager.default.createDirectory(atPath: root + "/elsewhere", withIntermediateDirectories: false)
        let other = h.run([h.item(3, length: 20, seed: 9)]) { _, _ in
            try? FileManager.default.moveItem(atPath: root + "/elsewhere", toPath: root + "/outputs/job-3")
            return false
        }
        guard case .failed(let failure)? = other.outcomes[3]?.first else {
            Issue.record("job 3: \(String(describing: other.outcomes[3]))")
            return
        }
        #expect(failure.errorClass == .invalidInput && failure.message.contains("already exists"), "\(failure)")
    }

    @Test("a blob that no longer matches its digest fails the job with digest_mismatch and is quarantined")
    func digestMismatch() throws {
        let h = try Harness()
        let show = try h.models.show("tiny:latest", pins: JobPins())
        let weights = try #require(show.blobs.first { $0.role == "stage2.weights" })
        let path = try #require(weights.path)
        chmod(path, 0o644)
        let fd = open(path, O_WRONLY)
        var byte: UInt8 = 0x5A
        #expect(pwrite(fd, &byte, 1, off_t(weights.size - 1)) == 1)
        close(fd)
        let recorder = h.run([h.item(1, length: 20, seed: 1)])
        guard case .failed(let failure)? = recorder.outcomes[1]?.first else {
            Issue.record("expected a failure, got \(recorder.outcomes)")
            return
        }
        #expect(failure.errorClass == .digestMismatch)
        #expect(failure.message.contains("quarantine"), "\(failure.message)")
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.root + "/quarantine").count == 1)
        #expect(h.cache.keys.isEmpty)
    }

    @Test(
        "weights that cannot be mapped (an I/O error after the store's check) fail the job as transient, not internal")
    func mapFailure() throws {
        let h = try Harness()
        // Resolved (checked) by griditd for an engine worker, which maps the files later: one
        // goes in between, as a blob on a shared root can.
        let resolved = try JSONEncoder().encode(try h.engine.resolve(h.digest))
        let show = try h.models.show("tiny:latest", pins: JobPins())
        let weights = try #require(show.blobs.first { $0.role == "stage1.weights" })
        try FileManager.default.removeItem(atPath: try #require(weights.path))
        let recorder = h.run([h.item(1, length: 20, seed: 1)], resolved: resolved)
        guard case .failed(let failure)? = recorder.outcomes[1]?.first else {
            Issue.record("expected a failure, got \(recorder.outcomes)")
            return
        }
        #expect(failure.errorClass == .transient, "\(failure)")
        #expect(failure.message.contains("mapping blob"), "\(failure.message)")
    }

    @Test("gc keeps the blobs of a loaded model even when no tag or job references it any more")
    func gcKeepsMapped() throws {
        let h = try Harness()
        #expect(h.run([h.item(1, length: 20, seed: 1)]).outcomes == [1: [.succeeded]])
        let weights = Set(
            try h.models.manifest(BlobDigest(h.digest)!).blobs.filter { $0.role.rawValue.hasSuffix(".weights") }
                .map(\.digest.description))
        _ = try h.models.remove("tiny:latest", pins: JobPins())
        let kept = try h.models.gc(pins: JobPins())
        #expect(kept.removedManifests == [h.digest], "the untagged version goes")
        #expect(Set(kept.keptMapped).isSuperset(of: weights), "mapped weights stay: \(kept)")
        #expect(h.cache.unload(h.digest!))
        let freed = try h.models.gc(pins: JobPins())
        #expect(Set(freed.removedBlobs).isSuperset(of: weights))
    }
}

@Suite("store catalog", .serialized)
struct StoreCatalogTests {
    @Test("the default model: none is an error naming `models import`, one is used, several must be named")
    func defaultModel() async throws {
        let h = try Harness(importModel: false)
        await #expect(throws: APIError.self) { _ = try await h.catalog.resolve(nil) }
        do {
            _ = try await h.catalog.resolve(nil)
        } catch {
            #expect(error.code == .notFound && error.message.contains("griditctl models import"), "\(error)")
        }
        let v1 = try h.models.importModel(from: tinyPipeline(), name: "tiny:v1", link: .copy).digest
        #expect(try await h.catalog.resolve(nil) == v1, "one name, one version")
        _ = try h.models.tag("tiny:v1", "tiny:latest")
        #expect(try await h.catalog.resolve(nil) == v1)
        _ = try h.models.tag("tiny:v1", "other:v1")
        do {
            _ = try await h.catalog.resolve(nil)
            Issue.record("two names must be refused")
        } catch {
            #expect(
                error.code == .badRequest && error.message.contains("other, tiny") && error.message.contains("--model"))
        }
        #expect(try await h.catalog.resolve("other:v1") == v1)
        do {
            _ = try await h.catalog.resolve("nope:v1")
        } catch {
            #expect(error.code == .notFound)
        }
    }

    @Test("model commands answer with the store's result and its rendering; loaded models are listed")
    func commands() async throws {
        let h = try Harness()
        let list = try await h.catalog.perform(.list, for: h.admin)
        let decoded = try APICoding.decoder().decode(ModelListResult.self, from: list.result)
        #expect(decoded.models.map(\.digest) == [h.digest] && !decoded.models[0].loaded)
        #expect(list.text.contains("tiny") && list.text.contains("latest"))
        #expect(await h.catalog.loadedModels().isEmpty)
        #expect(h.run([h.item(1, length: 20, seed: 1)]).outcomes == [1: [.succeeded]])
        let loaded = await h.catalog.loadedModels()
        #expect(loaded.map(\.digest) == [h.digest] && loaded[0].names == ["tiny:latest"] && loaded[0].activeJobs == 0)
        #expect((loaded[0].residentBytes ?? 0) > 0)
        let after = try APICoding.decoder().decode(
            ModelListResult.self, from: try await h.catalog.perform(.list, for: h.admin).result)
        #expect(after.models[0].loaded)
        let checks = try APICoding.decoder().decode(
            ModelStoreCheckResult.self, from: try await h.catalog.perform(.check, for: h.admin).result)
        #expect(checks.ok && !checks.checks.isEmpty)
        do {
            _ = try await h.catalog.perform(.show(reference: "tiny:v9"), for: h.admin)
            Issue.record("an unknown tag must fail")
        } catch {
            #expect(error.code == .notFound && error.message.contains("tiny:v9"))
        }
    }
}
