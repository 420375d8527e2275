import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditModels

#if canImport(Glibc)
import Glibc
#endif

/// The checks an import makes before anything is published: the pipeline's fields, each model
/// config (within sane size limits), the configs against the pipeline geometry, each safetensors
/// file's header (sizes, offsets, duplicate names, …), finite weights, and each model's binding
/// table against its file's header, which is total (a missing, misshapen or extra tensor fails)
/// and builds no model. It reads the ingested copies, so what is checked
/// is exactly what gets stored.
enum PipelineValidation {
    /// Largest config or pipeline JSON accepted.
    static let maxJSONSize: Int64 = 1 << 20

    /// - Parameters:
    ///   - spec: the pipeline with file references = paths of the ingested files.
    ///   - names: how to name each role's file in messages (its source path or bundle entry).
    static func validate(_ spec: PipelineSpec, names: [PipelineSpec.FileRole: String]) throws(ModelStoreError) {
        func fail(_ role: PipelineSpec.FileRole?, _ message: String, hint: String? = nil) -> ModelStoreError {
            let subject = role.map { "\($0.rawValue) '\(names[$0] ?? "?")'" } ?? "the pipeline"
            return ModelStoreError(.invalidInput, "\(subject): \(message)", hint: hint)
        }
        var paths: [PipelineSpec.FileRole: String] = [:]
        for (role, path) in spec.files { paths[role] = path }

        /// The error's text with the temporary path replaced by the file's name.
        func text(_ error: any Error, _ role: PipelineSpec.FileRole) -> String {
            "\(error)".replacingOccurrences(of: paths[role]!, with: names[role] ?? "?")
        }
        func config<C>(_ role: PipelineSpec.FileRole, _ load: (String) throws -> C) throws(ModelStoreError) -> C {
            let path = paths[role]!
            if let size = FileIdentity.of(path: path)?.size, size > maxJSONSize {
                throw fail(
                    role, "is \(size) bytes; a model config is a small JSON file",
                    hint: "check the file named in the pipeline")
            }
            do { return try load(path) } catch {
                throw fail(role, text(error, role), hint: "see docs/MODEL_CONFIG.md")
            }
        }

        do { try spec.validateFields() } catch { throw fail(nil, "\(error)") }
        let s1 = try config(.stage1Config, DiTConfiguration.load(path:))
        let guide = spec.guide == nil ? nil : try config(.guideConfig, DiTConfiguration.load(path:))
        let s2 = spec.stage2 == nil ? nil : try config(.stage2Config, DiTConfiguration.load(path:))
        let vae = spec.vae == nil ? nil : try config(.vaeConfig, AutoencoderKLConfiguration.load(path:))
        do {
            try spec.validate(stage1: s1, guide: guide, stage2: s2, vae: vae)
        } catch {
            throw fail(nil, "\(error)", hint: "fix the pipeline file or the model config it names")
        }

        func weights(_ role: PipelineSpec.FileRole, bind: (SafetensorsFile) throws -> Void) throws(ModelStoreError) {
            let file: SafetensorsFile
            do {
                file = try SafetensorsFile(path: paths[role]!)
            } catch {
                throw fail(
                    role, "\(error.message)" + (error.tensor.map { " (tensor '\($0)')" } ?? "") + " [\(error.code)]",
                    hint: error.hint)
            }
            if let bad = file.firstNonFinite() {
                throw fail(
                    role,
                    "tensor '\(bad.tensor)' holds a NaN or an infinity (element \(bad.index)); the model would only make noise",
                    hint: "export the weights again from a training state without NaN or infinite values")
            }
            do { try bind(file) } catch {
                let config = PipelineSpec.FileRole(
                    rawValue: role.rawValue.replacingOccurrences(of: ".weights", with: ".config"))!
                throw fail(
                    role, "does not match \(config.rawValue) '\(names[config] ?? "?")': \(text(error, role))",
                    hint:
                        "pair each checkpoint with the config it was trained with (tools/convert_checkpoint.py writes both)"
                )
            }
        }
        // The binding tables against the headers: no model is built (no weight is converted or packed).
        try weights(.stage1Weights) { try DiT.checkBinding(s1, against: $0) }
        if let guide { try weights(.guideWeights) { try DiT.checkBinding(guide, against: $0) } }
        if let s2 { try weights(.stage2Weights) { try DiT.checkBinding(s2, against: $0) } }
        if let vae { try weights(.vaeWeights) { try AutoencoderKL.checkBinding(vae, against: $0) } }
    }
}
