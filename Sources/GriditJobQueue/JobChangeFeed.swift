import Foundation
import GriditJobSpec

/// A job's row as one write committed it, told to every host (PostgreSQL: NOTIFY).
public struct JobChange: Hashable, Sendable {
    public var id: Int64
    public var state: JobState
    public var cancelRequested: Bool

    public init(id: Int64, state: JobState, cancelRequested: Bool) {
        self.id = id
        self.state = state
        self.cancelRequested = cancelRequested
    }
}

/// What a store's change feed delivers.
public enum JobChangeEvent: Hashable, Sendable {
    case job(JobChange)
    /// The queue may have changed in ways not told one by one (the feed (re)connected, notices
    /// may have been missed, the queue was resumed): look at it now.
    case lookAgain
}

/// A store that tells each host of the changes other hosts commit, as they commit. A change not
/// told costs latency only: the daemon polls the queue as well.
public protocol JobChangeFeed: Sendable {
    /// False where the store only polls (PostgreSQL behind a transaction pooler).
    var followsChanges: Bool { get }
    /// Calls `onEvent` for each change until the task is cancelled; reconnects by itself.
    func followChanges(_ onEvent: @escaping @Sendable (JobChangeEvent) -> Void) async
}
