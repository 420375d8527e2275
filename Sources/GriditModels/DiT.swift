import GriditTensor

// Diffusion Transformer (Peebles & Xie) with the GriDiT variants: optional class embedder, and a
// super-resolution patch embedding over [noisy input, condition] concatenated on channels.
// Shapes (legend in GriditTensor/Tensor.swift): x (N, C, H, W) -> tokens (N, T, D) -> out (N, Cout, H, W).

/// Weights of one `DiTBlock`; names follow the PyTorch modules, keys live in `DiTWeights.table`.
public struct DiTBlockWeights: Sendable {
    public var qkvWeight, qkvBias: Tensor?            // (3D, D), (3D)
    public var projWeight, projBias: Tensor?          // (D, D), (D)
    public var fc1Weight, fc1Bias: Tensor?            // (M, D), (M)
    public var fc2Weight, fc2Bias: Tensor?            // (D, M), (D)
    public var adaLNWeight, adaLNBias: Tensor?        // (6D, D), (6D)
}

public struct DiTWeights: Sendable {
    public var posEmbed: Tensor?                      // (1, T, D); computed 2-D sin-cos when absent
    public var xEmbedWeight, xEmbedBias: Tensor?      // (D, C+Cc, P, P), (D)
    public var tEmbed0Weight, tEmbed0Bias: Tensor?    // (D, 256), (D)
    public var tEmbed2Weight, tEmbed2Bias: Tensor?    // (D, D), (D)
    public var yEmbedTable: Tensor?                   // (num_classes + 1, D); last row = CFG null class
    public var blocks: [DiTBlockWeights]
    public var finalAdaLNWeight, finalAdaLNBias: Tensor?  // (2D, D), (2D)
    public var finalLinearWeight, finalLinearBias: Tensor? // (P*P*Cout, D), (P*P*Cout)

    init(depth: Int) { blocks = Array(repeating: DiTBlockWeights(), count: depth) }

    /// The one table binding checkpoint keys (verbatim from the PyTorch state_dict) to weights.
    public static func table(_ c: DiTConfiguration) -> [Binding<DiTWeights>] {
        let (D, M, P) = (c.hiddenSize, c.mlpHidden, c.patchSize)
        let F = DiTConfiguration.frequencyDim
        var t: [Binding<DiTWeights>] = [
            Binding("pos_embed", [1, c.tokens, D], \.posEmbed, optional: true),
            Binding("x_embedder.proj.weight", [D, c.embedInChannels, P, P], \.xEmbedWeight),
            Binding("x_embedder.proj.bias", [D], \.xEmbedBias),
            Binding("t_embedder.mlp.0.weight", [D, F], \.tEmbed0Weight),
            Binding("t_embedder.mlp.0.bias", [D], \.tEmbed0Bias),
            Binding("t_embedder.mlp.2.weight", [D, D], \.tEmbed2Weight),
            Binding("t_embedder.mlp.2.bias", [D], \.tEmbed2Bias),
        ]
        if c.numClasses > 0 {
            t.append(Binding("y_embedder.embedding_table.weight", [c.numClasses + 1, D], \.yEmbedTable))
        }
        for i in 0..<c.depth {
            let b = "blocks.\(i)."
            t += [
                Binding(b + "attn.qkv.weight", [3 * D, D], \.blocks[i].qkvWeight),
                Binding(b + "attn.qkv.bias", [3 * D], \.blocks[i].qkvBias),
                Binding(b + "attn.proj.weight", [D, D], \.blocks[i].projWeight),
                Binding(b + "attn.proj.bias", [D], \.blocks[i].projBias),
                Binding(b + "mlp.fc1.weight", [M, D], \.blocks[i].fc1Weight),
                Binding(b + "mlp.fc1.bias", [M], \.blocks[i].fc1Bias),
                Binding(b + "mlp.fc2.weight", [D, M], \.blocks[i].fc2Weight),
                Binding(b + "mlp.fc2.bias", [D], \.blocks[i].fc2Bias),
                Binding(b + "adaLN_modulation.1.weight", [6 * D, D], \.blocks[i].adaLNWeight),
                Binding(b + "adaLN_modulation.1.bias", [6 * D], \.blocks[i].adaLNBias),
            ]
        }
        t += [
            Binding("final_layer.adaLN_modulation.1.weight", [2 * D, D], \.finalAdaLNWeight),
            Binding("final_layer.adaLN_modulation.1.bias", [2 * D], \.finalAdaLNBias),
            Binding("final_layer.linear.weight", [P * P * c.outChannels, D], \.finalLinearWeight),
            Binding("final_layer.linear.bias", [P * P * c.outChannels], \.finalLinearBias),
        ]
        return t
    }
}

/// Activations for one batch size, allocated once and reused by every forward of that shape.
public final class DiTWorkspace {
    public let batch: Int
    let x, h, qkv, attn, proj, mlp: Tensor            // (N,T,D) (N,T,D) (N,T,3D) (N,T,D) (N,T,D) (N,T,M)
    let scores: Tensor                                // attention scratch, per worker a tile of scores
    /// Threads of a pass: the workers that the fixed schedules of the linear layers (row blocks)
    /// and of attention ((batch, head, row tile) items) are spread over. OpenBLAS runs at 1 thread.
    public let workers: Int
    let patches: Tensor                               // (N*T, Cin*P*P)
    let embedIn: Tensor                               // (N, C+Cc, H, W) when a condition is concatenated
    let freq: Tensor                                  // (N, 256)
    let c, cSiLU, tHidden: Tensor                     // (N, D)
    let mod: Tensor                                   // (N, 6D)
    let finalTokens: Tensor                           // (N, T, P*P*Cout)
    public let output: Tensor                         // (N, Cout, H, W)

    public init(config c: DiTConfiguration, batch N: Int, workers: Int = BLAS.threadCount) {
        let (T, D, M) = (c.tokens, c.hiddenSize, c.mlpHidden)
        batch = N
        x = Tensor(zeros: [N, T, D])
        h = Tensor(zeros: [N, T, D])
        qkv = Tensor(zeros: [N, T, 3 * D])
        attn = Tensor(zeros: [N, T, D])
        proj = Tensor(zeros: [N, T, D])
        mlp = Tensor(zeros: [N, T, M])
        self.workers = max(1, workers)
        scores = Tensor(zeros: [attentionScratchCount(tokens: T, workers: self.workers)])
        patches = Tensor(zeros: [N * T, c.embedInChannels * c.patchSize * c.patchSize])
        embedIn = Tensor(zeros: c.conditionChannels > 0 ? [N, c.embedInChannels, c.inputSize, c.inputSize] : [0])
        freq = Tensor(zeros: [N, DiTConfiguration.frequencyDim])
        self.c = Tensor(zeros: [N, D])
        cSiLU = Tensor(zeros: [N, D])
        tHidden = Tensor(zeros: [N, D])
        mod = Tensor(zeros: [N, 6 * D])
        finalTokens = Tensor(zeros: [N, T, c.patchSize * c.patchSize * c.outChannels])
        output = Tensor(zeros: [N, c.outChannels, c.inputSize, c.inputSize])
    }

    /// Bytes held by this workspace's activations.
    public var byteCount: Int {
        [x, h, qkv, attn, proj, mlp, scores, patches, embedIn, freq, c, cSiLU, tHidden, mod, finalTokens, output]
            .reduce(0) { $0 + $1.count * 4 }
    }
}

public struct DiT: Sendable {
    public let config: DiTConfiguration
    public let weights: DiTWeights
    /// (T, D): from the checkpoint when it carries `pos_embed`, else the 2-D sin-cos embedding.
    public let posEmbed: Tensor
    public let posEmbedFromCheckpoint: Bool

    /// Binds every weight from `source` through `DiTWeights.table`; the binding is total.
    public init(config: DiTConfiguration, source: any TensorSource) throws {
        try config.validate()
        var w = DiTWeights(depth: config.depth)
        try bind(DiTWeights.table(config), from: source, into: &w)
        self.config = config
        self.weights = w
        if let p = w.posEmbed {
            posEmbed = p.reshaped([config.tokens, config.hiddenSize])
            posEmbedFromCheckpoint = true
        } else {
            posEmbed = sinCosPositionEmbedding2D(dim: config.hiddenSize, gridH: config.gridSize, gridW: config.gridSize)
            posEmbedFromCheckpoint = false
        }
    }

    /// One forward pass. x: (N, C, H, W); t: N timesteps on the original 0..999 scale;
    /// y: N labels in 0...num_classes (num_classes = the null class) for class-conditional models;
    /// condition: (N, Cc, H, W) for the super-resolution variant.
    /// Returns `workspace.output` (N, Cout, H, W), overwritten by the next call.
    @discardableResult
    public func forward(x: Tensor, t: [Float], y: [Int]? = nil, condition: Tensor? = nil,
                        workspace ws: DiTWorkspace) throws -> Tensor {
        let c = config
        let (N, S) = (ws.batch, c.inputSize)
        try check(x.shape == [N, c.inChannels, S, S], "x has shape \(x.shape), expected \([N, c.inChannels, S, S])")
        try check(t.count == N, "\(t.count) timesteps for a batch of \(N)")
        if c.numClasses > 0 {
            guard let y else { throw ModelError.invalidInput("class-conditional model needs labels y") }
            try check(y.count == N, "\(y.count) labels for a batch of \(N)")
            try check(y.allSatisfy { (0...c.numClasses).contains($0) },
                      "labels \(y) out of range 0...\(c.numClasses) (\(c.numClasses) is the null class)")
        } else {
            try check(y == nil, "this model has no class embedder (num_classes 0) but labels were given")
        }
        if c.conditionChannels > 0 {
            guard let condition else { throw ModelError.invalidInput("super-resolution model needs a condition") }
            try check(condition.shape == [N, c.conditionChannels, S, S],
                      "condition has shape \(condition.shape), expected \([N, c.conditionChannels, S, S])")
        } else {
            try check(condition == nil, "this model takes no condition (condition_channels 0)")
        }
        // All parallelism is the workspace's own fixed schedule over single-threaded products (see
        // `linearRows`), so a sample's output bits do not depend on its batch or the thread count.
        return BLAS.exclusive(threads: 1) { run(x: x, t: t, y: y, condition: condition, workspace: ws) }
    }

    /// The pass itself, on validated inputs, holding the compute lock.
    private func run(x: Tensor, t: [Float], y: [Int]?, condition: Tensor?, workspace ws: DiTWorkspace) -> Tensor {
        let c = config
        let (N, T, D, M) = (ws.batch, c.tokens, c.hiddenSize, c.mlpHidden)
        let S = c.inputSize
        let w = weights
        /// y = x · Wᵀ + b over rows that form samples of `segment` rows.
        func linear(_ x: Tensor, weight: Tensor?, bias: Tensor?, into y: Tensor, segment: Int) {
            linearRows(x.pointer, rows: x.count / weight!.shape[1], segment: segment, weight: weight!, bias: bias,
                       workers: ws.workers, into: y.mutablePointer)
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
        let xEmbed = w.xEmbedWeight!.reshaped([D, c.embedInChannels * c.patchSize * c.patchSize])
        linear(ws.patches, weight: xEmbed, bias: w.xEmbedBias, into: ws.x, segment: T)
        for n in 0..<N {
            gateResidualOnes(ws.x.mutablePointer + n * T * D, posEmbed.pointer, count: T * D)
        }

        // Conditioning vector c = t_embedder(t) (+ y_embedder(y)), then SiLU(c) for every adaLN.
        timestepEmbedding(t, dim: DiTConfiguration.frequencyDim, into: ws.freq.mutablePointer)
        linear(ws.freq, weight: w.tEmbed0Weight, bias: w.tEmbed0Bias, into: ws.tHidden, segment: 1)
        silu(ws.tHidden.pointer, count: N * D, into: ws.tHidden.mutablePointer)
        linear(ws.tHidden, weight: w.tEmbed2Weight, bias: w.tEmbed2Bias, into: ws.c, segment: 1)
        if let y, let table = w.yEmbedTable {
            for (n, label) in y.enumerated() {
                gateResidualOnes(ws.c.mutablePointer + n * D, table.pointer + label * D, count: D)
            }
        }
        silu(ws.c.pointer, count: N * D, into: ws.cSiLU.mutablePointer)

        for block in w.blocks {
            // mod (N, 6D) = [shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp]
            linear(ws.cSiLU, weight: block.adaLNWeight, bias: block.adaLNBias, into: ws.mod, segment: 1)
            for n in 0..<N {
                let m = ws.mod.pointer + n * 6 * D
                let xn = ws.x.mutablePointer + n * T * D
                let hn = ws.h.mutablePointer + n * T * D
                layerNormModulate(xn, rows: T, dim: D, shift: m, scale: m + D, into: hn)
            }
            linear(ws.h, weight: block.qkvWeight, bias: block.qkvBias, into: ws.qkv, segment: T)
            selfAttention(qkv: ws.qkv.pointer, batch: N, tokens: T, dim: D, heads: c.numHeads, workers: ws.workers,
                          scores: ws.scores, into: ws.attn.mutablePointer)
            linear(ws.attn, weight: block.projWeight, bias: block.projBias, into: ws.proj, segment: T)
            for n in 0..<N {
                let m = ws.mod.pointer + n * 6 * D
                let xn = ws.x.mutablePointer + n * T * D
                gateResidual(xn, ws.proj.pointer + n * T * D, gate: m + 2 * D, rows: T, dim: D)
                layerNormModulate(xn, rows: T, dim: D, shift: m + 3 * D, scale: m + 4 * D,
                                  into: ws.h.mutablePointer + n * T * D)
            }
            linear(ws.h, weight: block.fc1Weight, bias: block.fc1Bias, into: ws.mlp, segment: T)
            geluTanh(ws.mlp.mutablePointer, count: N * T * M)
            linear(ws.mlp, weight: block.fc2Weight, bias: block.fc2Bias, into: ws.proj, segment: T)
            for n in 0..<N {
                gateResidual(ws.x.mutablePointer + n * T * D, ws.proj.pointer + n * T * D,
                             gate: ws.mod.pointer + n * 6 * D + 5 * D, rows: T, dim: D)
            }
        }

        // Final layer: adaLN (shift, scale), modulate, linear to P*P*Cout per token, unpatchify.
        let finalMod = Tensor(storage: ws.mod.storage, shape: [N, 2 * D], offset: ws.mod.offset)  // reuses mod
        linear(ws.cSiLU, weight: w.finalAdaLNWeight, bias: w.finalAdaLNBias, into: finalMod, segment: 1)
        for n in 0..<N {
            let m = finalMod.pointer + n * 2 * D
            layerNormModulate(ws.x.pointer + n * T * D, rows: T, dim: D, shift: m, scale: m + D,
                              into: ws.h.mutablePointer + n * T * D)
        }
        linear(ws.h, weight: w.finalLinearWeight, bias: w.finalLinearBias, into: ws.finalTokens, segment: T)
        unpatchify(ws.finalTokens.pointer, batch: N, gridH: c.gridSize, gridW: c.gridSize, patch: c.patchSize,
                   channels: c.outChannels, into: ws.output.mutablePointer)
        return ws.output
    }

    private func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw ModelError.invalidInput(message()) }
    }
}

/// x += y elementwise (a residual with gate 1).
private func gateResidualOnes(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) {
    for i in 0..<n { x[i] += y[i] }
}
