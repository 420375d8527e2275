// The plan of a sequence: which grids run, which frames each grid knows and where they come from,
// which grid cell becomes which output frame, and the cost. A pure function of the pipeline's
// configuration and the run settings.

import Foundation
import GriditDiffusion
import GriditJobSpec
import GriditModels

/// A cell of a stage-1 grid: grid id and row-major position (0 ..< K²).
public struct FrameRef: Codable, Hashable, Sendable {
    public var grid: Int
    public var position: Int
    public init(grid: Int, position: Int) {
        self.grid = grid
        self.position = position
    }
}

/// One stage-1 grid of a plan.
public struct GridPlan: Sendable, Equatable {
    public enum Role: String, Codable, Sendable {
        /// The first grid: every cell generated.
        case initial
        /// Known frames from earlier grids, the rest generated (gridit: the last frames so far;
        /// official: rows 1…K−1 of the previous grid moved up one row).
        case `extension`
        /// Official in-between pass: row K−1 of G_k in row 0, row K−1 of G_{k+1} in row K−1.
        case inBetween = "in_between"
    }

    public struct Known: Sendable, Equatable {
        public var position: Int
        public var source: FrameRef
    }

    public struct Output: Sendable, Equatable {
        public var position: Int
        /// Index in the output sequence.
        public var frame: Int
    }

    public var id: Int
    public var role: Role
    public var known: [Known]
    public var outputs: [Output]
    /// Grids that must be finished first (the sources of `known`), ascending.
    public var dependencies: [Int] { Array(Set(known.map(\.source.grid))).sorted() }
}

/// The counts of one stage.
public struct StagePlan: Codable, Sendable, Equatable {
    public var sampler: SamplerName
    public var steps: String
    /// Spaced steps of the schedule.
    public var stepCount: Int
    /// Model evaluations per item (more than `stepCount` with resampling jumps).
    public var evaluationsPerItem: Int
    /// Of those, the guided ones (each a second model row): those in the guidance interval.
    public var guidedEvaluationsPerItem: Int
    /// Model rows per evaluation at most (2 with guidance).
    public var rowsPerEvaluation: Int
    /// Grids (stage 1) or frames (stage 2).
    public var items: Int
    /// Model rows evaluated: items × (evaluationsPerItem + guidedEvaluationsPerItem).
    public var evaluations: Int
    /// Floating-point operations of all evaluations.
    public var flops: Double

    /// Floating-point operations of one evaluation of one item (all its rows).
    var flopsPerItemEvaluation: Double { flops / Double(max(items * evaluationsPerItem, 1)) }

    enum CodingKeys: String, CodingKey {
        case sampler, steps, items, evaluations, flops
        case stepCount = "step_count", evaluationsPerItem = "evaluations_per_item", rowsPerEvaluation =
            "rows_per_evaluation", guidedEvaluationsPerItem = "guided_evaluations_per_item"
    }
}

/// VAE passes of a latent pipeline (all zero in pixel space).
public struct VAEPlan: Codable, Sendable, Equatable {
    /// Stage-1 grids decoded to images (every grid, once).
    public var gridDecodes: Int
    /// Context grids encoded again after the 8-bit round trip (official mode).
    public var gridEncodes: Int
    /// Stage-2 conditions encoded and results decoded (one each per frame).
    public var frameEncodes: Int
    public var frameDecodes: Int
    /// Floating-point operations of all passes, and of the grid passes among them.
    public var flops: Double
    public var gridFlops: Double

    enum CodingKeys: String, CodingKey {
        case flops
        case gridFlops = "grid_flops"
        case gridDecodes = "grid_decodes", gridEncodes = "grid_encodes"
        case frameEncodes = "frame_encodes", frameDecodes = "frame_decodes"
    }
}

public struct SequencePlan: Codable, Sendable, Equatable {
    public var mode: SequenceMode
    public var requestedLength: Int
    /// Frames in the output (= requestedLength in gridit mode; K² + 2K·N in official mode).
    public var frames: Int
    public var k: Int
    /// gridit mode: rows of context each extension grid carries at least.
    public var contextRows: Int?
    /// official mode: N, the number of extension (and in-between) grids.
    public var officialExtensions: Int?
    public var grids: Int
    public var stage1: StagePlan
    public var stage2: StagePlan?
    public var vae: VAEPlan
    /// Low-resolution frame side (image pixels) and the output frame side.
    public var frameSize: Int
    public var outputFrameSize: Int
    public var channels: Int

    enum CodingKeys: String, CodingKey {
        case mode, frames, k, grids, stage1, stage2, vae, channels
        case requestedLength = "requested_length", contextRows = "context_rows"
        case officialExtensions = "official_extensions", frameSize = "frame_size", outputFrameSize = "output_frame_size"
    }

    /// The plan of `settings` on `pipeline`.
    public init(settings s: RunSettings, pipeline p: PipelineConfiguration) throws {
        let k = p.spec.grid.k, kk = k * k
        mode = s.mode
        requestedLength = s.length
        self.k = k
        contextRows = s.contextRows
        switch s.mode {
        case .gridit:
            let c = s.contextRows!, perGrid = (k - c) * k
            frames = s.length
            grids = s.length <= kk ? 1 : 1 + (s.length - kk + perGrid - 1) / perGrid
            officialExtensions = nil
        case .official:
            let n = Self.officialExtensions(length: s.length, k: k)
            officialExtensions = n
            frames = kk + 2 * k * n
            grids = 2 * n + 1
        }
        guard frames < 1 << 24 else {
            throw EngineError.invalid(
                "\(frames) frames exceed the engine's limit of \((1 << 24) - 1)", hint: "ask for fewer frames")
        }
        frameSize = p.spec.grid.frameSize
        channels = p.spec.grid.channels
        outputFrameSize = s.superResolution ? p.highResolutionSize! : frameSize

        let timesteps1 = try GaussianDiffusion.spacedTimesteps(s.steps), count1 = timesteps1.count
        let evals1 = DenoiseSchedule.evaluations(count: count1, jumps: s.jumps)
        // A guided evaluation adds a row of the guide model (or of stage 1 with the null class).
        let guided1 =
            s.guided
            ? DenoiseSchedule.transitions(count: count1, jumps: s.jumps).count {
                if case .denoise(let k, _) = $0 { s.guided(at: Float(timesteps1[k])) } else { false }
            } : 0
        stage1 = StagePlan(
            sampler: s.sampler, steps: s.steps, stepCount: count1, evaluationsPerItem: evals1,
            guidedEvaluationsPerItem: guided1, rowsPerEvaluation: s.guided ? 2 : 1, items: grids,
            evaluations: grids * (evals1 + guided1),
            flops: Double(grids)
                * (Double(evals1) * p.stage1.flopsPerForward(batch: 1)
                    + Double(guided1) * (p.guide ?? p.stage1).flopsPerForward(batch: 1)))
        if s.superResolution, let c2 = p.stage2, let sampler2 = s.srSampler, let steps2 = s.srSteps {
            let count2 = try GaussianDiffusion.spacedTimesteps(steps2).count
            stage2 = StagePlan(
                sampler: sampler2, steps: steps2, stepCount: count2, evaluationsPerItem: count2,
                guidedEvaluationsPerItem: 0, rowsPerEvaluation: 1, items: frames, evaluations: frames * count2,
                flops: Double(frames * count2) * c2.flopsPerForward(batch: 1))
        } else {
            stage2 = nil
        }
        if let v = p.vae {
            let grid = k * frameSize, hr = outputFrameSize
            let gridEncodes = s.mode == .official ? 3 * (officialExtensions ?? 0) : 0
            let srFrames = stage2 == nil ? 0 : frames
            let gridFlops =
                Double(grids) * v.flops(height: grid, width: grid, encode: false)
                + Double(gridEncodes) * v.flops(height: grid, width: grid, encode: true)
            let frameFlops =
                Double(srFrames)
                * (v.flops(height: hr, width: hr, encode: true) + v.flops(height: hr, width: hr, encode: false))
            vae = VAEPlan(
                gridDecodes: grids, gridEncodes: gridEncodes, frameEncodes: srFrames, frameDecodes: srFrames,
                flops: gridFlops + frameFlops, gridFlops: gridFlops)
        } else {
            vae = VAEPlan(gridDecodes: 0, gridEncodes: 0, frameEncodes: 0, frameDecodes: 0, flops: 0, gridFlops: 0)
        }
    }

    /// N of the official samplers: `((L − 8) // 12) + 1` for K = 4 (Python floor division, so
    /// N = 0 below 8 frames); in general 8 = 2K and 12 = K(K−1).
    public static func officialExtensions(length: Int, k: Int) -> Int {
        let a = length - 2 * k, b = k * (k - 1)
        let floorDiv = a >= 0 ? a / b : -((-a + b - 1) / b)
        return max(0, floorDiv + 1)
    }

    /// Total floating-point operations (both DiTs and the VAE).
    public var flops: Double { stage1.flops + (stage2?.flops ?? 0) + vae.flops }

    // MARK: Grids and frames

    /// The grid with id `id` (0 ..< grids). Official ids: G_0 = 0, G_k = k (k = 1…N),
    /// I_k = N + 1 + k (k = 0…N−1).
    public func grid(_ id: Int) -> GridPlan {
        precondition((0..<grids).contains(id), "grid \(id) outside 0..<\(grids)")
        let kk = k * k
        switch mode {
        case .gridit:
            if id == 0 {
                return GridPlan(
                    id: 0, role: .initial, known: [],
                    outputs: (0..<min(frames, kk)).map { GridPlan.Output(position: $0, frame: $0) })
            }
            let (start, n) = griditSpan(id)
            let known = kk - n
            return GridPlan(
                id: id, role: .extension,
                known: (0..<known).map { GridPlan.Known(position: $0, source: source(ofFrame: start - known + $0)) },
                outputs: (0..<n).map { GridPlan.Output(position: known + $0, frame: start + $0) })
        case .official:
            let n = officialExtensions!
            if id == 0 {
                return GridPlan(
                    id: 0, role: .initial, known: [], outputs: (0..<kk).map { GridPlan.Output(position: $0, frame: $0) }
                )
            }
            if id <= n {
                let e = id - 1  // extension e: G_{e+1} from G_e
                return GridPlan(
                    id: id, role: .extension,
                    known: (0..<(kk - k)).map {
                        GridPlan.Known(position: $0, source: FrameRef(grid: e, position: $0 + k))
                    },
                    outputs: (0..<k).map { GridPlan.Output(position: kk - k + $0, frame: kk + e * 2 * k + k + $0) })
            }
            let e = id - n - 1  // in-between I_e of G_e and G_{e+1}
            let last = kk - k
            return GridPlan(
                id: id, role: .inBetween,
                known: (0..<k).map { GridPlan.Known(position: $0, source: FrameRef(grid: e, position: last + $0)) }
                    + (0..<k).map {
                        GridPlan.Known(position: last + $0, source: FrameRef(grid: e + 1, position: last + $0))
                    },
                outputs: (0..<k).map { GridPlan.Output(position: last - k + $0, frame: kk + e * 2 * k + $0) })
        }
    }

    /// Where output frame `i` is generated.
    public func source(ofFrame i: Int) -> FrameRef {
        precondition((0..<frames).contains(i), "frame \(i) outside 0..<\(frames)")
        let kk = k * k
        if i < kk { return FrameRef(grid: 0, position: i) }
        switch mode {
        case .gridit:
            let perGrid = (k - contextRows!) * k
            let g = 1 + (i - kk) / perGrid
            let (start, n) = griditSpan(g)
            return FrameRef(grid: g, position: kk - n + (i - start))
        case .official:
            let r = i - kk, e = r / (2 * k), j = r % (2 * k)
            return j < k
                ? FrameRef(grid: officialExtensions! + 1 + e, position: kk - 2 * k + j)
                : FrameRef(grid: e + 1, position: kk - k + j - k)
        }
    }

    /// gridit extension grid g ≥ 1: its first output frame and its count of new frames. Every
    /// extension makes (K − c)·K new frames except the last, which makes what is left and
    /// carries all the rest of the grid as context.
    func griditSpan(_ g: Int) -> (start: Int, count: Int) {
        let kk = k * k, perGrid = (k - contextRows!) * k
        let start = kk + (g - 1) * perGrid
        return (start, min(perGrid, frames - start))
    }

    // MARK: Cost

    /// Seconds the whole plan takes under `cost`.
    public func estimatedSeconds(_ cost: CostModel) -> Double {
        // Stage 1's rows, and the guided rows beyond them (the guide's, or stage 1's with the null class).
        let stage1Rows = stage1.items * stage1.evaluationsPerItem
        let guideSeconds = cost.guideSecondsPerEvaluation ?? cost.stage1SecondsPerEvaluation
        return Double(stage1Rows) * cost.stage1SecondsPerEvaluation
            + Double(stage1.evaluations - stage1Rows) * guideSeconds
            + Double(stage2?.evaluations ?? 0) * cost.stage2SecondsPerEvaluation
            + Double(vae.gridDecodes) * cost.vaeGridDecodeSeconds + Double(vae.gridEncodes) * cost.vaeGridEncodeSeconds
            + Double(vae.frameEncodes) * cost.vaeFrameEncodeSeconds + Double(vae.frameDecodes)
            * cost.vaeFrameDecodeSeconds
    }

    /// The plan for people (`griditd run --dry-run`).
    public func render(cost: CostModel) -> String {
        var lines: [String] = []
        let kk = k * k
        switch mode {
        case .gridit:
            let c = contextRows!, perGrid = (k - c) * k
            lines.append("mode gridit: \(frames) frames, k = \(k) (\(kk) frames per grid), \(c) context row(s)")
            if grids == 1 {
                lines.append("grids: 1 (generates \(kk), keeps \(frames))")
            } else {
                let last = griditSpan(grids - 1).count
                let full = last == perGrid ? grids - 1 : grids - 2
                var g = "grids: \(grids) = 1 initial (\(kk) new)"
                if full > 0 { g += " + \(full) × (\(kk - perGrid) known + \(perGrid) new)" }
                if last != perGrid { g += " + last (\(kk - last) known + \(last) new)" }
                lines.append(g)
            }
        case .official:
            let n = officialExtensions!
            lines.append(
                "mode official: \(frames) frames = \(kk) + \(2 * k)·\(n) (asked for \(requestedLength); "
                    + "N = ((L − \(2 * k)) // \(k * (k - 1))) + 1 = \(n)), k = \(k)")
            lines.append(
                "grids: \(grids) = 1 initial + \(n) extension (\(kk - k) known + \(k) new) + \(n) in-between "
                    + "(\(2 * k) known, row \(k - 2) kept)")
        }
        let s1 = stage1
        let guidance =
            s1.guidedEvaluationsPerItem == 0
            ? ""
            : s1.guidedEvaluationsPerItem == s1.evaluationsPerItem
                ? ", guided: 2 rows" : ", guided at \(s1.guidedEvaluationsPerItem) of them: 2 rows each"
        lines.append(
            "stage 1: \(s1.sampler.rawValue) \(s1.steps) (\(s1.stepCount) steps"
                + (s1.evaluationsPerItem != s1.stepCount ? ", \(s1.evaluationsPerItem) with resampling" : "")
                + guidance + ") → \(s1.evaluations) model evaluations")
        if let s2 = stage2 {
            lines.append(
                "stage 2: \(s2.sampler.rawValue) \(s2.steps) (\(s2.stepCount) steps) × \(s2.items) frames → "
                    + "\(s2.evaluations) model evaluations, \(frameSize)→\(outputFrameSize) px")
        } else {
            lines.append("stage 2: off (frames at \(frameSize) px)")
        }
        if vae.gridDecodes + vae.frameEncodes > 0 {
            lines.append(
                "vae: \(vae.gridDecodes) grid decodes, \(vae.gridEncodes) grid encodes, "
                    + "\(vae.frameEncodes) frame encodes, \(vae.frameDecodes) frame decodes")
        }
        lines.append(
            String(
                format: "compute: %.3g GFLOP; estimated time %@ (%@)", flops / 1e9,
                formatDuration(estimatedSeconds(cost)), cost.source))
        return lines.joined(separator: "\n")
    }
}

/// Seconds per unit of work, used to estimate a plan's time.
public struct CostModel: Codable, Sendable, Equatable {
    public var stage1SecondsPerEvaluation: Double
    /// The guide model's, for a pipeline with one (nil: a guided row is a stage-1 row).
    public var guideSecondsPerEvaluation: Double?
    public var stage2SecondsPerEvaluation: Double
    public var vaeGridDecodeSeconds: Double
    public var vaeGridEncodeSeconds: Double
    public var vaeFrameEncodeSeconds: Double
    public var vaeFrameDecodeSeconds: Double
    /// How the numbers were obtained ("nominal 100 GFLOP/s", "measured, 2 threads").
    public var source: String

    /// Costs from the operation counts at an assumed sustained rate (the models' matrix products
    /// run at roughly 100 GFLOP/s on two modern cores; small models run slower).
    public static func nominal(_ p: PipelineConfiguration, gflops: Double = 100) -> CostModel {
        let rate = gflops * 1e9
        let grid = p.spec.grid.k * p.spec.grid.frameSize, hr = p.highResolutionSize ?? p.spec.grid.frameSize
        return CostModel(
            stage1SecondsPerEvaluation: p.stage1.flopsPerForward(batch: 1) / rate,
            guideSecondsPerEvaluation: p.guide.map { $0.flopsPerForward(batch: 1) / rate },
            stage2SecondsPerEvaluation: (p.stage2?.flopsPerForward(batch: 1) ?? 0) / rate,
            vaeGridDecodeSeconds: (p.vae?.flops(height: grid, width: grid, encode: false) ?? 0) / rate,
            vaeGridEncodeSeconds: (p.vae?.flops(height: grid, width: grid, encode: true) ?? 0) / rate,
            vaeFrameEncodeSeconds: (p.vae?.flops(height: hr, width: hr, encode: true) ?? 0) / rate,
            vaeFrameDecodeSeconds: (p.vae?.flops(height: hr, width: hr, encode: false) ?? 0) / rate,
            source: String(format: "nominal, %.0f GFLOP/s", gflops))
    }
}

/// "1h02m", "3m05s", "12.3s", "0.42s".
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    if seconds < 10 { return String(format: "%.2gs", seconds) }
    if seconds < 60 { return String(format: "%.1fs", seconds) }
    let s = Int(seconds.rounded())
    if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
}

extension AutoencoderKLConfiguration {
    /// Floating-point operations (2 per multiply-add) of the convolutions and attention of one
    /// encode or decode of an image of `height` × `width` pixels (norms and activations left out).
    func flops(height: Int, width: Int, encode: Bool) -> Double {
        let f = Double(downsampleFactor)
        let z = Double(latentChannels), ch = blockOutChannels.map(Double.init)
        let layers = encode ? layersPerBlock : layersPerBlock + 1
        func conv(_ cin: Double, _ cout: Double, _ k: Double, _ pixels: Double) -> Double {
            2 * cin * cout * k * k * pixels
        }
        func resnet(_ cin: Double, _ cout: Double, _ pixels: Double) -> Double {
            conv(cin, cout, 3, pixels) + conv(cout, cout, 3, pixels) + (cin != cout ? conv(cin, cout, 1, pixels) : 0)
        }
        func mid(_ c: Double, _ pixels: Double) -> Double {
            2 * resnet(c, c, pixels) + 4 * 2 * c * c * pixels + 2 * 2 * pixels * pixels * c
        }
        let full = Double(height * width), last = full / (f * f)
        var total = 0.0
        if encode {
            total += conv(Double(inChannels), ch[0], 3, full)
            var prev = ch[0], pixels = full
            for (i, c) in ch.enumerated() {
                for l in 0..<layers { total += resnet(l == 0 ? prev : c, c, pixels) }
                prev = c
                if i < ch.count - 1 {
                    pixels /= 4
                    total += conv(c, c, 3, pixels)
                }
            }
            total += mid(ch.last!, last) + conv(ch.last!, 2 * z, 3, last) + conv(2 * z, 2 * z, 1, last)
        } else {
            total += conv(z, z, 1, last) + conv(z, ch.last!, 3, last) + mid(ch.last!, last)
            var prev = ch.last!, pixels = last
            for (i, c) in ch.reversed().enumerated() {
                for l in 0..<layers { total += resnet(l == 0 ? prev : c, c, pixels) }
                prev = c
                if i < ch.count - 1 {
                    pixels *= 4
                    total += conv(c, c, 3, pixels)
                }
            }
            total += conv(ch[0], Double(outChannels), 3, full)
        }
        return total
    }
}
