import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditEngine
import GriditJobSpec
import GriditTensor
import GriditTestSupport
import Testing

// Requests, pipelines and work directories that are wrong: errors that name the problem and the fix.

@Test func requestsAreCheckedAgainstThePipeline() throws {
    let p = try pipeline("pixel").configuration  // k = 4, max_length 1000
    func bad(_ r: JobSpec, _ text: String, maxLength: Int? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        expectEngineError(.invalidInput, mentioning: text, sourceLocation: sourceLocation) {
            _ = try r.settings(for: p, maxLength: maxLength)
        }
    }
    bad(JobSpec(length: 0, parameters: .init(seed: 1)), "at least 1 frame")
    bad(JobSpec(length: 1001, parameters: .init(seed: 1)), "limit of 1000")
    bad(JobSpec(length: 50, parameters: .init(seed: 1)), "limit of 20", maxLength: 20)
    bad(JobSpec(length: 5, parameters: .init(seed: 1, contextRows: 0)), "1...3 context rows")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, contextRows: 4)), "1...3 context rows")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, mode: .official, contextRows: 2)), "always carries 3 rows")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, mode: .official, context: .clean)), "drop --context")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, steps: "abc")), "steps 'abc'")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, srSteps: "0")), "sr_steps '0'")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, eta: 2)), "0...1")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, srTemperature: 1.5)), "sr_temperature must be in 0...1")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, srTemperature: .nan)), "--sr-temperature")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, precision: "fp8")), "fp32, bf16")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, steps: "10", jumpLength: 10)), "1...9")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, mode: .official, jumpLength: 2, jumpCount: 2)), "official")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, classLabel: 1)), "unconditional")
    bad(JobSpec(length: 5, parameters: .init(seed: 1, cfgScale: 4)), "or a pipeline with a guide")
    // A guide model makes cfg_scale autoguidance: the pipeline's default (2), or the request's.
    let guide = try pipeline("pixel_guide").configuration
    #expect(try JobSpec(length: 5, parameters: .init(seed: 1)).settings(for: guide).cfgScale == 2)
    let unguided = try JobSpec(length: 5, parameters: .init(seed: 1, cfgScale: 1)).settings(for: guide)
    #expect(!unguided.guided)
    #expect(try plan(guide, JobSpec(length: 5, parameters: .init(seed: 1, cfgScale: 1))).stage1.rowsPerEvaluation == 1)
    // The guidance interval: the request's, kept only where it changes something (a run guided at
    // every step has none, as files from before the interval), refused where nothing is guided.
    let high = GuidanceInterval(lower: 700, upper: 999)
    let interval = { (p: JobSpec.Parameters) in try JobSpec(length: 5, parameters: p).settings(for: guide).cfgInterval }
    #expect(try interval(.init(seed: 1, cfgInterval: high)) == high)
    #expect(try interval(.init(seed: 1, cfgInterval: .init(lower: 0, upper: 999))) == nil)
    #expect(try interval(.init(seed: 1, cfgScale: 1, cfgInterval: high)) == nil)
    #expect(try interval(.init(seed: 1)) == nil)
    bad(JobSpec(length: 5, parameters: .init(seed: 1, cfgInterval: high)), "drop --cfg-interval")
    expectEngineError(.invalidInput, mentioning: "cfg_interval [500, 600] holds none of the timesteps of steps '4'") {
        _ = try JobSpec(length: 5, parameters: .init(seed: 1, steps: "4", cfgInterval: .init(lower: 500, upper: 600)))
            .settings(for: guide)
    }
    var spec = guide.spec
    spec.defaults.cfgInterval = high
    try spec.validateFields(path: nil)
    let withDefault = PipelineConfiguration(
        spec: spec, stage1: guide.stage1, guide: guide.guide, stage2: guide.stage2, vae: guide.vae)
    spec.defaults.cfgInterval = .init(lower: 800, upper: 700)
    #expect {
        try spec.validateFields(path: nil)
    } throws: {
        "\($0)".contains("defaults.cfg_interval is [800, 700]; use timesteps 0 <= lower <= upper <= 999")
    }
    var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(spec)) as! [String: Any]
    json["defaults"] = (json["defaults"] as! [String: Any]).merging(["cfg_interval": [700.5, 999]]) { $1 }
    #expect {
        try PipelineSpec.decode(try JSONSerialization.data(withJSONObject: json), path: "pipeline.json")
    } throws: {
        "\($0)".contains("defaults.cfg_interval is two whole timesteps [lower, upper] in 0...999")
    }
    let fromDefault = try JobSpec(length: 5, parameters: .init(seed: 1)).settings(for: withDefault)
    #expect(fromDefault.cfgInterval == high && fromDefault.guided(at: 999) && !fromDefault.guided(at: 699))
    let classcond = try pipeline("classcond").configuration
    expectEngineError(.invalidInput, mentioning: "--class 0...2") {
        _ = try JobSpec(length: 5, parameters: .init(seed: 1)).settings(for: classcond)
    }
    expectEngineError(.invalidInput, mentioning: "0...2") {
        _ = try JobSpec(length: 5, parameters: .init(seed: 1, classLabel: 3)).settings(for: classcond)
    }
    expectEngineError(.invalidInput, mentioning: "k >= 3") {
        _ = try JobSpec(length: 5, parameters: .init(seed: 1, mode: .official)).settings(
            for: try pipeline("pixel_k2").configuration)
    }

    // Defaults fill in; settings record what runs.
    let s = try JobSpec(length: 7, parameters: .init(seed: 3, precision: "bf16")).settings(for: p)
    #expect(s.mode == .gridit && s.sampler == .ddpm && s.steps == "4" && s.contextRows == 1 && s.superResolution)
    #expect(
        s.srSampler == .ddim && s.srSteps == "3" && s.precisionRequested == "bf16"
            && s.precisionUsed == Precision.bf16.effective.rawValue)
    #expect(try JobSpec(length: 7, parameters: .init(seed: 3, noSR: true)).settings(for: p).superResolution == false)
    // Stage 2's noise: the pipeline's (this fixture says nothing: 1, per frame), or the request's;
    // nothing without stage 2.
    #expect(s.srTemperature == 1 && s.srNoise == .perFrame)
    let cooled = try JobSpec(length: 7, parameters: .init(seed: 3, srTemperature: 0.5, srNoise: .shared)).settings(
        for: p)
    #expect(cooled.srTemperature == 0.5 && cooled.srNoise == .shared)
    let lowOnly = try JobSpec(length: 7, parameters: .init(seed: 3, srTemperature: 0.5, noSR: true)).settings(for: p)
    #expect(lowOnly.srTemperature == nil && lowOnly.srNoise == nil)
    // Context frames: the pipeline's default (re-noised unless it says clean), or the request's.
    #expect(s.context == .renoised)
    #expect(try JobSpec(length: 7, parameters: .init(seed: 3, context: .clean)).settings(for: p).context == .clean)
    #expect(
        try JobSpec(length: 7, parameters: .init(seed: 3)).settings(for: try pipeline("pixel_v").configuration).context
            == .clean)
    #expect(try JobSpec(length: 7, parameters: .init(seed: 3, mode: .official)).settings(for: p).context == nil)
}

@Test func specsDecodeFromJSON() throws {
    let json =
        #"{"length": 64, "parameters": {"seed": 18446744073709551615, "mode": "official", "steps": 50, "sr_steps": "ddim25", "sr_temperature": 0.25, "sr_noise": "shared", "no_sr": true}}"#
    let r = try JSONDecoder().decode(JobSpec.self, from: Data(json.utf8))
    let p = r.parameters
    #expect(
        r.length == 64 && p.seed == .max && p.mode == .official && p.steps == "50" && p.srSteps == "ddim25" && p.noSR)
    #expect(p.srTemperature == 0.25 && p.srNoise == .shared)
    let round = try JSONDecoder().decode(JobSpec.self, from: JSONEncoder().encode(r))
    #expect(round == r)
    #expect(throws: DecodingError.self) {
        try JSONDecoder().decode(
            JobSpec.self, from: Data(#"{"length": 3, "parameters": {"seed": 1, "mode": "fast"}}"#.utf8))
    }
    do {
        _ = try JSONDecoder().decode(
            JobSpec.self, from: Data(#"{"length": 3, "parameters": {"sr_noise": "same"}}"#.utf8))
        Issue.record("sr_noise 'same' decoded")
    } catch {
        #expect("\(error)".contains("per-frame or shared"))
    }
}

@Test func badPipelineFilesAreInvalidInput() throws {
    let scratch = TemporaryDirectory("ge-pipe")
    let dir = scratch.file("p")
    try FileManager.default.copyItem(atPath: fixture("pixel"), toPath: dir)
    // A missing weights file.
    try FileManager.default.removeItem(atPath: dir + "/stage2.safetensors")
    expectEngineError(.invalidInput, mentioning: "stage2.safetensors") {
        _ = try LoadedPipeline(path: dir + "/pipeline.json")
    }
    // A config that does not fit k × frame.
    try FileManager.default.copyItem(atPath: fixture("pixel/stage2.safetensors"), toPath: dir + "/stage2.safetensors")
    var spec = try String(contentsOfFile: dir + "/pipeline.json", encoding: .utf8)
    spec = spec.replacingOccurrences(of: "\"frame_size\": 4", with: "\"frame_size\": 5")
    try spec.write(toFile: dir + "/pipeline.json", atomically: true, encoding: .utf8)
    expectEngineError(.invalidInput, mentioning: "input_size") {
        _ = try PipelineConfiguration.load(path: dir + "/pipeline.json")
    }
    // Weights that do not match the config.
    try FileManager.default.copyItem(atPath: fixture("pixel/pipeline.json"), toPath: dir + "/fixed.json")
    try FileManager.default.removeItem(atPath: dir + "/stage1.safetensors")
    try FileManager.default.copyItem(atPath: fixture("latent/stage1.safetensors"), toPath: dir + "/stage1.safetensors")
    expectEngineError(.invalidInput, mentioning: "shape") { _ = try LoadedPipeline(path: dir + "/fixed.json") }
    // Not JSON at all, and a missing file.
    try "{".write(toFile: dir + "/broken.json", atomically: true, encoding: .utf8)
    expectEngineError(.invalidInput, mentioning: "not valid JSON") {
        _ = try PipelineConfiguration.load(path: dir + "/broken.json")
    }
    expectEngineError(.invalidInput, mentioning: "cannot read") {
        _ = try PipelineConfiguration.load(path: dir + "/nope.json")
    }
}

@Test func aWorkDirectoryOnlyResumesItsOwnRun() throws {
    let p = try pipeline("pixel_k2")
    let scratch = TemporaryDirectory("ge-wd")
    let work = scratch.file("work")
    let run = try SequenceRun(pipeline: p, spec: JobSpec(length: 6, parameters: .init(seed: 1)), workDirectory: work)
    #expect(run.gridsDone == 0 && FileManager.default.fileExists(atPath: work + "/run.json"))
    expectEngineError(.invalidInput, mentioning: "different run") {
        _ = try SequenceRun(pipeline: p, spec: JobSpec(length: 6, parameters: .init(seed: 2)), workDirectory: work)
    }
    // The same settings spelled differently are the same run.
    _ = try SequenceRun(
        pipeline: p, spec: JobSpec(length: 6, parameters: .init(seed: 1, sampler: .ddim, steps: "2")),
        workDirectory: work)
    // A run recorded before `context` existed (no such field) is the re-noised run it was.
    let runFile = work + "/run.json"
    let old = try String(contentsOfFile: runFile, encoding: .utf8)
    let withoutContext = old.replacingOccurrences(of: #""context" : "renoised","#, with: "")
    #expect(withoutContext != old)
    try withoutContext.write(toFile: runFile, atomically: true, encoding: .utf8)
    _ = try SequenceRun(pipeline: p, spec: JobSpec(length: 6, parameters: .init(seed: 1)), workDirectory: work)
    expectEngineError(.invalidInput, mentioning: "different run") {
        _ = try SequenceRun(
            pipeline: p, spec: JobSpec(length: 6, parameters: .init(seed: 1, context: .clean)), workDirectory: work)
    }
    let other = scratch.file("other")
    try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
    try "x".write(toFile: other + "/notes.txt", atomically: true, encoding: .utf8)
    expectEngineError(.invalidInput, mentioning: "not empty") {
        _ = try SequenceRun(pipeline: p, spec: JobSpec(length: 6, parameters: .init(seed: 1)), workDirectory: other)
    }
}

@Test func aWorkDirectoryWhoseStartWasKilledIsTakenOver() throws {
    // griditd killed (kill -9) while a job's run opened its work directory: run.json's temporary
    // file, or (gridit before this one) empty grids/ and frames/ without run.json. Nothing was
    // computed: the next run of the job starts there, not "not empty" (invalid_input, for good).
    let p = try pipeline("pixel_k2")
    let scratch = TemporaryDirectory("ge-wk")
    let spec = JobSpec(length: 6, parameters: .init(seed: 1))
    let fm = FileManager.default
    let older = scratch.file("older")
    try fm.createDirectory(atPath: older + "/grids", withIntermediateDirectories: true)
    try fm.createDirectory(atPath: older + "/frames", withIntermediateDirectories: true)
    try runToEnd(p, spec, work: older)
    let killed = scratch.file("killed")
    try fm.createDirectory(atPath: killed, withIntermediateDirectories: true)
    try "{\"format".write(toFile: killed + "/.run.json.tmp-Ab12Cd", atomically: false, encoding: .utf8)
    let run = try SequenceRun(pipeline: p, spec: spec, workDirectory: killed)
    #expect(try fm.contentsOfDirectory(atPath: killed).sorted() == ["frames", "grids", "run.json"])
    try run.execute()
    #expect(results(of: killed) == results(of: older))
    // A grids/ with something in it, or another file, is still not ours to overwrite.
    let used = scratch.file("used")
    try fm.createDirectory(atPath: used + "/grids", withIntermediateDirectories: true)
    try "x".write(toFile: used + "/grids/grid_0.npy", atomically: false, encoding: .utf8)
    expectEngineError(.invalidInput, mentioning: "not empty") {
        _ = try SequenceRun(pipeline: p, spec: spec, workDirectory: used)
    }
    let other = scratch.file("other")
    try fm.createDirectory(atPath: other, withIntermediateDirectories: true)
    try "x".write(toFile: other + "/.notes.tmp-1", atomically: false, encoding: .utf8)
    expectEngineError(.invalidInput, mentioning: "not empty") {
        _ = try SequenceRun(pipeline: p, spec: spec, workDirectory: other)
    }
}

@Test func errorsAreClassifiedForRetrying() {
    let enospc = CheckpointError(
        code: .writeFailed, path: "/x/grid.npy", message: "write failed: no space", errno: ENOSPC)
    let full = EngineError.classify(enospc)
    #expect(full.code == .diskFull && full.isRetryable)
    #expect(EngineError.classify(PipelineError("bad")).code == .invalidInput)
    #expect(!EngineError.classify(PipelineError("bad")).isRetryable)
    #expect(EngineError.interrupted.code == .interrupted && EngineError.interrupted.isRetryable)
    let other = EngineError.classify(
        CheckpointError(code: .writeFailed, path: "/x", message: "write failed", errno: EIO))
    #expect(other.code == .transient)
    #expect(EngineError.classify(CheckpointError(code: .truncated, path: "/x", message: "short")).code == .invalidInput)
}
