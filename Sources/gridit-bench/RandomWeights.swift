import GriditCheckpoint
import GriditModels
import GriditTensor

/// Seeded random weights for benchmarks: a uniform distribution with the given standard deviation
/// (values only need to be finite and of a realistic scale; timing does not depend on them).
enum RandomWeights {
    /// SplitMix64-driven uniform floats in [-sqrt(3)·std, sqrt(3)·std); element `start + i` of the
    /// stream for `seed` goes to p[i], so a tensor can be filled in chunks.
    static func fill(_ p: UnsafeMutablePointer<Float>, count: Int, seed: UInt64, std: Float, start: Int = 0) {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(start) &* 0x9E37_79B9_7F4A_7C15
        let scale = std * 3.0.squareRoot().floatValue * 2 / Float(1 << 24)
        let shift = std * 3.0.squareRoot().floatValue
        for i in 0..<count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            p[i] = Float(z >> 40) * scale - shift
        }
    }

    static func tensor(_ shape: [Int], seed: UInt64, std: Float) -> Tensor {
        let t = Tensor(zeros: shape)
        fill(t.mutablePointer, count: t.count, seed: seed, std: std)
        return t
    }

    /// Standard deviation for a tensor: 1/sqrt(fan-in) for matrices, small for vectors.
    static func std(for shape: [Int]) -> Float {
        shape.count >= 2 ? 1 / Float(shape.dropFirst().reduce(1, *)).squareRoot() : 0.02
    }

    static func source(for config: DiTConfiguration, seed: UInt64) -> TensorDictionary {
        var d = TensorDictionary()
        for (i, b) in DiTWeights.table(config).enumerated() where !b.optional {
            d.tensors[b.key] = tensor(b.shape, seed: seed &+ UInt64(i), std: std(for: b.shape))
        }
        return d
    }

    /// Random weights of a VAE: norms' weights near 1, biases small, convolutions 1/sqrt(fan-in).
    static func vaeSource(for config: AutoencoderKLConfiguration, seed: UInt64) -> TensorDictionary {
        var d = TensorDictionary()
        for (i, b) in AutoencoderKLWeights.table(config).enumerated() {
            let t = tensor(b.shape, seed: seed &+ UInt64(i), std: std(for: b.shape))
            if b.shape.count == 1 && b.key.contains("norm") && b.key.hasSuffix(".weight") {
                for j in 0..<t.count { t.mutablePointer[j] += 1 }
            }
            d.tensors[b.key] = t
        }
        return d
    }

    /// Streams a random F32 checkpoint to disk tensor by tensor (an XL/2 file is about 2.7 GB).
    static func writeCheckpoint(for config: DiTConfiguration, to path: String, seed: UInt64) throws {
        let table = DiTWeights.table(config).filter { !$0.optional }
        try SafetensorsWriter.write(
            path: path, entries: table.map { SafetensorsWriter.Entry(name: $0.key, shape: $0.shape) },
            fill: { index, offset, chunk in
                fill(
                    chunk.baseAddress!, count: chunk.count, seed: seed &+ UInt64(index),
                    std: std(for: table[index].shape), start: offset)
            })
    }
}

extension Double {
    fileprivate var floatValue: Float { Float(self) }
}
