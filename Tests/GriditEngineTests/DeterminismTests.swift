import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditJobSpec
import GriditTensor
import GriditTestSupport
import Testing

@testable import GriditEngine

// Same seed ⇒ same bytes, whatever the batch composition, the thread count or where a run was
// interrupted and resumed. "Bytes" are the stage-1 grid files (float32 model space) and the frame
// PNGs of the work directory. The latent fixture is used where frames must be informative: its
// VAE keeps most pixels away from 0 and 255.

private let latentRequest = JobSpec(
    length: 12, parameters: .init(seed: 11, sampler: .ddim, steps: "3", srSteps: "2", eta: 0.3))

private func bytes(
    _ folder: String, _ request: JobSpec, options: ExecutionOptions = ExecutionOptions(threads: 2)
)
    throws -> [String: [UInt8]]
{
    let scratch = TemporaryDirectory("ge-det")
    let run = try runToEnd(try pipeline(folder), request, work: scratch.file("w"), options: options)
    return results(of: run.workDirectory)
}

@Test func sameSeedGivesTheSameBytesAndAnotherSeedDoesNot() throws {
    let a = try bytes("latent", latentRequest)
    #expect(
        a.keys.filter { $0.hasPrefix("frames/") }.count == 12 && a.keys.filter { $0.hasPrefix("grids/") }.count == 4)
    #expect(try bytes("latent", latentRequest) == a)
    var other = latentRequest
    other.parameters.seed = 12
    let b = try bytes("latent", other)
    #expect(b.keys == a.keys)
    #expect(a.filter { b[$0.key] == $0.value }.isEmpty, "no file of seed 12 equals seed 11's")
}

@Test func batchSizesAndThreadCountsDoNotChangeBytes() throws {
    // Official mode batches its in-between grids; stage 2 batches frames.
    let official = JobSpec(length: 44, parameters: .init(seed: 6, mode: .official, steps: "3", noSR: true))
    let reference = try bytes("pixel", official, options: ExecutionOptions(threads: 1, maxBatch: 1))
    #expect(try bytes("pixel", official, options: ExecutionOptions(threads: 3, maxBatch: 16)) == reference)
    let sr = try bytes("latent", latentRequest, options: ExecutionOptions(threads: 1, maxBatch: 1))
    #expect(try bytes("latent", latentRequest, options: ExecutionOptions(threads: 3, maxBatch: 5)) == sr)
    // A memory budget that only fits one row behaves like maxBatch 1.
    #expect(
        try bytes("latent", latentRequest, options: ExecutionOptions(threads: 2, memoryBudget: 1, maxBatch: 16)) == sr)
    // DPM-Solver++ in both stages, with carried frames: its history is per item.
    let dpm = JobSpec(
        length: 20,
        parameters: .init(
            seed: 2, sampler: .dpmpp2m, steps: "trailing4", srSampler: .dpmpp2m, srSteps: "trailing3", contextRows: 2))
    let solver = try bytes("pixel", dpm, options: ExecutionOptions(threads: 1, maxBatch: 1))
    #expect(try bytes("pixel", dpm, options: ExecutionOptions(threads: 3, maxBatch: 16)) == solver)
    // Its SDE form draws Philox noise at every step, keyed per item as DDPM's is.
    var sde = dpm
    (sde.parameters.sampler, sde.parameters.srSampler) = (.dpmpp2mSDE, .dpmpp2mSDE)
    let stochastic = try bytes("pixel", sde, options: ExecutionOptions(threads: 1, maxBatch: 1))
    #expect(try bytes("pixel", sde, options: ExecutionOptions(threads: 3, maxBatch: 16)) == stochastic)
    #expect(stochastic != solver)
}

@Test func stage2NoiseTemperatureAndSharingChangeOnlyTheFrames() throws {
    func request(_ temperature: Double?, _ noise: FrameNoise?, sampler: SamplerName = .ddpm) -> JobSpec {
        var r = latentRequest
        (r.parameters.srSampler, r.parameters.srTemperature, r.parameters.srNoise) = (sampler, temperature, noise)
        return r
    }
    let plain = try bytes("latent", request(nil, nil))
    #expect(try bytes("latent", request(1, .perFrame)) == plain, "1, per frame: what a run did before")
    let shared = try bytes("latent", request(0.5, .shared), options: ExecutionOptions(threads: 1, maxBatch: 1))
    #expect(try bytes("latent", request(0.5, .shared), options: ExecutionOptions(threads: 3, maxBatch: 5)) == shared)
    // Stage 1 is untouched; every frame changes.
    let grids = { (files: [String: [UInt8]]) in files.filter { $0.key.hasPrefix("grids/") } }
    #expect(grids(shared) == grids(plain) && grids(plain).count == 4)
    #expect(shared.filter { $0.key.hasPrefix("frames/") && plain[$0.key] == $0.value }.isEmpty)
    // Shared noise is frame 0's: per frame at the same temperature, frame 0 alone is the same.
    let own = try bytes("latent", request(0.5, .perFrame))
    let same = own.filter { $0.key.hasPrefix("frames/") && shared[$0.key] == $0.value }.keys
    #expect(Array(same) == ["frames/frame_00000.png"] && grids(own) == grids(plain))
    // At temperature 0 no noise is left to share: per-frame and shared give the same bytes, with
    // DDPM's noise at every step and with DPM-Solver++'s x_T alone.
    #expect(try bytes("latent", request(0, .shared)) == (try bytes("latent", request(0, .perFrame))))
    #expect(
        try bytes("latent", request(0, .shared, sampler: .dpmpp2m))
            == (try bytes("latent", request(0, .perFrame, sampler: .dpmpp2m))))
}

/// run.json and sequence.json of a gridit from before sr_temperature and sr_noise: the run resumes
/// (its stage 2 drew at 1, per frame, as today's defaults do) and its output counts as finished.
@Test func filesOfOlderVersionsWithoutStage2NoiseFieldsStillMatch() throws {
    let p = try pipeline("latent")
    let scratch = TemporaryDirectory("ge-older")
    func dropNoiseFields(_ file: String) throws {
        var json =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as! [String: Any]
        var settings = json["settings"] as! [String: Any]
        #expect(settings.removeValue(forKey: "sr_temperature") as? Double == 1)
        #expect(settings.removeValue(forKey: "sr_noise") as? String == "per-frame")
        json["settings"] = settings
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: file))
    }
    var seen = 0
    let work = scratch.file("w")
    let half = try SequenceRun(
        pipeline: p, spec: latentRequest, workDirectory: work,
        hooks: RunHooks(onProgress: { _ in seen += 1 }, shouldStop: { seen >= 3 }))
    #expect(throws: EngineError.interrupted) { try half.execute(options: ExecutionOptions(threads: 1, maxBatch: 2)) }
    try dropNoiseFields(work + "/run.json")
    let resumed = try SequenceRun(pipeline: p, spec: latentRequest, workDirectory: work)
    #expect(resumed.gridsDone + resumed.framesDone >= 3)
    try resumed.execute(options: ExecutionOptions(threads: 2))
    #expect(results(of: work) == (try bytes("latent", latentRequest)))
    let output = scratch.file("out")
    try resumed.finish(into: output)
    try dropNoiseFields(output + "/sequence.json")
    #expect(resumed.isFinished(at: output))
    // Another temperature is another run.
    var cooled = latentRequest
    cooled.parameters.srTemperature = 0.5
    #expect(try !SequenceRun(pipeline: p, spec: cooled, workDirectory: scratch.file("c")).isFinished(at: output))
}

@Test func runsBatchedTogetherGetTheBytesTheyGetAlone() throws {
    let p = try pipeline("latent")
    let requests = [
        latentRequest,
        JobSpec(length: 7, parameters: .init(seed: 2, sampler: .ddpm, steps: "4", srSampler: .ddpm, srSteps: "3")),
        JobSpec(length: 10, parameters: .init(seed: 2, mode: .official, steps: "3", srSteps: "2")),
        JobSpec(
            length: 20, parameters: .init(seed: 3, steps: "5", contextRows: 2, noSR: true, jumpLength: 2, jumpCount: 2)),
    ]
    let alone = try requests.map { try bytes("latent", $0) }
    let scratch = TemporaryDirectory("ge-batch")
    let runs = try executedTogether(p, requests, in: scratch, options: ExecutionOptions(threads: 2, maxBatch: 4))
    for (i, run) in runs.enumerated() {
        #expect(run.isComplete)
        #expect(results(of: run.workDirectory) == alone[i], "run \(i)")
    }
}

/// `requests` run as one batch of `p` in `scratch` (each must succeed).
private func executedTogether(
    _ p: LoadedPipeline, _ requests: [JobSpec], in scratch: TemporaryDirectory, options: ExecutionOptions
) throws -> [SequenceRun] {
    let runs = try requests.enumerated().map { i, r in
        try SequenceRun(pipeline: p, spec: r, workDirectory: scratch.file("w\(i)"))
    }
    for outcome in SequenceRun.execute(runs, options: options) {
        #expect(throws: Never.self) { try outcome.get() }
    }
    return runs
}

@Test func guidedAndUnguidedRunsBatchedTogetherGetTheirOwnBytes() throws {
    // A batch mixing scales (the guide forward takes the guided rows only) must not mix rows.
    let p = try pipeline("pixel_guide")
    // The last one is guided at some of its steps only, so the guided rows change from step to step.
    let requests =
        [2.0, 1.0, 3.0].map { JobSpec(length: 20, parameters: .init(seed: 7, steps: "3", cfgScale: $0)) }
        + [JobSpec(length: 20, parameters: .init(seed: 7, steps: "3", cfgInterval: .init(lower: 600, upper: 999)))]
    let alone = try requests.map { try bytes("pixel_guide", $0, options: ExecutionOptions(threads: 1, maxBatch: 1)) }
    #expect(alone[0] != alone[1] && alone[0] != alone[2], "the scale changes the grids")
    #expect(alone[3] != alone[0] && alone[3] != alone[1], "the interval changes the grids")
    let scratch = TemporaryDirectory("ge-guide")
    let runs = try executedTogether(p, requests, in: scratch, options: ExecutionOptions(threads: 3, maxBatch: 8))
    for (i, run) in runs.enumerated() {
        #expect(results(of: run.workDirectory) == alone[i], "run \(i)")
    }
    // At scale 1 the guide is not run: the grids of the same stage 1 without a guide (pixel_v's).
    let grids = { (files: [String: [UInt8]]) in files.filter { $0.key.hasPrefix("grids/") } }
    let plain = try bytes("pixel_v", JobSpec(length: 20, parameters: .init(seed: 7, steps: "3")))
    #expect(!grids(plain).isEmpty && grids(plain) == grids(alone[1]))
    #expect(runs[0].plan.stage1.rowsPerEvaluation == 2 && runs[1].plan.stage1.rowsPerEvaluation == 1)
}

@Test func runsAdmittedDuringABatchJoinAndLeaveOnTheirOwn() throws {
    let p = try pipeline("latent")
    let scratch = TemporaryDirectory("ge-admit")
    let first = try SequenceRun(pipeline: p, spec: latentRequest, workDirectory: scratch.file("a"))
    let late = try SequenceRun(
        pipeline: p, spec: JobSpec(length: 3, parameters: .init(seed: 5, steps: "2", noSR: true)),
        workDirectory: scratch.file("b"))
    var calls = 0, left: [String] = []
    let outcomes = SequenceRun.execute(
        [first], options: ExecutionOptions(threads: 2, maxBatch: 4),
        admit: {
            calls += 1
            return calls == 2 ? [late] : []
        },
        finished: { run, result in
            #expect(throws: Never.self) { try result.get() }
            left.append(run.workDirectory)
        })
    #expect(outcomes.count == 2 && first.isComplete && late.isComplete)
    // The short late run leaves first; each is reported once.
    #expect(left == [late.workDirectory, first.workDirectory])
    #expect(results(of: first.workDirectory) == (try bytes("latent", latentRequest)))
    #expect(
        results(of: late.workDirectory)
            == (try bytes("latent", JobSpec(length: 3, parameters: .init(seed: 5, steps: "2", noSR: true)))))
}

@Test func runsThatLeftABatchHoldNoGridsWhileItGoesOn() throws {
    // One batch runner takes job after job (a seed sweep): what a run held must go when it leaves.
    let p = try pipeline("latent")
    let scratch = TemporaryDirectory("ge-sweep")
    var made: [SequenceRun] = []
    var leftWithGrids: [Int] = []
    let outcomes = SequenceRun.execute(
        [], options: ExecutionOptions(threads: 2, maxBatch: 4),
        admit: {
            guard made.count < 6, made.allSatisfy({ $0.isComplete }) else { return [] }
            made.append(
                try! SequenceRun(
                    pipeline: p, spec: JobSpec(length: 8, parameters: .init(seed: UInt64(made.count), steps: "2")),
                    workDirectory: scratch.file("r\(made.count)")))
            return [made.last!]
        },
        finished: { run, _ in leftWithGrids.append(run.cachedGrids) })
    #expect(outcomes.count == 6 && made.allSatisfy(\.isComplete))
    #expect(leftWithGrids.allSatisfy { $0 > 0 }, "each run had grids in memory as it left: \(leftWithGrids)")
    #expect(made.allSatisfy { $0.cachedGrids == 0 }, "\(made.map(\.cachedGrids))")
}

/// A run with only frames left (a job resumed after its last grid), admitted while the grids' lane
/// has nothing to do and the frames' lane has just looked: the frames' lane must take it.
@Test func aRunWithOnlyFramesLeftAdmittedLateIsCompleted() throws {
    let p = try pipeline("latent")
    let scratch = TemporaryDirectory("ge-admit-frames")
    let half = try SequenceRun(pipeline: p, spec: latentRequest, workDirectory: scratch.file("b"))
    half.hooks = RunHooks(shouldStop: { [unowned half] in half.gridsDone == half.plan.grids })
    #expect(throws: EngineError.interrupted) { try half.execute(options: ExecutionOptions(threads: 1, maxBatch: 4)) }
    let resumed = try SequenceRun(pipeline: p, spec: latentRequest, workDirectory: scratch.file("b"))
    #expect(resumed.gridsDone == resumed.plan.grids && resumed.framesDone < resumed.plan.frames)

    let first = try SequenceRun(
        pipeline: p, spec: JobSpec(length: 3, parameters: .init(seed: 5, steps: "2", srSteps: "2")),
        workDirectory: scratch.file("a"))
    var admitted = false
    let outcomes = SequenceRun.execute(
        [first], options: ExecutionOptions(threads: 2, maxBatch: 4),
        admit: {
            guard first.isComplete, !admitted else { return [] }
            admitted = true
            return [resumed]
        })
    #expect(admitted && outcomes.count == 2)
    for outcome in outcomes { #expect(throws: Never.self) { try outcome.get() } }
    #expect(results(of: resumed.workDirectory) == (try bytes("latent", latentRequest)))
}

@Test func aJobWhoseWorkWasComputedInAnotherPrecisionStartsOverRatherThanFail() throws {
    let p = try pipeline("latent")
    let scratch = TemporaryDirectory("ge-precision")
    let work = scratch.file("w")
    var seen = 0
    let run = try SequenceRun(
        pipeline: p, spec: latentRequest, workDirectory: work,
        hooks: RunHooks(onProgress: { _ in seen += 1 }, shouldStop: { seen >= 2 }))
    #expect(throws: EngineError.interrupted) { try run.execute(options: ExecutionOptions(threads: 1, maxBatch: 4)) }
    /// Rewrites the settings recorded in `file` as a bf16 host would have written them.
    func recordBF16(_ file: String) throws {
        let url = URL(fileURLWithPath: file)
        var record = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        var settings = try #require(record["settings"] as? [String: Any])
        settings["precision_used"] = "bf16"
        record["settings"] = settings
        try JSONSerialization.data(withJSONObject: record).write(to: url)
    }
    // As if computed on a host with AVX512_BF16 (a bf16 job), resumed on one without (fp32).
    try recordBF16(work + "/run.json")
    // Any other work directory (a user's `griditd run --work`) is refused and left alone.
    expectEngineError(.invalidInput, mentioning: "holds a different run") {
        _ = try SequenceRun(pipeline: p, spec: latentRequest, workDirectory: work)
    }
    #expect(FileManager.default.fileExists(atPath: work + "/grids"))
    let resumed = try SequenceRun(
        pipeline: p, spec: latentRequest, workDirectory: work, startsOverOnOtherPrecision: true)
    #expect(resumed.startedOverFrom == "bf16" && resumed.gridsDone == 0 && resumed.framesDone == 0)
    try resumed.execute(options: ExecutionOptions(threads: 1, maxBatch: 16))
    #expect(results(of: work) == (try bytes("latent", latentRequest)))
    // An output the other host finished (its sequence.json says bf16) is this job's output too.
    let output = scratch.file("out")
    try resumed.finish(into: output)
    try recordBF16(output + "/sequence.json")
    #expect(resumed.isFinished(at: output))
}

@Test func resumingAfterAnInterruptionAtAnyPointGivesTheSameBytes() throws {
    let p = try pipeline("latent")
    let scratch = TemporaryDirectory("ge-resume")
    let baseline = try bytes("latent", latentRequest)
    let units = 2 + 12  // grids, then frames: each a durable unit
    for stopAfter in 1..<units {
        let work = scratch.file("u\(stopAfter)")
        var seen = 0
        let run = try SequenceRun(
            pipeline: p, spec: latentRequest, workDirectory: work,
            hooks: RunHooks(onProgress: { _ in seen += 1 }, shouldStop: { seen >= stopAfter }))
        do {
            try run.execute(options: ExecutionOptions(threads: 2, maxBatch: 3))
            Issue.record("run stopped after \(stopAfter) units did not throw")
        } catch let e as EngineError {
            #expect(e.code == .interrupted)
        }
        #expect(!run.isComplete)
        let resumed = try SequenceRun(pipeline: p, spec: latentRequest, workDirectory: work)
        #expect(resumed.gridsDone + resumed.framesDone >= stopAfter)
        try resumed.execute(options: ExecutionOptions(threads: 1, maxBatch: 16))
        #expect(results(of: work) == baseline, "stopped after \(stopAfter) units")
        #expect(resumed.timings.sessions == 2)
    }
    // Stopped between denoising steps (mid-grid and mid-frame-batch): the unfinished unit is redone.
    for stopAtStep in [1, 2, 4, 7, 12] {
        let work = scratch.file("s\(stopAtStep)")
        var steps = 0
        let run = try SequenceRun(
            pipeline: p, spec: latentRequest, workDirectory: work,
            hooks: RunHooks(onStep: { _ in steps += 1 }, shouldStop: { steps >= stopAtStep }))
        #expect(throws: EngineError.interrupted) { try run.execute(options: ExecutionOptions(threads: 2, maxBatch: 4)) }
        try SequenceRun(pipeline: p, spec: latentRequest, workDirectory: work).execute()
        #expect(results(of: work) == baseline, "stopped at step \(stopAtStep)")
    }
}

@Test func officialRunsResumeAtEveryGrid() throws {
    let p = try pipeline("pixel")
    let request = JobSpec(length: 32, parameters: .init(seed: 8, mode: .official, steps: "3", srSteps: "2"))
    let baseline = try bytes("pixel", request)
    let scratch = TemporaryDirectory("ge-off")
    for stopAfter in 1...5 {  // N = 3: grids 0…6
        let work = scratch.file("g\(stopAfter)")
        var seen = 0
        let run = try SequenceRun(
            pipeline: p, spec: request, workDirectory: work,
            hooks: RunHooks(onProgress: { _ in seen += 1 }, shouldStop: { seen >= stopAfter }))
        #expect(throws: EngineError.interrupted) { try run.execute(options: ExecutionOptions(maxBatch: 2)) }
        try SequenceRun(pipeline: p, spec: request, workDirectory: work).execute()
        #expect(results(of: work) == baseline, "official, stopped after \(stopAfter) units")
    }
}

@Test(arguments: [1, 2, 3])
func contextFramesOfEachGridAreThePreviousFramesExactly(contextRows: Int) throws {
    let p = try pipeline("pixel")
    let scratch = TemporaryDirectory("ge-ctx")
    let run = try runToEnd(
        p, JobSpec(length: 45, parameters: .init(seed: 2, steps: "3", contextRows: contextRows, noSR: true)),
        work: scratch.file("w"))
    let layout = p.configuration.modelLayout
    func cell(_ grid: Int, _ position: Int) throws -> [UInt32] {
        let g = try NPYArray(path: run.workDirectory + String(format: "/grids/grid_%05d.npy", grid)).floatTensor()
        let f = Tensor(zeros: [1] + layout.frameShape)
        try layout.extract(from: g, positions: position..<position + 1, into: f)
        return f.toArray().map(\.bitPattern)
    }
    var checked = 0
    for g in 1..<run.plan.grids {
        for known in run.plan.grid(g).known {
            #expect(
                try cell(g, known.position) == cell(known.source.grid, known.source.position),
                "grid \(g) cell \(known.position)")
            checked += 1
        }
    }
    #expect(checked >= (run.plan.grids - 1) * contextRows * 4)
}

@Test func everyLengthComesOutExactly() throws {
    let scratch = TemporaryDirectory("ge-len")
    var runs = 0
    for (folder, k) in [("pixel_k2", 2), ("latent", 3), ("pixel", 4), ("pixel_k5", 5)] {
        let p = try pipeline(folder)
        let kk = k * k
        for c in Set([1, k - 1]) {
            for length in Set([1, 2, kk - 1, kk, kk + 1, kk + (k - c) * k + 1, 2 * kk + 3, 41]) {
                let run = try runToEnd(
                    p,
                    JobSpec(
                        length: length,
                        parameters: .init(seed: UInt64(length), sampler: .ddim, steps: "2", contextRows: c, noSR: true)),
                    work: scratch.file("\(folder)-\(c)-\(length)"))
                let names = try FileManager.default.contentsOfDirectory(atPath: run.workDirectory + "/frames").sorted()
                #expect(
                    names == (0..<length).map { String(format: "frame_%05d.png", $0) }, "\(folder) c \(c) L \(length)")
                runs += 1
            }
        }
    }
    print("exact length: \(runs) runs")
}
