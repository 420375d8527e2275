import GriditAPI
import Testing

@testable import GriditDaemon

@Suite("submit checks that fail")
struct RefusalTests {
    @Test(
        "the request's faults are 4xx; griditd's are 503 when a later try may pass, else 500; none says a job was made")
    func refusals() {
        func status(_ c: JobFailure.Class) -> Int { ControlAPI.refusal(JobFailure(c, "x")).code.httpStatus }
        #expect(status(.modelMissing) == 404)
        #expect(status(.invalidInput) == 400)
        #expect(status(.transient) == 503 && status(.diskFull) == 503)
        #expect(status(.digestMismatch) == 500 && status(.internalError) == 500)
        let io = ControlAPI.refusal(JobFailure(.transient, "reading the model origin: EIO"))
        #expect(io.message.contains("EIO") && io.message.contains("no job was made"), "\(io.message)")
    }
}
