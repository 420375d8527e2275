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

    public init(inChannels: Int = 3, outChannels: Int = 3, latentChannels: Int = 4,
                blockOutChannels: [Int] = [128, 256, 512, 512], layersPerBlock: Int = 2,
                normNumGroups: Int = 32, scalingFactor: Double = 0.18215) {
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

    public func validate() throws {
        func fail(_ m: String) throws -> Never { throw ModelError.invalidConfiguration(m) }
        if blockOutChannels.isEmpty { try fail("block_out_channels is empty") }
        if normNumGroups < 1 { try fail("norm_num_groups is \(normNumGroups)") }
        for ch in blockOutChannels where ch < 1 || ch % normNumGroups != 0 {
            try fail("block_out_channels \(blockOutChannels) must be positive multiples of norm_num_groups \(normNumGroups)")
        }
        if layersPerBlock < 1 { try fail("layers_per_block is \(layersPerBlock)") }
        if inChannels < 1 || outChannels < 1 || latentChannels < 1 {
            try fail("in/out/latent channels must be positive (\(inChannels), \(outChannels), \(latentChannels))")
        }
    }

    /// Reads and validates a config JSON file.
    public static func load(path: String) throws -> AutoencoderKLConfiguration {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ModelError.invalidConfiguration("cannot read VAE config '\(path)': \(error.localizedDescription)")
        }
        let config: AutoencoderKLConfiguration
        do {
            config = try JSONDecoder().decode(AutoencoderKLConfiguration.self, from: data)
        } catch {
            throw ModelError.invalidConfiguration("VAE config '\(path)' is not valid: \(error)")
        }
        do { try config.validate() } catch ModelError.invalidConfiguration(let m) {
            throw ModelError.invalidConfiguration("VAE config '\(path)': \(m)")
        }
        return config
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
        func resnet(_ key: String, _ r: VAEResnetWeights, _ p: WritableKeyPath<AutoencoderKLWeights, VAEResnetWeights>) {
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
        func stages(_ key: String, _ blockName: String, _ resampleName: String,
                    _ half: WritableKeyPath<AutoencoderKLWeights, VAEHalfWeights>, _ s: [VAEStageWeights]) {
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

/// The VAE: `encode` gives the diagonal-Gaussian posterior's mean and log-variance, `decode` maps
/// latents to images. Stateless after binding; activations are allocated per call.
public struct AutoencoderKL: Sendable {
    public let config: AutoencoderKLConfiguration
    public let weights: AutoencoderKLWeights

    /// Binds every tensor of the table from `source` (total: missing, misshapen or unused tensors
    /// throw `BindingError`).
    public init(config: AutoencoderKLConfiguration, source: any TensorSource) throws {
        try config.validate()
        var w = AutoencoderKLWeights(config)
        try bind(AutoencoderKLWeights.table(config), from: source, into: &w)
        self.config = config
        self.weights = w
    }

    /// image (N, in_channels, H, W), values in [-1, 1] -> posterior (mean, logvar), each
    /// (N, latent_channels, H/f, W/f) for H, W multiples of f; logvar clamped to [-30, 20]. `threads`: workers
    /// of the convolutions; every product is single-threaded on a fixed schedule, so the result bits
    /// depend neither on `threads` nor on the batch.
    public func encode(_ image: Tensor, threads: Int = BLAS.threadCount) throws -> (mean: Tensor, logvar: Tensor) {
        guard image.rank == 4, image.shape[1] == config.inChannels, image.shape[2] >= 2, image.shape[3] >= 2 else {
            throw ModelError.invalidInput("VAE encode: image \(image.shape), expected (N, \(config.inChannels), H, W)")
        }
        return BLAS.exclusive(threads: 1) {
            let w = threads
            let e = weights.encoder
            var h = conv3x3(image, e.convIn, w)
            for stage in e.stages {
                for r in stage.resnets { h = resnet(h, r, w) }
                if stage.hasResample {
                    h = conv(h, stage.resample, stride: 2, padding: .downsample, w)
                }
            }
            h = midBlock(h, e.mid, w)
            h = conv3x3(normSiLU(h, e.normOut), e.convOut, w)
            let m = conv(h, weights.quantConv, padding: .same(0), w)
            let (N, z, hh, ww) = (m.shape[0], config.latentChannels, m.shape[2], m.shape[3])
            let mean = Tensor(zeros: [N, z, hh, ww]), logvar = Tensor(zeros: [N, z, hh, ww])
            let size = z * hh * ww
            for n in 0..<N {
                mean.mutablePointer.advanced(by: n * size).update(from: m.pointer + n * 2 * size, count: size)
                let lv = logvar.mutablePointer + n * size, src = m.pointer + n * 2 * size + size
                for i in 0..<size { lv[i] = min(max(src[i], -30), 20) }
            }
            return (mean, logvar)
        }
    }

    /// latent (N, latent_channels, h, w) (already divided by the scale factor) ->
    /// image (N, out_channels, h*f, w*f), roughly in [-1, 1].
    public func decode(_ latent: Tensor, threads: Int = BLAS.threadCount) throws -> Tensor {
        guard latent.rank == 4, latent.shape[1] == config.latentChannels else {
            throw ModelError.invalidInput("VAE decode: latent \(latent.shape), expected (N, \(config.latentChannels), h, w)")
        }
        return BLAS.exclusive(threads: 1) {
            let w = threads
            let d = weights.decoder
            var h = conv(latent, weights.postQuantConv, padding: .same(0), w)
            h = conv3x3(h, d.convIn, w)
            h = midBlock(h, d.mid, w)
            for stage in d.stages {
                for r in stage.resnets { h = resnet(h, r, w) }
                if stage.hasResample {
                    let up = Tensor(zeros: [h.shape[0], h.shape[1], 2 * h.shape[2], 2 * h.shape[3]])
                    upsampleNearest2x(h, into: up)
                    h = conv3x3(up, stage.resample, w)
                }
            }
            return conv3x3(normSiLU(h, d.normOut), d.convOut, w)
        }
    }

    // MARK: blocks

    private func conv3x3(_ x: Tensor, _ p: VAEParam, _ workers: Int) -> Tensor {
        conv(x, p, padding: .same(1), workers)
    }

    private func conv(_ x: Tensor, _ p: VAEParam, stride: Int = 1, padding: ConvPadding, _ workers: Int) -> Tensor {
        conv2d(x, weight: p.weight!, bias: p.bias, stride: stride, padding: padding, workers: workers)
    }

    private func normSiLU(_ x: Tensor, _ p: VAEParam) -> Tensor {
        let out = Tensor(zeros: x.shape)
        groupNorm(x, groups: config.normNumGroups, weight: p.weight!, bias: p.bias!, eps: 1e-6, silu: true, into: out)
        return out
    }

    /// shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))).
    private func resnet(_ x: Tensor, _ r: VAEResnetWeights, _ workers: Int) -> Tensor {
        let h = conv3x3(normSiLU(x, r.norm1), r.conv1, workers)
        let h2 = normSiLU(h, r.norm2)
        let out: Tensor
        if r.inChannels != r.outChannels {
            out = conv(x, r.shortcut, padding: .same(0), workers)
        } else {
            out = x.copy()
        }
        conv2d(h2, weight: r.conv2.weight!, bias: r.conv2.bias, padding: .same(1), into: out, accumulate: true,
               workers: workers)
        return out
    }

    private func midBlock(_ x: Tensor, _ m: VAEMidBlockWeights, _ workers: Int) -> Tensor {
        resnet(attention(resnet(x, m.resnet0, workers), m.attention, workers), m.resnet1, workers)
    }

    /// x + to_out(softmax(q kᵀ / sqrt(C)) v) over the H*W positions, q/k/v from group_norm(x).
    private func attention(_ x: Tensor, _ a: VAEAttentionWeights, _ workers: Int) -> Tensor {
        let (N, C, H, W) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let T = H * W
        let normed = Tensor(zeros: x.shape)
        groupNorm(x, groups: config.normNumGroups, weight: a.groupNorm.weight!, bias: a.groupNorm.bias!, eps: 1e-6,
                  into: normed)
        let tokens = Tensor(zeros: [T, C]), q = Tensor(zeros: [T, C]), k = Tensor(zeros: [T, C]), v = Tensor(zeros: [T, C])
        let o = Tensor(zeros: [T, C]), proj = Tensor(zeros: [T, C])
        let scores = Tensor(zeros: [attentionScratchCount(tokens: T, workers: workers)])
        let out = x.copy()
        func project(_ x: Tensor, _ p: VAEParam, into y: Tensor) {
            linearRows(x.pointer, rows: T, segment: T, weight: p.weight!, bias: p.bias, workers: workers,
                       into: y.mutablePointer)
        }
        for n in 0..<N {
            transpose2D(normed.pointer + n * C * T, rows: C, cols: T, into: tokens.mutablePointer)
            project(tokens, a.query, into: q)
            project(tokens, a.key, into: k)
            project(tokens, a.value, into: v)
            GriditTensor.attention(q: q.pointer, k: k.pointer, v: v.pointer, rowStride: C, batch: 1, tokens: T,
                                   dim: C, heads: 1, workers: workers, scores: scores, into: o.mutablePointer)
            project(o, a.out, into: proj)
            // out[n] (C, T) += projᵀ
            let dst = out.mutablePointer + n * C * T, src = proj.pointer
            for t in 0..<T {
                for c in 0..<C { dst[c * T + t] += src[t * C + c] }
            }
        }
        return out
    }
}
