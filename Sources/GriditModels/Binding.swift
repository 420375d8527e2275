import GriditTensor

/// One row of a model's binding table: checkpoint key (verbatim PyTorch state-dict name),
/// expected shape, and where the tensor goes in the model's weights.
public struct Binding<Weights> {
    public let key: String
    public let shape: [Int]
    public let optional: Bool
    /// A weight of a matrix product, which bf16 products round to bf16 (`Precision.bf16`): a
    /// bf16 model takes it from a bf16 checkpoint as it is, and a bf16 conversion stores it so.
    public let roundedInBF16: Bool
    let path: WritableKeyPath<Weights, Tensor?>

    init(
        _ key: String, _ shape: [Int], _ path: WritableKeyPath<Weights, Tensor?>, optional: Bool = false,
        bf16: Bool = false
    ) {
        self.key = key
        self.shape = shape
        self.path = path
        self.optional = optional
        self.roundedInBF16 = bf16
    }
}

public enum BindingError: Error, CustomStringConvertible, Equatable {
    case missing(key: String, expected: [Int])
    case shapeMismatch(key: String, expected: [Int], found: [Int])
    case unused(keys: [String])
    case source(key: String, message: String)

    public var description: String {
        switch self {
        case let .missing(key, expected):
            return "checkpoint lacks '\(key)' (expected shape \(expected)); is the config right for this checkpoint?"
        case let .shapeMismatch(key, expected, found):
            return "checkpoint tensor '\(key)' has shape \(found) but the config expects \(expected); "
                + "check depth/hidden_size/patch_size/in_channels/num_classes in the config"
        case let .unused(keys):
            let shown = keys.prefix(5).joined(separator: ", ")
            return
                "checkpoint holds \(keys.count) tensor(s) the model does not use (\(shown)\(keys.count > 5 ? ", ..." : "")); "
                + "the config does not describe this checkpoint"
        case let .source(key, message):
            return "cannot read '\(key)': \(message)"
        }
    }
}

/// Checks a whole table against `source`'s names and shapes alone (a checkpoint's header): every
/// key found once with its shape, and every tensor in the source used. Reads no tensor.
func checkBinding<Weights>(_ table: [Binding<Weights>], against source: any TensorSource) throws(BindingError) {
    var used = Set<String>()
    for b in table {
        guard let shape = source.shape(of: b.key) else {
            if b.optional { continue }
            throw BindingError.missing(key: b.key, expected: b.shape)
        }
        guard shape == b.shape else { throw BindingError.shapeMismatch(key: b.key, expected: b.shape, found: shape) }
        used.insert(b.key)
    }
    let unused = source.tensorNames.filter { !used.contains($0) }.sorted()
    if !unused.isEmpty { throw BindingError.unused(keys: unused) }
}

/// Binds a whole table from `source` once `checkBinding` passes. Tensors are taken as the source lends
/// them (borrowed from a mapping when F32). With `bf16`, the rows `roundedInBF16` that the source
/// stores as bfloat16 are not read as float32: their bits are returned by key path instead, for
/// the bf16 layers to pack (their fields stay nil).
@discardableResult
func bind<Weights>(
    _ table: [Binding<Weights>], from source: any TensorSource, into weights: inout Weights, bf16: Bool = false
) throws -> [WritableKeyPath<Weights, Tensor?>: BF16Tensor] {
    try checkBinding(table, against: source)
    var bits: [WritableKeyPath<Weights, Tensor?>: BF16Tensor] = [:]
    for b in table where source.shape(of: b.key) != nil {
        do {
            if bf16 && b.roundedInBF16, let found = try source.bfloat16(named: b.key) {
                bits[b.path] = found
            } else {
                weights[keyPath: b.path] = try source.tensor(named: b.key)
            }
        } catch {
            throw BindingError.source(key: b.key, message: "\(error)")
        }
    }
    return bits
}
