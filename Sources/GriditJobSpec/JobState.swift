// The seven states of a job, as the job queue stores them, the API shows them and griditctl
// filters by them.

import Foundation

/// The seven job states. `succeeded`, `failed`, `canceled` and `dead` are terminal: only an
/// explicit `retry` (from `failed`, `canceled`, `dead`) or `prune` leaves them.
public enum JobState: String, CaseIterable, Hashable, Sendable, Codable {
    /// Waiting to be claimed once `notBefore` has passed.
    case queued
    /// Claimed by a worker that holds the lease token.
    case running
    /// Failed transiently; claimable again once `notBefore` (the backoff) has passed.
    case retryable
    case succeeded
    /// Failed permanently, or transiently with no attempts left.
    case failed
    case canceled
    /// Crashed the engine worker (or stalled it) `RetryPolicy.maxCrashes` times.
    case dead

    public var isTerminal: Bool {
        switch self {
        case .queued, .running, .retryable: false
        case .succeeded, .failed, .canceled, .dead: true
        }
    }

    /// States a worker may claim from.
    public static let claimable: [JobState] = [.queued, .retryable]
    public static let terminal: [JobState] = allCases.filter(\.isTerminal)
}
