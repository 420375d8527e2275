// `griditd run`: one sequence from a pipeline file to an output directory, without the daemon
// (batch schedulers, debugging). The executable only parses flags and calls `OneShot.run`.

import Foundation
import GriditDiffusion
import GriditJobSpec
import GriditModels
import GriditTensor

public struct OneShotOptions: Sendable {
    public var pipelinePath: String
    public var spec: JobSpec
    public var output: String
    /// nil: a temporary work directory next to the output, removed whatever happens. Given: the
    /// run is resumable there (rerun the same command), and it is removed after success unless
    /// `keepWorkDirectory`.
    public var workDirectory: String?
    /// Require `workDirectory` to hold this run already.
    public var resume: Bool
    public var keepWorkDirectory: Bool
    /// Print the plan and stop.
    public var dryRun: Bool
    /// For the dry run's estimate: time one forward of each model instead of assuming a rate.
    public var calibrate: Bool
    public var execution: ExecutionOptions
    public var outputOptions: OutputOptions
    public var maxLength: Int?

    public init(
        pipelinePath: String, spec: JobSpec, output: String, workDirectory: String? = nil,
        resume: Bool = false, keepWorkDirectory: Bool = false, dryRun: Bool = false, calibrate: Bool = false,
        execution: ExecutionOptions = ExecutionOptions(), outputOptions: OutputOptions = OutputOptions(),
        maxLength: Int? = nil
    ) {
        self.pipelinePath = pipelinePath
        self.spec = spec
        self.output = output
        self.workDirectory = workDirectory
        self.resume = resume
        self.keepWorkDirectory = keepWorkDirectory
        self.dryRun = dryRun
        self.calibrate = calibrate
        self.execution = execution
        self.outputOptions = outputOptions
        self.maxLength = maxLength
    }
}

/// What a one-shot run did.
public struct OneShotResult: Sendable {
    /// The plan as text (always), and the summary when the run finished (nil for a dry run).
    public var planText: String
    public var plan: SequencePlan
    public var summary: SequenceSummary?
    /// Seconds: loading the pipeline (mapping, binding, hashing), executing, writing the output.
    public var loadSeconds: Double
    public var executeSeconds: Double
    public var finishSeconds: Double
}

public enum OneShot {
    /// Runs `options` to completion. `hooks` receive progress and are asked whether to stop
    /// (a stopped run throws `interrupted`; with a given work directory it can be resumed).
    /// Nothing is left at the output path unless the whole output was written.
    public static func run(_ options: OneShotOptions, hooks: RunHooks = RunHooks()) throws -> OneShotResult {
        let output = (options.output as NSString).standardizingPath
        if !options.dryRun {
            if Files.exists(output) {
                throw EngineError.invalid(
                    "output '\(output)' already exists", hint: "choose another --out or remove it")
            }
            let parent = (output as NSString).deletingLastPathComponent
            guard Files.isDirectory(parent.isEmpty ? "." : parent) else {
                throw EngineError.invalid(
                    "the parent directory of --out '\(output)' does not exist", hint: "create it first")
            }
        }
        let configuration = try PipelineConfiguration.load(path: options.pipelinePath)
        let settings = try options.spec.settings(for: configuration, maxLength: options.maxLength)
        let plan = try SequencePlan(settings: settings, pipeline: configuration)
        if options.dryRun {
            var cost = CostModel.nominal(configuration)
            if options.calibrate {
                cost = try LoadedPipeline(path: options.pipelinePath, precision: settings.precision).measureCost(
                    threads: options.execution.threads)
            }
            return OneShotResult(
                planText: plan.render(cost: cost), plan: plan, summary: nil, loadSeconds: 0,
                executeSeconds: 0, finishSeconds: 0)
        }
        if options.resume {
            guard let dir = options.workDirectory, Files.exists(dir + "/run.json") else {
                throw EngineError.invalid(
                    "--resume: '\(options.workDirectory ?? "")' holds no run to resume",
                    hint: "give the --work-dir of the interrupted run, or drop --resume")
            }
        }
        let loadStarted = Date()
        let pipeline = try LoadedPipeline(path: options.pipelinePath, precision: settings.precision)
        let loadSeconds = Date().timeIntervalSince(loadStarted)

        let temporaryWork = options.workDirectory == nil
        let work: String
        if let dir = options.workDirectory {
            work = (dir as NSString).standardizingPath
        } else {
            let parent = (output as NSString).deletingLastPathComponent
            var template = Array(
                "\(parent.isEmpty ? "." : parent)/.\((output as NSString).lastPathComponent).work-XXXXXX".utf8CString)
            guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
                throw EngineError.posix("mkdtemp next to", path: output)
            }
            work = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        var succeeded = false
        defer {
            if temporaryWork || (succeeded && !options.keepWorkDirectory) { Files.remove(work) }
        }
        let run = try SequenceRun(
            pipeline: pipeline, spec: options.spec, workDirectory: work, hooks: hooks,
            maxLength: options.maxLength)
        let executeStarted = Date()
        try run.execute(options: options.execution)
        let executeSeconds = Date().timeIntervalSince(executeStarted)
        let finishStarted = Date()
        let summary = try run.finish(into: output, options: options.outputOptions)
        succeeded = true
        return OneShotResult(
            planText: plan.render(cost: CostModel.nominal(configuration)), plan: plan, summary: summary,
            loadSeconds: loadSeconds, executeSeconds: executeSeconds,
            finishSeconds: Date().timeIntervalSince(finishStarted))
    }
}

extension LoadedPipeline {
    /// Costs measured on this machine: one forward of each model at batch 1 (after one warm-up),
    /// one VAE encode and decode at the grid and frame sizes.
    public func measureCost(threads: Int) throws -> CostModel {
        func time(_ body: () throws -> Void) rethrows -> Double {
            try body()  // warm-up: page in the weights, allocate
            let start = Date()
            try body()
            return Date().timeIntervalSince(start)
        }
        func forwardSeconds(_ model: DiT) throws -> Double {
            let c = model.config, s = c.inputSize
            let ws = model.makeWorkspace(batch: 1, workers: threads)
            let x = Tensor(zeros: [1, c.inChannels, s, s])
            let condition = c.conditionChannels > 0 ? Tensor(zeros: [1, c.conditionChannels, s, s]) : nil
            let y: [Int]? = c.numClasses > 0 ? [0] : nil
            return try time { try model.forward(x: x, t: [500], y: y, condition: condition, workspace: ws) }
        }
        let p = configuration
        var cost = CostModel.nominal(p)
        cost.stage1SecondsPerEvaluation = try forwardSeconds(stage1)
        if let guide { cost.guideSecondsPerEvaluation = try forwardSeconds(guide) }
        if let stage2 { cost.stage2SecondsPerEvaluation = try forwardSeconds(stage2) }
        if let vae {
            let image = p.imageLayout, c = p.spec.grid.channels
            let grid = Tensor(zeros: [1, c, image.gridSize, image.gridSize])
            var latent = Tensor(zeros: [0])
            cost.vaeGridEncodeSeconds = try time { latent = try vae.encode(grid, threads: threads).mean }
            cost.vaeGridDecodeSeconds = try time { _ = try vae.decode(latent, threads: threads) }
            if let hr = p.highResolutionSize {
                let frame = Tensor(zeros: [1, c, hr, hr])
                cost.vaeFrameEncodeSeconds = try time { latent = try vae.encode(frame, threads: threads).mean }
                cost.vaeFrameDecodeSeconds = try time { _ = try vae.decode(latent, threads: threads) }
            }
        }
        cost.source = "measured, \(threads) thread\(threads == 1 ? "" : "s"), batch 1"
        return cost
    }
}
