// Batched execution of several runs that share one LoadedPipeline: stage-1 grids of different
// runs go through one batched forward, stage-2 frames of different runs through another, each
// batch as large as the memory budget allows. Every item keeps its own seed and noise keys, and
// the models run each sample on a fixed schedule, so a run's bytes do not depend on what it was
// batched with, on the batch sizes or on the thread count.
//
// With two threads or more the stages run side by side, in two lanes: grids on the calling
// thread, the frames of finished grids on a second one, each lane's forwards on half the threads
// (all of them while the other lane has nothing to do). Small models use one core far better than
// two, and the frames of grid g are ready while grid g+1 is denoised. The lanes share one lock that
// a lane lets go of only inside the model's forward, so all bookkeeping (runs, files, hooks) is
// still done by one thread at a time.

import Foundation
import GriditDiffusion
import GriditImage
import GriditJobSpec
import GriditModels
import GriditTensor

extension SequenceRun {
    /// Runs this run to completion on the calling thread. Throws `EngineError` (`interrupted` when
    /// `hooks.shouldStop` said so; the work directory then resumes where it stopped).
    public func execute(options: ExecutionOptions = ExecutionOptions()) throws {
        if case .failure(let error) = Self.execute([self], options: options)[0] { throw error }
    }

    /// Runs several runs of the same `LoadedPipeline` together, batching their grids and frames,
    /// on the calling thread, until every run is complete, failed or stopped. A run that fails or
    /// is stopped does not stop the others.
    ///
    /// - `admit` is called before every batch and may return more runs (of the same pipeline) to
    ///   join, so new jobs start without waiting for the others.
    /// - `finished(run, result)` is called once per run as soon as it leaves (complete, failed or
    ///   stopped): a daemon can `finish(into:)` it right there.
    /// `admit`, `finished` and the runs' hooks are called one at a time, but with two lanes not
    /// always on the calling thread.
    /// Returns one result per run: the given runs in order, then the admitted ones in admission order.
    @discardableResult
    public static func execute(
        _ runs: [SequenceRun], options: ExecutionOptions = ExecutionOptions(),
        admit: () -> [SequenceRun] = { [] },
        finished: (SequenceRun, Result<Void, EngineError>) -> Void = { _, _ in }
    )
        -> [Result<Void, EngineError>]
    {
        BatchRunner(options: options).run(runs, admit: admit, finished: finished)
    }
}

/// The loop behind `SequenceRun.execute`: picks the next batch (stage-1 grids and stage-2 frames
/// in turn, or each in its own lane) and runs it through `runBatch`, the one batch loop, as its
/// `StagePass` describes.
final class BatchRunner {
    let options: ExecutionOptions
    private var runs: [SequenceRun] = []
    private var failures: [Int: EngineError] = [:]
    private var stopped: Set<Int> = []
    private var reported: Set<Int> = []
    // One workspace per model, reallocated when the batch size changes.
    private var workspaces: [Model: DiTWorkspace] = [:]
    private var rowLimits: [Stage: Int] = [:]

    /// Held by a lane except inside the model's forward; everything above and below is touched
    /// only under it.
    private let state = NSCondition()
    /// Lanes with nothing ready, waiting until the other lane has done something.
    private var idle: Set<Lane> = []
    /// Lanes inside a batch (their forwards take a share of the threads).
    private var inBatch: Set<Lane> = []
    /// Runs with units in a batch, and how many batches: not reported until they are out.
    private var inFlight: [Int: Int] = [:]
    /// Set once no run is active: every lane stops (and nothing more is admitted).
    private var over = false
    private var framesLaneDone = false

    /// Which units a loop takes: both stages in turn (one lane), or one stage (two lanes).
    enum Lane { case both, grids, frames }

    /// The pipeline's models, as a forward asks for a workspace.
    enum Model { case stage1, guide, stage2 }

    init(options: ExecutionOptions) { self.options = options }

    private var pipeline: LoadedPipeline { runs[0].pipeline }

    /// Adds runs and starts their session (timings, progress accounting).
    private func join(_ new: [SequenceRun]) {
        guard !new.isEmpty else { return }
        wake()  // a lane that found nothing before may have work in the new runs
        let now = Date()
        for run in new {
            let i = runs.count
            runs.append(run)
            if run.pipeline !== runs[0].pipeline {
                failures[i] = EngineError(.internal, "runs batched together must share one LoadedPipeline")
                continue
            }
            if run.isComplete {
                run.hooks.onProgress(run.progress)  // its one final report; the others get it after their last unit
                continue
            }
            run.session.begin(threads: options.threads, at: now)
            run.timings.sessions += 1
            attempt(i) { try run.saveTimings() }
        }
    }

    private func result(_ i: Int) -> Result<Void, EngineError> {
        if let e = failures[i] { return .failure(e) }
        if stopped.contains(i) { return .failure(.interrupted) }
        return .success(())
    }

    /// Calls `finished` for every run that left since the last call (and has no unit in a batch).
    private func report(_ finished: (SequenceRun, Result<Void, EngineError>) -> Void) {
        for i in runs.indices where !reported.contains(i) && !isActive(i) && inFlight[i] == nil {
            reported.insert(i)
            finished(runs[i], result(i))
            runs[i].releaseCache()
        }
    }

    func run(
        _ initial: [SequenceRun], admit: () -> [SequenceRun],
        finished: (SequenceRun, Result<Void, EngineError>) -> Void
    ) -> [Result<Void, EngineError>] {
        state.lock()
        defer { state.unlock() }
        join(initial)
        guard options.threads >= 2, runs.first?.pipeline.stage2 != nil else {
            loop(.both, admit: admit, finished: finished)
            return runs.indices.map(result)
        }
        let runner = Unchecked(value: self)
        let thread = Thread {
            let runner = runner.value
            runner.state.lock()
            runner.loop(.frames)
            runner.framesLaneDone = true
            runner.state.broadcast()
            runner.state.unlock()
        }
        thread.stackSize = 16 << 20
        thread.start()
        loop(.grids, admit: admit, finished: finished)
        while !framesLaneDone { state.wait() }
        return runs.indices.map(result)
    }

    /// Tells a waiting lane to look again: this one changed what is ready.
    private func wake() {
        idle.removeAll()
        state.broadcast()
    }

    /// Threads for a forward of `lane`: half of them while the other lane is in a batch too.
    private func workers(_ lane: Lane) -> Int {
        let threads = options.threads
        guard lane != .both, inBatch.count > 1 else { return threads }
        return lane == .grids ? (threads + 1) / 2 : threads / 2
    }

    /// One lane's loop, entered and left with `state` held. The lane of the calling thread (`.both`
    /// or `.grids`) leads: it alone admits runs, reports them and ends the call once no run is
    /// active or in a batch; the frames' lane only takes frames, until then.
    private func loop(
        _ lane: Lane, admit: () -> [SequenceRun] = { [] },
        finished: (SequenceRun, Result<Void, EngineError>) -> Void = { _, _ in }
    ) {
        let leads = lane != .frames
        var preferFrames = false
        while !over {
            if leads { join(admit()) }
            checkStops()
            if leads { report(finished) }
            let active = runs.indices.filter { isActive($0) }
            if leads && active.isEmpty && inFlight.isEmpty {
                over = true
                wake()
                break
            }
            let grids = lane == .frames ? [] : candidates(active, limit: options.maxBatch) { $0.readyGrids(limit: $1) }
            let frames =
                lane == .grids ? [] : candidates(active, limit: max(options.maxBatch, 64)) { $0.readyFrames(limit: $1) }
            if !grids.isEmpty && (lane == .grids || !preferFrames || frames.isEmpty) {
                // Runs that the frames' lane completes meanwhile are reported between this batch's steps.
                runBatch(gridPass, grids, lane: lane) { if lane == .grids { self.report(finished) } }
                preferFrames = true
            } else if !frames.isEmpty {
                let direct = frames.filter { runs[$0.run].schedule2 == nil }
                writeLowResolutionFrames(direct)
                if let pass = framePass { runBatch(pass, frames.filter { runs[$0.run].schedule2 != nil }, lane: lane) }
                preferFrames = false
            } else if lane == .both || (leads && idle.contains(.frames) && inFlight.isEmpty) {
                // Nothing ready here, nothing in a batch anywhere, and the frames' lane found nothing either.
                for i in active { failures[i] = EngineError(.internal, "run has nothing ready but is not complete") }
            } else {
                // What the other lane is doing (or about to look at) may become this lane's work. A
                // lane that finds nothing while the leader waits lets the leader look again.
                if !leads && idle.contains(.grids) { idle.remove(.grids) }
                idle.insert(lane)
                state.broadcast()
                while idle.contains(lane) && !over { state.wait() }
                continue
            }
            wake()
        }
    }

    private func isActive(_ i: Int) -> Bool { failures[i] == nil && !stopped.contains(i) && !runs[i].isComplete }

    private func checkStops() {
        for i in runs.indices where isActive(i) && runs[i].hooks.shouldStop() { stopped.insert(i) }
    }

    /// Runs `body` for run `i`, recording a failure instead of throwing.
    @discardableResult
    private func attempt(_ i: Int, _ body: () throws -> Void) -> Bool {
        do {
            try body()
            return true
        } catch {
            failures[i] = EngineError.classify(error)
            return false
        }
    }

    /// Between steps: false once run `r` failed or is asked to stop (its items then drop out).
    private func keepsGoing(_ r: Int) -> Bool {
        guard failures[r] == nil else { return false }
        if stopped.contains(r) || runs[r].hooks.shouldStop() {
            stopped.insert(r)
            runs[r].session.dropPartial()
            return false
        }
        return true
    }

    /// The ready units of the active runs, at most `limit` per run.
    private func candidates(_ active: [Int], limit: Int, _ ready: (SequenceRun, Int) -> [Int]) -> [Unit] {
        active.flatMap { i in ready(runs[i], limit).map { Unit(run: i, index: $0) } }
    }

    // MARK: The batch loop

    /// A grid or a frame of one run.
    struct Unit {
        var run: Int
        var index: Int
    }

    /// A unit in a batch: its denoising item, its run's settings and, for stage 2, its condition.
    struct Member {
        var unit: Unit
        var item: DenoiseItem
        var settings: RunSettings
        var condition: Tensor?
    }

    /// What the batch loop needs to know of a stage.
    struct StagePass {
        var stage: Stage
        var model: DiT
        /// Floats of per-item state beside the model's workspace (for the memory budget).
        var itemFloats: Int
        /// Model rows one unit of a run takes at most (two for a grid under guidance, which its
        /// steps outside the guidance interval leave unused).
        var rows: (SequenceRun) -> Int
        /// Model evaluations of one unit.
        var evaluations: (SequenceRun) -> Int
        /// Floating-point operations of one evaluation of one unit (all its rows).
        var flops: (SequenceRun) -> Double
        /// The unit's denoising item and condition (its dependencies are done).
        var item: (SequenceRun, Int) throws -> (DenoiseItem, Tensor?)
        /// One batched forward of the members' rows.
        var forward:
            (_ x: Tensor, _ t: [Float], _ members: [Member], _ workspace: (Model, Int) -> DiTWorkspace) throws -> Tensor
        /// Stores a finished unit.
        var finish: (SequenceRun, Int, Tensor) throws -> Void
        var seconds: WritableKeyPath<RunTimings, Double>
        /// Save `timings.json` after every unit, not only after the batch (stage-1 units are long).
        var savesTimingsPerUnit: Bool
    }

    /// Stage 1: the grids, with guidance for the guided ones.
    private var gridPass: StagePass {
        let model = pipeline.stage1, guide = pipeline.guide
        return StagePass(
            stage: .grid, model: model, itemFloats: 6 * pipeline.configuration.modelLayout.gridCount,
            rows: { $0.settings.guided ? 2 : 1 }, evaluations: { $0.plan.stage1.evaluationsPerItem },
            flops: { $0.plan.stage1.flopsPerItemEvaluation },
            item: { run, g in (try run.stage1Item(g), nil) },
            forward: { x, t, members, workspace in
                try Self.forwardStage1(
                    model, guide: guide, x: x, t: t, settings: members.map(\.settings), workspace: workspace)
            },
            finish: { run, g, x in try run.finishGrid(g, x: x) }, seconds: \.stage1Seconds, savesTimingsPerUnit: true)
    }

    /// Stage 2: super-resolution of the frames, each with its condition (nil: no stage 2).
    private var framePass: StagePass? {
        guard let model = pipeline.stage2, let side = pipeline.configuration.stage2ModelSize else { return nil }
        return StagePass(
            stage: .sr, model: model, itemFloats: 6 * model.config.inChannels * side * side,
            rows: { _ in 1 }, evaluations: { $0.plan.stage2?.evaluationsPerItem ?? 0 },
            flops: { $0.plan.stage2?.flopsPerItemEvaluation ?? 0 },
            item: { run, i in
                let (item, condition) = try run.stage2Item(i)
                return (item, condition)
            },
            forward: { x, t, members, workspace in
                let first = members[0].condition!
                let condition = Tensor(zeros: [members.count] + first.shape)
                for (row, member) in members.enumerated() {
                    (condition.mutablePointer + row * first.count).update(
                        from: member.condition!.pointer, count: first.count)
                }
                return try model.forward(x: x, t: t, condition: condition, workspace: workspace(.stage2, members.count))
            },
            finish: { run, i, x in try run.finishFrame(i, x: x) }, seconds: \.stage2Seconds, savesTimingsPerUnit: false)
    }

    /// One batch of `pass`'s stage: units chosen round robin over the runs (so that one long run
    /// does not starve the others) up to the rows the memory budget allows, denoised together;
    /// each finished unit is stored and reported at once.
    private func runBatch(_ pass: StagePass, _ candidates: [Unit], lane: Lane, betweenSteps: () -> Void = {}) {
        guard !candidates.isEmpty else { return }
        let limit = maxRows(pass)
        var byRun: [Int: [Int]] = [:]
        for unit in candidates { byRun[unit.run, default: []].append(unit.index) }
        var chosen: [Unit] = [], rows = 0
        var progress = true
        while progress {
            progress = false
            for r in byRun.keys.sorted() {
                guard var list = byRun[r], !list.isEmpty else { continue }
                let need = pass.rows(runs[r])
                if rows + need > limit && !chosen.isEmpty { continue }
                chosen.append(Unit(run: r, index: list.removeFirst()))
                byRun[r] = list
                rows += need
                progress = true
            }
        }
        var members: [Member] = []
        for unit in chosen where failures[unit.run] == nil {
            attempt(unit.run) {
                let (item, condition) = try pass.item(runs[unit.run], unit.index)
                members.append(Member(unit: unit, item: item, settings: runs[unit.run].settings, condition: condition))
            }
        }
        members.removeAll { failures[$0.unit.run] != nil }
        guard !members.isEmpty else { return }

        var marks = Dictionary(members.map { ($0.unit.run, Date()) }, uniquingKeysWith: { a, _ in a })
        var evaluations = [Int](repeating: 0, count: members.count)
        let batchRuns = Set(members.map(\.unit.run))
        inBatch.insert(lane)
        for r in batchRuns { inFlight[r, default: 0] += 1 }
        defer {
            inBatch.remove(lane)
            for r in batchRuns { inFlight[r] = inFlight[r]! > 1 ? inFlight[r]! - 1 : nil }
        }
        do {
            try BatchDenoiser.run(
                members.map(\.item),
                model: { x, t, rows in
                    let workers = self.workers(lane)
                    self.state.unlock()  // the forward touches nothing the other lane does
                    defer { self.state.lock() }
                    return try pass.forward(x, t, rows.map { members[$0] }) { model, batch in
                        let ws = self.locked { self.workspace(model, batch: batch) }
                        ws.workers = workers
                        return ws
                    }
                },
                afterStep: { i, _ in
                    betweenSteps()
                    let unit = members[i].unit
                    let run = self.runs[unit.run]
                    guard self.keepsGoing(unit.run) else { return false }
                    evaluations[i] += 1
                    let work = pass.flops(run)
                    run.session.evaluated(work, in: pass.stage)
                    self.reportStep(run, pass.stage, unit: unit.index, step: evaluations[i], of: pass.evaluations(run))
                    guard members[i].item.isFinished else { return true }
                    return self.attempt(unit.run) {
                        try pass.finish(run, unit.index, members[i].item.x)
                        self.wake()
                        run.session.stored(work: work * Double(evaluations[i]), in: pass.stage)
                        let now = Date()
                        run.timings[keyPath: pass.seconds] += now.timeIntervalSince(marks[unit.run]!)
                        marks[unit.run] = now
                        if pass.savesTimingsPerUnit { try run.saveTimings() }
                        run.hooks.onProgress(run.progress)
                    }
                })
        } catch {
            let e = EngineError.classify(error)
            for member in members where failures[member.unit.run] == nil { failures[member.unit.run] = e }
        }
        let end = Date()
        for (r, mark) in marks where failures[r] == nil {
            runs[r].timings[keyPath: pass.seconds] += end.timeIntervalSince(mark)
            runs[r].session.dropPartial(pass.stage)
            attempt(r) { try runs[r].saveTimings() }
        }
    }

    /// Reports one model evaluation of `run`: stage 1 "grid g/N" (unit g), stage 2 "frame i/F"
    /// (unit i), both 1-based, with what is durable of the other stage.
    private func reportStep(_ run: SequenceRun, _ stage: Stage, unit: Int, step: Int, of steps: Int) {
        let plan = run.plan
        run.hooks.onStep(
            StepProgress(
                stage: stage, grid: stage == .grid ? unit + 1 : run.gridsDone, grids: plan.grids, step: step,
                steps: steps,
                frame: stage == .grid ? run.framesDone : unit + 1, frames: plan.frames, etaSeconds: run.eta,
                fraction: run.fraction, flops: run.session.flops))
    }

    /// Frames of runs without stage 2: only quantised and written.
    private func writeLowResolutionFrames(_ units: [Unit]) {
        var touched: Set<Int> = []
        for unit in units where failures[unit.run] == nil && !stopped.contains(unit.run) {
            let run = runs[unit.run]
            let started = Date()
            attempt(unit.run) {
                try run.finishLowResolutionFrame(unit.index)
                run.session.evaluated(run.frameFlops, in: .sr)
                run.session.stored(work: run.frameFlops, in: .sr)
                run.timings.stage2Seconds += Date().timeIntervalSince(started)
                touched.insert(unit.run)
            }
        }
        for r in touched.sorted() where failures[r] == nil {
            attempt(r) { try runs[r].saveTimings() }
            runs[r].hooks.onProgress(runs[r].progress)
        }
    }

    // MARK: Sizing

    /// Rows of the pass's model a batch may hold: the budget minus the workspace's fixed part,
    /// over the workspace's and the items' bytes per row (measured once per model on
    /// workspaces of 1 and 2).
    private func maxRows(_ pass: StagePass) -> Int {
        if let rows = rowLimits[pass.stage] { return rows }
        let one = pass.model.makeWorkspace(batch: 1, workers: options.threads).byteCount
        let two = pass.model.makeWorkspace(batch: 2, workers: options.threads).byteCount
        let perRow = two - one + 4 * pass.itemFloats, fixed = max(0, one - (two - one))
        let rows = max(1, min(options.maxBatch, (options.memoryBudget - fixed) / max(perRow, 1)))
        rowLimits[pass.stage] = rows
        return rows
    }

    private func locked<T>(_ body: () -> T) -> T {
        state.lock()
        defer { state.unlock() }
        return body()
    }

    private func workspace(_ model: Model, batch: Int) -> DiTWorkspace {
        if let ws = workspaces[model], ws.batch == batch { return ws }
        workspaces[model] = nil  // free the old one first
        let dit = model == .stage1 ? pipeline.stage1 : model == .guide ? pipeline.guide! : pipeline.stage2!
        let ws = dit.makeWorkspace(batch: batch, workers: options.threads)
        workspaces[model] = ws
        return ws
    }

    // MARK: Stage 1 guidance

    /// One stage-1 forward over the batch: the labels of a class-conditional model, and for items
    /// guided at their step a weaker prediction that guidance pushes their output away from: the
    /// guide model's on the same input and label (autoguidance), or without a guide the null
    /// class's, as more rows of the same forward (classifier-free guidance).
    private static func forwardStage1(
        _ model: DiT, guide: DiT?, x: Tensor, t: [Float], settings: [RunSettings],
        workspace: (Model, Int) -> DiTWorkspace
    ) throws -> Tensor {
        let n = x.shape[0]
        let classes = model.config.numClasses
        let labels: [Int]? = classes > 0 ? settings.map { $0.classLabel ?? classes } : nil
        let guided = settings.indices.filter { settings[$0].guided(at: t[$0]) }
        if guided.isEmpty {
            return try model.forward(x: x, t: t, y: labels, workspace: workspace(.stage1, n))
        }
        // The guided rows' inputs: alone for the guide (x itself when every row is guided), after
        // the batch's own rows otherwise.
        let first = guide == nil ? n : 0, inner = x.count / n
        var xg = x
        if guide == nil || guided.count < n {
            xg = Tensor(zeros: [first + guided.count] + x.shape.dropFirst())
            if guide == nil { xg.mutablePointer.update(from: x.pointer, count: x.count) }
            for (j, row) in guided.enumerated() {
                (xg.mutablePointer + (first + j) * inner).update(from: x.pointer + row * inner, count: inner)
            }
        }
        let tg = guided.map { t[$0] }
        let result: Tensor, weak: Tensor
        if let guide {
            result = try model.forward(x: x, t: t, y: labels, workspace: workspace(.stage1, n))
            weak = try guide.forward(
                x: xg, t: tg, y: labels.map { l in guided.map { l[$0] } }, workspace: workspace(.guide, guided.count))
        } else {
            let out = try model.forward(
                x: xg, t: t + tg, y: labels! + guided.map { _ in classes },
                workspace: workspace(.stage1, n + guided.count))
            result = out.slice(0..<n).copy()
            weak = out.slice(n..<n + guided.count)
        }
        for (j, row) in guided.enumerated() {
            let strong = result.slice(row..<row + 1)
            try classifierFreeGuidance(
                conditional: strong, unconditional: weak.slice(j..<j + 1), scale: Float(settings[row].cfgScale),
                epsChannels: model.config.inChannels, into: strong)
        }
        return result
    }
}

/// The runner as the frames' lane thread gets it: used only under the runner's lock, and only
/// until `run`, which waits for that thread, returns.
private struct Unchecked<Value>: @unchecked Sendable {
    let value: Value
}
