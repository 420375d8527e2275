import Foundation
import GriditJobQueue
import GriditStateDatabase

/// A fixed instant plus `seconds`: every test passes its clock explicitly.
func at(_ seconds: Double) -> Date {
    Date(timeIntervalSince1970: 1_700_000_000 + seconds)
}

/// Runs `body` and returns the `StateError` it throws (nil if it does not throw one).
func storeError<T>(_ body: () async throws -> T) async -> StateError? {
    do {
        _ = try await body()
        return nil
    } catch let error as StateError {
        return error
    } catch {
        return StateError(.database, "unexpected non-StateError: \(error)")
    }
}

let sampleParams = #"{"model":"gridit-b","seed":1}"#

func submission(
    priority: Int = 0, key: String? = nil, maxAttempts: Int = 3, length: Int = 16, notBefore: Date? = nil
) -> JobSubmission {
    JobSubmission(
        params: sampleParams, length: length, priority: priority, idempotencyKey: key,
        maxAttempts: maxAttempts, notBefore: notBefore)
}
