import Foundation
import GriditAPI
import GriditJobSpec
import Testing

@Suite("API coding")
struct CodingTests {
    @Test("non-finite numbers encode without trapping and are refused on the way in, naming the field")
    func nonFiniteNumbers() throws {
        // `griditctl submit --eta nan` once trapped in JSONEncoder (griditctl crashed).
        let data = APICoding.encode(SubmitJobRequest(spec: JobSpec(length: 4, parameters: .init(eta: .nan))))
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains(#""eta":"NaN""#), "\(text)")
        #expect(
            APICoding.encode(
                StepProgress(
                    stage: .sr, grid: 1, grids: 1, step: 1, steps: 1, frame: 1, frames: 1, etaSeconds: .infinity)
            ).count > 0)
        do {
            _ = try APICoding.decode(SubmitJobRequest.self, from: data)
            Issue.record("a NaN eta was accepted")
        } catch {
            #expect(error.code == .badRequest && error.message.contains("eta"), "\(error.message)")
        }
    }

    @Test("a submit carries its spec in the API's layout: length, model and output beside the parameters")
    func submitLayout() throws {
        let json =
            #"{"length":8,"model":"m:v1","output":"run-1","parameters":{"seed":7,"sampler":"ddim","class_label":2,"cfg_scale":4},"priority":1}"#
        let request = try APICoding.decode(SubmitJobRequest.self, from: Data(json.utf8))
        let expected = JobSpec(
            length: 8, model: "m:v1", output: "run-1",
            parameters: .init(seed: 7, sampler: .ddim, classLabel: 2, cfgScale: 4))
        #expect(request.spec == expected && request.priority == 1)
        let encoded = String(decoding: APICoding.encode(request), as: UTF8.self)
        #expect(
            encoded
                == #"{"length":8,"model":"m:v1","output":"run-1","parameters":{"cfg_scale":4,"class_label":2,"sampler":"ddim","seed":7},"priority":1}"#
        )
        // Unknown keys are refused at both levels, and names outside their sets name the set.
        for (body, message) in [
            (#"{"length":8,"lenght":8}"#, "unknown field 'lenght'"),
            (#"{"length":8,"parameters":{"sead":1}}"#, "unknown field 'sead'"),
            (
                #"{"length":8,"parameters":{"sampler":"euler"}}"#,
                "sampler 'euler' is not ddpm or ddim or dpmpp-2m or dpmpp-2m-sde"
            ),
            (#"{"length":8,"parameters":{"cfg_interval":[700.5,999]}}"#, "cfg_interval is two whole timesteps"),
            (#"{"length":8,"parameters":{"cfg_interval":[700]}}"#, "such as [700, 999]"),
        ] {
            #expect(throws: APIError.self, "\(body)") {
                try APICoding.decode(SubmitJobRequest.self, from: Data(body.utf8))
            }
            do {
                _ = try APICoding.decode(SubmitJobRequest.self, from: Data(body.utf8))
            } catch {
                #expect(error.code == .badRequest && error.message.contains(message), "\(error.message)")
            }
        }
    }

    @Test("limit and timeout errors have their HTTP statuses")
    func statuses() {
        #expect(APIError.Code.userLimit.httpStatus == 429)
        #expect(APIError.Code.requestTimeout.httpStatus == 408)
        #expect(APIError.Code.queueFull.httpStatus == 503)
    }

    @Test("durations: units, and nothing negative, NaN or infinite")
    func durations() {
        #expect(parseDuration("90s") == 90 && parseDuration("30m") == 1800 && parseDuration("24h") == 86_400)
        #expect(parseDuration("1e300s") == 1e300, "huge but finite: the store saturates it")
        for bad in ["nan", "NaNs", "inf", "1e400s", "1e306d", "-1s", "", "h", "soon"] {
            #expect(parseDuration(bad) == nil, "\(bad)")
        }
    }
}
