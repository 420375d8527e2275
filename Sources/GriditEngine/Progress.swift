// Progress reporting and stopping: what a run tells its caller (GriditJobSpec's `JobProgress`
// and `StepProgress`, the types the daemon stores and the API shows), and how the caller stops it.

import Foundation
import GriditJobSpec

/// Callbacks of a run, called one at a time by the engine: on the thread that executes the run, or
/// (stage 2 beside stage 1, two threads or more) on the engine's second thread.
public struct RunHooks {
    /// After each durable unit: a stage-1 grid written, or a batch of frames written. A daemon
    /// saves this as the job's progress and heartbeats its lease.
    public var onProgress: (JobProgress) -> Void
    /// After every denoising step of every item of this run (cheap; for progress bars).
    public var onStep: (StepProgress) -> Void
    /// Asked between denoising steps (and before each batch); true stops the run with
    /// `EngineError.interrupted`, its work directory left resumable at the last durable unit.
    public var shouldStop: () -> Bool

    public init(
        onProgress: @escaping (JobProgress) -> Void = { _ in }, onStep: @escaping (StepProgress) -> Void = { _ in },
        shouldStop: @escaping () -> Bool = { false }
    ) {
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

    public init(
        threads: Int = ProcessInfo.processInfo.activeProcessorCount, memoryBudget: Int = 2 << 30,
        maxBatch: Int = 16
    ) {
        self.threads = max(1, threads)
        self.memoryBudget = max(0, memoryBudget)
        self.maxBatch = max(1, maxBatch)
    }
}
