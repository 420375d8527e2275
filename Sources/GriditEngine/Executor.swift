// Batched execution of several runs that share one LoadedPipeline: stage-1 grids of different
// runs go through one batched forward, stage-2 frames of different runs through another, each
// batch as large as the memory budget allows. Every item keeps its own seed and noise keys, and
// the models run each sample on a fixed schedule, so a run's bytes do not depend on what it was
// batched with, on the batch sizes or on the thread count.
import Foundation
import GriditImage
import GriditJobSpec
import GriditModels
import GriditPipeline
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
    ///   stopped), on this thread: a daemon can `finish(into:)` it right there.
    /// Returns one result per run: the given runs in order, then the admitted ones in admission order.
    @discardableResult
    public static func execute(_ runs: [SequenceRun], options: ExecutionOptions = ExecutionOptions(),
                               admit: () -> [SequenceRun] = { [] },
                               finished: (SequenceRun, Result<Void, EngineError>) -> Void = { _, _ in })
        -> [Result<Void, EngineError>] {
        Executor(options: options).run(runs, admit: admit, finished: finished)
    }
}

/// The loop behind `SequenceRun.execute`.
final class Executor {
    let options: ExecutionOptions
    private var runs: [SequenceRun] = []
    private var failures: [Int: EngineError] = [:]
    private var stopped: Set<Int> = []
    private var reported: Set<Int> = []
    // One workspace per model, reallocated when the batch size changes.
    private var workspaces: [Bool: DiTWorkspace] = [:]

    init(options: ExecutionOptions) { self.options = options }

    private var pipeline: LoadedPipeline { runs[0].pipeline }

    /// Adds runs and starts their session (timings, progress accounting).
    private func join(_ new: [SequenceRun]) {
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
            run.threads = options.threads
            run.sessionStart = now
            run.sessionFlops = 0
            run.partialFlops = 0
            run.timings.sessions += 1
            attempt(i) { try run.saveTimings() }
        }
    }

    private func result(_ i: Int) -> Result<Void, EngineError> {
        if let e = failures[i] { return .failure(e) }
        if stopped.contains(i) { return .failure(.interrupted) }
        return .success(())
    }

    /// Calls `finished` for every run that left since the last call.
    private func report(_ finished: (SequenceRun, Result<Void, EngineError>) -> Void) {
        for i in runs.indices where !reported.contains(i) && !isActive(i) {
            reported.insert(i)
            finished(runs[i], result(i))
        }
    }

    func run(_ initial: [SequenceRun], admit: () -> [SequenceRun],
             finished: (SequenceRun, Result<Void, EngineError>) -> Void) -> [Result<Void, EngineError>] {
        join(initial)
        var preferFrames = false
        while true {
            join(admit())
            checkStops()
            report(finished)
            let active = runs.indices.filter { isActive($0) }
            if active.isEmpty { break }
            let grids = stage1Candidates(active)
            let frames = stage2Candidates(active)
            if !grids.isEmpty && (!preferFrames || frames.isEmpty) {
                stage1Batch(grids)
                preferFrames = true
            } else if !frames.isEmpty {
                stage2Batch(frames)
                preferFrames = false
            } else {
                for i in active { failures[i] = EngineError(.internal, "run has nothing ready but is not complete") }
            }
        }
        return runs.indices.map(result)
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
            runs[r].partialFlops = 0
            return false
        }
        return true
    }

    /// Accounts one model evaluation of `work` operations of `run` and reports the step: stage 1
    /// "grid g/N" (item g), stage 2 "frame i/F" (item i), both 1-based, with what is durable of
    /// the other stage.
    private func countStep(_ run: SequenceRun, work: Double, stage: Stage, item: Int, step: Int, of steps: Int) {
        run.sessionFlops += work
        run.partialFlops += work
        let plan = run.plan
        run.hooks.onStep(StepProgress(
            stage: stage, grid: stage == .grid ? item + 1 : run.gridsDone, grids: plan.grids, step: step, steps: steps,
            frame: stage == .grid ? run.framesDone : item + 1, frames: plan.frames, etaSeconds: run.eta,
            fraction: run.fraction))
    }

    // MARK: Sizing

    /// Rows of `model` a batch may hold: the budget minus the workspace's fixed part, over the
    /// workspace's and the items' bytes per row (measured once per model on workspaces of 1 and 2).
    private func maxRows(_ model: DiT, itemFloats: Int) -> Int {
        let key = model.config.conditionChannels > 0
        if let rows = rowLimits[key] { return rows }
        let one = DiTWorkspace(config: model.config, batch: 1, workers: options.threads).byteCount
        let two = DiTWorkspace(config: model.config, batch: 2, workers: options.threads).byteCount
        let perRow = two - one + 4 * itemFloats, fixed = max(0, one - (two - one))
        let rows = max(1, min(options.maxBatch, (options.memoryBudget - fixed) / max(perRow, 1)))
        rowLimits[key] = rows
        return rows
    }
    private var rowLimits: [Bool: Int] = [:]

    private func workspace(_ model: DiT, batch: Int) -> DiTWorkspace {
        let superResolution = model.config.conditionChannels > 0
        if let ws = workspaces[superResolution], ws.batch == batch { return ws }
        workspaces[superResolution] = nil  // free the old one first
        let ws = DiTWorkspace(config: model.config, batch: batch, workers: options.threads)
        workspaces[superResolution] = ws
        return ws
    }

    // MARK: Stage 1

    private func stage1Candidates(_ active: [Int]) -> [(run: Int, grid: Int)] {
        var out: [(Int, Int)] = []
        for i in active { out += runs[i].readyGrids(limit: options.maxBatch).map { (i, $0) } }
        return out
    }

    private func stage1Batch(_ candidates: [(run: Int, grid: Int)]) {
        let model = pipeline.stage1
        let layout = pipeline.configuration.modelLayout
        let limit = maxRows(model, itemFloats: 6 * layout.gridCount)
        // Round robin over the runs, so one long run does not starve the others.
        var byRun: [Int: [Int]] = [:]
        for (r, g) in candidates { byRun[r, default: []].append(g) }
        var chosen: [(run: Int, grid: Int)] = [], rows = 0
        var progress = true
        while progress {
            progress = false
            for r in byRun.keys.sorted() {
                guard var list = byRun[r], !list.isEmpty else { continue }
                let need = runs[r].settings.guided ? 2 : 1
                if rows + need > limit && !chosen.isEmpty { continue }
                chosen.append((r, list.removeFirst()))
                byRun[r] = list
                rows += need
                progress = true
            }
        }
        var items: [DenoiseItem] = [], owners: [(run: Int, grid: Int)] = []
        for (r, g) in chosen {
            attempt(r) {
                let item = try runs[r].stage1Item(g)
                items.append(item)
                owners.append((r, g))
            }
        }
        let kept = owners.indices.filter { failures[owners[$0].run] == nil }
        items = kept.map { items[$0] }
        owners = kept.map { owners[$0] }
        guard !items.isEmpty else { return }
        let started = Date()
        var marks = Dictionary(owners.map { ($0.run, started) }, uniquingKeysWith: { a, _ in a })
        var evaluations = [Int](repeating: 0, count: items.count)
        let flopsPerRow = model.config.flopsPerForward(batch: 1)
        let classes = model.config.numClasses
        do {
            try BatchDenoiser.run(items, model: { x, t, idx in
                try self.forwardStage1(model, x: x, t: t, settings: idx.map { self.runs[owners[$0].run].settings },
                                       classes: classes)
            }, afterStep: { i, _ in
                let (r, g) = owners[i]
                let run = self.runs[r]
                guard self.keepsGoing(r) else { return false }
                evaluations[i] += 1
                let work = flopsPerRow * Double(run.settings.guided ? 2 : 1)
                self.countStep(run, work: work, stage: .grid, item: g, step: evaluations[i],
                               of: run.plan.stage1.evaluationsPerItem)
                guard items[i].isFinished else { return true }
                let ok = self.attempt(r) {
                    try run.finishGrid(g, x: items[i].x)
                    run.partialFlops = max(0, run.partialFlops - work * Double(evaluations[i]))
                    let now = Date()
                    run.timings.stage1Seconds += now.timeIntervalSince(marks[r]!)
                    marks[r] = now
                    try run.saveTimings()
                    run.hooks.onProgress(run.progress)
                }
                return ok
            })
        } catch {
            let e = EngineError.classify(error)
            for (r, _) in owners where failures[r] == nil { failures[r] = e }
        }
        let end = Date()
        for (r, mark) in marks where failures[r] == nil {
            runs[r].timings.stage1Seconds += end.timeIntervalSince(mark)
            runs[r].partialFlops = 0
        }
    }

    /// One stage-1 forward over the batch: the labels of a class-conditional model, and for
    /// guided items a second row with the null class whose output is combined by guidance.
    private func forwardStage1(_ model: DiT, x: Tensor, t: [Float], settings: [RunSettings], classes: Int) throws -> Tensor {
        let n = x.shape[0]
        let labels: [Int]? = classes > 0 ? settings.map { $0.classLabel ?? classes } : nil
        let guided = settings.indices.filter { settings[$0].guided }
        if guided.isEmpty {
            return try model.forward(x: x, t: t, y: labels, workspace: workspace(model, batch: n))
        }
        let inner = x.count / n
        let x2 = Tensor(zeros: [n + guided.count] + x.shape.dropFirst())
        x2.mutablePointer.update(from: x.pointer, count: x.count)
        for (j, row) in guided.enumerated() {
            (x2.mutablePointer + (n + j) * inner).update(from: x.pointer + row * inner, count: inner)
        }
        let out = try model.forward(x: x2, t: t + guided.map { t[$0] }, y: labels! + guided.map { _ in classes },
                                    workspace: workspace(model, batch: n + guided.count))
        let result = out.slice(0 ..< n).copy()
        for (j, row) in guided.enumerated() {
            let cond = result.slice(row ..< row + 1)
            try classifierFreeGuidance(conditional: cond, unconditional: out.slice(n + j ..< n + j + 1),
                                       scale: Float(settings[row].cfgScale), epsChannels: model.config.inChannels,
                                       into: cond)
        }
        return result
    }

    // MARK: Stage 2

    private func stage2Candidates(_ active: [Int]) -> [(run: Int, frame: Int)] {
        var out: [(Int, Int)] = []
        for i in active { out += runs[i].readyFrames(limit: max(options.maxBatch, 64)).map { (i, $0) } }
        return out
    }

    private func stage2Batch(_ candidates: [(run: Int, frame: Int)]) {
        // Frames of runs without stage 2 are only quantised and written.
        let direct = candidates.filter { runs[$0.run].schedule2 == nil }
        var touched: [Int: Date] = [:]
        for (r, i) in direct where failures[r] == nil && !stopped.contains(r) {
            let started = Date()
            attempt(r) {
                try runs[r].finishLowResolutionFrame(i)
                runs[r].sessionFlops += runs[r].frameFlops
                runs[r].timings.stage2Seconds += Date().timeIntervalSince(started)
                touched[r] = Date()
            }
        }
        for r in touched.keys where failures[r] == nil {
            attempt(r) { try runs[r].saveTimings() }
            runs[r].hooks.onProgress(runs[r].progress)
        }
        let srCandidates = candidates.filter { runs[$0.run].schedule2 != nil }
        guard let model = pipeline.stage2, !srCandidates.isEmpty else { return }
        let side = pipeline.configuration.stage2ModelSize!
        let limit = maxRows(model, itemFloats: 6 * model.config.inChannels * side * side)
        var byRun: [Int: [Int]] = [:]
        for (r, i) in srCandidates { byRun[r, default: []].append(i) }
        var chosen: [(run: Int, frame: Int)] = []
        while chosen.count < limit && byRun.values.contains(where: { !$0.isEmpty }) {
            for r in byRun.keys.sorted() where chosen.count < limit {
                guard var list = byRun[r], !list.isEmpty else { continue }
                chosen.append((r, list.removeFirst()))
                byRun[r] = list
            }
        }
        let started = Date()
        var items: [DenoiseItem] = [], conditions: [Tensor] = [], owners: [(run: Int, frame: Int)] = []
        for (r, i) in chosen where failures[r] == nil {
            attempt(r) {
                let (item, condition) = try runs[r].stage2Item(i)
                items.append(item)
                conditions.append(condition)
                owners.append((r, i))
            }
        }
        let kept = owners.indices.filter { failures[owners[$0].run] == nil }
        items = kept.map { items[$0] }
        conditions = kept.map { conditions[$0] }
        owners = kept.map { owners[$0] }
        guard !items.isEmpty else { return }
        var evaluations = [Int](repeating: 0, count: items.count)
        let flopsPerRow = model.config.flopsPerForward(batch: 1)
        let conditionCount = conditions[0].count
        do {
            try BatchDenoiser.run(items, model: { x, t, idx in
                let n = idx.count
                let condition = Tensor(zeros: [n] + conditions[0].shape)
                for (row, i) in idx.enumerated() {
                    (condition.mutablePointer + row * conditionCount).update(from: conditions[i].pointer, count: conditionCount)
                }
                return try model.forward(x: x, t: t, condition: condition, workspace: self.workspace(model, batch: n))
            }, afterStep: { j, _ in
                let (r, i) = owners[j]
                let run = self.runs[r]
                guard self.keepsGoing(r) else { return false }
                evaluations[j] += 1
                self.countStep(run, work: flopsPerRow, stage: .sr, item: i, step: evaluations[j],
                               of: run.plan.stage2?.evaluationsPerItem ?? 0)
                guard items[j].isFinished else { return true }
                return self.attempt(r) {
                    try run.finishFrame(i, x: items[j].x)
                    run.partialFlops = max(0, run.partialFlops - flopsPerRow * Double(evaluations[j]))
                    run.hooks.onProgress(run.progress)
                }
            })
        } catch {
            let e = EngineError.classify(error)
            for (r, _) in owners where failures[r] == nil { failures[r] = e }
        }
        let seconds = Date().timeIntervalSince(started)
        for r in Set(owners.map(\.run)) where failures[r] == nil {
            runs[r].timings.stage2Seconds += seconds
            runs[r].partialFlops = 0
            attempt(r) { try runs[r].saveTimings() }
        }
    }
}
