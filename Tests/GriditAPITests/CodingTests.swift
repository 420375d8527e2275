import Foundation
import GriditAPI
import Testing

@Suite("API coding")
struct CodingTests {
    @Test("non-finite numbers encode without trapping and are refused on the way in, naming the field")
    func nonFiniteNumbers() throws {
        // `griditctl submit --eta nan` once trapped in JSONEncoder (griditctl crashed).
        let data = APICoding.encode(SubmitJobRequest(length: 4, parameters: GenerationParameters(eta: .nan)))
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains(#""eta":"NaN""#), "\(text)")
        #expect(APICoding.encode(StepProgress(stage: "sr", grid: 1, grids: 1, step: 1, steps: 1, frame: 1, frames: 1, etaSeconds: .infinity)).count > 0)
        do {
            _ = try APICoding.decode(SubmitJobRequest.self, from: data)
            Issue.record("a NaN eta was accepted")
        } catch {
            #expect(error.code == .badRequest && error.message.contains("eta"), "\(error.message)")
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
