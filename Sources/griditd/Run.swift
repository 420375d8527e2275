// `griditd run`: flags (the sampling ones are griditctl submit's `SamplingOptions`) → a `JobSpec`
// and `OneShotOptions` → GriditEngine.OneShot.run; errors → messages and exit codes.

import ArgumentParser
import Foundation
import GriditAPI
import GriditCLI
import GriditEngine
import GriditJobSpec
import Synchronization

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Generate one sequence from a pipeline file, without the daemon.",
        discussion: """
            Writes DIR/frames/frame_00000.png …, DIR/preview.apng, DIR/contact_sheet.png and DIR/sequence.json. \
            DIR appears only when complete. With --work-dir the run is resumable: run the same command again \
            after an interruption. Exit codes: 0 done, 64 bad flags, 65 bad input (request or pipeline files), \
            70 internal error, 75 temporary failure (disk full, I/O; retry), 130 interrupted.
            """)

    @Option(help: "The pipeline file (pipeline.json).") var pipeline: String
    @Option(help: "Frames to generate.") var length: Int
    @Option(help: "Output directory (must not exist).") var out: String?
    @OptionGroup var sampling: SamplingOptions
    @Option(help: "Worker threads (default: all CPUs). Results do not depend on it.") var threads: Int?
    @Option(name: .customLong("memory-budget"), help: "Activation memory per batch, e.g. 512M, 2G.")
    var memoryBudget: String = "2G"
    @Option(name: .customLong("max-batch"), help: "Most grids or frames per batched forward.") var maxBatch: Int = 16
    @Option(name: .customLong("max-length"), help: "Override the pipeline's length limit.") var maxLength: Int?
    @Option(name: .customLong("work-dir"), help: "Keep the run's state here (resumable); default: a temporary one.")
    var workDir: String?
    @Flag(help: "Require --work-dir to hold the interrupted run.") var resume = false
    @Flag(name: .customLong("keep-work-dir"), help: "Do not delete --work-dir after success.") var keepWorkDir = false
    @Flag(
        name: .customLong("dry-run"), help: "Print the plan (grids, steps, model evaluations, estimated time) and stop."
    )
    var dryRun = false
    @Flag(help: "With --dry-run: time one forward of each model for the estimate.") var calibrate = false
    @Option(help: "Progress: auto (a bar on a terminal, JSON lines otherwise), bar, json, none.") var progress = "auto"
    @Flag(help: "Print the plan or the result as JSON on stdout.") var json = false
    @Option(name: .customLong("preview-fps"), help: "Frames per second of preview.apng.") var previewFPS = 8

    func validate() throws {
        if !dryRun && out == nil { throw ValidationError("--out DIR is required (or use --dry-run)") }
        if !["auto", "bar", "json", "none"].contains(progress) {
            throw ValidationError("--progress must be auto, bar, json or none")
        }
        if resume && workDir == nil { throw ValidationError("--resume needs --work-dir") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        if maxBatch < 1 { throw ValidationError("--max-batch must be at least 1") }
        if !(1...1000).contains(previewFPS) { throw ValidationError("--preview-fps must be 1...1000") }
        if parseBytes(memoryBudget) == nil {
            throw ValidationError("--memory-budget '\(memoryBudget)': use e.g. 512M or 2G")
        }
    }

    func run() throws {
        var parameters = sampling.parameters
        parameters.seed = parameters.seed ?? 0
        let spec = JobSpec(length: length, parameters: parameters)
        var execution = ExecutionOptions(maxBatch: maxBatch)
        if let threads { execution.threads = threads }
        execution.memoryBudget = parseBytes(memoryBudget)!
        let options = OneShotOptions(
            pipelinePath: pipeline, spec: spec, output: out ?? "", workDirectory: workDir, resume: resume,
            keepWorkDirectory: keepWorkDir, dryRun: dryRun, calibrate: calibrate, execution: execution,
            outputOptions: OutputOptions(previewFPS: previewFPS), maxLength: maxLength)
        let style: ProgressPrinter.Style =
            switch progress {
            case "bar": .bar
            case "json": .jsonLines
            case "none": .none
            default: isatty(STDERR_FILENO) != 0 ? .bar : .jsonLines
            }
        let printer = ProgressPrinter(style: dryRun ? .none : style) { text in
            FileHandle.standardError.write(Data(text.utf8))
        }
        installStopHandlers()
        do {
            let result = try OneShot.run(
                options, hooks: printer.hooks(shouldStop: { stopRequested.load(ordering: .relaxed) }))
            printer.close()
            report(result)
        } catch let error as EngineError {
            printer.close()
            var text = "griditd run: error: \(error.message)"
            if let hint = error.hint { text += "\n  hint: \(hint)" }
            if error.code == .interrupted {
                text =
                    workDir.map { "griditd run: interrupted; resume with the same command (work directory '\($0)')" }
                    ?? "griditd run: interrupted; nothing was written (use --work-dir to make runs resumable)"
            }
            FileHandle.standardError.write(Data((text + "\n").utf8))
            throw ExitCode(griditExitCode(error.code))
        }
    }

    private func report(_ result: OneShotResult) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let summary = result.summary else {
            if json, let data = try? encoder.encode(result.plan) {
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(result.planText)
            }
            return
        }
        if json {
            var s = summary
            s.files = []  // the frame list is in sequence.json
            if let data = try? encoder.encode(s) { print(String(decoding: data, as: UTF8.self)) }
            return
        }
        let t = summary.timings
        print(result.planText)
        print("wrote \(summary.frames) frames (\(summary.frameSize)×\(summary.frameSize)) to \(out!)")
        print(
            String(
                format: "time: load %.2fs, stage 1 %.2fs, stage 2 %.2fs (VAE %.2fs), output %.2fs, total %.2fs",
                result.loadSeconds, t.stage1Seconds, t.stage2Seconds, t.vaeSeconds, result.finishSeconds,
                result.loadSeconds + result.executeSeconds + result.finishSeconds))
    }
}

private func griditExitCode(_ code: EngineError.Code) -> Int32 {
    switch code {
    case .invalidInput: 65
    case .interrupted: 130
    case .diskFull, .transient: 75
    default: 70
    }
}

/// Set by SIGINT/SIGTERM; the run stops after its current denoising step.
let stopRequested = Atomic<Bool>(false)

private func installStopHandlers() {
    for sig in [SIGINT, SIGTERM] {
        signal(sig) { _ in stopRequested.store(true, ordering: .relaxed) }
    }
}
