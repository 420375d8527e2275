import ArgumentParser
import CAllocCounter
import Foundation
import GriditCheckpoint
import GriditModels
import GriditTensor

@main
struct GriditBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gridit-bench",
        abstract: "Developer tool: run and time the DiT inference core.",
        subcommands: [Forward.self, Speed.self, VAE.self, VAEOps.self, Memory.self, Allocations.self]
    )
}

struct ThreadOptions: ParsableArguments {
    @Option(help: "Worker threads of a forward pass.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
}

struct PrecisionOptions: ParsableArguments {
    @Option(help: "Precision of the matrix products: fp32 or bf16 (bf16 falls back to fp32 without AVX512_BF16).")
    var precision: Precision = .fp32
    @Flag(help: "Same as --precision bf16.") var bf16 = false

    var requested: Precision { bf16 ? .bf16 : precision }
}

extension Precision: ExpressibleByArgument {}

/// A DiT architecture from the command line: a preset, or explicit sizes.
struct ArchitectureOptions: ParsableArguments {
    @Option(help: "Preset: \(DiTConfiguration.presetNames.joined(separator: ", ")).") var model = "DiT-XL/2"
    @Option(help: "Explicit architecture DEPTH,HIDDEN,HEADS,PATCH instead of a preset (e.g. 6,192,3,4).")
    var arch: String?
    @Option(help: "Latent (input) size.") var inputSize = 64
    @Option(help: "Input channels.") var inChannels = 4

    var name: String { arch.map { "DiT(\($0))" } ?? model }

    func configuration() throws -> DiTConfiguration {
        guard let arch else { return try DiTConfiguration.preset(model, inputSize: inputSize, inChannels: inChannels) }
        let v = arch.split(separator: ",").compactMap { Int($0) }
        guard v.count == 4 else { throw ValidationError("--arch wants DEPTH,HIDDEN,HEADS,PATCH, got '\(arch)'") }
        let c = DiTConfiguration(
            depth: v[0], hiddenSize: v[1], numHeads: v[2], patchSize: v[3], inputSize: inputSize,
            inChannels: inChannels)
        try c.validate()
        return c
    }

    /// The model with random weights (seed 1), its workspace and a random input batch (seed 2).
    func randomModel(batch: Int, workers: Int, precision: Precision) throws -> (DiT, DiTWorkspace, Tensor) {
        let config = try configuration()
        let dit = try DiT(config: config, source: RandomWeights.source(for: config, seed: 1), precision: precision)
        let x = RandomWeights.tensor([batch, config.inChannels, config.inputSize, config.inputSize], seed: 2, std: 1)
        return (dit, dit.makeWorkspace(batch: batch, workers: workers), x)
    }
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
            let ts: [Float] =
                try tFile.map { try NPYArray(path: $0).floatTensor().toArray() }
                ?? Array(repeating: Float(t!), count: n)
            var labels: [Int]? = try y.map { try NPYArray(path: $0).integers() }
            if let label { labels = Array(repeating: label, count: n) }
            let cond = try condition.map { try NPYArray(path: $0).floatTensor() }
            let ws = model.makeWorkspace(batch: n, workers: threads.threads)
            let start = DispatchTime.now()
            let output = try model.forward(x: xs, t: ts, y: labels, condition: cond, workspace: ws)
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
            try NPY.write(output, to: out)
            print(String(format: "forward: %.1f ms, output %@ -> %@", ms, "\(output.shape)", out))
        }
    }

    struct Speed: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time forward passes of a DiT with random weights; prints the median and GFLOP/s.")

        @OptionGroup var architecture: ArchitectureOptions
        @Option(help: "Batch size.") var batch = 1
        @Option(name: .customLong("repeat"), help: "Timed forwards.") var repetitions = 5
        @Option(help: "Untimed forwards first.") var warmup = 1
        @Flag(help: "With bf16: also run the fp32 model on the same input and report the relative error.")
        var compareFp32 = false
        @Flag(help: "Print one JSON line instead of text.") var json = false
        @OptionGroup var threads: ThreadOptions
        @OptionGroup var precision: PrecisionOptions

        func run() throws {
            let (dit, ws, x) = try architecture.randomModel(
                batch: batch, workers: threads.threads,
                precision: precision.requested)
            let t = (0..<batch).map { Float(($0 * 137 + 500) % 1000) }
            let config = dit.config
            var times: [Double] = [], cpu: [Double] = []
            for i in 0..<(max(0, warmup) + max(1, repetitions)) {
                let (start, cpu0) = (DispatchTime.now(), processCPUSeconds())
                try dit.forward(x: x, t: t, workspace: ws)
                let ms = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
                if i >= warmup {
                    times.append(ms)
                    cpu.append((processCPUSeconds() - cpu0) * 1e3)
                }
            }
            let median = times.sorted()[times.count / 2]
            let gflops = config.flopsPerForward(batch: batch) / (median * 1e6)
            var record: [String: Any] = [
                "impl": "gridit", "model": architecture.name, "input_size": config.inputSize, "batch": batch,
                "threads": threads.threads, "precision": dit.precision.rawValue, "backend": "\(dit.backend)",
                "times_ms": times, "median_ms": median, "gflops": gflops, "cpu_ms": cpu.sorted()[cpu.count / 2],
            ]
            if compareFp32 && dit.precision != .fp32 {
                let low = ws.output.copy()
                let (reference, refWorkspace, _) = try architecture.randomModel(
                    batch: batch, workers: threads.threads, precision: .fp32)  // the same weights and input
                let high = try reference.forward(x: x, t: t, workspace: refWorkspace)
                let error = relativeError(low.toArray(), high.toArray())
                record["rel_error_vs_fp32"] = error.l2
                record["max_abs_error_vs_fp32"] = error.maxAbs
            }
            try printRecord(record, json: json) {
                print(
                    String(
                        format: "%@ input %d batch %d threads %d %@ (%@): median %.1f ms over %d, %.1f GFLOP/s "
                            + "(CPU time of all threads %.1f ms)",
                        architecture.name, config.inputSize, batch, threads.threads, dit.precision.rawValue,
                        "\(dit.backend)", median, times.count, gflops, cpu.sorted()[cpu.count / 2]))
                if let e = record["rel_error_vs_fp32"] as? Double {
                    print(
                        String(
                            format: "bf16 vs fp32: relative error %.3e (L2), max |diff| %.3e", e,
                            record["max_abs_error_vs_fp32"] as? Double ?? 0))
                }
            }
        }
    }

    struct VAE: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time the SD VAE (random weights) decoding or encoding an image; reports peak memory.")

        @Option(help: "Image size in pixels (latent size = size / 8).") var size = 256
        @Option(help: "Batch size.") var batch = 1
        @Flag(help: "Time the encoder instead of the decoder.") var encode = false
        @Option(name: .customLong("repeat"), help: "Timed passes.") var repetitions = 5
        @Option(help: "Untimed passes first.") var warmup = 1
        @Option(help: "Tile size in pixels (0: never tile; default: diffusers' 512).") var tile: Int?
        @Flag(help: "Print one JSON line instead of text.") var json = false
        @OptionGroup var threads: ThreadOptions
        @OptionGroup var precision: PrecisionOptions

        func run() throws {
            let config = AutoencoderKLConfiguration.stableDiffusion
            var vae = try AutoencoderKL(
                config: config, source: RandomWeights.vaeSource(for: config, seed: 3),
                precision: precision.requested)
            if let tile { vae.tiling = tile > 0 ? VAETiling(tile: tile) : nil }
            let f = config.downsampleFactor
            let input =
                encode
                ? RandomWeights.tensor([batch, config.inChannels, size, size], seed: 4, std: 0.5)
                : RandomWeights.tensor([batch, config.latentChannels, size / f, size / f], seed: 4, std: 1)
            let before = residentBytes()
            var times: [Double] = []
            for i in 0..<(max(0, warmup) + max(1, repetitions)) {
                let start = DispatchTime.now()
                if encode {
                    _ = try vae.encode(input, threads: threads.threads)
                } else {
                    _ = try vae.decode(input, threads: threads.threads)
                }
                let ms = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
                if i >= warmup { times.append(ms) }
            }
            let median = times.sorted()[times.count / 2]
            let peak = peakResidentBytes()
            let record: [String: Any] = [
                "impl": "gridit", "model": encode ? "vae-encode" : "vae-decode", "input_size": size, "batch": batch,
                "threads": threads.threads, "precision": vae.precision.rawValue, "times_ms": times, "median_ms": median,
                "resident_before_mb": Double(before) / 1e6, "peak_resident_mb": Double(peak) / 1e6,
                "tile": vae.tiling?.tile ?? 0,
            ]
            try printRecord(record, json: json) {
                print(
                    String(
                        format: "VAE %@ %dx%d batch %d threads %d %@ tile %d: median %.1f ms over %d; "
                            + "resident %.0f MB after loading, peak %.0f MB",
                        encode ? "encode" : "decode", size, size, batch, threads.threads, vae.precision.rawValue,
                        vae.tiling?.tile ?? 0, median, times.count, Double(before) / 1e6, Double(peak) / 1e6))
            }
        }
    }

    struct Allocations: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "allocations",
            abstract: "Count heap allocations during DiT forward passes (after a first pass); expect 0.")

        @OptionGroup var architecture: ArchitectureOptions
        @Option(help: "Batch size.") var batch = 1
        @Option(name: .customLong("repeat"), help: "Counted forwards.") var repetitions = 3
        @OptionGroup var threads: ThreadOptions
        @OptionGroup var precision: PrecisionOptions

        func run() throws {
            let (dit, ws, x) = try architecture.randomModel(
                batch: batch, workers: threads.threads,
                precision: precision.requested)
            let t = [Float](repeating: 500, count: batch)
            try dit.forward(x: x, t: t, workspace: ws)  // first pass: thread pool start-up
            alloc_counter_start()
            for _ in 0..<repetitions { try dit.forward(x: x, t: t, workspace: ws) }
            let count = alloc_counter_stop()
            print(
                "\(architecture.name) batch \(batch) threads \(threads.threads) \(dit.precision): "
                    + "\(count) heap allocations in \(repetitions) forward passes")
            if count > 0 { throw ExitCode.failure }
        }
    }

    struct Memory: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Map a checkpoint, bind a model to it and report resident memory (VmRSS, VmHWM).",
            discussion: """
                --json prints one record: resident and peak bytes before and after binding (and after \
                one forward with --forward), binding and forward seconds. tools/bench/memory_bench.py \
                runs the cases side by side, each in a fresh process.
                """)

        @Option(help: "Safetensors checkpoint to map.") var checkpoint: String
        @Option(help: "Model config JSON.") var config: String?
        @Option(help: "Preset instead of a config file.") var model: String?
        @Option(help: "Latent size for --model.") var inputSize = 64
        @Flag(help: "Write a random F32 checkpoint of --model to --checkpoint first.") var create = false
        @Option(
            help: ArgumentHelp(
                "Write a copy of --checkpoint with the product weights stored as BF16 here (what `griditd models convert --precision bf16` stores), then exit.",
                valueName: "path")) var convertTo: String?
        @Flag(help: "Keep the file pages of packed weights resident (the loader before page release: a baseline).")
        var keepPages = false
        @Flag(help: "Then run a forward pass (batch 1), report resident memory again, and time a second pass.")
        var forward = false
        @Flag(help: "Print one JSON record.") var json = false
        @OptionGroup var threads: ThreadOptions
        @OptionGroup var precision: PrecisionOptions

        func run() throws {
            let cfg: DiTConfiguration
            if let config {
                cfg = try DiTConfiguration.load(path: config)
            } else if let model {
                cfg = try DiTConfiguration.preset(model, inputSize: inputSize)
            } else {
                throw ValidationError("give --config or --model")
            }
            if create {
                try RandomWeights.writeCheckpoint(for: cfg, to: checkpoint, seed: 1)
                if !json { print("wrote \(checkpoint)") }
            }
            if let convertTo {
                try SafetensorsFile(path: checkpoint).writeConverted(to: convertTo, bf16: DiTWeights.bf16Keys(cfg))
                if !json { print("wrote \(convertTo)") }
                return
            }
            let before = residentBytes()
            let start = Date()
            let file = try SafetensorsFile(path: checkpoint)
            let dit = try DiT(
                config: cfg, source: file, precision: precision.requested, releaseSourcePages: !keepPages)
            let bindSeconds = Date().timeIntervalSince(start)
            let (after, peakAfter) = (residentBytes(), peakResidentBytes())
            let size = (try? FileManager.default.attributesOfItem(atPath: checkpoint)[.size] as? Int) ?? 0
            var record: [String: Any] = [
                "checkpoint_bytes": size, "precision": dit.precision.rawValue, "keep_pages": keepPages,
                "rss_before": before, "rss_bound": after, "hwm_bound": peakAfter, "bind_s": bindSeconds,
            ]
            if !json {
                print(
                    String(
                        format:
                            "checkpoint %.2f GB mapped, %d blocks bound (%@); resident before %.1f MB, after %.1f MB (peak %.1f MB), %.2f s",
                        Double(size) / 1e9, dit.weights.blocks.count, dit.precision.rawValue, Double(before) / 1e6,
                        Double(after) / 1e6, Double(peakAfter) / 1e6, bindSeconds))
            }
            if forward {
                let ws = dit.makeWorkspace(batch: 1, workers: threads.threads)
                let x = RandomWeights.tensor([1, cfg.inChannels, cfg.inputSize, cfg.inputSize], seed: 2, std: 1)
                var t0 = Date()
                try dit.forward(x: x, t: [500], workspace: ws)
                record["first_forward_s"] = Date().timeIntervalSince(t0)
                record["rss_forward"] = residentBytes()
                // A second pass times the products alone (the first also faults weights in).
                t0 = Date()
                try dit.forward(x: x, t: [500], workspace: ws)
                record["forward_s"] = Date().timeIntervalSince(t0)
                record["hwm"] = peakResidentBytes()
                record["activations"] = ws.byteCount
                if !json {
                    print(
                        String(
                            format: "after one forward: resident %.1f MB, peak %.1f MB, activations %.1f MB",
                            Double(residentBytes()) / 1e6, Double(peakResidentBytes()) / 1e6,
                            Double(ws.byteCount) / 1e6))
                }
            }
            try printRecord(record, json: json) {}
        }
    }
}

/// Prints a measurement: `record` as one line of JSON (sorted keys) with `--json`, else `text`.
func printRecord(_ record: [String: Any], json: Bool, text: () -> Void) throws {
    guard json else { return text() }
    let data = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

/// Resident set size of this process (VmRSS), in bytes.
func residentBytes() -> Int { statusBytes("VmRSS:") }

/// Peak resident set size of this process (VmHWM), in bytes.
func peakResidentBytes() -> Int { statusBytes("VmHWM:") }

private func statusBytes(_ field: String) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix(field) {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}

/// CPU time used by all threads of this process, in seconds (includes the pool's brief spinning).
func processCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// ‖a − b‖₂ / ‖b‖₂ and max |a − b|.
func relativeError(_ a: [Float], _ b: [Float]) -> (l2: Double, maxAbs: Double) {
    var num = 0.0, den = 0.0, worst = 0.0
    for (x, y) in zip(a, b) {
        let d = Double(x) - Double(y)
        num += d * d
        den += Double(y) * Double(y)
        worst = max(worst, abs(d))
    }
    return ((num / max(den, .leastNormalMagnitude)).squareRoot(), worst)
}
