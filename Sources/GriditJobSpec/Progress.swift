// Where a job stands, in one pair of types from the engine to the wire: the engine reports them,
// the worker relays them, the job queue stores `JobProgress` (the resume point), and the API
// and griditctl show both. One set of stage names everywhere.

import Foundation

/// The two stages of a job.
public enum Stage: String, Codable, Hashable, Sendable, CaseIterable {
    /// Stage 1: the low-resolution grids (and, for latent pipelines, their VAE decode).
    case grid
    /// Stage 2, frame by frame: super-resolution (or just the 8-bit frames with `no_sr`).
    case sr
}

/// Where a job has got to after its last durable unit (a finished grid or frame): everything
/// counted is on disk in its work directory, so a job recovered after a crash resumes there. While
/// it runs, the API adds the live step.
///
/// Stored as JSON: `{"stage":"grid","grids_done":0,"frames_done":0}`.
public struct JobProgress: Codable, Hashable, Sendable {
    public var stage: Stage
    public var gridsDone: Int
    public var framesDone: Int
    /// The latest denoising step while the job runs (the API only; never stored).
    public var live: StepProgress?

    public init(stage: Stage = .grid, gridsDone: Int = 0, framesDone: Int = 0, live: StepProgress? = nil) {
        self.stage = stage
        self.gridsDone = gridsDone
        self.framesDone = framesDone
        self.live = live
    }

    enum CodingKeys: String, CodingKey {
        case stage, live
        case gridsDone = "grids_done"
        case framesDone = "frames_done"
    }
}

/// One denoising step: stage, grid g of N, step j of M, frames, and an estimate. The engine
/// reports one after every model evaluation of every item (progress bars, and the worker's sign
/// of life).
public struct StepProgress: Codable, Hashable, Sendable {
    public var stage: Stage
    /// Stage 1: the grid being denoised (1-based). Stage 2: the grids done.
    public var grid: Int
    public var grids: Int
    public var step: Int
    public var steps: Int
    /// Stage 2: the frame being super-resolved (1-based). Stage 1: the frames done.
    public var frame: Int
    public var frames: Int
    /// Seconds left for the whole job, when the engine can tell.
    public var etaSeconds: Double?
    /// Share of the job's work done, 0...1 (both stages, by floating-point operations).
    public var fraction: Double?
    /// Floating-point operations the engine evaluated for this job since it started (or resumed)
    /// here; griditd's `gridit_engine_flops_total` and GFLOP/s come from its growth.
    public var flops: Double?

    public init(
        stage: Stage, grid: Int, grids: Int, step: Int, steps: Int, frame: Int, frames: Int,
        etaSeconds: Double? = nil, fraction: Double? = nil, flops: Double? = nil
    ) {
        self.stage = stage
        self.grid = grid
        self.grids = grids
        self.step = step
        self.steps = steps
        self.frame = frame
        self.frames = frames
        self.etaSeconds = etaSeconds
        self.fraction = fraction
        self.flops = flops
    }

    enum CodingKeys: String, CodingKey {
        case stage, grid, grids, step, steps, frame, frames, fraction, flops
        case etaSeconds = "eta_seconds"
    }
}
