import ArgumentParser
import Foundation
import GriditTensor

/// Per-operation times of the SD VAE decoder's layers at one image size: each distinct
/// (op, shape) once, times its count in a decode, so the total approximates one decode and shows
/// where the time goes (random inputs and weights; the same kernels `AutoencoderKL` calls).
struct VAEOps: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vae-ops", abstract: "Per-operation breakdown of the SD VAE decoder (time per op x count).")

    @Option(help: "Image size in pixels.") var size = 256
    @Option(name: .customLong("repeat"), help: "Timed passes per op (median).") var repetitions = 3
    @OptionGroup var threads: ThreadOptions
    @OptionGroup var precision: PrecisionOptions

    func run() throws {
        let ctx = ComputeContext(workers: threads.threads)
        let h = size / 8
        var rows: [(String, Int, Double, Double)] = []  // name, count, ms each, GFLOP each
        func time(_ body: () -> Void) -> Double {
            body()
            var t: [Double] = []
            for _ in 0..<max(1, repetitions) {
                let s = DispatchTime.now()
                body()
                t.append(Double(DispatchTime.now().uptimeNanoseconds - s.uptimeNanoseconds) / 1e6)
            }
            return t.sorted()[t.count / 2]
        }
        func conv(_ cin: Int, _ cout: Int, _ k: Int, _ hw: Int, count: Int) {
            let w = ConvWeight(
                weight: RandomWeights.tensor([cout, cin, k, k], seed: 1, std: 0.02),
                bias: RandomWeights.tensor([cout], seed: 2, std: 0.02), precision: precision.requested)
            let x = RandomWeights.tensor([1, cin, hw, hw], seed: 3, std: 1)
            let out = Tensor(zeros: [1, cout, hw, hw])
            ctx.reserve(scratchBytes: w.scratchBytes(context: ctx))
            let ms = time { conv2d(x, w, padding: .same(k / 2), into: out, context: ctx) }
            rows.append(
                ("conv\(k)x\(k) \(cin)->\(cout) @\(hw)", count, ms, 2.0 * Double(cout * cin * k * k * hw * hw) / 1e9))
        }
        func norm(_ c: Int, _ hw: Int, count: Int) {
            let x = RandomWeights.tensor([1, c, hw, hw], seed: 3, std: 1), out = Tensor(zeros: x.shape)
            let (w, b) = (RandomWeights.tensor([c], seed: 4, std: 1), RandomWeights.tensor([c], seed: 5, std: 0.1))
            let ms = time { groupNorm(x, groups: 32, weight: w, bias: b, silu: true, into: out, workers: ctx.workers) }
            rows.append(("groupnorm+silu \(c) @\(hw)", count, ms, 0))
        }
        func up(_ c: Int, _ hw: Int) {
            let x = RandomWeights.tensor([1, c, hw, hw], seed: 3, std: 1), out = Tensor(zeros: [1, c, 2 * hw, 2 * hw])
            rows.append(("upsample2x \(c) @\(hw)", 1, time { upsampleNearest2x(x, into: out) }, 0))
        }
        // The decoder of AutoencoderKLConfiguration.stableDiffusion (block_out_channels 128, 256, 512, 512).
        conv(4, 4, 1, h, count: 1)
        conv(4, 512, 3, h, count: 1)
        norm(512, h, count: 2 * 5 + 1)  // mid (2 resnets + attention norm) and stage 0
        conv(512, 512, 3, h, count: 2 * 5)
        up(512, h)
        norm(512, 2 * h, count: 6)
        conv(512, 512, 3, 2 * h, count: 7)
        up(512, 2 * h)
        conv(512, 512, 3, 4 * h, count: 1)
        norm(512, 4 * h, count: 1)
        conv(512, 256, 3, 4 * h, count: 1)
        conv(512, 256, 1, 4 * h, count: 1)
        norm(256, 4 * h, count: 5)
        conv(256, 256, 3, 4 * h, count: 5)
        up(256, 4 * h)
        conv(256, 256, 3, 8 * h, count: 1)
        norm(256, 8 * h, count: 1)
        conv(256, 128, 3, 8 * h, count: 1)
        conv(256, 128, 1, 8 * h, count: 1)
        norm(128, 8 * h, count: 6)
        conv(128, 128, 3, 8 * h, count: 5)
        conv(128, 3, 3, 8 * h, count: 1)
        var total = 0.0
        for (name, count, ms, gflop) in rows {
            total += Double(count) * ms
            let rate = gflop > 0 ? String(format: "%6.0f GFLOP/s", gflop / ms * 1e3) : ""
            print(
                name.padding(toLength: 28, withPad: " ", startingAt: 0)
                    + String(format: " x%-3d %8.2f ms each %9.1f ms total ", count, ms, Double(count) * ms) + rate)
        }
        print(String(format: "total (without attention) %.1f ms, ", total) + precision.requested.rawValue)
    }
}
