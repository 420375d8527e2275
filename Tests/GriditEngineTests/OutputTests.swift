import Crypto
import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditEngine
import GriditImage
import GriditJobSpec
import GriditTensor
import GriditTestSupport
import Testing

// The output directory: frames that decode to the expected pixels, the preview, the contact
// sheet, sequence.json; written whole or not at all.

@Test func outputsDecodeBackToTheExpectedPixels() throws {
    let p = try pipeline("latent")
    let scratch = TemporaryDirectory("ge-out")
    let run = try runToEnd(
        p, JobSpec(length: 11, parameters: .init(seed: 4, steps: "3", noSR: true)), work: scratch.file("w"))
    let out = scratch.file("seq")
    var signs = 0
    let summary = try run.finish(into: out, options: OutputOptions(previewFPS: 5, contactSheetColumns: 4)) {
        signs += 1
    }
    // A sign of life per frame written and per preview frame decoded after the first.
    #expect(signs == 11 + 10)

    // Every frame: the 8-bit quantisation of its grid cell in image space (the VAE decode of the grid).
    let image = p.configuration.imageLayout
    let cell = Tensor(zeros: [1] + image.frameShape)
    var frames: [Image8] = []
    for i in 0..<11 {
        let ref = run.plan.source(ofFrame: i)
        let grid = try NPYArray(path: run.workDirectory + String(format: "/grids/grid_%05d.image.npy", ref.grid))
            .floatTensor()
        try image.extract(from: grid, positions: ref.position..<ref.position + 1, into: cell)
        let expected = Image8(planar: cell.pointer, channels: 3, height: 8, width: 8)
        let data = try #require(FileManager.default.contents(atPath: out + String(format: "/frames/frame_%05d.png", i)))
        let decoded = try PNG.decode([UInt8](data))
        #expect(decoded == expected, "frame \(i)")
        frames.append(decoded)
        #expect(summary.files[i].file == String(format: "frames/frame_%05d.png", i))
        #expect(summary.files[i].sha256 == "sha256:" + sha256Hex([UInt8](data)))
    }
    #expect(summary.files.count == 11 && summary.frames == 11 && summary.frameSize == 8 && summary.channels == 3)

    // sequence.json on disk is the summary.
    let json = try #require(FileManager.default.contents(atPath: out + "/sequence.json"))
    let decoded = try JSONDecoder().decode(SequenceSummary.self, from: json)
    #expect(decoded == summary)
    #expect(decoded.pipeline.digest == p.identity.digest && decoded.pipeline.blobs.count == 6 && decoded.seed == 4)
    #expect(decoded.settings.steps == "3" && decoded.plan.frames == 11 && decoded.timings.sessions == 1)
    #expect(
        decoded.pipeline.blobs["stage1.weights"] == "sha256:"
            + sha256Hex(try readBytes(fixture("latent/stage1.safetensors"))))

    // The preview's default image is frame 0; the sheet shows the 11 frames 4 per row.
    let preview = try PNG.decode(try readBytes(out + "/preview.apng"))
    #expect(preview == frames[0] && summary.preview.frames == 11 && summary.preview.fps == 5)
    let sheet = try PNG.decode(try readBytes(out + "/contact_sheet.png"))
    #expect(sheet.width == 4 * 10 + 2 && sheet.height == 3 * 10 + 2)
    var tile = Image8(width: 8, height: 8, channels: 3, fill: 0)
    for y in 0..<8 {
        let row = ((2 + 10 + y) * sheet.width + 2 + 2 * 10) * 3  // tile (row 1, column 2) = frame 6
        tile.pixels.replaceSubrange(y * 24..<(y + 1) * 24, with: sheet.pixels[row..<row + 24])
    }
    #expect(tile == frames[6])
    // Nothing else next to the output.
    #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == ["seq", "w"])
}

@Test func finishingTwiceOrEarlyLeavesNothingBehind() throws {
    let p = try pipeline("pixel_k2")
    let scratch = TemporaryDirectory("ge-fin")
    let request = JobSpec(length: 5, parameters: .init(seed: 1))
    let early = try SequenceRun(pipeline: p, spec: request, workDirectory: scratch.file("early"))
    expectEngineError(.invalidInput, mentioning: "not complete") { try early.finish(into: scratch.file("a")) }
    let run = try runToEnd(p, request, work: scratch.file("w"))
    try run.finish(into: scratch.file("a"))
    let before = files(under: scratch.file("a"))
    expectEngineError(.invalidInput, mentioning: "already exists") { try run.finish(into: scratch.file("a")) }
    #expect(files(under: scratch.file("a")) == before)
    expectEngineError(.invalidInput, mentioning: "not a directory") { try run.finish(into: scratch.file("missing/b")) }
    #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == ["a", "early", "w"])
}

@Test func oneShotRunsLeaveOnlyTheOutputOrNothing() throws {
    let scratch = TemporaryDirectory("ge-oneshot")
    let pipe = fixture("pixel/pipeline.json")
    // Bad input: nothing is created.
    expectEngineError(.invalidInput, mentioning: "at least 1 frame") {
        _ = try OneShot.run(
            OneShotOptions(
                pipelinePath: pipe, spec: JobSpec(length: 0, parameters: .init(seed: 1)), output: scratch.file("o")))
    }
    expectEngineError(.invalidInput, mentioning: "cannot read") {
        _ = try OneShot.run(
            OneShotOptions(
                pipelinePath: scratch.file("none.json"), spec: JobSpec(length: 3, parameters: .init(seed: 1)),
                output: scratch.file("o")))
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)

    // A dry run writes nothing and prints the plan.
    let dry = try OneShot.run(
        OneShotOptions(
            pipelinePath: pipe, spec: JobSpec(length: 40, parameters: .init(seed: 1)),
            output: scratch.file("o"), dryRun: true))
    #expect(dry.summary == nil && dry.planText.contains("40 frames") && dry.planText.contains("estimated time"))
    #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)

    // Interrupted without a work directory: nothing is left.
    var steps = 0
    let stopping = RunHooks(onStep: { _ in steps += 1 }, shouldStop: { steps >= 3 })
    expectEngineError(.interrupted, mentioning: "stopped") {
        _ = try OneShot.run(
            OneShotOptions(
                pipelinePath: pipe, spec: JobSpec(length: 20, parameters: .init(seed: 1)), output: scratch.file("o")),
            hooks: stopping)
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)

    // Interrupted with a work directory: resumable; the resumed output equals a straight one.
    steps = 0
    let work = scratch.file("work")
    let options = OneShotOptions(
        pipelinePath: pipe, spec: JobSpec(length: 20, parameters: .init(seed: 1)), output: scratch.file("o"),
        workDirectory: work)
    expectEngineError(.interrupted, mentioning: "resume") { _ = try OneShot.run(options, hooks: stopping) }
    #expect(
        FileManager.default.fileExists(atPath: work + "/run.json")
            && !FileManager.default.fileExists(atPath: scratch.file("o")))
    var resume = options
    resume.resume = true
    let resumed = try OneShot.run(resume)
    #expect(resumed.summary?.frames == 20 && resumed.summary?.timings.sessions == 2)
    #expect(!FileManager.default.fileExists(atPath: work), "the work directory is removed after success")
    let straight = try OneShot.run(
        OneShotOptions(
            pipelinePath: pipe, spec: JobSpec(length: 20, parameters: .init(seed: 1)),
            output: scratch.file("p")))
    #expect(straight.summary?.files == resumed.summary?.files)
    #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == ["o", "p"])
    expectEngineError(.invalidInput, mentioning: "already exists") { _ = try OneShot.run(options) }
    expectEngineError(.invalidInput, mentioning: "no run to resume") {
        var o = resume
        o.output = scratch.file("q")
        _ = try OneShot.run(o)
    }
}

@Test func progressIsReportedForEveryUnitAndStep() throws {
    let p = try pipeline("pixel")
    let scratch = TemporaryDirectory("ge-prog")
    var progress: [JobProgress] = [], steps: [StepProgress] = []
    let run = try SequenceRun(
        pipeline: p, spec: JobSpec(length: 20, parameters: .init(seed: 1, steps: "3", srSteps: "2")),
        workDirectory: scratch.file("w"),
        hooks: RunHooks(onProgress: { progress.append($0) }, onStep: { steps.append($0) }))
    try run.execute(options: ExecutionOptions(threads: 1, maxBatch: 8))
    // 2 grids and 20 frames, each once; the last one has every frame.
    #expect(progress.count == 2 + 20)
    // Grids and frame batches alternate (frames of a finished grid need not wait for the next grid).
    #expect(
        progress[0].gridsDone == 1 && progress[0].stage == .grid && progress.filter { $0.gridsDone == 2 }.count >= 5)
    #expect(
        zip(progress, progress.dropFirst()).allSatisfy {
            $0.gridsDone <= $1.gridsDone && $0.framesDone <= $1.framesDone
        })
    #expect(progress.last?.stage == .sr && progress.last?.framesDone == 20)
    // The share of the work done only grows, to the whole of it by the last step.
    let fractions = steps.compactMap(\.fraction)
    #expect(fractions.count == steps.count && zip(fractions, fractions.dropFirst()).allSatisfy { $0 <= $1 + 1e-9 })
    #expect(fractions.last! > 0.999 && fractions.last! <= 1)
    // 2 grids × 3 steps, 20 frames × 2 steps.
    #expect(steps.filter { $0.stage == .grid }.count == 6 && steps.filter { $0.stage == .sr }.count == 40)
    #expect(
        steps.first
            == StepProgress(
                stage: .grid, grid: 1, grids: 2, step: 1, steps: 3, frame: 0, frames: 20,
                etaSeconds: steps.first!.etaSeconds, fraction: steps.first!.fraction, flops: steps.first!.flops))
    // The operations evaluated grow with every step of the session.
    let flops = steps.compactMap(\.flops)
    #expect(flops.count == steps.count && flops[0] > 0 && zip(flops, flops.dropFirst()).allSatisfy { $0 < $1 })

    // The printer: JSON lines parse; the bar ends with a newline.
    var text = ""
    let printer = ProgressPrinter(style: .jsonLines, interval: 0) { text += $0 }
    steps.prefix(3).forEach(printer.step)
    printer.progress(progress.last!)
    let lines = text.split(separator: "\n")
    #expect(lines.count == 4)
    for line in lines { #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "\(line)") }
    var bar = ""
    let barPrinter = ProgressPrinter(style: .bar, interval: 0) { bar += $0 }
    barPrinter.step(steps[0])
    barPrinter.progress(progress.last!)
    #expect(bar.hasPrefix("\rstage 1  grid 1/2  step 1/3") && bar.hasSuffix("\n") && bar.contains("100%"))
}

/// With two threads the stages run in two lanes: grids on the calling thread, frames on another,
/// their steps interleaved; progress still only grows and every unit and step is reported once.
@Test func withTwoThreadsTheFramesRunInTheirOwnLane() throws {
    let p = try pipeline("pixel")
    let scratch = TemporaryDirectory("ge-lanes")
    let caller = pthread_self()
    var progress: [JobProgress] = [], steps: [StepProgress] = [], onCaller: [Stage: Set<Bool>] = [:]
    let run = try SequenceRun(
        pipeline: p, spec: JobSpec(length: 20, parameters: .init(seed: 1, steps: "3", srSteps: "2")),
        workDirectory: scratch.file("w"),
        hooks: RunHooks(
            onProgress: { progress.append($0) },
            onStep: {
                steps.append($0)
                onCaller[$0.stage, default: []].insert(pthread_equal(pthread_self(), caller) != 0)
            }))
    try run.execute(options: ExecutionOptions(threads: 2, maxBatch: 8))
    #expect(onCaller == [.grid: [true], .sr: [false]])
    #expect(progress.count == 2 + 20 && progress.last?.framesDone == 20 && progress.last?.gridsDone == 2)
    #expect(
        zip(progress, progress.dropFirst()).allSatisfy {
            $0.gridsDone <= $1.gridsDone && $0.framesDone <= $1.framesDone
        })
    #expect(steps.filter { $0.stage == .grid }.count == 6 && steps.filter { $0.stage == .sr }.count == 40)
    let fractions = steps.compactMap(\.fraction)
    #expect(fractions.count == steps.count && zip(fractions, fractions.dropFirst()).allSatisfy { $0 <= $1 + 1e-9 })
}

func sha256Hex(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try #require(FileManager.default.contents(atPath: path)))
}
