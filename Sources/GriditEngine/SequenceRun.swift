// A resumable run of one sequence, bound to a work directory.
//
// Work directory layout (every file written whole: temporary name, fsync, rename):
//   run.json                    format, pipeline identity, spec, settings, plan (written once)
//   grids/grid_00003.npy        stage-1 grid 3 in model space (C, K·S, K·S), float32
//   grids/grid_00003.image.npy  its VAE decode, (C_img, K·s, K·s) (latent pipelines only)
//   frames/frame_00042.png      output frame 42, final (after stage 2, or the 8-bit LR frame)
//   timings.json                seconds spent so far, over every session
// A grid is done when its .npy exists (the image is written first), a frame when its .png
// exists. Everything else is recomputed, deterministically, so a resumed run writes the same bytes.

import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditDurable
import GriditImage
import GriditJobSpec
import GriditModels
import GriditTensor

/// Seconds spent on a run, summed over every session that worked on it. Batches shared with other
/// runs count fully for each of them, and the two stages run side by side with two threads or
/// more, so their seconds may add up to more than the run's wall time.
public struct RunTimings: Codable, Sendable, Equatable {
    /// Stage-1 batches (including the VAE decode of the grids).
    public var stage1Seconds: Double = 0
    /// Frame batches (bicubic, VAE encode, super-resolution, VAE decode, PNG encoding and writing).
    public var stage2Seconds: Double = 0
    /// The VAE's share of the two above.
    public var vaeSeconds: Double = 0
    /// Sessions that worked on the run (1 + resumes).
    public var sessions: Int = 0

    enum CodingKeys: String, CodingKey {
        case sessions
        case stage1Seconds = "stage1_seconds", stage2Seconds = "stage2_seconds", vaeSeconds = "vae_seconds"
    }
}

/// What one `execute` call (a session) has done for a run: its threads, the work evaluated (the
/// share done and the estimate left) and the work of units not stored yet. The run owns it; the
/// batch loop tells it what happened.
struct RunSession {
    var threads = 1
    var start: Date?
    /// Floating-point operations evaluated in this session.
    var flops = 0.0
    /// Those of units not stored yet (counted in the share done until they are, or dropped), per
    /// stage: the two stages' batches run side by side and end at different times.
    private var partial: [Stage: Double] = [:]

    mutating func begin(threads: Int, at now: Date) {
        self = RunSession(threads: threads, start: now)
    }

    var partialFlops: Double { Stage.allCases.reduce(0) { $0 + (partial[$1] ?? 0) } }

    mutating func evaluated(_ work: Double, in stage: Stage) {
        flops += work
        partial[stage, default: 0] += work
    }

    /// A unit whose evaluations took `work` is stored: its work counts as done from now on.
    mutating func stored(work: Double, in stage: Stage) { partial[stage] = max(0, (partial[stage] ?? 0) - work) }

    /// Units in flight will not be stored (the run stopped, or a batch of `stage` ended).
    mutating func dropPartial(_ stage: Stage? = nil) {
        if let stage { partial[stage] = 0 } else { partial = [:] }
    }
}

/// A run of one `JobSpec` on a `LoadedPipeline`, bound to a work directory.
///
/// Constructing it on an empty or missing directory starts a run; on a directory that holds the
/// same run (same settings, same pipeline digest) it resumes where that one stopped; on anything
/// else it throws `invalid_input`. Then `execute` (or `SequenceRun.execute(_:options:)` for several
/// runs batched together) until `isComplete`, and `finish(into:)` writes the output directory.
///
/// Not thread-safe: use a run from one thread at a time (`execute` hands it between its two
/// threads under one lock).
public final class SequenceRun {
    public let pipeline: LoadedPipeline
    public let spec: JobSpec
    public let settings: RunSettings
    public let plan: SequencePlan
    public let workDirectory: String
    public var hooks: RunHooks

    public internal(set) var timings: RunTimings
    /// The counters of the current `execute` call.
    var session = RunSession()
    /// Worker threads of the current `execute` call.
    var threads: Int { session.threads }
    private(set) var gridDone: [Bool]
    private(set) var frameDone: [Bool]
    private var gridsDoneCount = 0
    private var framesDoneCount = 0
    private var firstUndoneFrame = 0, firstUndoneGrid = 0

    let schedule1: DenoiseSchedule
    let schedule2: DenoiseSchedule?
    /// The precision of the work found in the work directory and discarded (see
    /// `startsOverOnOtherPrecision`); nil when the run resumed it or found none.
    public private(set) var startedOverFrom: String?
    // Small LRU of grids read back from disk (model space, image space).
    private var gridCache: [(id: Int, model: Tensor, image: Tensor)] = []

    static let runFormat = "gridit.run.v1"

    /// Starts or resumes the run of `spec` in `workDirectory`. `maxLength` overrides the
    /// pipeline's length limit. Throws `invalid_input` for a bad spec or a work directory that
    /// holds something else.
    /// - Parameter startsOverOnOtherPrecision: a work directory of the same run computed in
    ///   another precision (bf16 on a host with AVX512_BF16, resumed on one without, or back) is
    ///   emptied and the run starts over, rather than failing: its frames could not be continued
    ///   bit for bit here. For work directories that are the job's own (griditd's).
    public init(
        pipeline: LoadedPipeline, spec: JobSpec, workDirectory: String, hooks: RunHooks = RunHooks(),
        maxLength: Int? = nil, startsOverOnOtherPrecision: Bool = false
    ) throws {
        let settings = try spec.settings(for: pipeline.configuration, maxLength: maxLength)
        guard settings.precisionUsed == pipeline.precision.rawValue else {
            throw EngineError.invalid(
                "the run is for precision \(settings.precisionUsed), the pipeline is loaded in \(pipeline.precision.rawValue)",
                hint: "load the pipeline with precision \(settings.precisionUsed)")
        }
        let plan = try SequencePlan(settings: settings, pipeline: pipeline.configuration)
        self.pipeline = pipeline
        self.spec = spec
        self.settings = settings
        self.plan = plan
        self.workDirectory = workDirectory
        self.hooks = hooks
        self.gridDone = Array(repeating: false, count: plan.grids)
        self.frameDone = Array(repeating: false, count: plan.frames)
        self.timings = RunTimings()
        let variance1: VarianceType = pipeline.stage1.config.learnSigma ? .learnedRange : .fixedLarge
        schedule1 = DenoiseSchedule(
            diffusion: try GaussianDiffusion(respacing: settings.steps),
            kind: Self.kind(settings.sampler, eta: settings.eta), variance: variance1,
            prediction: pipeline.stage1.config.prediction, jumps: settings.jumps)
        if settings.superResolution, let sr = pipeline.stage2, let sampler = settings.srSampler,
            let steps = settings.srSteps
        {
            schedule2 = DenoiseSchedule(
                diffusion: try GaussianDiffusion(respacing: steps), kind: Self.kind(sampler, eta: settings.eta),
                variance: sr.config.learnSigma ? .learnedRange : .fixedLarge,
                prediction: sr.config.prediction)
        } else {
            schedule2 = nil
        }
        try openWorkDirectory(startsOverOnOtherPrecision: startsOverOnOtherPrecision)
    }

    static func kind(_ s: SamplerName, eta: Double) -> SamplerKind {
        switch s {
        case .ddpm: .ddpm
        case .ddim: .ddim(eta: Float(eta))
        case .dpmpp2m: .dpmSolver2M
        case .dpmpp2mSDE: .dpmSolver2MSDE
        }
    }

    // MARK: State

    public var isComplete: Bool { framesDoneCount == plan.frames }
    public var gridsDone: Int { gridsDoneCount }
    public var framesDone: Int { framesDoneCount }

    /// Where the run stands (everything counted is durable).
    public var progress: JobProgress {
        JobProgress(
            stage: gridsDoneCount < plan.grids ? .grid : .sr, gridsDone: gridsDoneCount, framesDone: framesDoneCount)
    }

    /// Work of one grid and of one frame, in floating-point operations.
    var gridFlops: Double { (plan.stage1.flops + plan.vae.gridFlops) / Double(plan.grids) }
    var frameFlops: Double { ((plan.stage2?.flops ?? 0) + plan.vae.flops - plan.vae.gridFlops) / Double(plan.frames) }

    var fraction: Double {
        let total = plan.flops
        guard total > 0 else { return isComplete ? 1 : Double(framesDoneCount) / Double(plan.frames) }
        let done = Double(gridsDoneCount) * gridFlops + Double(framesDoneCount) * frameFlops + session.partialFlops
        return min(1, done / total)
    }

    var eta: Double? {
        guard let start = session.start, session.flops > 0 else { return nil }
        let rate = session.flops / max(Date().timeIntervalSince(start), 1e-9)
        return max(0, plan.flops * (1 - fraction)) / rate
    }

    // MARK: Work directory

    static let runFileName = "run.json"
    var runFile: String { workDirectory + "/" + Self.runFileName }
    var timingsFile: String { workDirectory + "/timings.json" }
    func gridPath(_ g: Int) -> String { workDirectory + String(format: "/grids/grid_%05d.npy", g) }
    func gridImagePath(_ g: Int) -> String { workDirectory + String(format: "/grids/grid_%05d.image.npy", g) }
    func framePath(_ i: Int) -> String { workDirectory + "/frames/" + Self.frameName(i) }
    static func frameName(_ i: Int) -> String { String(format: "frame_%05d.png", i) }

    struct RunFile: Encodable {
        var format: String
        var pipeline: PipelineIdentity
        var spec: JobSpec
        var settings: RunSettings
        var plan: SequencePlan
    }

    /// What a resume compares in `run.json` (files of every gridit version have these).
    struct RunFileIdentity: Decodable {
        var format: String
        var pipeline: PipelineIdentity
        var settings: RunSettings
    }

    private func openWorkDirectory(startsOverOnOtherPrecision: Bool) throws {
        let fm = FileManager.default
        if Files.exists(runFile) {
            var stored: RunFileIdentity
            do {
                stored = try JSONDecoder().decode(
                    RunFileIdentity.self, from: Data(contentsOf: URL(fileURLWithPath: runFile)))
            } catch {
                throw EngineError.invalid(
                    "work directory '\(workDirectory)' has an unreadable run.json",
                    hint: "remove the directory or choose another work directory")
            }
            stored.settings = stored.settings.filledAsOlderVersions()
            var samePrecision = stored.settings
            samePrecision.precisionUsed = settings.precisionUsed
            if startsOverOnOtherPrecision, stored.format == Self.runFormat, samePrecision == settings,
                stored.settings.precisionUsed != settings.precisionUsed,
                stored.pipeline.digest == pipeline.identity.digest
            {
                Files.remove(workDirectory)
                startedOverFrom = stored.settings.precisionUsed
                return try openWorkDirectory(startsOverOnOtherPrecision: false)
            }
            guard stored.format == Self.runFormat, stored.settings == settings,
                stored.pipeline.digest == pipeline.identity.digest
            else {
                throw EngineError.invalid(
                    "work directory '\(workDirectory)' holds a different run (seed \(stored.settings.seed), "
                        + "\(stored.settings.length) frames, pipeline \(stored.pipeline.digest.prefix(19))…)",
                    hint: "use another work directory, or remove this one to start over")
            }
        } else {
            // A start killed before run.json was in place leaves at most its temporary file (or,
            // from gridit versions that made them first, empty grids/ and frames/): nothing was
            // computed, so the run starts there afresh. Anything else is not ours to overwrite.
            let entries = Files.isDirectory(workDirectory) ? (try? fm.contentsOfDirectory(atPath: workDirectory)) : nil
            let work = workDirectory
            let interrupted = { (name: String) -> Bool in
                DurableFiles.isTemporary(name, of: Self.runFileName)
                    || ((name == "grids" || name == "frames")
                        && (try? fm.contentsOfDirectory(atPath: work + "/" + name))?.isEmpty == true)
            }
            if let entries, !entries.allSatisfy(interrupted) {
                throw EngineError.invalid(
                    "work directory '\(workDirectory)' is not empty and holds no gridit run",
                    hint: "choose an empty or new directory")
            }
            if Files.exists(workDirectory) && !Files.isDirectory(workDirectory) {
                throw EngineError.invalid(
                    "work directory '\(workDirectory)' is a file", hint: "choose a directory path")
            }
            for name in entries ?? [] where DurableFiles.isTemporary(name, of: Self.runFileName) {
                Files.remove(workDirectory + "/" + name)
            }
            // run.json first: a work directory with anything else in it always has one.
            try Files.makeDirectory(workDirectory)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let record = RunFile(
                format: Self.runFormat, pipeline: pipeline.identity, spec: spec, settings: settings,
                plan: plan)
            try Files.write(try encoder.encode(record), to: runFile)
        }
        try Files.makeDirectory(workDirectory + "/grids")
        try Files.makeDirectory(workDirectory + "/frames")
        let latent = pipeline.vae != nil
        for name in (try? fm.contentsOfDirectory(atPath: workDirectory + "/grids")) ?? [] {
            guard name.hasPrefix("grid_"), name.hasSuffix(".npy"), !name.hasSuffix(".image.npy"),
                let g = Int(name.dropFirst(5).dropLast(4)), (0..<plan.grids).contains(g)
            else { continue }
            if latent && !Files.exists(gridImagePath(g)) { continue }
            gridDone[g] = true
        }
        for name in (try? fm.contentsOfDirectory(atPath: workDirectory + "/frames")) ?? [] {
            guard name.hasPrefix("frame_"), name.hasSuffix(".png"), let i = Int(name.dropFirst(6).dropLast(4)),
                (0..<plan.frames).contains(i)
            else { continue }
            frameDone[i] = true
        }
        gridsDoneCount = gridDone.filter { $0 }.count
        framesDoneCount = frameDone.filter { $0 }.count
        if let data = FileManager.default.contents(atPath: timingsFile),
            let t = try? JSONDecoder().decode(RunTimings.self, from: data)
        {
            timings = t
        }
    }

    func saveTimings() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try Files.write(try encoder.encode(timings), to: timingsFile)
    }

    /// Deletes the work directory (after `finish`, or to abandon the run).
    public func removeWorkDirectory() {
        Files.remove(workDirectory)
    }

    // MARK: What is ready

    /// Stage-1 grids that are not done and whose sources are, ascending, at most `limit`.
    func readyGrids(limit: Int) -> [Int] {
        while firstUndoneGrid < plan.grids && gridDone[firstUndoneGrid] { firstUndoneGrid += 1 }
        var out: [Int] = []
        var g = firstUndoneGrid
        let firstInBetween = plan.mode == .official ? (plan.officialExtensions ?? 0) + 1 : plan.grids
        while g < plan.grids && out.count < limit {
            if gridDone[g] {
                g += 1
                continue
            }
            if plan.grid(g).dependencies.allSatisfy({ gridDone[$0] }) {
                out.append(g)
                g += 1
            } else if g < firstInBetween {
                g = max(g + 1, firstInBetween)  // the chain of extensions waits; the in-between grids may not
            } else {
                break  // in-between grids (and gridit extensions) become ready in id order
            }
        }
        return out
    }

    /// Frames not written yet whose grid is done, ascending, at most `limit`.
    func readyFrames(limit: Int) -> [Int] {
        while firstUndoneFrame < plan.frames && frameDone[firstUndoneFrame] { firstUndoneFrame += 1 }
        var out: [Int] = []
        var i = firstUndoneFrame
        while i < plan.frames && out.count < limit {
            if !frameDone[i] && gridDone[plan.source(ofFrame: i).grid] { out.append(i) }
            i += 1
        }
        return out
    }

    // MARK: Grids on disk

    /// Grid `g` (done) in model space and image space.
    func grid(_ g: Int) throws -> (model: Tensor, image: Tensor) {
        if let hit = gridCache.firstIndex(where: { $0.id == g }) {
            let entry = gridCache.remove(at: hit)
            gridCache.append(entry)
            return (entry.model, entry.image)
        }
        let model = pipeline.configuration.modelLayout, image = pipeline.configuration.imageLayout
        guard let m = Files.readTensor(gridPath(g), shape: model.gridShape) else {
            markGridMissing(g)
            throw EngineError(
                .transient, "grid \(g) vanished from the work directory '\(workDirectory)'",
                hint: "run again to recompute it")
        }
        var img = m
        if pipeline.vae != nil {
            guard let i = Files.readTensor(gridImagePath(g), shape: image.gridShape) else {
                markGridMissing(g)
                throw EngineError(.transient, "grid \(g)'s image vanished from '\(workDirectory)'", hint: "run again")
            }
            img = i
        }
        gridCache.append((g, m, img))
        if gridCache.count > 2 * plan.k + 2 { gridCache.removeFirst() }
        return (m, img)
    }

    /// Grids held in memory (`grid`'s cache).
    var cachedGrids: Int { gridCache.count }

    /// Lets go of the grids held in memory: the run has left its batch, which may go on for
    /// hundreds of jobs more (they are read from disk again if it is ever asked for one).
    func releaseCache() { gridCache = [] }

    /// A done grid whose file is gone (or damaged): recompute it (deterministically, same bytes).
    private func markGridMissing(_ g: Int) {
        guard gridDone[g] else { return }
        gridDone[g] = false
        gridsDoneCount -= 1
        firstUndoneGrid = min(firstUndoneGrid, g)
        Files.remove(gridPath(g))
    }

    /// Marks grid `g` done after writing its files (image first: the model file marks it done).
    func storeGrid(_ g: Int, model: Tensor, image: Tensor?) throws {
        if let image { try Files.write(image, to: gridImagePath(g)) }
        try Files.write(model, to: gridPath(g))
        if !gridDone[g] {
            gridDone[g] = true
            gridsDoneCount += 1
        }
        gridCache.append((g, model, image ?? model))
        if gridCache.count > 2 * plan.k + 2 { gridCache.removeFirst() }
    }

    func storeFrame(_ i: Int, png: [UInt8]) throws {
        try Files.write(png, to: framePath(i))
        if !frameDone[i] {
            frameDone[i] = true
            framesDoneCount += 1
        }
    }
}
