// The numeric work of a run, unit by unit: building a stage-1 grid item (with its known frames),
// storing a finished grid, building a stage-2 frame item (bicubic condition, VAE encode), and
// turning a finished frame into its PNG.

import Foundation
import GriditDiffusion
import GriditImage
import GriditJobSpec
import GriditModels
import GriditTensor

extension SequenceRun {
    // MARK: Stage 1

    /// The denoising item of grid `g` (its dependencies must be done).
    ///
    /// gridit: the known cells hold the model-space frames they copy, re-noised at the RePaint
    /// level ᾱ'_{k−1} with the step's own z at their own positions, after every step, or (context
    /// `clean`) given as they are at every step.
    /// official: the known cells hold the source grid after the round trip its PNG implies
    /// (8-bit; for latent pipelines decode → 8-bit → encode with a posterior sample), re-noised
    /// at ᾱ'_k with the z of the cell they were copied from, after every step but the last.
    func stage1Item(_ g: Int) throws -> DenoiseItem {
        let plan = plan.grid(g)
        let layout = pipeline.configuration.modelLayout
        var known: KnownFrames?
        if !plan.known.isEmpty {
            let x0 = Tensor(zeros: layout.gridShape)
            let frame = Tensor(zeros: [1] + layout.frameShape)
            var contexts: [Int: Tensor] = [:]
            for cell in plan.known {
                let source: Tensor
                if let c = contexts[cell.source.grid] {
                    source = c
                } else {
                    source =
                        settings.mode == .gridit
                        ? try grid(cell.source.grid).model
                        : try officialContext(of: cell.source.grid, for: plan)
                    contexts[cell.source.grid] = source
                }
                try layout.extract(
                    from: source, positions: cell.source.position..<cell.source.position + 1, into: frame)
                try layout.place(frames: frame, into: x0, firstPosition: cell.position)
            }
            let positions = plan.known.map(\.position)
            known =
                settings.mode == .gridit
                ? KnownFrames(x0: x0, positions: positions, level: settings.context == .clean ? .clean : .previousStep)
                : KnownFrames(
                    x0: x0, positions: positions, level: .officialCurrentStep,
                    noisePositions: plan.known.map(\.source.position))
        }
        return try DenoiseItem(
            schedule: schedule1, layout: layout, noise: NoiseStream(seed: settings.seed, id: g),
            known: known)
    }

    /// Official mode: grid `source` as the next grid's sampler sees it after the released code
    /// saved it as an 8-bit PNG and read it back (and VAE-encoded it with a posterior sample, whose
    /// ε is keyed by (consumer grid, role, cell): role 0 = previous grid of an extension, 1 / 2 =
    /// first / second grid of an in-between pair).
    func officialContext(of source: Int, for consumer: GridPlan) throws -> Tensor {
        let image = try grid(source).image
        let roundTrip = Tensor(zeros: image.shape)
        let (src, dst) = (image.pointer, roundTrip.mutablePointer)
        for i in 0..<image.count { dst[i] = PixelMapping.dequantize(PixelMapping.quantize(src[i])) }
        guard let vae = pipeline.vae, let spec = pipeline.spec.vae else { return roundTrip }
        let role = consumer.role == .extension ? 0 : (source == consumer.known.first?.source.grid ? 1 : 2)
        let layout = pipeline.configuration.modelLayout
        let started = Date()
        let (mean, logvar) = try vae.encode(roundTrip.reshaped([1] + image.shape), threads: threads)
        let eps = Tensor(zeros: layout.gridShape)
        for f in 0..<layout.framesPerGrid {
            layout.fillNoise(
                frame: f, of: eps,
                key: NoiseKey(seed: settings.seed, purpose: .posterior, grid: consumer.id, step: role, frame: f))
        }
        let latent = Self.scaledLatent(mean: mean, logvar: logvar, eps: eps, scale: Float(spec.scalingFactor))
        timings.vaeSeconds += Date().timeIntervalSince(started)
        return latent.reshaped(layout.gridShape)
    }

    /// Stores finished grid `g` (its model-space x, and its VAE decode for latent pipelines).
    func finishGrid(_ g: Int, x: Tensor) throws {
        try Self.requireFinite(x, "stage-1 grid \(g + 1)")
        var image: Tensor?
        if pipeline.vae != nil {
            image = try decodeLatent(x).reshaped(pipeline.configuration.imageLayout.gridShape)
            try Self.requireFinite(image!, "the VAE decode of grid \(g + 1)")
        }
        try storeGrid(g, model: x, image: image)
    }

    // MARK: Frames

    /// Output frame `i` at the low resolution in image space (C, s, s): a cell of its grid's
    /// image; in official mode after the 8-bit round trip its PNG tile implies.
    func lowResolutionFrame(_ i: Int) throws -> Tensor {
        let ref = plan.source(ofFrame: i)
        let layout = pipeline.configuration.imageLayout
        let frame = Tensor(zeros: [1] + layout.frameShape)
        try layout.extract(from: try grid(ref.grid).image, positions: ref.position..<ref.position + 1, into: frame)
        if settings.mode == .official {
            let p = frame.mutablePointer
            for j in 0..<frame.count { p[j] = PixelMapping.dequantize(PixelMapping.quantize(p[j])) }
        }
        return frame
    }

    /// The stage-2 item of frame `i` and its condition (Cc, S, S): the low-resolution frame
    /// upsampled bicubically (PyTorch's convention) and, for latent pipelines, VAE-encoded
    /// (posterior mean, or a sample with `vae.encode: sample`) and scaled.
    func stage2Item(_ i: Int) throws -> (item: DenoiseItem, condition: Tensor) {
        guard let schedule2, let side = pipeline.configuration.stage2ModelSize,
            let hr = pipeline.configuration.highResolutionSize
        else {
            throw EngineError(.internal, "stage2Item without a stage 2")
        }
        let lr = try lowResolutionFrame(i)
        let c = pipeline.spec.grid.channels
        let up = Tensor(zeros: [1, c, hr, hr])
        resizeBicubic(lr, into: up)
        var condition = up.reshaped([c, hr, hr])
        if let vae = pipeline.vae, let spec = pipeline.spec.vae {
            let started = Date()
            let (mean, logvar) = try vae.encode(up, threads: threads)
            var eps: Tensor?
            if spec.encode == .sample {
                eps = Tensor(zeros: mean.shape)
                NoiseKey(seed: settings.seed, purpose: .srPosterior, grid: i).fillNormal(
                    into: eps!.mutablePointer, count: mean.count)
            }
            condition = Self.scaledLatent(mean: mean, logvar: logvar, eps: eps, scale: Float(spec.scalingFactor))
                .reshaped(Array(mean.shape.dropFirst()))
            timings.vaeSeconds += Date().timeIntervalSince(started)
        }
        let channels = pipeline.stage2!.config.inChannels
        let item = try DenoiseItem(
            schedule: schedule2, layout: GridLayout(k: 1, frameSize: side, channels: channels),
            noise: NoiseStream(
                seed: settings.seed, id: settings.srNoise == .shared ? 0 : i, stage: .superResolution,
                temperature: Float(settings.srTemperature ?? 1)))
        return (item, condition)
    }

    /// Writes frame `i` from its finished stage-2 sample x (model space).
    func finishFrame(_ i: Int, x: Tensor) throws {
        try Self.requireFinite(x, "stage-2 frame \(i + 1)")
        let image = pipeline.vae == nil ? x : try decodeLatent(x)
        try Self.requireFinite(image, "the VAE decode of frame \(i + 1)")
        try writeFrame(i, image: image)
    }

    /// A NaN or infinity would map to flat grey pixels and a job that "succeeds": the run fails
    /// instead, before the unit is stored.
    static func requireFinite(_ t: Tensor, _ what: String) throws {
        let p = t.pointer
        guard let bad = (0..<t.count).first(where: { !p[$0].isFinite }) else { return }
        throw EngineError.invalid(
            "\(what) came out non-finite (\(p[bad]) at element \(bad)): the model diverged, nothing was written",
            hint: "check the pipeline's weights (an import refuses NaN or infinite ones) and the sampling settings")
    }

    // MARK: VAE

    /// The image (1, C, H·f, W·f) of a latent x (C_z, H, W): decode(x / scaling factor).
    private func decodeLatent(_ x: Tensor) throws -> Tensor {
        let started = Date()
        defer { timings.vaeSeconds += Date().timeIntervalSince(started) }
        let scaled = Tensor(zeros: [1] + x.shape)
        let inv = Float(1 / pipeline.spec.vae!.scalingFactor)
        for j in 0..<x.count { scaled.mutablePointer[j] = x.pointer[j] * inv }
        return try pipeline.vae!.decode(scaled, threads: threads)
    }

    /// scale · (mean + exp(logvar / 2) · ε) (a posterior sample), or scale · mean without ε.
    private static func scaledLatent(mean: Tensor, logvar: Tensor, eps: Tensor?, scale: Float) -> Tensor {
        let out = Tensor(zeros: mean.shape)
        let (m, lv, o) = (mean.pointer, logvar.pointer, out.mutablePointer)
        if let eps {
            let e = eps.pointer
            for j in 0..<out.count { o[j] = scale * (m[j] + expf(0.5 * lv[j]) * e[j]) }
        } else {
            for j in 0..<out.count { o[j] = scale * m[j] }
        }
        return out
    }

    /// Writes frame `i` at the low resolution (no stage 2).
    func finishLowResolutionFrame(_ i: Int) throws {
        try writeFrame(i, image: try lowResolutionFrame(i))
    }

    /// image: (1, C, H, W) or (C, H, W) in model space → 8-bit PNG in the work directory.
    private func writeFrame(_ i: Int, image: Tensor) throws {
        let (c, h, w) = (image.shape[image.rank - 3], image.shape[image.rank - 2], image.shape[image.rank - 1])
        let png = try PNG.encode(Image8(planar: image.pointer, channels: c, height: h, width: w))
        try storeFrame(i, png: png)
    }
}
