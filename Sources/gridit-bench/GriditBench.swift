import ArgumentParser
import Foundation
import GriditCheckpoint
import GriditModels
import GriditTensor

@main
struct GriditBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gridit-bench",
        abstract: "Developer tool: run and time the DiT inference core.",
        subcommands: [Forward.self, Speed.self, Memory.self]
    )
}

struct ThreadOptions: ParsableArguments {
    @Option(help: "Worker threads of a forward pass (each runs single-threaded OpenBLAS products).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
}

extension GriditBench {
    struct Forward: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One forward pass from a checkpoint and .npy inputs; writes the output as float32 .npy.")

        @Option(help: "Safetensors checkpoint (F32, F16 or BF16).") var checkpoint: String
        @Option(help: "Model config JSON (docs/MODEL_CONFIG.md).") var config: String
        @Option(help: "Input x as .npy, shape (N, C, H, W).") var x: String
        @Option(help: "Timestep (0...999) for every batch element.") var t: Double?
        @Option(help: "Timesteps as .npy, shape (N).") var tFile: String?
        @Option(help: "Labels as .npy, shape (N), for class-conditional models.") var y: String?
        @Option(name: .customLong("class"), help: "One label for every batch element.") var label: Int?
        @Option(help: "Low-resolution condition as .npy, shape (N, Cc, H, W), for super-resolution models.")
        var condition: String?
        @Option(help: "Output .npy path.") var out: String
        @OptionGroup var threads: ThreadOptions

        func validate() throws {
            if (t == nil) == (tFile == nil) { throw ValidationError("give exactly one of --t or --t-file") }
            if y != nil && label != nil { throw ValidationError("give at most one of --y or --class") }
        }

        func run() throws {
            let config = try DiTConfiguration.load(path: config)
            let file = try SafetensorsFile(path: checkpoint)
            let model = try DiT(config: config, source: file)
            let xs = try NPYArray(path: x).floatTensor()
            guard xs.rank == 4 else { throw ValidationError("--x must be (N, C, H, W), got \(xs.shape)") }
            let n = xs.shape[0]
            let ts: [Float] = try tFile.map { try NPYArray(path: $0).floatTensor().toArray() }
                ?? Array(repeating: Float(t!), count: n)
            var labels: [Int]? = try y.map { try NPYArray(path: $0).integers() }
            if let label { labels = Array(repeating: label, count: n) }
            let cond = try condition.map { try NPYArray(path: $0).floatTensor() }
            let ws = DiTWorkspace(config: config, batch: n, workers: threads.threads)
            let start = DispatchTime.now()
            let output = try model.forward(x: xs, t: ts, y: labels, condition: cond, workspace: ws)
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
            try NPY.write(output, to: out)
            print(String(format: "forward: %.1f ms, output %@ -> %@", ms, "\(output.shape)", out))
        }
    }

    struct Speed: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time forward passes of a preset with random weights; prints the median and GFLOP/s.")

        @Option(help: "Preset: \(DiTConfiguration.presetNames.joined(separator: ", ")).") var model = "DiT-XL/2"
        @Option(help: "Latent (input) size.") var inputSize = 64
        @Option(help: "Batch size.") var batch = 1
        @Option(name: .customLong("repeat"), help: "Timed forwards (after one warm-up).") var repetitions = 5
        @Flag(help: "Print one JSON line instead of text.") var json = false
        @OptionGroup var threads: ThreadOptions

        func run() throws {
            let config = try DiTConfiguration.preset(model, inputSize: inputSize)
            let dit = try DiT(config: config, source: RandomWeights.source(for: config, seed: 1))
            let ws = DiTWorkspace(config: config, batch: batch, workers: threads.threads)
            let x = RandomWeights.tensor([batch, config.inChannels, inputSize, inputSize], seed: 2, std: 1)
            let t = (0..<batch).map { Float(($0 * 137 + 500) % 1000) }
            var times: [Double] = []
            for i in 0...max(1, repetitions) {
                let start = DispatchTime.now()
                try dit.forward(x: x, t: t, workspace: ws)
                let ms = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
                if i > 0 { times.append(ms) }  // the first pass is a warm-up
            }
            let median = times.sorted()[times.count / 2]
            let gflops = config.flopsPerForward(batch: batch) / (median * 1e6)
            if json {
                let record: [String: Any] = [
                    "impl": "gridit", "model": model, "input_size": inputSize, "batch": batch,
                    "threads": threads.threads, "precision": "fp32", "times_ms": times, "median_ms": median,
                    "gflops": gflops,
                ]
                let data = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(String(format: "%@ input %d batch %d threads %d: median %.1f ms over %d, %.1f GFLOP/s",
                             model, inputSize, batch, threads.threads, median, times.count, gflops))
            }
        }
    }

    struct Memory: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Map a checkpoint, bind a model to it and report resident memory before any forward.")

        @Option(help: "Safetensors checkpoint to map.") var checkpoint: String
        @Option(help: "Model config JSON.") var config: String?
        @Option(help: "Preset instead of a config file.") var model: String?
        @Option(help: "Latent size for --model.") var inputSize = 64
        @Flag(help: "Write a random F32 checkpoint of --model to --checkpoint first.") var create = false
        @Flag(help: "Then run one forward pass (batch 1) and report resident memory again.") var forward = false
        @OptionGroup var threads: ThreadOptions

        func run() throws {
            let cfg: DiTConfiguration
            if let config { cfg = try DiTConfiguration.load(path: config) } else if let model {
                cfg = try DiTConfiguration.preset(model, inputSize: inputSize)
            } else { throw ValidationError("give --config or --model") }
            if create {
                try RandomWeights.writeCheckpoint(for: cfg, to: checkpoint, seed: 1)
                print("wrote \(checkpoint)")
            }
            let before = residentBytes()
            let file = try SafetensorsFile(path: checkpoint)
            let dit = try DiT(config: cfg, source: file)
            let after = residentBytes()
            let size = (try? FileManager.default.attributesOfItem(atPath: checkpoint)[.size] as? Int) ?? 0
            print(String(format: "checkpoint %.2f GB mapped, %d blocks bound; resident before %.1f MB, after %.1f MB",
                         Double(size) / 1e9, dit.weights.blocks.count, Double(before) / 1e6, Double(after) / 1e6))
            guard forward else { return }
            let ws = DiTWorkspace(config: cfg, batch: 1, workers: threads.threads)
            let x = RandomWeights.tensor([1, cfg.inChannels, cfg.inputSize, cfg.inputSize], seed: 2, std: 1)
            try dit.forward(x: x, t: [500], workspace: ws)
            print(String(format: "after one forward: resident %.1f MB (weights are file-backed pages of the mapping), "
                         + "activations %.1f MB", Double(residentBytes()) / 1e6, Double(ws.byteCount) / 1e6))
        }
    }
}

/// Resident set size of this process (VmRSS), in bytes.
func residentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}
