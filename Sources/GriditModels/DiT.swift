import GriditTensor

// Diffusion Transformer (Peebles & Xie) with the GriDiT variants: optional class embedder, and a
// super-resolution patch embedding over [noisy input, condition] concatenated on channels.
// Shapes (legend in GriditTensor/Tensor.swift): x (N, C, H, W) -> tokens (N, T, D) -> out (N, Cout, H, W).

/// Weights of one `DiTBlock`; names follow the PyTorch modules, keys live in `DiTWeights.table`.
public struct DiTBlockWeights: Sendable {
    public var qkvWeight, qkvBias: Tensor?  // (3D, D), (3D)
    public var projWeight, projBias: Tensor?  // (D, D), (D)
    public var fc1Weight, fc1Bias: Tensor?  // (M, D), (M)
    public var fc2Weight, fc2Bias: Tensor?  // (D, M), (D)
    public var adaLNWeight, adaLNBias: Tensor?  // (6D, D), (6D)
}

/// A model bound in bf16 from a bf16 checkpoint leaves the fields of the weights it packed from
/// their bits (`Binding.roundedInBF16`) nil.
public struct DiTWeights: Sendable {
    public var posEmbed: Tensor?  // (1, T, D); computed 2-D sin-cos when absent
    public var xEmbedWeight, xEmbedBias: Tensor?  // (D, C+Cc, P, P), (D)
    public var tEmbed0Weight, tEmbed0Bias: Tensor?  // (D, 256), (D)
    public var tEmbed2Weight, tEmbed2Bias: Tensor?  // (D, D), (D)
    public var yEmbedTable: Tensor?  // (num_classes + 1, D); last row = CFG null class
    public var blocks: [DiTBlockWeights]
    public var finalAdaLNWeight, finalAdaLNBias: Tensor?  // (2D, D), (2D)
    public var finalLinearWeight, finalLinearBias: Tensor?  // (P*P*Cout, D), (P*P*Cout)

    init(depth: Int) { blocks = Array(repeating: DiTBlockWeights(), count: depth) }

    /// The keys of the weights that bf16 products round to bf16: what a bf16 checkpoint of this
    /// model stores as BF16 (everything else, biases and embeddings, stays as it was).
    public static func bf16Keys(_ c: DiTConfiguration) -> Set<String> {
        Set(table(c).filter(\.roundedInBF16).map(\.key))
    }

    /// The one table binding checkpoint keys (verbatim from the PyTorch state_dict) to weights;
    /// `bf16: true` marks the weights of matrix products (bf16 products round them).
    public static func table(_ c: DiTConfiguration) -> [Binding<DiTWeights>] {
        let (D, M, P) = (c.hiddenSize, c.mlpHidden, c.patchSize)
        let F = DiTConfiguration.frequencyDim
        var t: [Binding<DiTWeights>] = [
            Binding("pos_embed", [1, c.tokens, D], \.posEmbed, optional: true),
            Binding("x_embedder.proj.weight", [D, c.embedInChannels, P, P], \.xEmbedWeight, bf16: true),
            Binding("x_embedder.proj.bias", [D], \.xEmbedBias),
            Binding("t_embedder.mlp.0.weight", [D, F], \.tEmbed0Weight, bf16: true),
            Binding("t_embedder.mlp.0.bias", [D], \.tEmbed0Bias),
            Binding("t_embedder.mlp.2.weight", [D, D], \.tEmbed2Weight, bf16: true),
            Binding("t_embedder.mlp.2.bias", [D], \.tEmbed2Bias),
        ]
        if c.numClasses > 0 {
            t.append(Binding("y_embedder.embedding_table.weight", [c.numClasses + 1, D], \.yEmbedTable))
        }
        for i in 0..<c.depth {
            let b = "blocks.\(i)."
            t += [
                Binding(b + "attn.qkv.weight", [3 * D, D], \.blocks[i].qkvWeight, bf16: true),
                Binding(b + "attn.qkv.bias", [3 * D], \.blocks[i].qkvBias),
                Binding(b + "attn.proj.weight", [D, D], \.blocks[i].projWeight, bf16: true),
                Binding(b + "attn.proj.bias", [D], \.blocks[i].projBias),
                Binding(b + "mlp.fc1.weight", [M, D], \.blocks[i].fc1Weight, bf16: true),
                Binding(b + "mlp.fc1.bias", [M], \.blocks[i].fc1Bias),
                Binding(b + "mlp.fc2.weight", [D, M], \.blocks[i].fc2Weight, bf16: true),
                Binding(b + "mlp.fc2.bias", [D], \.blocks[i].fc2Bias),
                Binding(b + "adaLN_modulation.1.weight", [6 * D, D], \.blocks[i].adaLNWeight, bf16: true),
                Binding(b + "adaLN_modulation.1.bias", [6 * D], \.blocks[i].adaLNBias),
            ]
        }
        t += [
            Binding("final_layer.adaLN_modulation.1.weight", [2 * D, D], \.finalAdaLNWeight, bf16: true),
            Binding("final_layer.adaLN_modulation.1.bias", [2 * D], \.finalAdaLNBias),
            Binding("final_layer.linear.weight", [P * P * c.outChannels, D], \.finalLinearWeight, bf16: true),
            Binding("final_layer.linear.bias", [P * P * c.outChannels], \.finalLinearBias),
        ]
        return t
    }
}

/// The layers of a DiT prepared for its precision and backend (bf16 weights packed once, the adaLN
/// projections of all blocks fused into one product).
final class DiTLayers: Sendable {
    struct Block {
        let qkv, proj, fc1, fc2: LinearWeight
    }

    let xEmbed: LinearWeight
    let tEmbed0, tEmbed2: FusedLinear
    /// Every block's adaLN projection then the final layer's: (N, D) -> (N, depth·6D + 2D).
    let adaLN: FusedLinear
    let blocks: [Block]
    let final: LinearWeight

    /// `bits`: weights bound as bf16 bits (their fields in `w` are nil). With `release`, the pages
    /// of every weight a packed or converted copy replaces go back to the mapped file right after
    /// its copy is made, so a bf16 load never holds the whole file resident.
    init(
        _ c: DiTConfiguration, _ w: DiTWeights, bits: [WritableKeyPath<DiTWeights, Tensor?>: BF16Tensor],
        precision p: Precision, backend b: KernelBackend, release: Bool
    ) {
        typealias Path = WritableKeyPath<DiTWeights, Tensor?>
        let pack = c.parameterCount * 4 <= DiT.packFP32Limit
        let D = c.hiddenSize
        // packed: a token product's layer (packed here in bf16, or fp32 up to packFP32Limit); else a
        // per-sample layer, which FusedLinear converts (bf16) or reads in place (fp32).
        func layer(_ weight: Path, _ bias: Path, shape: [Int]? = nil, packed: Bool) -> LinearWeight {
            if let found = bits[weight] {
                return LinearWeight(
                    bf16: shape.map(found.reshaped) ?? found, bias: w[keyPath: bias], backend: b, pack: packed)
            }
            let tensor = w[keyPath: weight]!
            return LinearWeight(
                weight: shape.map(tensor.reshaped) ?? tensor, bias: w[keyPath: bias], precision: packed ? p : .fp32,
                backend: b, packFP32: packed && pack)
        }
        func lin(_ weight: Path, _ bias: Path, shape: [Int]? = nil) -> LinearWeight {
            let l = layer(weight, bias, shape: shape, packed: true)
            if release { l.releaseSourcePages() }
            return l
        }
        // Per-sample products: fixed-order dot products on the weights in place (bf16: converted once).
        func perSample(_ layers: [(Path, Path)]) -> FusedLinear {
            let f = FusedLinear(layers.map { layer($0.0, $0.1, packed: false) }, precision: p, backend: b)
            if release { f.releaseSourcePages() }
            return f
        }
        xEmbed = lin(\.xEmbedWeight, \.xEmbedBias, shape: [D, c.embedInChannels * c.patchSize * c.patchSize])
        tEmbed0 = perSample([(\.tEmbed0Weight, \.tEmbed0Bias)])
        tEmbed2 = perSample([(\.tEmbed2Weight, \.tEmbed2Bias)])
        adaLN = perSample(
            (0..<c.depth).map { (\.blocks[$0].adaLNWeight, \.blocks[$0].adaLNBias) }
                + [(\.finalAdaLNWeight, \.finalAdaLNBias)])
        blocks = (0..<c.depth).map { i in
            Block(
                qkv: lin(\.blocks[i].qkvWeight, \.blocks[i].qkvBias),
                proj: lin(\.blocks[i].projWeight, \.blocks[i].projBias),
                fc1: lin(\.blocks[i].fc1Weight, \.blocks[i].fc1Bias),
                fc2: lin(\.blocks[i].fc2Weight, \.blocks[i].fc2Bias))
        }
        final = lin(\.finalLinearWeight, \.finalLinearBias)
    }
}

/// Activations for one batch size, allocated once and reused by every forward of that shape; a
/// forward pass allocates nothing.
public final class DiTWorkspace {
    public let batch: Int
    let x, h, qkv, attn, proj, mlp: Tensor  // (N,T,D) (N,T,D) (N,T,3D) (N,T,D) (N,T,D) (N,T,M)
    let attentionScratch: Tensor  // attention: per-worker tiles, and bf16 attention's rounded keys/values
    /// Threads of a pass: the workers that every product, the attention (batch, head, query tile)
    /// items and the row-wise passes are spread over; 1...`capacity`, and may change between passes
    /// (the results do not depend on it).
    public var workers: Int {
        get { context.workers }
        set { context.workers = min(max(1, newValue), capacity) }
    }
    /// The workers the scratch was sized for.
    public let capacity: Int
    /// Whether the attention scratch holds bf16 attention's rounded keys and values (sized for a
    /// bf16 model on a CPU with AVX512_BF16; fp32 models do without that copy).
    public let bf16Attention: Bool
    let context: ComputeContext
    let patches: Tensor  // (N*T, Cin*P*P)
    let embedIn: Tensor  // (N, C+Cc, H, W) when a condition is concatenated
    let freq: Tensor  // (N, 256)
    let c, cSiLU, tHidden: Tensor  // (N, D)
    let mod: Tensor  // (N, depth·6D + 2D): all adaLN outputs, the final layer's last
    let finalTokens: Tensor  // (N, T, P*P*Cout)
    public let output: Tensor  // (N, Cout, H, W)

    public init(
        config c: DiTConfiguration, batch N: Int, workers: Int = ComputeContext.defaultWorkers,
        backend: KernelBackend = .current, precision: Precision = .fp32
    ) {
        let (T, D, M) = (c.tokens, c.hiddenSize, c.mlpHidden)
        let P2C = c.embedInChannels * c.patchSize * c.patchSize
        batch = N
        x = Tensor(zeros: [N, T, D])
        h = Tensor(zeros: [N, T, D])
        qkv = Tensor(zeros: [N, T, 3 * D])
        attn = Tensor(zeros: [N, T, D])
        proj = Tensor(zeros: [N, T, D])
        mlp = Tensor(zeros: [N, T, M])
        capacity = max(1, workers)
        bf16Attention = precision.effective(on: backend) == .bf16
        attentionScratch = Tensor(zeros: [
            attentionScratchCount(
                batch: N, tokens: T, dim: D, heads: c.numHeads,
                workers: capacity, bf16: bf16Attention)
        ])
        // Scratch for the largest product: the most rows and the widest input.
        let scratch = max(
            ComputeContext.linearScratchBytes(
                rows: N * T, inFeatures: max(P2C, D, M), workers: capacity,
                backend: backend),
            FusedLinear.scratchBytes(rows: N, inFeatures: max(DiTConfiguration.frequencyDim, D)))
        context = ComputeContext(workers: capacity, backend: backend, scratchBytes: scratch)
        patches = Tensor(zeros: [N * T, P2C])
        embedIn = Tensor(zeros: c.conditionChannels > 0 ? [N, c.embedInChannels, c.inputSize, c.inputSize] : [0])
        freq = Tensor(zeros: [N, DiTConfiguration.frequencyDim])
        self.c = Tensor(zeros: [N, D])
        cSiLU = Tensor(zeros: [N, D])
        tHidden = Tensor(zeros: [N, D])
        mod = Tensor(zeros: [N, c.depth * 6 * D + 2 * D])
        finalTokens = Tensor(zeros: [N, T, c.patchSize * c.patchSize * c.outChannels])
        output = Tensor(zeros: [N, c.outChannels, c.inputSize, c.inputSize])
    }

    /// Bytes held by this workspace's activations and scratch.
    public var byteCount: Int {
        [
            x, h, qkv, attn, proj, mlp, attentionScratch, patches, embedIn, freq, c, cSiLU, tHidden, mod, finalTokens,
            output,
        ].reduce(0) { $0 + $1.count * 4 } + context.scratch.byteCount
    }
}

public struct DiT: Sendable {
    /// fp32 models with at most this many bytes of weights get a packed copy of the weights of
    /// their token products at load (faster products, twice the weight memory); larger ones (DiT-L,
    /// DiT-XL) read their weights in place from the mapped file. bf16 weights are always packed.
    public static let packFP32Limit = 1 << 30

    public let config: DiTConfiguration
    public let weights: DiTWeights
    /// (T, D): from the checkpoint when it carries `pos_embed`, else the 2-D sin-cos embedding.
    public let posEmbed: Tensor
    public let posEmbedFromCheckpoint: Bool
    /// The precision the products run in: the one asked for, or fp32 where the CPU lacks AVX512_BF16.
    public let precision: Precision
    /// The kernels the products run on (workspaces must be made for the same backend).
    public let backend: KernelBackend
    let layers: DiTLayers

    /// Binds every weight from `source` through `DiTWeights.table`; the binding is total. With
    /// `precision: .bf16` (on a CPU with AVX512_BF16; elsewhere fp32, see `precision`) the weights
    /// of the products are converted to bf16 and packed once, here; a bf16 checkpoint's weights
    /// are packed from their bits (no float32 copy; their `weights` fields stay nil). fp32 weights
    /// are packed here for models up to `packFP32Limit`, read in place from the (mapped) source
    /// above it. Once a weight has its packed or converted copy, its pages go back to the mapped
    /// file (`PageReleasing`) unless `releaseSourcePages` is false (a benchmark's baseline): a bf16
    /// DiT-XL/2 then holds its 1.35 GB packed copy, not the 2.7 GB file as well.
    public init(
        config: DiTConfiguration, source: any TensorSource, precision: Precision = .fp32,
        backend: KernelBackend = .current, releaseSourcePages: Bool = true
    ) throws {
        try config.validate()
        var w = DiTWeights(depth: config.depth)
        let effective = precision.effective(on: backend)
        let bits = try bind(DiTWeights.table(config), from: source, into: &w, bf16: effective == .bf16)
        self.config = config
        self.weights = w
        self.backend = backend
        self.precision = effective
        if let p = w.posEmbed {
            posEmbed = p.reshaped([config.tokens, config.hiddenSize])
            posEmbedFromCheckpoint = true
        } else {
            posEmbed = sinCosPositionEmbedding2D(dim: config.hiddenSize, gridH: config.gridSize, gridW: config.gridSize)
            posEmbedFromCheckpoint = false
        }
        layers = DiTLayers(
            config, w, bits: bits, precision: self.precision, backend: backend, release: releaseSourcePages)
    }

    /// Whether a checkpoint fits `config`, from its header alone: every tensor of the binding
    /// table present once with its shape, nothing else (what `init` checks, without building
    /// the model). Throws `BindingError`, or `ModelError` for a bad config.
    public static func checkBinding(_ config: DiTConfiguration, against source: any TensorSource) throws {
        try config.validate()
        try GriditModels.checkBinding(DiTWeights.table(config), against: source)
    }

    /// A workspace for `batch` samples on `workers` threads, on this model's backend and precision.
    public func makeWorkspace(batch: Int, workers: Int = ComputeContext.defaultWorkers) -> DiTWorkspace {
        DiTWorkspace(config: config, batch: batch, workers: workers, backend: backend, precision: precision)
    }

    /// One forward pass. x: (N, C, H, W); t: N timesteps on the original 0..999 scale;
    /// y: N labels in 0...num_classes (num_classes = the null class) for class-conditional models;
    /// condition: (N, Cc, H, W) for the super-resolution variant.
    /// Returns `workspace.output` (N, Cout, H, W), overwritten by the next call.
    @discardableResult
    public func forward(
        x: Tensor, t: [Float], y: [Int]? = nil, condition: Tensor? = nil,
        workspace ws: DiTWorkspace
    ) throws -> Tensor {
        let c = config
        let (N, S) = (ws.batch, c.inputSize)
        try check(
            ws.context.backend == backend,
            "workspace made for the \(ws.context.backend) kernels, the model uses \(backend): use makeWorkspace")
        try check(
            precision != .bf16 || ws.bf16Attention,
            "workspace made for an fp32 model has no room for bf16 attention: use makeWorkspace")
        try check(Self.isImage(x, N, c.inChannels, S), "x has shape \(x.shape), expected \([N, c.inChannels, S, S])")
        try check(t.count == N, "\(t.count) timesteps for a batch of \(N)")
        if c.numClasses > 0 {
            guard let y else { throw ModelError.invalidInput("class-conditional model needs labels y") }
            try check(y.count == N, "\(y.count) labels for a batch of \(N)")
            try check(
                y.allSatisfy { (0...c.numClasses).contains($0) },
                "labels \(y) out of range 0...\(c.numClasses) (\(c.numClasses) is the null class)")
        } else {
            try check(y == nil, "this model has no class embedder (num_classes 0) but labels were given")
        }
        if c.conditionChannels > 0 {
            guard let condition else { throw ModelError.invalidInput("super-resolution model needs a condition") }
            try check(
                Self.isImage(condition, N, c.conditionChannels, S),
                "condition has shape \(condition.shape), expected \([N, c.conditionChannels, S, S])")
        } else {
            try check(condition == nil, "this model takes no condition (condition_channels 0)")
        }
        // Every kernel's arithmetic is fixed per sample (see `linear`, `attention`), so a sample's
        // output bits do not depend on its batch or the thread count.
        return run(x: x, t: t, y: y, condition: condition, workspace: ws)
    }

    private static func isImage(_ x: Tensor, _ N: Int, _ C: Int, _ S: Int) -> Bool {
        x.rank == 4 && x.shape[0] == N && x.shape[1] == C && x.shape[2] == S && x.shape[3] == S
    }

    /// The pass itself, on validated inputs, holding the compute lock. Allocates nothing.
    private func run(x: Tensor, t: [Float], y: [Int]?, condition: Tensor?, workspace ws: DiTWorkspace) -> Tensor {
        let c = config
        let (N, T, D) = (ws.batch, c.tokens, c.hiddenSize)
        let S = c.inputSize
        let ctx = ws.context
        let modWidth = c.depth * 6 * D + 2 * D
        let (xs, hs, mod) = (ws.x.mutablePointer, ws.h.mutablePointer, ws.mod.pointer)
        /// y = x · Wᵀ + b over all N·T token rows.
        func tokens(_ x: Tensor, _ w: LinearWeight, gelu: Bool = false, into y: Tensor) {
            linear(x.pointer, rows: N * T, w, gelu: gelu, segment: T, into: y.mutablePointer, context: ctx)
        }
        /// h = norm(x)·(1 + scale) + shift, after x += gate ⊙ residual when given; offsets into mod.
        func norm(residual: Tensor?, gate: Int = 0, shift: Int, scale: Int) {
            modulatedNormRows(
                xs, residual: residual?.pointer, batch: N, tokens: T, dim: D, mod: mod, modStride: modWidth,
                gate: gate, shift: shift, scale: scale, workers: ws.workers, into: hs)
        }

        // Patch embedding (+ condition on channels) and position embedding.
        var embedIn = x
        if let condition {
            let (xc, cc) = (c.inChannels * S * S, c.conditionChannels * S * S)
            for n in 0..<N {
                let dst = ws.embedIn.mutablePointer + n * (xc + cc)
                dst.update(from: x.pointer + n * xc, count: xc)
                (dst + xc).update(from: condition.pointer + n * cc, count: cc)
            }
            embedIn = ws.embedIn
        }
        patchify(embedIn, patch: c.patchSize, into: ws.patches.mutablePointer)
        tokens(ws.patches, layers.xEmbed, into: ws.x)
        for n in 0..<N { addInPlace(xs + n * T * D, posEmbed.pointer, count: T * D) }

        // Conditioning c = t_embedder(t) (+ y_embedder(y)); SiLU(c) feeds every adaLN projection,
        // all computed here as one product: mod (N, depth·6D + 2D).
        timestepEmbedding(t, dim: DiTConfiguration.frequencyDim, into: ws.freq.mutablePointer)
        layers.tEmbed0.apply(ws.freq.pointer, rows: N, into: ws.tHidden.mutablePointer, context: ctx)
        silu(ws.tHidden.pointer, count: N * D, into: ws.tHidden.mutablePointer)
        layers.tEmbed2.apply(ws.tHidden.pointer, rows: N, into: ws.c.mutablePointer, context: ctx)
        if let y, let table = weights.yEmbedTable {
            for (n, label) in y.enumerated() {
                addInPlace(ws.c.mutablePointer + n * D, table.pointer + label * D, count: D)
            }
        }
        silu(ws.c.pointer, count: N * D, into: ws.cSiLU.mutablePointer)
        layers.adaLN.apply(ws.cSiLU.pointer, rows: N, into: ws.mod.mutablePointer, context: ctx)

        // Block i's mod: [shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp] at i·6D;
        // the final layer's [shift, scale] at depth·6D.
        norm(residual: nil, shift: 0, scale: D)
        for (i, block) in layers.blocks.enumerated() {
            let (m, next) = (i * 6 * D, (i + 1) * 6 * D)
            tokens(ws.h, block.qkv, into: ws.qkv)
            selfAttention(
                qkv: ws.qkv.pointer, batch: N, tokens: T, dim: D, heads: c.numHeads, bf16: precision == .bf16,
                workers: ws.workers,
                scratch: ws.attentionScratch.mutablePointer, into: ws.attn.mutablePointer)
            tokens(ws.attn, block.proj, into: ws.proj)
            // x += gate_msa ⊙ attn; h = norm(x)·(1 + scale_mlp) + shift_mlp
            norm(residual: ws.proj, gate: m + 2 * D, shift: m + 3 * D, scale: m + 4 * D)
            tokens(ws.h, block.fc1, gelu: true, into: ws.mlp)
            tokens(ws.mlp, block.fc2, into: ws.proj)
            // x += gate_mlp ⊙ mlp; h = the next block's (or the final layer's) modulated norm of x.
            norm(residual: ws.proj, gate: m + 5 * D, shift: next, scale: next + D)
        }
        tokens(ws.h, layers.final, into: ws.finalTokens)
        unpatchify(
            ws.finalTokens.pointer, batch: N, gridH: c.gridSize, gridW: c.gridSize, patch: c.patchSize,
            channels: c.outChannels, into: ws.output.mutablePointer)
        return ws.output
    }

    private func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw ModelError.invalidInput(message()) }
    }
}

/// x += y elementwise (a residual with gate 1).
private func addInPlace(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) {
    for i in 0..<n { x[i] += y[i] }
}
