import Foundation
import Testing

@testable import GriditJobSpec

@Suite("job spec")
struct JobSpecTests {
    @Test("output names: relative folders only")
    func outputNames() throws {
        for good in ["run-1", "cats/run_2", "a.b/c-d"] { try JobSpec.validateOutput(good) }
        for bad in [
            "", "/etc", "../x", "a/../../b", "a//b", ".hidden", "a/./b", "sp ace", "ünï",
            String(repeating: "a", count: 201),
        ] {
            #expect(throws: JobSpecError.self, "\(bad)") { try JobSpec.validateOutput(bad) }
        }
    }

    @Test("steps: counts, ddimN and diffusers spacings in 1...10000")
    func steps() throws {
        for good in ["250", "ddim50", "trailing20", "10,20,30"] {
            try JobSpec.Parameters.validateSteps(good, name: "steps")
        }
        for bad in [
            "0", "-3", "ddim", "ddim0", "10001", "fast", "trailing", "leading0", "linspace-2", "ddim5,5", "1,,2",
        ] {
            #expect(throws: JobSpecError.self, "\(bad)") { try JobSpec.Parameters.validateSteps(bad, name: "steps") }
        }
    }

    @Test("the rules of a spec, each naming its field")
    func rules() throws {
        func broken(_ spec: JobSpec, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
            do {
                try spec.validate()
                Issue.record("accepted: \(spec)", sourceLocation: sourceLocation)
            } catch {
                #expect(error.message.contains(text), "\(error.message)", sourceLocation: sourceLocation)
            }
        }
        try JobSpec(
            length: 1, model: "m:v1", output: "a/b", parameters: .init(seed: 1, eta: 1, classLabel: 0, cfgScale: 0)
        ).validate()
        broken(JobSpec(length: 0), "at least 1 frame")
        broken(JobSpec(length: 4, model: ""), "model must be")
        broken(JobSpec(length: 4, output: "../x"), "'..'")
        broken(JobSpec(length: 4, parameters: .init(steps: "99999999")), "steps must be")
        broken(JobSpec(length: 4, parameters: .init(eta: .nan)), "0...1")
        broken(JobSpec(length: 4, parameters: .init(contextRows: 65)), "context_rows")
        broken(JobSpec(length: 4, parameters: .init(precision: "fp 8")), "precision")
        broken(JobSpec(length: 4, parameters: .init(jumpCount: 51)), "jump_count")
        broken(JobSpec(length: 4, parameters: .init(classLabel: -1)), "class_label")
        broken(JobSpec(length: 4, parameters: .init(cfgScale: -.infinity)), "cfg_scale")
        broken(JobSpec(length: 4, parameters: .init(cfgScale: 1e300)), "cfg_scale is 1e+300; use a scale from 0 to 100")
        try JobSpec(length: 4, parameters: .init(cfgScale: 100)).validate()
        for (lower, upper) in [(500, 400), (-1, 999), (700, 1000)] {
            broken(
                JobSpec(length: 4, parameters: .init(cfgInterval: .init(lower: lower, upper: upper))),
                "cfg_interval is [\(lower), \(upper)]; use timesteps 0 <= lower <= upper <= 999")
        }
        try JobSpec(length: 4, parameters: .init(cfgInterval: .init(lower: 999, upper: 999))).validate()
    }

    @Test("a guidance interval: [lower, upper] in JSON, lower:upper as a flag, nothing else")
    func guidanceInterval() throws {
        let spec = try JSONDecoder().decode(
            JobSpec.self, from: Data(#"{"length":3,"parameters":{"cfg_scale":2,"cfg_interval":[700,999]}}"#.utf8))
        #expect(spec.parameters.cfgInterval == GuidanceInterval(lower: 700, upper: 999))
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        #expect(
            String(decoding: try encoder.encode(spec), as: UTF8.self)
                == #"{"length":3,"parameters":{"cfg_interval":[700,999],"cfg_scale":2}}"#)
        for bad in [#"[700]"#, #"[1,2,3]"#, #"{"lower":1,"upper":2}"#, #"[1.5,2]"#, #""700:999""#, #"[700,"999"]"#] {
            let error = #expect(throws: JobSpecError.self, "\(bad)") {
                try JSONDecoder().decode(
                    JobSpec.self, from: Data(#"{"length":3,"parameters":{"cfg_interval":\#(bad)}}"#.utf8))
            }
            #expect(error?.message.contains("two whole timesteps [lower, upper] in 0...999") == true, "\(bad)")
        }
        #expect(GuidanceInterval("700:999") == GuidanceInterval(lower: 700, upper: 999))
        #expect(GuidanceInterval("700") == nil && GuidanceInterval("a:b") == nil && GuidanceInterval("1:2:3") == nil)
        let high = GuidanceInterval(lower: 700, upper: 999)
        #expect(high.contains(700) && high.contains(999) && !high.contains(699.5) && !high.isEveryStep)
        #expect(GuidanceInterval(lower: 0, upper: 999).isEveryStep)
    }

    @Test("JSON: length, model, output and the parameters; steps as numbers; no_sr only when set")
    func coding() throws {
        let spec = JobSpec(length: 3, parameters: .init(seed: .max, mode: .official, steps: "50", noSR: true))
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        #expect(
            String(decoding: try encoder.encode(spec), as: UTF8.self)
                == #"{"length":3,"parameters":{"mode":"official","no_sr":true,"seed":18446744073709551615,"steps":"50"}}"#
        )
        let decoded = try JSONDecoder().decode(
            JobSpec.self, from: Data(#"{"length":3,"parameters":{"steps":50,"sr_sampler":"dpmpp-2m"}}"#.utf8))
        #expect(
            decoded.parameters.steps == "50" && decoded.parameters.srSampler == .dpmpp2m && !decoded.parameters.noSR)
        #expect(throws: JobSpecError.self) {
            try JSONDecoder().decode(JobSpec.self, from: Data(#"{"length":3,"parameters":{"sead":1}}"#.utf8))
        }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(JobSpec.self, from: Data(#"{"parameters":{}}"#.utf8))
        }
    }

    @Test("progress JSON keeps the stored layout; the live step is optional")
    func progress() throws {
        let stored = #"{"stage":"grid","grids_done":0,"frames_done":0}"#
        #expect(try JSONDecoder().decode(JobProgress.self, from: Data(stored.utf8)) == JobProgress())
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(
                JobProgress.self, from: Data(#"{"stage":"stage1","grids_done":0,"frames_done":0}"#.utf8))
        }
    }
}
