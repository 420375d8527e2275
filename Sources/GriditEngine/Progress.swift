// Progress reporting and stopping: what a run tells its caller, and how the caller stops it.
import Foundation

public enum RunStage: String, Codable, Sendable {
    /// Stage-1 grids (and, for latent pipelines, their VAE decode).
    case stage1 = "stage1"
    /// Per-frame work: super-resolution (or just the 8-bit frames with `no_sr`).
    case stage2 = "stage2"
    case done
}

/// Where a run stands after a durable unit (a finished grid or frame batch). Everything counted
/// here is on disk in the work directory.
public struct RunProgress: Codable, Sendable, Equatable {
    public var stage: RunStage
    public var gridsDone: Int
    public var gridsTotal: Int
    public var framesDone: Int
    public var framesTotal: Int
    /// Fraction of the plan's floating-point work that is done, 0…1.
    public var fraction: Double
    /// Estimated seconds left (from this session's speed; nil before anything was measured).
    public var etaSeconds: Double?

    public init(stage: RunStage, gridsDone: Int, gridsTotal: Int, framesDone: Int, framesTotal: Int, fraction: Double,
                etaSeconds: Double?) {
        self.stage = stage
        self.gridsDone = gridsDone
        self.gridsTotal = gridsTotal
        self.framesDone = framesDone
        self.framesTotal = framesTotal
        self.fraction = fraction
        self.etaSeconds = etaSeconds
    }

    enum CodingKeys: String, CodingKey {
        case stage, fraction
        case gridsDone = "grids_done", gridsTotal = "grids_total", framesDone = "frames_done"
        case framesTotal = "frames_total", etaSeconds = "eta_seconds"
    }
}

/// One denoising step of one item of a run (for progress bars).
public struct StepProgress: Codable, Sendable, Equatable {
    public var stage: RunStage
    /// Stage 1: the grid id (0 ..< grids). Stage 2: the frame index.
    public var item: Int
    /// Stage 1: grids; stage 2: frames.
    public var itemsTotal: Int
    /// Model evaluations of this item so far (1 … stepsTotal).
    public var step: Int
    public var stepsTotal: Int
    /// Fraction of the plan's work done, 0…1, and the estimated seconds left.
    public var fraction: Double
    public var etaSeconds: Double?

    public init(stage: RunStage, item: Int, itemsTotal: Int, step: Int, stepsTotal: Int, fraction: Double,
                etaSeconds: Double?) {
        self.stage = stage
        self.item = item
        self.itemsTotal = itemsTotal
        self.step = step
        self.stepsTotal = stepsTotal
        self.fraction = fraction
        self.etaSeconds = etaSeconds
    }

    enum CodingKeys: String, CodingKey {
        case stage, item, step, fraction
        case itemsTotal = "items_total", stepsTotal = "steps_total", etaSeconds = "eta_seconds"
    }
}

/// Callbacks of a run. They are called on the thread that executes the run.
public struct RunHooks {
    /// After each durable unit: a stage-1 grid written, or a batch of frames written. A daemon
    /// saves this as the job's progress and heartbeats its lease.
    public var onProgress: (RunProgress) -> Void
    /// After every denoising step of every item of this run (cheap; for progress bars).
    public var onStep: (StepProgress) -> Void
    /// Asked between denoising steps (and before each batch); true stops the run with
    /// `EngineError.interrupted`, its work directory left resumable at the last durable unit.
    public var shouldStop: () -> Bool

    public init(onProgress: @escaping (RunProgress) -> Void = { _ in }, onStep: @escaping (StepProgress) -> Void = { _ in },
                shouldStop: @escaping () -> Bool = { false }) {
        self.onProgress = onProgress
        self.onStep = onStep
        self.shouldStop = shouldStop
    }
}

/// How a call to `execute` runs: threads and how much memory its batches may take.
public struct ExecutionOptions: Sendable, Equatable {
    /// Worker threads of the models' fixed schedules (results are bit-identical for any count).
    public var threads: Int
    /// Bytes of activations a batch may take (model workspaces and per-item state); batches are
    /// as large as this allows, up to `maxBatch`.
    public var memoryBudget: Int
    /// Most items (grids or frames) in one batched forward.
    public var maxBatch: Int

    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount, memoryBudget: Int = 2 << 30,
                maxBatch: Int = 16) {
        self.threads = max(1, threads)
        self.memoryBudget = max(0, memoryBudget)
        self.maxBatch = max(1, maxBatch)
    }
}
