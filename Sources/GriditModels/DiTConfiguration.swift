import Foundation

/// What a diffusion model's first C output channels predict.
public enum Prediction: String, Codable, Sendable, CaseIterable {
    /// The noise ε (DiT, GriDiT).
    case epsilon
    /// v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0.
    case v
}

/// Hyper-parameters of a DiT, as stored in a model's config JSON (docs/MODEL_CONFIG.md):
///
///     {"depth": 28, "hidden_size": 1152, "num_heads": 16, "patch_size": 2, "input_size": 64,
///      "in_channels": 4, "learn_sigma": true, "num_classes": 0, "condition_channels": 0}
///
/// `num_classes` 0 means no class embedder (GriDiT stage 1); `condition_channels` > 0 makes the
/// super-resolution variant, whose patch embedding takes the noisy input and the condition
/// concatenated on channels. `mlp_ratio` is optional (default 4). `prediction` (optional, default
/// "epsilon") says what the first C output channels are: the noise ε, or v = sqrt(ᾱ)·ε −
/// sqrt(1−ᾱ)·x0 (Salimans & Ho 2022); the sampler converts v to ε before its steps.
public struct DiTConfiguration: Codable, Equatable, Sendable {
    public var depth: Int
    public var hiddenSize: Int
    public var numHeads: Int
    public var patchSize: Int
    public var inputSize: Int
    public var inChannels: Int
    public var learnSigma: Bool
    public var numClasses: Int
    public var conditionChannels: Int
    public var mlpRatio: Double
    public var prediction: Prediction

    enum CodingKeys: String, CodingKey, CaseIterable {
        case depth
        case hiddenSize = "hidden_size"
        case numHeads = "num_heads"
        case patchSize = "patch_size"
        case inputSize = "input_size"
        case inChannels = "in_channels"
        case learnSigma = "learn_sigma"
        case numClasses = "num_classes"
        case conditionChannels = "condition_channels"
        case mlpRatio = "mlp_ratio"
        case prediction
    }

    public init(
        depth: Int, hiddenSize: Int, numHeads: Int, patchSize: Int, inputSize: Int = 32,
        inChannels: Int = 4, learnSigma: Bool = true, numClasses: Int = 0,
        conditionChannels: Int = 0, mlpRatio: Double = 4, prediction: Prediction = .epsilon
    ) {
        self.depth = depth
        self.hiddenSize = hiddenSize
        self.numHeads = numHeads
        self.patchSize = patchSize
        self.inputSize = inputSize
        self.inChannels = inChannels
        self.learnSigma = learnSigma
        self.numClasses = numClasses
        self.conditionChannels = conditionChannels
        self.mlpRatio = mlpRatio
        self.prediction = prediction
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        depth = try c.decode(Int.self, forKey: .depth)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        numHeads = try c.decode(Int.self, forKey: .numHeads)
        patchSize = try c.decode(Int.self, forKey: .patchSize)
        inputSize = try c.decode(Int.self, forKey: .inputSize)
        inChannels = try c.decode(Int.self, forKey: .inChannels)
        learnSigma = try c.decode(Bool.self, forKey: .learnSigma)
        numClasses = try c.decodeIfPresent(Int.self, forKey: .numClasses) ?? 0
        conditionChannels = try c.decodeIfPresent(Int.self, forKey: .conditionChannels) ?? 0
        mlpRatio = try c.decodeIfPresent(Double.self, forKey: .mlpRatio) ?? 4
        let name = try c.decodeIfPresent(String.self, forKey: .prediction) ?? Prediction.epsilon.rawValue
        guard let prediction = Prediction(rawValue: name) else {
            throw ModelError.invalidConfiguration(
                "field 'prediction' must be \(Prediction.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        self.prediction = prediction
    }

    // Derived sizes.
    public var outChannels: Int { learnSigma ? 2 * inChannels : inChannels }
    public var embedInChannels: Int { inChannels + conditionChannels }
    public var gridSize: Int { inputSize / patchSize }
    public var tokens: Int { gridSize * gridSize }
    public var headDim: Int { hiddenSize / numHeads }
    public var mlpHidden: Int { Int(Double(hiddenSize) * mlpRatio) }
    public static let frequencyDim = 256

    /// Upper bounds of the fields, far above any published DiT (XL: depth 28, hidden 1152, input
    /// 64), so that every size derived from a config is small and cannot overflow: a hostile
    /// config is refused here, before a binding table or a workspace is built from it.
    public enum Limits {
        public static let depth = 256
        public static let hiddenSize = 16_384
        public static let inputSize = 1024
        /// Tokens per sample, (input_size / patch_size)².
        public static let tokens = 65_536
        public static let channels = 1024
        public static let classes = 1_000_000
        public static let mlpRatio = 64.0
    }

    /// Throws a `ModelError.invalidConfiguration` naming the first inconsistent field.
    public func validate() throws {
        func fail(_ message: String) throws -> Never {
            throw ModelError.invalidConfiguration(message)
        }
        for (field, value, limit) in [
            ("depth", depth, Limits.depth), ("hidden_size", hiddenSize, Limits.hiddenSize),
            ("input_size", inputSize, Limits.inputSize), ("in_channels", inChannels, Limits.channels),
            ("condition_channels", conditionChannels, Limits.channels), ("num_classes", numClasses, Limits.classes),
        ] where value > limit {
            try fail("\(field) is \(value); at most \(limit) is accepted (is the config for this model?)")
        }
        if !(mlpRatio > 0 && mlpRatio <= Limits.mlpRatio) {
            try fail("mlp_ratio \(mlpRatio) must be in (0, \(Limits.mlpRatio)]")
        }
        if depth < 1 { try fail("depth is \(depth); it must be at least 1") }
        if hiddenSize < 4 || hiddenSize % 4 != 0 {
            try fail(
                "hidden_size is \(hiddenSize); it must be a positive multiple of 4 (2-D sin-cos position embedding)")
        }
        if numHeads < 1 || hiddenSize % numHeads != 0 {
            try fail("num_heads \(numHeads) must divide hidden_size \(hiddenSize)")
        }
        if patchSize < 1 || inputSize < patchSize || inputSize % patchSize != 0 {
            try fail("input_size \(inputSize) must be a positive multiple of patch_size \(patchSize)")
        }
        if tokens > Limits.tokens {
            try fail(
                "input_size \(inputSize) / patch_size \(patchSize) gives \(tokens) tokens; at most \(Limits.tokens) are accepted"
            )
        }
        if inChannels < 1 { try fail("in_channels is \(inChannels); it must be at least 1") }
        if numClasses < 0 { try fail("num_classes is \(numClasses); use 0 for no class embedder") }
        if conditionChannels < 0 { try fail("condition_channels is \(conditionChannels); use 0 for none") }
        if mlpHidden < 1 { try fail("mlp_ratio \(mlpRatio) gives an MLP of no width") }
    }

    /// Reads and validates a config JSON file.
    public static func load(path: String) throws -> DiTConfiguration {
        try loadConfiguration(DiTConfiguration.self, path: path, what: "model config") { try $0.validate() }
    }

    /// The reference presets, named as in facebookresearch/DiT: `DiT-S/2` ... `DiT-XL/8`.
    public static func preset(
        _ name: String, inputSize: Int = 32, inChannels: Int = 4, learnSigma: Bool = true,
        numClasses: Int = 0, conditionChannels: Int = 0
    ) throws -> DiTConfiguration {
        let sizes: [String: (depth: Int, hidden: Int, heads: Int)] = [
            "S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16),
        ]
        let parts = name.hasPrefix("DiT-") ? name.dropFirst(4).split(separator: "/") : []
        guard parts.count == 2, let size = sizes[String(parts[0])], let patch = Int(parts[1]),
            [2, 4, 8].contains(patch)
        else {
            throw ModelError.invalidConfiguration(
                "unknown model '\(name)'; presets are \(presetNames.joined(separator: ", "))")
        }
        let config = DiTConfiguration(
            depth: size.depth, hiddenSize: size.hidden, numHeads: size.heads,
            patchSize: patch, inputSize: inputSize, inChannels: inChannels,
            learnSigma: learnSigma, numClasses: numClasses,
            conditionChannels: conditionChannels)
        try config.validate()
        return config
    }

    public static let presetNames: [String] = ["S", "B", "L", "XL"].flatMap { s in [2, 4, 8].map { "DiT-\(s)/\($0)" } }

    /// Parameters of the model (every tensor of the binding table, pos_embed included).
    public var parameterCount: Int {
        let (D, M, P2) = (hiddenSize, mlpHidden, patchSize * patchSize)
        let F = Self.frequencyDim
        let perBlock = 3 * D * D + 3 * D + D * D + D + M * D + M + D * M + D + 6 * D * D + 6 * D
        let embed =
            tokens * D + D * embedInChannels * P2 + D + F * D + D + D * D + D
            + (numClasses > 0 ? (numClasses + 1) * D : 0)
        let final = 2 * D * D + 2 * D + P2 * outChannels * D + P2 * outChannels
        return embed + depth * perBlock + final
    }

    /// Floating-point operations of one forward pass (2 per multiply-add of every matrix product:
    /// patch embedding, timestep MLP, adaLN projections, attention and MLP, final layer).
    public func flopsPerForward(batch N: Int) -> Double {
        let (D, T, M) = (Double(hiddenSize), Double(tokens), Double(mlpHidden))
        let F = Double(Self.frequencyDim)
        let P2 = Double(patchSize * patchSize)
        let patch = T * Double(embedInChannels) * P2 * D
        let timestep = F * D + D * D
        let adaLN = Double(depth) * D * 6 * D + D * 2 * D
        let perBlock = T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * M
        let final = T * D * P2 * Double(outChannels)
        return 2 * Double(N) * (patch + timestep + adaLN + Double(depth) * perBlock + final)
    }
}

public enum ModelError: Error, CustomStringConvertible, Equatable {
    case invalidConfiguration(String)
    case invalidInput(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let m): return "invalid model configuration: \(m)"
        case .invalidInput(let m): return "invalid model input: \(m)"
        }
    }
}

/// Reads, decodes and validates a model config JSON (`what` names it in messages). Errors name
/// the file and the field, never the file's bytes: a file that fails to parse may be anything.
func loadConfiguration<C: Decodable>(
    _ type: C.Type, path: String, what: String, validate: (C) throws -> Void
) throws -> C {
    let data: Data
    do {
        data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw ModelError.invalidConfiguration("cannot read \(what) '\(path)': \(error.localizedDescription)")
    }
    let config: C
    do {
        config = try JSONDecoder().decode(C.self, from: data)
    } catch let DecodingError.keyNotFound(key, _) {
        throw ModelError.invalidConfiguration("\(what) '\(path)' lacks the field '\(key.stringValue)'")
    } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
        let field = context.codingPath.map(\.stringValue).joined(separator: ".")
        throw ModelError.invalidConfiguration("\(what) '\(path)': field '\(field)' has the wrong type")
    } catch ModelError.invalidConfiguration(let m) {  // a field's own check, which names no bytes of the file
        throw ModelError.invalidConfiguration("\(what) '\(path)': \(m)")
    } catch {
        throw ModelError.invalidConfiguration("\(what) '\(path)' is not valid JSON")
    }
    do { try validate(config) } catch ModelError.invalidConfiguration(let m) {
        throw ModelError.invalidConfiguration("\(what) '\(path)': \(m)")
    }
    return config
}
