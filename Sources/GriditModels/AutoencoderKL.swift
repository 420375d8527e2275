import Foundation
import GriditTensor

// The Stable Diffusion VAE (`AutoencoderKL` as in diffusers), configurable so tests can use tiny
// channel counts. Shapes: image (N, C, H, W) <-> latent (N, z, H/f, W/f) with f = 2^(blocks-1).
// The latent scale factor (0.18215 for SD) is applied by the caller: decode(latent / scale),
// scale * encode(image).mean. Reference: tools/reference/vae_reference.py.

/// Hyper-parameters, read from a JSON with diffusers' field names (a diffusers `config.json` of an
/// `AutoencoderKL` loads as is; fields not listed here are ignored):
///
///     {"in_channels": 3, "out_channels": 3, "latent_channels": 4,
///      "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32}
public struct AutoencoderKLConfiguration: Codable, Equatable, Sendable {
    public var inChannels: Int
    public var outChannels: Int
    public var latentChannels: Int
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    public var normNumGroups: Int
    /// Latent scale the caller applies (not used inside the model). Optional in JSON.
    public var scalingFactor: Double

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels"
        case outChannels = "out_channels"
        case latentChannels = "latent_channels"
        case blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block"
        case normNumGroups = "norm_num_groups"
        case scalingFactor = "scaling_factor"
    }

    public init(
        inChannels: Int = 3, outChannels: Int = 3, latentChannels: Int = 4,
        blockOutChannels: [Int] = [128, 256, 512, 512], layersPerBlock: Int = 2,
        normNumGroups: Int = 32, scalingFactor: Double = 0.18215
    ) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.latentChannels = latentChannels
        self.blockOutChannels = blockOutChannels
        self.layersPerBlock = layersPerBlock
        self.normNumGroups = normNumGroups
        self.scalingFactor = scalingFactor
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inChannels = try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? 3
        outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? 3
        latentChannels = try c.decodeIfPresent(Int.self, forKey: .latentChannels) ?? 4
        blockOutChannels = try c.decode([Int].self, forKey: .blockOutChannels)
        layersPerBlock = try c.decode(Int.self, forKey: .layersPerBlock)
        normNumGroups = try c.decodeIfPresent(Int.self, forKey: .normNumGroups) ?? 32
        scalingFactor = try c.decodeIfPresent(Double.self, forKey: .scalingFactor) ?? 0.18215
    }

    /// Stable Diffusion 1.x / 2.x VAE.
    public static let stableDiffusion = AutoencoderKLConfiguration()

    /// Spatial factor between image and latent: 2^(number of blocks - 1).
    public var downsampleFactor: Int { 1 << (blockOutChannels.count - 1) }

    /// Upper bounds (far above SD's VAE) so that a hostile config is refused before any table or
    /// tensor is built from it.
    public enum Limits {
        public static let blocks = 8
        public static let channels = 4096
        public static let layersPerBlock = 16
    }

    public func validate() throws {
        func fail(_ m: String) throws -> Never { throw ModelError.invalidConfiguration(m) }
        if blockOutChannels.isEmpty { try fail("block_out_channels is empty") }
        if blockOutChannels.count > Limits.blocks {
            try fail("block_out_channels has \(blockOutChannels.count) blocks; at most \(Limits.blocks) are accepted")
        }
        for (field, value, limit) in [
            ("layers_per_block", layersPerBlock, Limits.layersPerBlock), ("in_channels", inChannels, Limits.channels),
            ("out_channels", outChannels, Limits.channels), ("latent_channels", latentChannels, Limits.channels),
            ("norm_num_groups", normNumGroups, Limits.channels),
            ("block_out_channels", blockOutChannels.max() ?? 0, Limits.channels),
        ] where value > limit {
            try fail("\(field) is \(value); at most \(limit) is accepted (is the config for this model?)")
        }
        if normNumGroups < 1 { try fail("norm_num_groups is \(normNumGroups)") }
        for ch in blockOutChannels where ch < 1 || ch % normNumGroups != 0 {
            try fail(
                "block_out_channels \(blockOutChannels) must be positive multiples of norm_num_groups \(normNumGroups)")
        }
        if layersPerBlock < 1 { try fail("layers_per_block is \(layersPerBlock)") }
        if inChannels < 1 || outChannels < 1 || latentChannels < 1 {
            try fail("in/out/latent channels must be positive (\(inChannels), \(outChannels), \(latentChannels))")
        }
    }

    /// Reads and validates a config JSON file.
    public static func load(path: String) throws -> AutoencoderKLConfiguration {
        try loadConfiguration(AutoencoderKLConfiguration.self, path: path, what: "VAE config") { try $0.validate() }
    }
}

/// Weight and bias of a convolution or linear layer, or affine of a group norm.
public struct VAEParam: Sendable {
    public var weight, bias: Tensor?
}

public struct VAEResnetWeights: Sendable {
    public var inChannels = 0, outChannels = 0
    public var norm1 = VAEParam(), conv1 = VAEParam(), norm2 = VAEParam(), conv2 = VAEParam()
    /// 1x1 `conv_shortcut`, bound only when the channel count changes.
    public var shortcut = VAEParam()
}

public struct VAEAttentionWeights: Sendable {
    public var groupNorm = VAEParam(), query = VAEParam(), key = VAEParam(), value = VAEParam(), out = VAEParam()
}

public struct VAEMidBlockWeights: Sendable {
    public var resnet0 = VAEResnetWeights(), attention = VAEAttentionWeights(), resnet1 = VAEResnetWeights()
}

/// A down block of the encoder or an up block of the decoder: resnets, then the resampling conv
/// (absent in the last block).
public struct VAEStageWeights: Sendable {
    public var resnets: [VAEResnetWeights]
    public var resample = VAEParam()
    public var hasResample = false
}

public struct VAEHalfWeights: Sendable {
    public var convIn = VAEParam()
    public var stages: [VAEStageWeights] = []
    public var mid = VAEMidBlockWeights()
    public var normOut = VAEParam(), convOut = VAEParam()
}

public struct AutoencoderKLWeights: Sendable {
    public var encoder = VAEHalfWeights(), decoder = VAEHalfWeights()
    public var quantConv = VAEParam(), postQuantConv = VAEParam()

    /// Empty weights with the structure (block and resnet counts, channels) of `c`.
    init(_ c: AutoencoderKLConfiguration) {
        let B = c.blockOutChannels, L = c.layersPerBlock
        func resnet(_ i: Int, _ o: Int) -> VAEResnetWeights {
            var r = VAEResnetWeights()
            (r.inChannels, r.outChannels) = (i, o)
            return r
        }
        func mid(_ ch: Int) -> VAEMidBlockWeights {
            VAEMidBlockWeights(resnet0: resnet(ch, ch), attention: VAEAttentionWeights(), resnet1: resnet(ch, ch))
        }
        var prev = B[0]
        for (i, ch) in B.enumerated() {
            var s = VAEStageWeights(resnets: (0..<L).map { resnet($0 == 0 ? prev : ch, ch) })
            s.hasResample = i < B.count - 1
            encoder.stages.append(s)
            prev = ch
        }
        encoder.mid = mid(B[B.count - 1])
        let R = Array(B.reversed())
        prev = R[0]
        for (i, ch) in R.enumerated() {
            var s = VAEStageWeights(resnets: (0...L).map { resnet($0 == 0 ? prev : ch, ch) })
            s.hasResample = i < R.count - 1
            decoder.stages.append(s)
            prev = ch
        }
        decoder.mid = mid(B[B.count - 1])
    }

    /// The one table binding checkpoint keys (verbatim diffusers `AutoencoderKL` state-dict names)
    /// to weights.
    public static func table(_ c: AutoencoderKLConfiguration) -> [Binding<AutoencoderKLWeights>] {
        typealias P = WritableKeyPath<AutoencoderKLWeights, VAEParam>
        let structure = AutoencoderKLWeights(c)
        let B = c.blockOutChannels, z = c.latentChannels
        var t: [Binding<AutoencoderKLWeights>] = []
        func conv(_ key: String, _ cin: Int, _ cout: Int, _ k: Int, _ p: P) {
            t.append(Binding(key + ".weight", [cout, cin, k, k], p.appending(path: \.weight)))
            t.append(Binding(key + ".bias", [cout], p.appending(path: \.bias)))
        }
        func norm(_ key: String, _ ch: Int, _ p: P) {
            t.append(Binding(key + ".weight", [ch], p.appending(path: \.weight)))
            t.append(Binding(key + ".bias", [ch], p.appending(path: \.bias)))
        }
        func linear(_ key: String, _ ch: Int, _ p: P) {
            t.append(Binding(key + ".weight", [ch, ch], p.appending(path: \.weight)))
            t.append(Binding(key + ".bias", [ch], p.appending(path: \.bias)))
        }
        func resnet(_ key: String, _ r: VAEResnetWeights, _ p: WritableKeyPath<AutoencoderKLWeights, VAEResnetWeights>)
        {
            norm(key + "norm1", r.inChannels, p.appending(path: \.norm1))
            conv(key + "conv1", r.inChannels, r.outChannels, 3, p.appending(path: \.conv1))
            norm(key + "norm2", r.outChannels, p.appending(path: \.norm2))
            conv(key + "conv2", r.outChannels, r.outChannels, 3, p.appending(path: \.conv2))
            if r.inChannels != r.outChannels {
                conv(key + "conv_shortcut", r.inChannels, r.outChannels, 1, p.appending(path: \.shortcut))
            }
        }
        func mid(_ key: String, _ ch: Int, _ p: WritableKeyPath<AutoencoderKLWeights, VAEMidBlockWeights>) {
            resnet(key + "resnets.0.", VAEResnetWeights(inChannels: ch, outChannels: ch), p.appending(path: \.resnet0))
            let a = key + "attentions.0.", ap = p.appending(path: \.attention)
            norm(a + "group_norm", ch, ap.appending(path: \.groupNorm))
            linear(a + "to_q", ch, ap.appending(path: \.query))
            linear(a + "to_k", ch, ap.appending(path: \.key))
            linear(a + "to_v", ch, ap.appending(path: \.value))
            linear(a + "to_out.0", ch, ap.appending(path: \.out))
            resnet(key + "resnets.1.", VAEResnetWeights(inChannels: ch, outChannels: ch), p.appending(path: \.resnet1))
        }
        func stages(
            _ key: String, _ blockName: String, _ resampleName: String,
            _ half: WritableKeyPath<AutoencoderKLWeights, VAEHalfWeights>, _ s: [VAEStageWeights]
        ) {
            for (i, stage) in s.enumerated() {
                let sp = half.appending(path: \.stages[i])
                for (j, r) in stage.resnets.enumerated() {
                    resnet("\(key).\(blockName).\(i).resnets.\(j).", r, sp.appending(path: \.resnets[j]))
                }
                if stage.hasResample {
                    let ch = stage.resnets[stage.resnets.count - 1].outChannels
                    conv("\(key).\(blockName).\(i).\(resampleName).0.conv", ch, ch, 3, sp.appending(path: \.resample))
                }
            }
        }
        conv("encoder.conv_in", c.inChannels, B[0], 3, \.encoder.convIn)
        stages("encoder", "down_blocks", "downsamplers", \.encoder, structure.encoder.stages)
        mid("encoder.mid_block.", B[B.count - 1], \.encoder.mid)
        norm("encoder.conv_norm_out", B[B.count - 1], \.encoder.normOut)
        conv("encoder.conv_out", B[B.count - 1], 2 * z, 3, \.encoder.convOut)
        conv("quant_conv", 2 * z, 2 * z, 1, \.quantConv)
        conv("post_quant_conv", z, z, 1, \.postQuantConv)
        conv("decoder.conv_in", z, B[B.count - 1], 3, \.decoder.convIn)
        mid("decoder.mid_block.", B[B.count - 1], \.decoder.mid)
        stages("decoder", "up_blocks", "upsamplers", \.decoder, structure.decoder.stages)
        norm("decoder.conv_norm_out", B[0], \.decoder.normOut)
        conv("decoder.conv_out", B[0], c.outChannels, 3, \.decoder.convOut)
        return t
    }
}

/// How `encode` and `decode` split large images, as diffusers' `AutoencoderKL.enable_tiling()`
/// does: an image (or latent) larger than one tile on a side is processed in tiles of `tile`
/// pixels (`tile / f` latent values) that overlap by `overlap` of a tile, each blended linearly
/// into its upper and left neighbours over the overlap; then the tiles are cropped and joined.
/// Activation memory is then that of one tile, whatever the image size. Tiles see only their part
/// of the image (group norm statistics, mid-block attention), so the result approximates the
/// untiled one, as in diffusers.
public struct VAETiling: Sendable, Equatable {
    /// Tile size in pixels, a multiple of the downsample factor.
    public var tile: Int
    /// Fraction of a tile shared with the next one, in [0, 1).
    public var overlap: Double

    public init(tile: Int, overlap: Double = 0.25) {
        self.tile = tile
        self.overlap = overlap
    }

    /// diffusers' defaults for the SD VAE (`sample_size` 512, overlap factor 0.25).
    public static let diffusers = VAETiling(tile: 512, overlap: 0.25)
}

/// The layers of one half (encoder or decoder) prepared for a precision and backend.
struct VAEResnet {
    let norm1, norm2: VAEParam
    let conv1, conv2: ConvWeight
    let shortcut: ConvWeight?
}

struct VAEAttention {
    let norm: VAEParam
    let qkv: LinearWeight  // (3C, C): to_q, to_k, to_v stacked
    let out: LinearWeight  // (C, C)
}

struct VAEStage {
    let resnets: [VAEResnet]
    let resample: ConvWeight?
}

struct VAEHalf {
    let convIn: ConvWeight
    let stages: [VAEStage]
    let mid: (VAEResnet, VAEAttention, VAEResnet)
    let normOut: VAEParam
    let convOut: ConvWeight
}

/// The VAE: `encode` gives the diagonal-Gaussian posterior's mean and log-variance, `decode` maps
/// latents to images. Stateless after binding; activations are allocated per call (and freed as
/// soon as the next layer has read them), so memory follows the image size, or the tile size when
/// `tiling` applies.
public struct AutoencoderKL: @unchecked Sendable {
    public let config: AutoencoderKLConfiguration
    public let weights: AutoencoderKLWeights
    /// The precision of the convolutions and projections: the one asked for, or fp32 where the CPU
    /// lacks AVX512_BF16.
    public let precision: Precision
    public let backend: KernelBackend
    /// When and how large inputs are tiled (nil: never); see `VAETiling`.
    public var tiling: VAETiling? = .diffusers
    let encoder, decoder: VAEHalf
    let quantConv, postQuantConv: ConvWeight

    /// Whether a checkpoint fits `config`, from its header alone (what `init` checks, without
    /// building the model).
    public static func checkBinding(_ config: AutoencoderKLConfiguration, against source: any TensorSource) throws {
        try config.validate()
        try GriditModels.checkBinding(AutoencoderKLWeights.table(config), against: source)
    }

    /// Binds every tensor of the table from `source` (total: missing, misshapen or unused tensors
    /// throw `BindingError`), then prepares the layers for `precision` (bf16 weights packed once).
    public init(
        config: AutoencoderKLConfiguration, source: any TensorSource, precision: Precision = .fp32,
        backend: KernelBackend = .current
    ) throws {
        try config.validate()
        var w = AutoencoderKLWeights(config)
        try bind(AutoencoderKLWeights.table(config), from: source, into: &w)
        self.config = config
        self.weights = w
        self.backend = backend
        let p = precision.effective(on: backend)
        self.precision = p
        func conv(_ v: VAEParam) -> ConvWeight {
            ConvWeight(weight: v.weight!, bias: v.bias, precision: p, backend: backend)
        }
        func resnet(_ r: VAEResnetWeights) -> VAEResnet {
            VAEResnet(
                norm1: r.norm1, norm2: r.norm2, conv1: conv(r.conv1), conv2: conv(r.conv2),
                shortcut: r.inChannels != r.outChannels ? conv(r.shortcut) : nil)
        }
        func attention(_ a: VAEAttentionWeights) -> VAEAttention {
            let C = a.query.weight!.shape[0]
            let w = Tensor(zeros: [3 * C, C]), b = Tensor(zeros: [3 * C])
            for (i, part) in [a.query, a.key, a.value].enumerated() {
                (w.mutablePointer + i * C * C).update(from: part.weight!.pointer, count: C * C)
                (b.mutablePointer + i * C).update(from: part.bias!.pointer, count: C)
            }
            return VAEAttention(
                norm: a.groupNorm, qkv: LinearWeight(weight: w, bias: b, precision: p, backend: backend),
                out: LinearWeight(weight: a.out.weight!, bias: a.out.bias, precision: p, backend: backend))
        }
        func half(_ h: VAEHalfWeights) -> VAEHalf {
            VAEHalf(
                convIn: conv(h.convIn),
                stages: h.stages.map {
                    VAEStage(resnets: $0.resnets.map(resnet), resample: $0.hasResample ? conv($0.resample) : nil)
                },
                mid: (resnet(h.mid.resnet0), attention(h.mid.attention), resnet(h.mid.resnet1)),
                normOut: h.normOut, convOut: conv(h.convOut))
        }
        encoder = half(w.encoder)
        decoder = half(w.decoder)
        quantConv = conv(w.quantConv)
        postQuantConv = conv(w.postQuantConv)
    }

    /// image (N, in_channels, H, W), values in [-1, 1] -> posterior (mean, logvar), each
    /// (N, latent_channels, H/f, W/f) for H, W multiples of f; logvar clamped to [-30, 20]. `threads`: workers
    /// of the kernels; the result bits depend neither on `threads` nor on the batch.
    public func encode(
        _ image: Tensor, threads: Int = ComputeContext.defaultWorkers
    ) throws -> (mean: Tensor, logvar: Tensor) {
        guard image.rank == 4, image.shape[1] == config.inChannels, image.shape[2] >= 2, image.shape[3] >= 2 else {
            throw ModelError.invalidInput("VAE encode: image \(image.shape), expected (N, \(config.inChannels), H, W)")
        }
        try checkTiling()
        let ctx = context(threads)
        let moments: Tensor = BLAS.singleThreaded {
            let f = config.downsampleFactor
            if let tiling, image.shape[2] > tiling.tile || image.shape[3] > tiling.tile {
                return tiled(
                    image, tile: tiling.tile, outputTile: tiling.tile / f, overlap: tiling.overlap,
                    outputScale: (1, f)
                ) { encodeMoments($0, ctx) }
            }
            return encodeMoments(image, ctx)
        }
        let (N, z, hh, ww) = (moments.shape[0], config.latentChannels, moments.shape[2], moments.shape[3])
        let mean = Tensor(zeros: [N, z, hh, ww]), logvar = Tensor(zeros: [N, z, hh, ww])
        let size = z * hh * ww
        for n in 0..<N {
            mean.mutablePointer.advanced(by: n * size).update(from: moments.pointer + n * 2 * size, count: size)
            let lv = logvar.mutablePointer + n * size, src = moments.pointer + n * 2 * size + size
            for i in 0..<size { lv[i] = min(max(src[i], -30), 20) }
        }
        return (mean, logvar)
    }

    /// latent (N, latent_channels, h, w) (already divided by the scale factor) ->
    /// image (N, out_channels, h*f, w*f), roughly in [-1, 1].
    public func decode(_ latent: Tensor, threads: Int = ComputeContext.defaultWorkers) throws -> Tensor {
        guard latent.rank == 4, latent.shape[1] == config.latentChannels else {
            throw ModelError.invalidInput(
                "VAE decode: latent \(latent.shape), expected (N, \(config.latentChannels), h, w)")
        }
        try checkTiling()
        let ctx = context(threads)
        return BLAS.singleThreaded {
            let f = config.downsampleFactor
            if let tiling, latent.shape[2] * f > tiling.tile || latent.shape[3] * f > tiling.tile {
                return tiled(
                    latent, tile: tiling.tile / f, outputTile: tiling.tile, overlap: tiling.overlap,
                    outputScale: (f, 1)
                ) { decodeLatent($0, ctx) }
            }
            return decodeLatent(latent, ctx)
        }
    }

    private func checkTiling() throws {
        guard let t = tiling else { return }
        let f = config.downsampleFactor
        guard t.tile >= f, t.tile % f == 0, t.overlap >= 0, t.overlap < 1 else {
            throw ModelError.invalidInput(
                "VAE tiling: tile \(t.tile) must be a positive multiple of \(f), overlap "
                    + "\(t.overlap) in [0, 1)")
        }
    }

    /// A compute context for `threads` workers with scratch for the largest convolution.
    private func context(_ threads: Int) -> ComputeContext {
        let ctx = ComputeContext(workers: threads, backend: backend)
        var bytes = max(quantConv.scratchBytes(context: ctx), postQuantConv.scratchBytes(context: ctx))
        func add(_ r: VAEResnet) {
            bytes = max(
                bytes, r.conv1.scratchBytes(context: ctx), r.conv2.scratchBytes(context: ctx),
                r.shortcut?.scratchBytes(context: ctx) ?? 0)
        }
        for h in [encoder, decoder] {
            bytes = max(bytes, h.convIn.scratchBytes(context: ctx), h.convOut.scratchBytes(context: ctx))
            add(h.mid.0)
            add(h.mid.2)
            for s in h.stages {
                s.resnets.forEach(add)
                bytes = max(bytes, s.resample?.scratchBytes(context: ctx) ?? 0)
            }
        }
        ctx.reserve(scratchBytes: bytes)
        return ctx
    }

    /// Runs `body` on overlapping tiles of `x` and blends the results (diffusers' tiled_encode and
    /// tiled_decode). `tile`: input tile size; `outputTile`: the size of its result; outputScale
    /// (num, den): output size = input size · num / den.
    private func tiled(
        _ x: Tensor, tile: Int, outputTile: Int, overlap: Double,
        outputScale: (Int, Int), _ body: (Tensor) -> Tensor
    ) -> Tensor {
        let (N, H, W) = (x.shape[0], x.shape[2], x.shape[3])
        let (num, den) = outputScale
        let step = max(1, Int(Double(tile) * (1 - overlap)))
        let limit = step * num / den  // output rows each tile keeps
        let blend = outputTile - limit  // rows blended with the previous tile
        let (OH, OW) = (H * num / den, W * num / den)
        var out: Tensor?
        var above: [Tensor] = []  // blended tiles of the previous row
        for (ti, i) in stride(from: 0, to: H, by: step).enumerated() {
            var row: [Tensor] = []
            for (tj, j) in stride(from: 0, to: W, by: step).enumerated() {
                let piece = crop(x, rows: i..<min(i + tile, H), cols: j..<min(j + tile, W))
                let y = body(piece)
                if out == nil { out = Tensor(zeros: [N, y.shape[1], OH, OW]) }
                if ti > 0 { blendRows(from: above[tj], into: y, extent: blend) }
                if tj > 0 { blendColumns(from: row[tj - 1], into: y, extent: blend) }
                row.append(y)
                // Keep the first `limit` rows and columns of the blended tile.
                let (r0, c0) = (ti * limit, tj * limit)
                let rows = min(limit, y.shape[2], OH - r0), cols = min(limit, y.shape[3], OW - c0)
                place(y, rows: rows, cols: cols, into: out!, at: (r0, c0))
            }
            above = row
        }
        return out!
    }

    // MARK: halves

    private func encodeMoments(_ image: Tensor, _ ctx: ComputeContext) -> Tensor {
        let e = encoder, pairs = ChannelPairs()
        var h = conv(image, e.convIn, padding: .same(1), ctx)
        for stage in e.stages {
            for r in stage.resnets { h = resnet(h, r, ctx, pairs) }
            if let resample = stage.resample { h = conv(h, resample, stride: 2, padding: .downsample, ctx) }
        }
        h = midBlock(h, e.mid, ctx, pairs)
        h = normSiLUConv(h, e.normOut, e.convOut, ctx, pairs)
        return conv(h, quantConv, padding: .same(0), ctx)
    }

    private func decodeLatent(_ latent: Tensor, _ ctx: ComputeContext) -> Tensor {
        let d = decoder, pairs = ChannelPairs()
        var h = conv(latent, postQuantConv, padding: .same(0), ctx)
        h = conv(h, d.convIn, padding: .same(1), ctx)
        h = midBlock(h, d.mid, ctx, pairs)
        for stage in d.stages {
            for r in stage.resnets { h = resnet(h, r, ctx, pairs) }
            if let resample = stage.resample {
                let shape = [h.shape[0], h.shape[1], 2 * h.shape[2], 2 * h.shape[3]]
                if resample.acceptsPairs {
                    // Upsampled straight into the convolution's bf16 input (no fp32 copy at 4x the size).
                    upsampleNearest2x(h, into: pairs, workers: ctx.workers)
                    h = Tensor(zeros: shape)
                    conv2d(pairs, resample, padding: .same(1), into: h, context: ctx)
                } else {
                    let up = Tensor(zeros: shape)
                    upsampleNearest2x(h, into: up)
                    h = up  // frees the low-resolution tensor before the convolution allocates its output
                    h = conv(h, resample, padding: .same(1), ctx)
                }
            }
        }
        return normSiLUConv(h, d.normOut, d.convOut, ctx, pairs)
    }

    // MARK: blocks

    private func conv(
        _ x: Tensor, _ w: ConvWeight, stride: Int = 1, padding: ConvPadding, _ ctx: ComputeContext
    ) -> Tensor {
        conv2d(x, w, stride: stride, padding: padding, context: ctx)
    }

    /// w(silu(group_norm(x))) (3x3, padding 1), into `out` (+= with `accumulate`) or a new tensor.
    /// Where the convolution takes bf16 channel pairs, the norm writes them into `pairs` and no
    /// fp32 copy of the normalised activation exists; otherwise x is normalised in place when
    /// `inPlace` (x is then consumed), else into a new tensor.
    private func normSiLUConv(
        _ x: Tensor, _ p: VAEParam, _ w: ConvWeight, into out: Tensor? = nil,
        accumulate: Bool = false, inPlace: Bool = false, _ ctx: ComputeContext,
        _ pairs: ChannelPairs
    ) -> Tensor {
        let G = config.normNumGroups
        let outShape = convOutputShape(x.shape, weight: w.weight.shape, padding: .same(1))
        if w.acceptsPairs && (x.shape[1] / G) % 2 == 0 {
            groupNorm(
                x, groups: G, weight: p.weight!, bias: p.bias!, eps: 1e-6, silu: true, into: pairs,
                workers: ctx.workers)
            let out = out ?? Tensor(zeros: outShape)
            conv2d(pairs, w, padding: .same(1), into: out, accumulate: accumulate, context: ctx)
            return out
        }
        let normed = inPlace ? x : Tensor(zeros: x.shape)
        groupNorm(
            x, groups: G, weight: p.weight!, bias: p.bias!, eps: 1e-6, silu: true, into: normed,
            workers: ctx.workers)
        let out = out ?? Tensor(zeros: outShape)
        conv2d(normed, w, padding: .same(1), into: out, accumulate: accumulate, context: ctx)
        return out
    }

    /// shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))). Consumes x: with an identity
    /// shortcut, conv2 accumulates into x's storage (callers pass tensors they no longer need).
    private func resnet(_ x: Tensor, _ r: VAEResnet, _ ctx: ComputeContext, _ pairs: ChannelPairs) -> Tensor {
        let h = normSiLUConv(x, r.norm1, r.conv1, ctx, pairs)
        let out = r.shortcut.map { conv(x, $0, padding: .same(0), ctx) } ?? x
        _ = normSiLUConv(h, r.norm2, r.conv2, into: out, accumulate: true, inPlace: true, ctx, pairs)
        return out
    }

    private func midBlock(
        _ x: Tensor, _ m: (VAEResnet, VAEAttention, VAEResnet), _ ctx: ComputeContext,
        _ pairs: ChannelPairs
    ) -> Tensor {
        resnet(attention(resnet(x, m.0, ctx, pairs), m.1, ctx), m.2, ctx, pairs)
    }

    /// x + to_out(softmax(q kᵀ / sqrt(C)) v) over the H*W positions, q/k/v from group_norm(x).
    /// Consumes x (the residual is added into its storage).
    private func attention(_ x: Tensor, _ a: VAEAttention, _ ctx: ComputeContext) -> Tensor {
        let (N, C, H, W) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let T = H * W
        let normed = Tensor(zeros: x.shape)
        groupNorm(
            x, groups: config.normNumGroups, weight: a.norm.weight!, bias: a.norm.bias!, eps: 1e-6,
            into: normed, workers: ctx.workers)
        let tokens = Tensor(zeros: [T, C]), qkv = Tensor(zeros: [T, 3 * C])
        let o = Tensor(zeros: [T, C]), proj = Tensor(zeros: [T, C])
        let scratch = Tensor(zeros: [attentionScratchCount(batch: 1, tokens: T, dim: C, heads: 1, workers: ctx.workers)]
        )
        for n in 0..<N {
            transpose2D(normed.pointer + n * C * T, rows: C, cols: T, into: tokens.mutablePointer)
            linear(tokens.pointer, rows: T, a.qkv, segment: T, into: qkv.mutablePointer, context: ctx)
            GriditTensor.attention(
                q: qkv.pointer, k: qkv.pointer + C, v: qkv.pointer + 2 * C, rowStride: 3 * C,
                batch: 1, tokens: T, dim: C, heads: 1, workers: ctx.workers,
                scratch: scratch.mutablePointer, into: o.mutablePointer)
            linear(o.pointer, rows: T, a.out, segment: T, into: proj.mutablePointer, context: ctx)
            // x[n] (C, T) += projᵀ
            let dst = x.mutablePointer + n * C * T, src = proj.pointer
            for t in 0..<T {
                for c in 0..<C { dst[c * T + t] += src[t * C + c] }
            }
        }
        return x
    }
}

// MARK: tiles

/// Rows and columns of every (n, c) plane of x, as a new tensor.
private func crop(_ x: Tensor, rows: Range<Int>, cols: Range<Int>) -> Tensor {
    let (N, C, H, W) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    if rows == 0..<H && cols == 0..<W { return x.copy() }
    let out = Tensor(zeros: [N, C, rows.count, cols.count])
    for p in 0..<(N * C) {
        for (r, y) in rows.enumerated() {
            (out.mutablePointer + (p * rows.count + r) * cols.count)
                .update(from: x.pointer + (p * H + y) * W + cols.lowerBound, count: cols.count)
        }
    }
    return out
}

/// diffusers' blend_v: the first `extent` rows of b fade in over the last `extent` rows of a.
private func blendRows(from a: Tensor, into b: Tensor, extent: Int) {
    let e = min(a.shape[2], b.shape[2], extent)
    let (planes, Ha, Hb, W) = (b.shape[0] * b.shape[1], a.shape[2], b.shape[2], b.shape[3])
    guard e > 0, a.shape[3] == W else { return }
    for p in 0..<planes {
        for y in 0..<e {
            let (u, t) = blendWeights(y, e)
            let src = a.pointer + (p * Ha + Ha - e + y) * W, dst = b.mutablePointer + (p * Hb + y) * W
            for x in 0..<W { dst[x] = src[x] * u + dst[x] * t }
        }
    }
}

/// diffusers' blend_h: the first `extent` columns of b fade in over the last `extent` columns of a.
private func blendColumns(from a: Tensor, into b: Tensor, extent: Int) {
    let e = min(a.shape[3], b.shape[3], extent)
    let (planes, H, Wa, Wb) = (b.shape[0] * b.shape[1], b.shape[2], a.shape[3], b.shape[3])
    guard e > 0, a.shape[2] == H else { return }
    for p in 0..<planes {
        for y in 0..<H {
            let src = a.pointer + (p * H + y) * Wa + Wa - e, dst = b.mutablePointer + (p * H + y) * Wb
            for x in 0..<e {
                let (u, t) = blendWeights(x, e)
                dst[x] = src[x] * u + dst[x] * t
            }
        }
    }
}

/// (1 − i/e, i/e) rounded from double, as diffusers' Python scalars are.
private func blendWeights(_ i: Int, _ e: Int) -> (Float, Float) {
    let t = Double(i) / Double(e)
    return (Float(1 - t), Float(t))
}

/// Copies the top-left rows x cols of every plane of `tile` into `out` at (r0, c0).
private func place(_ tile: Tensor, rows: Int, cols: Int, into out: Tensor, at origin: (Int, Int)) {
    guard rows > 0, cols > 0 else { return }
    let (planes, Ht, Wt) = (tile.shape[0] * tile.shape[1], tile.shape[2], tile.shape[3])
    let (H, W) = (out.shape[2], out.shape[3])
    for p in 0..<planes {
        for r in 0..<rows {
            let dst = out.mutablePointer + (p * H + origin.0 + r) * W + origin.1
            dst.update(from: tile.pointer + (p * Ht + r) * Wt, count: cols)
        }
    }
}
