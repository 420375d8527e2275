// Waiting for something that may not come in time, without waiting for it to give up: a
// statement on an unreachable database can wait for a connection for as long as its own
// deadline, tries and all, and `status` must answer before that; a PostgreSQL pool that does not
// close is not waited for past its limit.

import Synchronization

/// `body`'s result, or nil when it has not come within `limit`. The caller goes on at once; a
/// `body` that is late is cancelled and left to end on its own.
package func result<T: Sendable, E: Error>(
    within limit: Duration, _ body: @escaping @Sendable () async throws(E) -> T
) async -> Result<T, E>? {
    let first = FirstOutcome<Result<T, E>?>()
    let work = Task {
        do throws(E) {
            first.settle(.success(try await body()))
        } catch {
            first.settle(.failure(error))
        }
    }
    let timer = Task {
        try? await Task.sleep(for: limit)
        first.settle(nil)
    }
    let outcome = await first.value
    timer.cancel()
    if outcome == nil { work.cancel() }
    return outcome
}

/// The first of several outcomes settled (the later ones are dropped), awaited once.
private final class FirstOutcome<T: Sendable>: Sendable {
    private enum State {
        case waiting(CheckedContinuation<T, Never>?)
        case settled(T)
    }
    private let state = Mutex<State>(.waiting(nil))

    func settle(_ outcome: T) {
        let waiter: CheckedContinuation<T, Never>? = state.withLock { state in
            guard case .waiting(let waiter) = state else { return nil }
            state = .settled(outcome)
            return waiter
        }
        waiter?.resume(returning: outcome)
    }

    var value: T {
        get async {
            await withCheckedContinuation { continuation in
                let settled: T? = state.withLock { state in
                    switch state {
                    case .settled(let outcome): return outcome
                    case .waiting:
                        state = .waiting(continuation)
                        return nil
                    }
                }
                if let settled { continuation.resume(returning: settled) }
            }
        }
    }
}
