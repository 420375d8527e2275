import Foundation
import GriditAPI
import GriditCheckpoint
import GriditDiffusion
import GriditModelStore
import GriditModels
import GriditTensor
import GriditTestSupport
import Testing

@Suite("Converting a version to bf16")
struct ConvertTests {
    /// One forward of a pipeline stage's model on fixed inputs.
    func stageOutput(_ spec: PipelineSpec, stage2: Bool, precision: Precision) throws -> [Float] {
        let files = stage2 ? spec.stage2!.files : spec.stage1
        let config = try DiTConfiguration.load(path: files.config)
        let model = try DiT(config: config, source: SafetensorsFile(path: files.weights), precision: precision)
        let S = config.inputSize
        func image(_ c: Int, _ phase: Float) -> Tensor {
            Tensor((0..<(c * S * S)).map { cos(Float($0) * 0.21 + phase) }, shape: [1, c, S, S])
        }
        return try model.forward(
            x: image(config.inChannels, 0), t: [321],
            condition: config.conditionChannels > 0 ? image(config.conditionChannels, 1) : nil,
            workspace: model.makeWorkspace(batch: 1)
        ).toArray()
    }

    @Test("a conversion is a new version: its own digest, BF16 product weights, bf16 by default, same outputs in bf16")
    func roundTrip() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let source = try store.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        let report = try store.convert("tiny:v1", precision: "bf16")

        #expect(report.reference == "tiny:v1-bf16")
        #expect(report.digest != source.digest)
        #expect(report.previous == nil)
        #expect(report.bytesWritten > 0)
        let digest = try store.resolve("tiny:v1-bf16")
        #expect(digest.description == report.digest)
        #expect(try store.resolve("tiny:v1").description == source.digest, "the source version is untouched")
        let manifest = try store.manifest(digest)
        let original = try store.manifest(try store.resolve("tiny:v1"))
        #expect(manifest.pipeline.defaults.precision == "bf16")
        #expect(original.pipeline.defaults.precision == "fp32")
        // What it wrote: each new weights blob once; no warning about its own temporary files.
        let newWeights = Dictionary(
            manifest.blobs.filter { $0.mediaType == MediaType.safetensors }.map { ($0.digest, $0.size) }
        ) { a, _ in a }
        #expect(report.bytesWritten == newWeights.values.reduce(0, +))
        #expect(report.warnings.isEmpty, "\(report.warnings)")
        for (new, old) in zip(manifest.blobs, original.blobs) {
            #expect(new.role == old.role)
            // Configs are shared blobs; the weights are new ones, smaller.
            if new.mediaType == MediaType.safetensors {
                #expect(new.digest != old.digest && new.size < old.size, "\(new.role)")
            } else {
                #expect(new.digest == old.digest, "\(new.role)")
            }
        }
        #expect(try store.verify("tiny:v1-bf16").ok)

        let converted = try store.resolvePipeline(digest).spec
        let fp32 = try store.resolvePipeline(try store.resolve("tiny:v1")).spec
        for (config, weights) in [
            (converted.stage1.config, converted.stage1.weights), (converted.stage2!.config, converted.stage2!.weights),
        ] {
            let keys = DiTWeights.bf16Keys(try DiTConfiguration.load(path: config))
            let file = try SafetensorsFile(path: weights)
            for name in file.tensorNames {
                #expect(file.info(name)?.dtype == (keys.contains(name) ? .bf16 : .f32), "\(name)")
            }
        }
        for stage2 in [false, true] {
            #expect(
                try stageOutput(converted, stage2: stage2, precision: .bf16)
                    == stageOutput(fp32, stage2: stage2, precision: .bf16),
                "stage \(stage2 ? 2 : 1): the bf16 version in bf16 = the fp32 version in bf16, bit for bit")
        }

        // Converting the same version again gives the same version (content-addressed), tagged anew.
        let again = try store.convert("tiny:v1", precision: "bf16", name: "tiny:small")
        #expect(again.digest == report.digest && again.reference == "tiny:small")
        #expect(try store.convert("tiny@\(source.digest)", precision: "bf16").reference == "tiny:bf16")
    }

    @Test("a pipeline's guide model is stored, verified and converted like its stages; a mismatched guide is refused")
    func guideModel() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let source = try store.importModel(from: fixturePipeline("pixel_guide"), name: "guided:v1", link: .copy)
        let manifest = try store.manifest(try store.resolve("guided:v1"))
        let roles = Dictionary(uniqueKeysWithValues: manifest.blobs.map { ($0.role, $0.mediaType) })
        #expect(roles[.guideConfig] == MediaType.ditConfig && roles[.guideWeights] == MediaType.safetensors)
        #expect(try store.verify("guided:v1").ok)
        let spec = try store.resolvePipeline(try store.resolve("guided:v1")).spec
        #expect(spec.guide.map { $0.weights.hasPrefix("/") } == true, "the guide's blob path is handed out")

        let converted = try store.convert("guided:v1", precision: "bf16")
        #expect(converted.digest != source.digest)
        let bf16 = try store.resolvePipeline(try store.resolve(converted.reference)).spec
        let keys = DiTWeights.bf16Keys(try DiTConfiguration.load(path: bf16.guide!.config))
        let file = try SafetensorsFile(path: bf16.guide!.weights)
        #expect(!keys.isEmpty && keys.allSatisfy { file.info($0)?.dtype == .bf16 }, "the guide is converted too")

        // A guide that is stage 1's own files: one blob for both roles, written once.
        let same = dir.file("same")
        try FileManager.default.copyItem(
            atPath: (fixturePipeline("pixel_guide") as NSString).deletingLastPathComponent, toPath: same)
        let json = try String(contentsOfFile: same + "/pipeline.json", encoding: .utf8)
            .replacingOccurrences(of: "guide.config.json", with: "stage1.config.json")
            .replacingOccurrences(of: "guide.safetensors", with: "stage1.safetensors")
        try json.write(toFile: same + "/pipeline.json", atomically: true, encoding: .utf8)
        _ = try store.importModel(from: same + "/pipeline.json", name: "self-guided:v1", link: .copy)
        let shared = try store.convert("self-guided:v1", precision: "bf16")
        let sharedManifest = try store.manifest(try store.resolve(shared.reference))
        let weights = sharedManifest.blobs.filter { $0.mediaType == MediaType.safetensors }
        #expect(weights.count == 2 && Set(weights.map(\.digest)).count == 1)
        #expect(shared.bytesWritten == weights[0].size, "the shared blob counted once")

        // A guide for another task (another input size) is refused before anything is stored.
        let bad = dir.file("bad")
        try FileManager.default.copyItem(
            atPath: (fixturePipeline("pixel_guide") as NSString).deletingLastPathComponent, toPath: bad)
        var config = try DiTConfiguration.load(path: bad + "/guide.config.json")
        config.inputSize = 8
        try FileManager.default.removeItem(atPath: bad + "/guide.config.json")
        try writeConfig(config, to: bad + "/guide.config.json")
        let before = try StoreSnapshot(store)
        let error = storeError { try store.importModel(from: bad + "/pipeline.json", name: "bad:v1", link: .copy) }
        #expect(error?.code == .invalidInput)
        #expect(
            error?.message.contains("the guide does not match stage 1 in input_size;") == true,
            "\(String(describing: error))")
        #expect(try StoreSnapshot(store) == before)
    }

    @Test("converting what is already bf16, to an unknown precision or without a name fails and changes nothing")
    func refusals() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let source = try store.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        let converted = try store.convert("tiny:v1", precision: "bf16")
        let before = try StoreSnapshot(store)

        let twice = storeError { try store.convert("tiny:v1-bf16", precision: "bf16") }
        #expect(twice?.code == .invalidInput)
        #expect(twice?.message.contains("already stores its weights in bf16") == true, "\(String(describing: twice))")
        let unknown = storeError { try store.convert("tiny:v1", precision: "fp8") }
        #expect(unknown?.code == .invalidInput)
        #expect(unknown?.message.contains("unknown precision 'fp8'") == true)
        #expect(unknown?.hint?.contains("bf16") == true)
        let back = storeError { try store.convert(converted.reference, precision: "fp32") }
        #expect(back?.code == .invalidInput && back?.message.contains("cannot be converted to fp32") == true)
        let unnamed = storeError { try store.convert(source.digest, precision: "bf16") }
        #expect(unnamed?.code == .invalidReference && unnamed?.hint?.contains("--name") == true)
        #expect(storeError { try store.convert("nope:v1", precision: "bf16") }?.code == .notFound)
        #expect(
            storeError { try store.convert("tiny:v1", precision: "bf16", name: "Bad Name") }?.code == .invalidReference)
        #expect(try StoreSnapshot(store) == before)
    }

    @Test("griditd models convert: import's JSON, exit statuses of the store's errors")
    func griditdConvert() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let pipeline = try writePipeline(in: dir.file("src"))
        let state = ["--state-dir", dir.file("state")]
        #expect(try griditd(["models", "import", pipeline, "--name", "tiny:v1"] + state).status == 0)
        let converted = try griditd(["models", "convert", "tiny:v1", "--precision", "bf16", "--json"] + state)
        #expect(converted.status == 0, "\(converted.stderr)")
        let result = try JSONDecoder().decode(ModelImportResult.self, from: Data(converted.stdout.utf8))
        #expect(result.reference == "tiny:v1-bf16")
        let table = try griditd(["models", "list"] + state)
        #expect(table.stdout.contains("v1-bf16"))

        let again = try griditd(["models", "convert", "tiny:v1-bf16", "--precision", "bf16"] + state)
        #expect(again.status == 65 && again.stderr.contains("already stores its weights in bf16"), "\(again.stderr)")
        let unknown = try griditd(["models", "convert", "tiny:v1", "--precision", "int4"] + state)
        #expect(unknown.status == 65 && unknown.stderr.contains("unknown precision 'int4'"), "\(unknown.stderr)")
        let missing = try griditd(["models", "convert", "tiny:v1"] + state)
        #expect(missing.status == 64 && missing.stderr.contains("--precision"), "\(missing.stderr)")
    }
}
