import Foundation
import GriditCheckpoint
import GriditModels
import GriditTensor
import Testing

// Parity of the VAE (AutoencoderKL) with the independent PyTorch reference
// (tools/reference/vae_reference.py; fixtures from tools/reference/make_vae_fixtures.py, outputs
// computed in float64). Tiny model: block_out_channels [8, 16, 16], layers_per_block 2, 4 groups.

let vaeTolerance: Float = 1e-3

func loadVAEFixture() throws -> AutoencoderKL {
    let config = try AutoencoderKLConfiguration.load(path: fixture("vae.config.json"))
    return try AutoencoderKL(config: config, source: try SafetensorsFile(path: fixture("vae.safetensors")))
}

@Test func vaeDecoderMatchesReference() throws {
    let vae = try loadVAEFixture()
    let latent = try NPYArray(path: fixture("vae.latent.npy")).floatTensor()
    let want = try NPYArray(path: fixture("vae.decoded.npy")).floatTensor()
    let out = try vae.decode(latent, threads: 2)
    #expect(out.shape == [2, 3, 24, 20])
    #expect(maxAbsDiff(out, want, "vae decode") <= vaeTolerance)
}

@Test func vaeEncoderMatchesReference() throws {
    let vae = try loadVAEFixture()
    let image = try NPYArray(path: fixture("vae.image.npy")).floatTensor()
    let (mean, logvar) = try vae.encode(image, threads: 2)
    #expect(mean.shape == [2, 4, 4, 3] && logvar.shape == [2, 4, 4, 3])
    #expect(
        maxAbsDiff(mean, try NPYArray(path: fixture("vae.mean.npy")).floatTensor(), "vae encode mean") <= vaeTolerance)
    #expect(
        maxAbsDiff(logvar, try NPYArray(path: fixture("vae.logvar.npy")).floatTensor(), "vae encode logvar")
            <= vaeTolerance)
}

@Test func vaeBitsDoNotDependOnThreadsOrBatch() throws {
    let vae = try loadVAEFixture()
    let latent = try NPYArray(path: fixture("vae.latent.npy")).floatTensor()
    let both = try vae.decode(latent, threads: 1).toArray().map(\.bitPattern)
    let threaded = try vae.decode(latent, threads: 3).toArray().map(\.bitPattern)
    let second = try vae.decode(latent.slice(1..<2).copy(), threads: 2).toArray().map(\.bitPattern)
    #expect(both == threaded, "decode differs between 1 and 3 threads")
    #expect(Array(both[(both.count / 2)...]) == second, "decode of one sample differs alone and in a batch")
    let image = try NPYArray(path: fixture("vae.image.npy")).floatTensor()
    let (m1, _) = try vae.encode(image, threads: 1)
    let (m3, _) = try vae.encode(image, threads: 3)
    #expect(m1.toArray().map(\.bitPattern) == m3.toArray().map(\.bitPattern), "encode differs between 1 and 3 threads")
}

@Test func vaeTableHasDiffusersKeys() {
    let table = AutoencoderKLWeights.table(.stableDiffusion)
    let keys = table.map(\.key)
    #expect(Set(keys).count == keys.count)
    let shapes = Dictionary(uniqueKeysWithValues: table.map { ($0.key, $0.shape) })
    #expect(shapes["encoder.conv_in.weight"] == [128, 3, 3, 3])
    #expect(shapes["encoder.down_blocks.1.resnets.0.conv_shortcut.weight"] == [256, 128, 1, 1])
    #expect(shapes["encoder.down_blocks.0.downsamplers.0.conv.weight"] == [128, 128, 3, 3])
    #expect(shapes["encoder.down_blocks.3.downsamplers.0.conv.weight"] == nil)
    #expect(shapes["encoder.mid_block.attentions.0.to_q.weight"] == [512, 512])
    #expect(shapes["encoder.mid_block.attentions.0.to_out.0.bias"] == [512])
    #expect(shapes["encoder.conv_out.weight"] == [8, 512, 3, 3])
    #expect(shapes["quant_conv.weight"] == [8, 8, 1, 1])
    #expect(shapes["post_quant_conv.weight"] == [4, 4, 1, 1])
    #expect(shapes["decoder.conv_in.weight"] == [512, 4, 3, 3])
    #expect(shapes["decoder.up_blocks.0.resnets.2.conv2.weight"] == [512, 512, 3, 3])
    #expect(shapes["decoder.up_blocks.2.resnets.0.conv_shortcut.weight"] == [256, 512, 1, 1])
    #expect(shapes["decoder.up_blocks.3.resnets.0.conv_shortcut.weight"] == [128, 256, 1, 1])
    #expect(shapes["decoder.up_blocks.2.upsamplers.0.conv.weight"] == [256, 256, 3, 3])
    #expect(shapes["decoder.up_blocks.3.upsamplers.0.conv.weight"] == nil)
    #expect(shapes["decoder.conv_out.weight"] == [3, 128, 3, 3])
    // The diffusers SD VAE state dict has 248 tensors.
    #expect(keys.count == 248)
}

@Test func vaeBindingIsTotal() throws {
    let config = try AutoencoderKLConfiguration.load(path: fixture("vae.config.json"))
    let file = try SafetensorsFile(path: fixture("vae.safetensors"))
    var d = TensorDictionary()
    for name in file.tensorNames { d.tensors[name] = try file.tensor(named: name) }
    #expect(Set(d.tensorNames) == Set(AutoencoderKLWeights.table(config).map(\.key)))
    var missing = d
    missing.tensors["decoder.mid_block.attentions.0.to_k.bias"] = nil
    #expect(throws: BindingError.missing(key: "decoder.mid_block.attentions.0.to_k.bias", expected: [16])) {
        try AutoencoderKL(config: config, source: missing)
    }
    var extra = d
    extra.tensors["decoder.up_blocks.0.resnets.3.norm1.weight"] = Tensor(zeros: [16])
    #expect(throws: BindingError.unused(keys: ["decoder.up_blocks.0.resnets.3.norm1.weight"])) {
        try AutoencoderKL(config: config, source: extra)
    }
    var wrong = d
    wrong.tensors["quant_conv.weight"] = Tensor(zeros: [8, 8, 3, 3])
    #expect(throws: BindingError.shapeMismatch(key: "quant_conv.weight", expected: [8, 8, 1, 1], found: [8, 8, 3, 3])) {
        try AutoencoderKL(config: config, source: wrong)
    }
}

@Test func vaeConfigReadsDiffusersFields() throws {
    let json = """
        {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
         "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
         "out_channels": 3, "sample_size": 512, "scaling_factor": 0.18215}
        """
    let c = try JSONDecoder().decode(AutoencoderKLConfiguration.self, from: Data(json.utf8))
    #expect(c == .stableDiffusion)
    #expect(c.downsampleFactor == 8)
}

/// ‖a − b‖₂ / ‖b‖₂.
func relativeL2(_ a: Tensor, _ b: Tensor) -> Double {
    let (x, y) = (a.toArray(), b.toArray())
    let num = zip(x, y).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
    return (num / y.reduce(0.0) { $0 + Double($1) * Double($1) }).squareRoot()
}

@Test func tiledDecodeAndEncodeMatchDiffusers() throws {
    // diffusers' own tiled_decode / tiled_encode of the fixture VAE with 32-pixel tiles and overlap
    // factor 0.25 (tools/reference/make_vae_tiling_fixtures.py, float64): 4 x 4 tiles for the
    // decode, 3 x 3 for the encode, with diffusers' blending and cropping.
    var vae = try loadVAEFixture()
    vae.tiling = VAETiling(tile: 32, overlap: 0.25)
    let latent = try NPYArray(path: fixture("vae.tiled_latent.npy")).floatTensor()
    let decoded = try vae.decode(latent, threads: 2)
    #expect(
        maxAbsDiff(decoded, try NPYArray(path: fixture("vae.tiled_decoded.npy")).floatTensor(), "tiled decode")
            <= vaeTolerance)
    let image = try NPYArray(path: fixture("vae.tiled_image.npy")).floatTensor()
    let (mean, logvar) = try vae.encode(image, threads: 2)
    #expect(
        maxAbsDiff(mean, try NPYArray(path: fixture("vae.tiled_mean.npy")).floatTensor(), "tiled encode mean")
            <= vaeTolerance)
    #expect(
        maxAbsDiff(logvar, try NPYArray(path: fixture("vae.tiled_logvar.npy")).floatTensor(), "tiled encode logvar")
            <= vaeTolerance)
    // Tiles only see their part of the image, so tiled and untiled differ (by design, as in diffusers).
    vae.tiling = nil
    print("tiled vs untiled decode: relative L2 \(relativeL2(decoded, try vae.decode(latent, threads: 2)))")
}

@Test func tilingThatCoversTheImageIsExact() throws {
    // A tile as large as the image: one tile, identical to untiled.
    var vae = try loadVAEFixture()
    let latent = try NPYArray(path: fixture("vae.latent.npy")).floatTensor()
    vae.tiling = nil
    let whole = try vae.decode(latent, threads: 2).toArray().map(\.bitPattern)
    vae.tiling = VAETiling(tile: 4 * max(latent.shape[2], latent.shape[3]))
    #expect(try vae.decode(latent, threads: 2).toArray().map(\.bitPattern) == whole)
}

@Test func vaeRejectsBadTiling() throws {
    var vae = try loadVAEFixture()
    vae.tiling = VAETiling(tile: 6)  // not a multiple of f = 4
    #expect(throws: ModelError.self) { try vae.decode(Tensor(zeros: [1, 4, 8, 8]), threads: 1) }
}

@Test func vaeBF16IsCloseToFP32() throws {
    guard KernelBackend.current.hasBF16 else { return }
    let config = try AutoencoderKLConfiguration.load(path: fixture("vae.config.json"))
    let file = try SafetensorsFile(path: fixture("vae.safetensors"))
    let low = try AutoencoderKL(config: config, source: file, precision: .bf16)
    #expect(low.precision == .bf16)
    let latent = try NPYArray(path: fixture("vae.latent.npy")).floatTensor()
    let want = try NPYArray(path: fixture("vae.decoded.npy")).floatTensor()
    let rel = relativeL2(try low.decode(latent, threads: 2), want)
    print("bf16 VAE decode vs float64 reference: relative L2 \(rel)")
    #expect(rel <= 2e-2)
    let a = try low.decode(latent, threads: 1).toArray().map(\.bitPattern)
    let b = try low.decode(latent, threads: 3).toArray().map(\.bitPattern)
    #expect(a == b, "bf16 decode differs between 1 and 3 threads")
}
