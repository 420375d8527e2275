import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditModels
import GriditTensor
import Testing

// Shared helpers of the GriditDiffusion tests. Fixtures come from
// tools/reference/make_pipeline_fixtures.py (float64 PyTorch reference, saved as float32; schedule
// arrays as float64). Tolerances: 1e-4 absolute on tensors, 1e-12 relative on schedule arrays.

let stepTolerance: Float = 1e-4

func fixture(_ name: String) -> String {
    Bundle.module.resourceURL!.appendingPathComponent("Fixtures/\(name)").path
}

func load(_ name: String) throws -> Tensor {
    try NPYArray(path: fixture(name)).floatTensor()
}

/// A `<f8` .npy file as Doubles (NPYArray.floatTensor rounds to Float).
func loadDoubles(_ name: String) throws -> [Double] {
    let npy = try NPYArray(path: fixture(name))
    #expect(npy.dtype == .float64, "\(name) is \(npy.dtype)")
    let data = try Data(contentsOf: URL(fileURLWithPath: npy.path))
    return data.withUnsafeBytes { raw in
        (0..<npy.count).map { i in
            Double(
                bitPattern: UInt64(
                    littleEndian: raw.loadUnaligned(fromByteOffset: npy.dataOffset + 8 * i, as: UInt64.self)))
        }
    }
}

@discardableResult
func expectClose(_ a: Tensor, _ b: Tensor, _ label: String, tolerance: Float = stepTolerance) -> Float {
    #expect(a.shape == b.shape, "\(label): shape \(a.shape) vs \(b.shape)")
    let d = zip(a.toArray(), b.toArray()).map { abs($0 - $1) }.max() ?? .infinity
    print("\(label): max |diff| = \(d) over \(a.count) values")
    #expect(d <= tolerance, "\(label): max |diff| \(d) > \(tolerance)")
    return d
}

/// The tiny unconditional learned-sigma DiT (depth 2, D 32, input 8, C 4) of the fixtures.
func tinyModel() throws -> DiT {
    let config = try DiTConfiguration.load(path: fixture("uncond.config.json"))
    return try DiT(config: config, source: SafetensorsFile(path: fixture("uncond.safetensors")))
}
