import Foundation
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import Testing

/// The behaviour every `JobStore` backend must show, written against the protocol only.
///
/// A backend's test file runs each case with a factory that returns a fresh, empty store
/// (see `SQLiteJobStoreTests.conformance`); a PostgreSQL backend runs the same list. The
/// store is expected to use the default `RetryPolicy` (backoff 10 s · 2^attempt, cap 600 s,
/// two crashes ⇒ dead).
struct JobStoreConformance: Sendable {
    /// Limits no case here comes near, for retries that test something else.
    let roomy = SubmitLimits(maxQueued: 1_000)
    let makeStore: @Sendable () async throws -> any JobStore

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let run: @Sendable (JobStoreConformance) async throws -> Void
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "submit, claim, complete") { try await $0.submitClaimComplete() },
        Case(name: "priority, then FIFO") { try await $0.priorityThenFIFO() },
        Case(name: "idempotency key returns the same job") { try await $0.idempotency() },
        Case(name: "idempotency key under concurrent submits") { try await $0.concurrentIdempotency() },
        Case(name: "queue_full") { try await $0.queueFull() },
        Case(name: "claim is exclusive under concurrency") { try await $0.exclusiveClaims() },
        Case(name: "stale token is fenced off") { try await $0.staleToken() },
        Case(name: "lease expiry requeues with progress") { try await $0.leaseExpiry() },
        Case(name: "late heartbeat before recovery keeps the job") { try await $0.lateHeartbeat() },
        Case(name: "two crashes make a job dead") { try await $0.twoCrashesDead() },
        Case(name: "startup recovery of orphans") { try await $0.orphans() },
        Case(name: "engine crash counts, requeue does not") { try await $0.engineCrashAndRequeue() },
        Case(name: "terminal states are sticky") { try await $0.terminalSticky() },
        Case(name: "cancel queued and running") { try await $0.cancelQueuedAndRunning() },
        Case(name: "cancel checks the owner") { try await $0.cancelOwnerCheck() },
        Case(name: "retry of failed, canceled, dead") { try await $0.retryTerminal() },
        Case(name: "transient failure backs off, then fails") { try await $0.transientBackoff() },
        Case(name: "permanent failure fails at once") { try await $0.permanentFailure() },
        Case(name: "pause stops claims") { try await $0.pause() },
        Case(name: "not_before delays a claim") { try await $0.notBefore() },
        Case(name: "release lease on shutdown") { try await $0.releaseLease() },
        Case(name: "prune terminal jobs") { try await $0.prune() },
        Case(name: "list filters and queue positions") { try await $0.listAndPositions() },
        Case(name: "invalid input and unknown ids") { try await $0.invalidInput() },
        Case(name: "claim matching a batch: same pipeline and priority") { try await $0.claimMatching() },
        Case(name: "counts by state") { try await $0.countsByState() },
        Case(name: "the versions live jobs pin") { try await $0.livePins() },
        Case(name: "prune by state") { try await $0.pruneByState() },
        Case(name: "prune in batches: at most the limit, lowest ids first; the next call takes the rest") {
            try await $0.pruneInBatches()
        },
        Case(name: "list the newest jobs") { try await $0.listNewest() },
        Case(name: "job ids are never reused, not even a pruned job's") { try await $0.idsNeverReused() },
        Case(name: "per-owner limits on live jobs and estimated work") { try await $0.ownerLimits() },
        Case(name: "per-owner limit on recorded jobs: a submit-and-cancel loop stops; a retry adds no row") {
            try await $0.recordedLimit()
        },
        Case(name: "a retry is admitted under the submit limits") { try await $0.retryWithinLimits() },
        Case(name: "no two live jobs of one owner share or nest their output folders") { try await $0.outputNames() },
        Case(name: "prune with a huge age; a negative or NaN one is refused") { try await $0.pruneExtremeAges() },
        Case(name: "delete one finished job: the owner or an admin, never a live one") { try await $0.deleteOne() },
    ]

    // MARK: - Cases

    func submitClaimComplete() async throws {
        let store = try await makeStore()
        let submitted = try await store.submit(submission(), owner: 1000, maxQueued: 10, now: at(0))
        #expect(!submitted.deduplicated)
        #expect(submitted.job.state == .queued)
        #expect(submitted.job.queuePosition == 1)
        #expect(submitted.job.params == sampleParams)

        let claimed = try #require(try await store.claim(workerID: "w1", leaseDuration: 60, now: at(1)))
        #expect(claimed.job.id == submitted.job.id)
        #expect(claimed.job.state == .running)
        #expect(claimed.job.attempt == 1)
        #expect(claimed.job.leaseOwner == "w1")
        #expect(claimed.job.leaseToken == claimed.token)
        #expect(claimed.job.leaseExpiresAt == at(61))
        #expect(claimed.job.startedAt == at(1))
        #expect(try await store.claim(workerID: "w2", leaseDuration: 60, now: at(1)) == nil)

        let lease = try await store.heartbeat(id: claimed.job.id, token: claimed.token, leaseDuration: 60, now: at(30))
        #expect(lease == LeaseStatus(cancelRequested: false, leaseExpiresAt: at(90)))
        let progress = JobProgress(stage: .sr, gridsDone: 2, framesDone: 5)
        _ = try await store.saveProgress(id: claimed.job.id, token: claimed.token, progress: progress, now: at(31))

        let done = try await store.complete(id: claimed.job.id, token: claimed.token, outputDir: "/out/1", now: at(40))
        #expect(done.state == .succeeded)
        #expect(done.outputDir == "/out/1")
        #expect(done.finishedAt == at(40))
        #expect(done.leaseToken == nil)
        #expect(done.progress == progress)
        #expect(try await store.get(id: done.id) == done)
    }

    func priorityThenFIFO() async throws {
        let store = try await makeStore()
        var ids: [String: Int64] = [:]
        for (name, priority) in [("low1", 0), ("high1", 5), ("low2", 0), ("high2", 5), ("mid", 2)] {
            ids[name] = try await store.submit(submission(priority: priority), owner: 1, maxQueued: 100, now: at(0)).job
                .id
        }
        var order: [Int64] = []
        while let claimed = try await store.claim(workerID: "w", leaseDuration: 60, now: at(1)) {
            order.append(claimed.job.id)
        }
        #expect(order == ["high1", "high2", "mid", "low1", "low2"].map { ids[$0]! })
    }

    func idempotency() async throws {
        let store = try await makeStore()
        let first = try await store.submit(submission(key: "k1"), owner: 7, maxQueued: 10, now: at(0))
        let again = try await store.submit(submission(key: "k1"), owner: 7, maxQueued: 10, now: at(5))
        #expect(again.deduplicated)
        #expect(again.job.id == first.job.id)
        // Another owner's identical key is a different job.
        let other = try await store.submit(submission(key: "k1"), owner: 8, maxQueued: 10, now: at(5))
        #expect(!other.deduplicated && other.job.id != first.job.id)
        // Still the same job after it finished, and even when the queue is full.
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(6)))
        #expect(claimed.job.id == first.job.id)
        _ = try await store.complete(id: first.job.id, token: claimed.token, outputDir: "/o", now: at(7))
        let afterDone = try await store.submit(submission(key: "k1"), owner: 7, maxQueued: 0, now: at(8))
        #expect(afterDone.deduplicated && afterDone.job.id == first.job.id && afterDone.job.state == .succeeded)
        #expect(try await store.list(JobFilter()).count == 2)
        // Listed by key: keys are per owner.
        _ = try await store.submit(submission(), owner: 7, maxQueued: 10, now: at(9))
        #expect(try await store.list(JobFilter(ownerUID: 7, idempotencyKey: "k1")).map(\.id) == [first.job.id])
        #expect(try await store.list(JobFilter(ownerUID: 8, idempotencyKey: "k1")).map(\.id) == [other.job.id])
        #expect(try await store.list(JobFilter(ownerUID: 7, idempotencyKey: "k2")).isEmpty)
    }

    func concurrentIdempotency() async throws {
        let store = try await makeStore()
        let results = try await withThrowingTaskGroup(of: SubmitResult.self) { group in
            for _ in 0..<8 {
                group.addTask { try await store.submit(submission(key: "same"), owner: 3, maxQueued: 100, now: at(0)) }
            }
            var all: [SubmitResult] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(Set(results.map(\.job.id)).count == 1)
        #expect(results.filter { !$0.deduplicated }.count == 1)
        #expect(try await store.list(JobFilter()).count == 1)
    }

    func queueFull() async throws {
        let store = try await makeStore()
        _ = try await store.submit(submission(), owner: 1, maxQueued: 2, now: at(0))
        _ = try await store.submit(submission(), owner: 1, maxQueued: 2, now: at(0))
        let error = await storeError { try await store.submit(submission(), owner: 1, maxQueued: 2, now: at(0)) }
        #expect(error?.code == .queueFull)
        #expect(error?.message.contains("max_queued 2") == true)
        // A running job still counts; a finished one does not.
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(1)))
        #expect(
            await storeError { try await store.submit(submission(), owner: 1, maxQueued: 2, now: at(1)) }?.code
                == .queueFull)
        _ = try await store.complete(id: claimed.job.id, token: claimed.token, outputDir: "/o", now: at(2))
        _ = try await store.submit(submission(), owner: 1, maxQueued: 2, now: at(3))
        #expect(try await store.list(JobFilter()).count == 3)
    }

    func exclusiveClaims() async throws {
        let store = try await makeStore()
        let jobCount = 200
        let claimers = 8
        for _ in 0..<jobCount {
            _ = try await store.submit(submission(), owner: 1, maxQueued: jobCount, now: at(0))
        }
        let claims = try await withThrowingTaskGroup(of: [ClaimedJob].self) { group in
            for worker in 0..<claimers {
                group.addTask {
                    var mine: [ClaimedJob] = []
                    while let claimed = try await store.claim(workerID: "w\(worker)", leaseDuration: 60, now: at(1)) {
                        mine.append(claimed)
                    }
                    return mine
                }
            }
            var all: [ClaimedJob] = []
            for try await batch in group { all += batch }
            return all
        }
        #expect(claims.count == jobCount)
        #expect(Set(claims.map(\.job.id)).count == jobCount)
        #expect(Set(claims.map(\.token)).count == jobCount)
        let running = try await store.list(JobFilter(states: [.running], limit: 1000))
        #expect(running.count == jobCount)
        #expect(running.allSatisfy { $0.attempt == 1 })
    }

    func staleToken() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let old = try #require(try await store.claim(workerID: "old", leaseDuration: 60, now: at(0)))
        let recovered = try await store.recoverExpiredLeases(now: at(61))
        #expect(recovered.map(\.id) == [id])
        let new = try #require(try await store.claim(workerID: "new", leaseDuration: 60, now: at(62)))
        #expect(new.job.id == id && new.token != old.token)

        #expect(
            await storeError { try await store.heartbeat(id: id, token: old.token, leaseDuration: 60, now: at(63)) }?
                .code == .leaseLost)
        #expect(
            await storeError {
                try await store.saveProgress(id: id, token: old.token, progress: JobProgress(stage: .sr), now: at(63))
            }?.code == .leaseLost)
        #expect(
            await storeError { try await store.complete(id: id, token: old.token, outputDir: "/stale", now: at(63)) }?
                .code == .leaseLost)
        #expect(
            await storeError {
                try await store.fail(
                    id: id, token: old.token, errorClass: "io", message: "x", retryable: true, now: at(63))
            }?.code == .leaseLost)
        #expect(
            await storeError { try await store.releaseLease(id: id, token: old.token, now: at(63)) }?.code == .leaseLost
        )

        // Nothing changed for the new holder.
        let job = try await store.get(id: id)
        #expect(job.state == .running && job.leaseOwner == "new" && job.leaseToken == new.token)
        #expect(job.outputDir == nil && job.progress == JobProgress())
        _ = try await store.complete(id: id, token: new.token, outputDir: "/fresh", now: at(64))
    }

    func leaseExpiry() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(0)))
        let progress = JobProgress(stage: .sr, gridsDone: 4, framesDone: 9)
        _ = try await store.saveProgress(id: id, token: claimed.token, progress: progress, now: at(10))
        _ = try await store.heartbeat(id: id, token: claimed.token, leaseDuration: 60, now: at(50))  // until 110

        #expect(try await store.recoverExpiredLeases(now: at(109)).isEmpty)
        #expect(
            try await store.recoverExpiredLeases(now: at(110), sparing: [id]).isEmpty,
            "spared: its worker is supervised")
        let recovered = try await store.recoverExpiredLeases(now: at(110))
        #expect(recovered.count == 1)
        let job = try await store.get(id: id)
        #expect(job.state == .queued)
        #expect(job.crashCount == 1)
        #expect(job.progress == progress)
        #expect(job.leaseToken == nil && job.leaseOwner == nil && job.leaseExpiresAt == nil)
        #expect(job.errorClass == workerCrashedErrorClass)
        let errors = try await store.errors(id: id)
        #expect(errors.count == 1 && errors[0].errorClass == workerCrashedErrorClass && errors[0].attempt == 1)

        let again = try #require(try await store.claim(workerID: "w2", leaseDuration: 60, now: at(111)))
        #expect(again.job.id == id && again.job.attempt == 2 && again.job.progress == progress)
        #expect(again.job.startedAt == at(0))
    }

    func lateHeartbeat() async throws {
        // The token, not the clock, decides: a worker that heartbeats after its lease ran out
        // but before anyone recovered the job still owns it.
        let store = try await makeStore()
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(0)))
        let lease = try await store.heartbeat(id: id, token: claimed.token, leaseDuration: 60, now: at(70))
        #expect(lease.leaseExpiresAt == at(130))
        #expect(try await store.recoverExpiredLeases(now: at(129)).isEmpty)
        #expect(try await store.get(id: id).state == .running)
    }

    func twoCrashesDead() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let other = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        _ = try #require(try await store.claim(workerID: "w", leaseDuration: 10, now: at(0)))
        _ = try await store.recoverExpiredLeases(now: at(10))
        let second = try #require(try await store.claim(workerID: "w", leaseDuration: 10, now: at(11)))
        #expect(second.job.id == id)
        let recovered = try await store.recoverExpiredLeases(now: at(21))
        #expect(recovered.map(\.state) == [.dead])
        let job = try await store.get(id: id)
        #expect(job.state == .dead && job.crashCount == 2 && job.finishedAt == at(21))
        #expect(job.errorClass == workerCrashedErrorClass)
        #expect(job.errorMessage?.contains("2 times") == true)
        #expect(try await store.errors(id: id).count == 2)
        // The queue keeps draining.
        #expect(try await store.claim(workerID: "w", leaseDuration: 10, now: at(22))?.job.id == other)
    }

    func orphans() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        _ = try #require(try await store.claim(workerID: "w", leaseDuration: 600, now: at(0)))
        #expect(try await store.recoverExpiredLeases(now: at(1)).isEmpty)
        // griditd died under it: requeued at its progress, neither a crash nor an attempt counted.
        for n in 1...3 {
            let recovered = try await store.recoverOrphanedJobs(now: at(Double(n)))
            #expect(recovered.map(\.id) == [id])
            let job = try await store.get(id: id)
            #expect(job.state == .queued && job.crashCount == 0 && job.attempt == 0)
            _ = try #require(try await store.claim(workerID: "w", leaseDuration: 600, now: at(Double(n))))
        }
        #expect(try await store.errors(id: id).map(\.errorClass) == Array(repeating: interruptedErrorClass, count: 3))
    }

    func engineCrashAndRequeue() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let first = try #require(try await store.claim(workerID: "w", leaseDuration: 600, now: at(0)))
        // Killed from outside: back without a crash or an attempt, the reason in the history.
        let requeued = try await store.requeue(id: id, token: first.token, reason: "killed from outside", now: at(1))
        #expect(requeued.state == .queued && requeued.crashCount == 0 && requeued.attempt == 0)
        #expect(
            await storeError { try await store.requeue(id: id, token: first.token, reason: "again", now: at(2)) }?.code
                == .leaseLost)
        // An engine crash counts; the second one is dead.
        let second = try #require(try await store.claim(workerID: "w", leaseDuration: 600, now: at(2)))
        let crashed = try await store.recordWorkerCrash(id: id, token: second.token, message: "SIGSEGV", now: at(3))
        #expect(crashed.state == .queued && crashed.crashCount == 1 && crashed.errorClass == workerCrashedErrorClass)
        #expect(
            await storeError {
                try await store.recordWorkerCrash(id: id, token: second.token, message: "x", now: at(4))
            }?.code == .leaseLost)
        let third = try #require(try await store.claim(workerID: "w", leaseDuration: 600, now: at(4)))
        #expect(
            try await store.recordWorkerCrash(id: id, token: third.token, message: "SIGBUS", now: at(5)).state == .dead)
        #expect(
            try await store.errors(id: id).map(\.errorClass) == [
                interruptedErrorClass, workerCrashedErrorClass, workerCrashedErrorClass,
            ])
    }

    func terminalSticky() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(0)))
        _ = try await store.cancel(id: id, requesterUID: 1, isAdmin: false, now: at(1))
        _ = try await store.acknowledgeCancel(id: id, token: claimed.token, now: at(2))
        #expect(try await store.get(id: id).state == .canceled)

        let complete = await storeError {
            try await store.complete(id: id, token: claimed.token, outputDir: "/o", now: at(3))
        }
        #expect(complete?.code == .invalidTransition)
        #expect(
            await storeError { try await store.heartbeat(id: id, token: claimed.token, leaseDuration: 60, now: at(3)) }
                != nil)
        #expect(try await store.get(id: id).state == .canceled)
        #expect(try await store.get(id: id).outputDir == nil)

        // succeeded: cannot be canceled or retried.
        let id2 = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let c2 = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(4)))
        _ = try await store.complete(id: id2, token: c2.token, outputDir: "/o2", now: at(5))
        #expect(
            await storeError { try await store.cancel(id: id2, requesterUID: 1, isAdmin: true, now: at(6)) }?.code
                == .invalidTransition)
        #expect(
            await storeError {
                try await store.retry(id: id2, requesterUID: 1, isAdmin: true, limits: roomy, now: at(6))
            }?.code
                == .invalidTransition)
        #expect(
            await storeError { try await store.complete(id: id2, token: c2.token, outputDir: "/again", now: at(6)) }?
                .code == .invalidTransition)
        #expect(try await store.get(id: id2).outputDir == "/o2")
    }

    func cancelQueuedAndRunning() async throws {
        let store = try await makeStore()
        let queued = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let canceled = try await store.cancel(id: queued, requesterUID: 1, isAdmin: false, now: at(1))
        #expect(canceled.state == .canceled && canceled.finishedAt == at(1))
        // Idempotent.
        #expect(try await store.cancel(id: queued, requesterUID: 1, isAdmin: false, now: at(2)).state == .canceled)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, now: at(2)) == nil)

        let running = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(3)).job.id
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(3)))
        let requested = try await store.cancel(id: running, requesterUID: 1, isAdmin: false, now: at(4))
        #expect(requested.state == .running && requested.cancelRequested)
        let lease = try await store.heartbeat(id: running, token: claimed.token, leaseDuration: 60, now: at(5))
        #expect(lease.cancelRequested)
        let progress = try await store.saveProgress(
            id: running, token: claimed.token, progress: JobProgress(gridsDone: 1), now: at(6))
        #expect(progress.cancelRequested)
        let done = try await store.acknowledgeCancel(id: running, token: claimed.token, now: at(7))
        #expect(done.state == .canceled && done.leaseToken == nil && done.finishedAt == at(7))

        // A cancel-requested job whose worker dies is canceled, not requeued.
        let third = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(8)).job.id
        _ = try #require(try await store.claim(workerID: "w", leaseDuration: 10, now: at(8)))
        _ = try await store.cancel(id: third, requesterUID: 1, isAdmin: false, now: at(9))
        _ = try await store.recoverExpiredLeases(now: at(18))
        #expect(try await store.get(id: third).state == .canceled)
    }

    func cancelOwnerCheck() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(), owner: 1000, maxQueued: 10, now: at(0)).job.id
        let error = await storeError { try await store.cancel(id: id, requesterUID: 1001, isAdmin: false, now: at(1)) }
        #expect(error?.code == .forbidden)
        #expect(error?.message.contains("1000") == true)
        #expect(try await store.get(id: id).state == .queued)
        #expect(try await store.cancel(id: id, requesterUID: 0, isAdmin: true, now: at(2)).state == .canceled)
        #expect(
            await storeError {
                try await store.retry(id: id, requesterUID: 1001, isAdmin: false, limits: roomy, now: at(3))
            }?.code
                == .forbidden)
    }

    func retryTerminal() async throws {
        let store = try await makeStore()
        // failed (permanent)
        let failed = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let c1 = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(0)))
        _ = try await store.fail(
            id: failed, token: c1.token, errorClass: "invalid", message: "bad", retryable: false, now: at(1))
        // canceled
        let canceled = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(2)).job.id
        _ = try await store.cancel(id: canceled, requesterUID: 1, isAdmin: false, now: at(2))
        // dead
        let dead = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(3)).job.id
        _ = try #require(try await store.claim(workerID: "w", leaseDuration: 1, now: at(3)))
        _ = try await store.recoverExpiredLeases(now: at(4))
        _ = try #require(try await store.claim(workerID: "w", leaseDuration: 1, now: at(5)))
        _ = try await store.recoverExpiredLeases(now: at(6))
        #expect(try await store.get(id: dead).state == .dead)

        for id in [failed, canceled, dead] {
            let job = try await store.retry(id: id, requesterUID: 1, isAdmin: false, limits: roomy, now: at(10))
            #expect(job.state == .queued, "job \(id)")
            #expect(job.attempt == 0 && job.crashCount == 0 && !job.cancelRequested && job.finishedAt == nil)
            #expect(job.errorClass == nil && job.notBefore == at(10))
        }
        // The history survives the retry.
        #expect(try await store.errors(id: failed).count == 1)
        #expect(try await store.errors(id: dead).count == 2)
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(10)))
        #expect(claimed.job.id == failed && claimed.job.attempt == 1)
        // Retrying a queued or running job is not allowed.
        #expect(
            await storeError {
                try await store.retry(id: canceled, requesterUID: 1, isAdmin: false, limits: roomy, now: at(11))
            }?.code
                == .invalidTransition)
    }

    func transientBackoff() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(maxAttempts: 3), owner: 1, maxQueued: 10, now: at(0)).job.id
        let c1 = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(0)))
        let r1 = try await store.fail(
            id: id, token: c1.token, errorClass: "io", message: "EIO on frame 3", retryable: true, now: at(5))
        #expect(r1.state == .retryable)
        #expect(r1.notBefore == at(5 + 20))  // 10 s · 2^1
        #expect(r1.errorClass == "io" && r1.errorMessage == "EIO on frame 3")
        #expect(r1.leaseToken == nil && r1.finishedAt == nil)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, now: at(24)) == nil)

        let c2 = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(25)))
        #expect(c2.job.id == id && c2.job.attempt == 2)
        let r2 = try await store.fail(
            id: id, token: c2.token, errorClass: "oom", message: "ENOMEM", retryable: true, now: at(30))
        #expect(r2.state == .retryable && r2.notBefore == at(30 + 40))  // 10 s · 2^2

        let c3 = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(70)))
        let r3 = try await store.fail(
            id: id, token: c3.token, errorClass: "io", message: "EIO again", retryable: true, now: at(80))
        #expect(r3.state == .failed && r3.finishedAt == at(80))
        let errors = try await store.errors(id: id)
        #expect(errors.map(\.attempt) == [1, 2, 3])
        #expect(errors.map(\.errorClass) == ["io", "oom", "io"])
        #expect(errors.map(\.at) == [at(5), at(30), at(80)])
    }

    func permanentFailure() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(maxAttempts: 3), owner: 1, maxQueued: 10, now: at(0)).job.id
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(0)))
        let job = try await store.fail(
            id: id, token: claimed.token, errorClass: "invalid_params", message: "no such model", retryable: false,
            now: at(1))
        #expect(job.state == .failed && job.errorClass == "invalid_params" && job.errorMessage == "no such model")
        #expect(try await store.errors(id: id).count == 1)
    }

    func pause() async throws {
        let store = try await makeStore()
        #expect(try await store.isPaused() == false)
        try await store.setPaused(true)
        #expect(try await store.isPaused())
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, now: at(1)) == nil)
        try await store.setPaused(false)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, now: at(2))?.job.id == id)
    }

    func notBefore() async throws {
        let store = try await makeStore()
        let later = try await store.submit(
            submission(priority: 9, notBefore: at(100)), owner: 1, maxQueued: 10, now: at(0)
        ).job.id
        let now = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, now: at(1))?.job.id == now)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, now: at(99)) == nil)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, now: at(100))?.job.id == later)
    }

    func releaseLease() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(0)))
        _ = try await store.saveProgress(id: id, token: claimed.token, progress: JobProgress(gridsDone: 3), now: at(1))
        let released = try await store.releaseLease(id: id, token: claimed.token, now: at(2))
        #expect(released.state == .queued && released.crashCount == 0 && released.progress.gridsDone == 3)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, now: at(2))?.job.id == id)
    }

    func prune() async throws {
        let store = try await makeStore()
        let old = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let c = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(0)))
        _ = try await store.fail(
            id: old, token: c.token, errorClass: "invalid", message: "bad", retryable: false, now: at(10))
        let oldDone = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let c2 = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(11)))
        _ = try await store.complete(id: oldDone, token: c2.token, outputDir: "/out/old", now: at(12))
        let recent = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        _ = try await store.cancel(id: recent, requesterUID: 1, isAdmin: false, now: at(500))
        let waiting = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id

        // olderThan 100 s at t=599: cutoff 499 keeps the job canceled at 500.
        let pruned = try await store.prune(olderThan: 100, now: at(599))
        #expect(pruned.map(\.id) == [old, oldDone])
        #expect(pruned.map(\.outputDir) == [nil, "/out/old"])
        #expect(pruned.map(\.state) == [.failed, .succeeded])
        #expect(await storeError { try await store.get(id: old) }?.code == .notFound)
        #expect(await storeError { try await store.errors(id: old) }?.code == .notFound)
        #expect(try await store.list(JobFilter()).map(\.id) == [recent, waiting])
        #expect(try await store.prune(olderThan: 100, now: at(600)).map(\.id) == [recent])
        #expect(try await store.list(JobFilter()).map(\.id) == [waiting])
    }

    /// A job of owner 1 submitted at 0 and succeeded at 1 into `output`.
    func succeededJob(_ store: any JobStore, output: String) async throws -> Int64 {
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(0)))
        _ = try await store.complete(id: id, token: claimed.token, outputDir: output, now: at(1))
        return id
    }

    func deleteOne() async throws {
        let store = try await makeStore()
        let done = try await succeededJob(store, output: "/out/done")
        let waiting = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(2)).job.id
        #expect(
            await storeError { try await store.delete(id: waiting, requesterUID: 1, isAdmin: false, now: at(3)) }?
                .code == .invalidTransition)
        #expect(
            await storeError { try await store.delete(id: done, requesterUID: 2, isAdmin: false, now: at(3)) }?
                .code == .forbidden)
        let deleted = try await store.delete(id: done, requesterUID: 1, isAdmin: false, now: at(3))
        #expect(deleted.id == done && deleted.state == .succeeded && deleted.outputDir == "/out/done")
        // With what its output's sequence.json is checked against.
        #expect(deleted.params == sampleParams && deleted.length == 16 && deleted.pipelineDigest == nil)
        #expect(await storeError { try await store.get(id: done) }?.code == .notFound)
        #expect(
            await storeError { try await store.delete(id: done, requesterUID: 1, isAdmin: true, now: at(4)) }?.code
                == .notFound)
        #expect(try await store.list(JobFilter()).map(\.id) == [waiting])
    }

    func idsNeverReused() async throws {
        let store = try await makeStore()
        var ids: [Int64] = []
        for _ in 0..<3 { ids.append(try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id) }
        for id in ids.suffix(2) { _ = try await store.cancel(id: id, requesterUID: 1, isAdmin: false, now: at(1)) }
        #expect(try await store.prune(olderThan: 0, now: at(2)).map(\.id) == Array(ids.suffix(2)))
        // The newest ids are gone; the next job must not get one of them (nor its folders).
        let next = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(3)).job.id
        #expect(next > ids.max()!, "job id \(next) handed out again after a prune of \(ids)")
    }

    func retryWithinLimits() async throws {
        let store = try await makeStore()
        let limits = SubmitLimits(maxQueued: 3, maxQueuedPerOwner: 2, maxWorkPerOwner: 100)
        func work(_ seconds: Double) -> JobSubmission {
            JobSubmission(params: sampleParams, length: 4, workSeconds: seconds)
        }
        func retry(_ id: Int64, by uid: UInt32, _ limits: SubmitLimits) async -> StateError? {
            await storeError {
                try await store.retry(id: id, requesterUID: uid, isAdmin: uid == 0, limits: limits, now: at(5))
            }
        }
        // Two of owner 1's jobs canceled, two more queued: a retry is one more live job of theirs.
        let a = try await store.submit(work(10), owner: 1, limits: limits, now: at(0)).job.id
        let b = try await store.submit(work(90), owner: 1, limits: limits, now: at(0)).job.id
        for id in [a, b] { _ = try await store.cancel(id: id, requesterUID: 1, isAdmin: false, now: at(1)) }
        _ = try await store.submit(work(10), owner: 1, limits: limits, now: at(2))
        _ = try await store.submit(work(10), owner: 1, limits: limits, now: at(2))
        let owner = await retry(a, by: 1, limits)
        #expect(owner?.code == .ownerJobLimit, "\(String(describing: owner))")
        #expect(try await store.get(id: a).state == .canceled)
        // The work limit counts the retried job's own estimate.
        let roomForJobs = SubmitLimits(maxQueued: 3, maxQueuedPerOwner: 3, maxWorkPerOwner: 100)
        let heavy = await retry(b, by: 1, roomForJobs)
        #expect(heavy?.code == .ownerWorkLimit, "\(String(describing: heavy))")
        #expect(await retry(a, by: 1, roomForJobs) == nil)
        #expect(try await store.get(id: a).state == .queued)
        // The queue's own size binds admins too.
        _ = try await store.cancel(id: a, requesterUID: 1, isAdmin: false, now: at(6))
        _ = try await store.submit(work(0), owner: 2, maxQueued: 3, now: at(6))
        let full = await retry(a, by: 0, SubmitLimits(maxQueued: 3))
        #expect(full?.code == .queueFull, "\(String(describing: full))")
        #expect(try await store.get(id: a).state == .canceled)
        // A job that cannot be retried says so, whatever the limits.
        let live = try await store.submit(work(0), owner: 2, maxQueued: 10, now: at(7)).job.id
        #expect(await retry(live, by: 2, SubmitLimits(maxQueued: 1))?.code == .invalidTransition)
    }

    func outputNames() async throws {
        let store = try await makeStore()
        func named(_ name: String?, key: String? = nil) -> JobSubmission {
            JobSubmission(params: sampleParams, length: 4, idempotencyKey: key, outputName: name)
        }
        func submit(_ name: String?, owner: UInt32 = 1, key: String? = nil) async throws -> SubmitResult {
            try await store.submit(named(name, key: key), owner: owner, maxQueued: 100, now: at(1))
        }
        let a = try await submit("cats/a", key: "k").job.id
        // Its name, one inside it, one around it: refused, naming the job; nothing created.
        for name in ["cats/a", "cats/a/b/c", "cats"] {
            let error = await storeError { try await submit(name) }
            #expect(error?.code == .outputTaken && error?.jobID == a, "\(name): \(String(describing: error))")
        }
        let inside = await storeError { try await submit("cats/a/b") }
        #expect(inside?.message == "job \(a) writes to the output 'cats/a', and outputs cannot lie inside one another")
        #expect(try await store.list(JobFilter()).map(\.id) == [a])
        // The same key is the same job; beside it, a name that only starts alike, another user's
        // folder and the automatic one are all free.
        #expect(try await submit("cats/a", key: "k").deduplicated)
        for (name, owner) in [("cats/b", 1), ("cats/ab", 1), ("cats/a/b", 2), (nil, 1)] as [(String?, UInt32)] {
            #expect(await storeError { try await submit(name, owner: owner) } == nil, "\(String(describing: name))")
        }
        // A finished job's name is no live job's (the daemon checks its folder on disk)...
        _ = try await store.cancel(id: a, requesterUID: 1, isAdmin: false, now: at(2))
        let c = try await submit("cats/a/b").job.id
        // ... and a retry brings it back only where it is free: the job stays canceled meanwhile.
        let retried = await storeError {
            try await store.retry(id: a, requesterUID: 1, isAdmin: false, limits: roomy, now: at(3))
        }
        #expect(retried?.code == .outputTaken && retried?.jobID == c, "\(String(describing: retried))")
        #expect(try await store.get(id: a).state == .canceled)
        _ = try await store.cancel(id: c, requesterUID: 1, isAdmin: false, now: at(4))
        let back = try await store.retry(id: a, requesterUID: 1, isAdmin: false, limits: roomy, now: at(5))
        #expect(back.state == .queued)
        // Racing submits of nested names (two hosts at once, on a shared database): one wins.
        for _ in 0..<5 {
            let round = UUID().uuidString
            async let outer = storeError { try await submit(round) }
            async let inner = storeError { try await submit(round + "/x") }
            let errors = await [outer, inner]
            #expect(errors.filter { $0 == nil }.count == 1 && errors.compactMap(\.?.code) == [.outputTaken])
        }
    }

    func recordedLimit() async throws {
        let store = try await makeStore()
        let limits = SubmitLimits(maxQueued: 100, maxQueuedPerOwner: 5, maxRecordedPerOwner: 3)
        let job = JobSubmission(params: sampleParams, length: 4)
        // Submit and cancel: never more than one live job, a row each time.
        var ids: [Int64] = []
        for i in 0..<3 {
            let id = try await store.submit(job, owner: 1, limits: limits, now: at(Double(i))).job.id
            _ = try await store.cancel(id: id, requesterUID: 1, isAdmin: false, now: at(Double(i)))
            ids.append(id)
        }
        let fourth = await storeError { try await store.submit(job, owner: 1, limits: limits, now: at(4)) }
        #expect(fourth?.code == .ownerHistoryLimit, "\(String(describing: fourth))")
        #expect(
            fourth?.message == "uid 1 has 3 jobs recorded, finished ones included, the most one user may have (3)",
            "\(fourth?.message ?? "")")
        #expect(try await store.list(JobFilter()).count == 3)
        // A retry brings back a row it already has; others' jobs are theirs; no limit, no check.
        let retried = try await store.retry(id: ids[0], requesterUID: 1, isAdmin: false, limits: limits, now: at(5))
        #expect(retried.state == .queued)
        _ = try await store.submit(job, owner: 2, limits: limits, now: at(6))
        _ = try await store.submit(job, owner: 1, limits: SubmitLimits(maxQueued: 100), now: at(6))
        // Removing a finished job makes room.
        _ = try await store.delete(id: ids[1], requesterUID: 1, isAdmin: false, now: at(7))
        _ = try await store.delete(id: ids[2], requesterUID: 1, isAdmin: false, now: at(7))
        #expect(await storeError { try await store.submit(job, owner: 1, limits: limits, now: at(8)) } == nil)
    }

    func ownerLimits() async throws {
        let store = try await makeStore()
        let limits = SubmitLimits(maxQueued: 100, maxQueuedPerOwner: 2, maxWorkPerOwner: 100)
        func work(_ seconds: Double, key: String? = nil) -> JobSubmission {
            JobSubmission(params: sampleParams, length: 4, idempotencyKey: key, workSeconds: seconds)
        }
        let first = try await store.submit(work(60, key: "k"), owner: 1, limits: limits, now: at(0)).job
        #expect(first.workSeconds == 60)
        let tooMuch = await storeError { try await store.submit(work(41), owner: 1, limits: limits, now: at(0)) }
        #expect(tooMuch?.code == .ownerWorkLimit)
        #expect(
            tooMuch?.message.contains("uid 1") == true && tooMuch?.message.contains("(60 s)") == true,
            "\(tooMuch?.message ?? "")")
        _ = try await store.submit(work(40), owner: 1, limits: limits, now: at(0))
        let third = await storeError { try await store.submit(work(0), owner: 1, limits: limits, now: at(0)) }
        #expect(third?.code == .ownerJobLimit)
        #expect(third?.message.contains("has 2 jobs queued or running") == true, "\(third?.message ?? "")")
        // A repeated idempotent submit returns its job whatever the limits; others' jobs are theirs.
        #expect(try await store.submit(work(60, key: "k"), owner: 1, limits: limits, now: at(0)).job.id == first.id)
        _ = try await store.submit(work(100), owner: 2, limits: limits, now: at(0))
        _ = try await store.submit(work(1_000_000), owner: 3, maxQueued: 100, now: at(0))
        // A finished job frees its share; a running one still counts.
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(1)))
        #expect(claimed.job.id == first.id)
        #expect(
            await storeError { try await store.submit(work(0), owner: 1, limits: limits, now: at(1)) }?.code
                == .ownerJobLimit)
        _ = try await store.complete(id: first.id, token: claimed.token, outputDir: "/o", now: at(2))
        _ = try await store.submit(work(60), owner: 1, limits: limits, now: at(3))
        #expect(
            await storeError { try await store.submit(work(-1), owner: 4, maxQueued: 100, now: at(3)) }?.code
                == .invalidArgument)
        #expect(
            await storeError { try await store.submit(work(.nan), owner: 4, maxQueued: 100, now: at(3)) }?.code
                == .invalidArgument)
    }

    func pruneExtremeAges() async throws {
        let store = try await makeStore()
        let id = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        _ = try await store.cancel(id: id, requesterUID: 1, isAdmin: false, now: at(1))
        // `jobs prune --older-than 1e300s` once trapped converting the cutoff to milliseconds.
        for age: TimeInterval in [1e300, .greatestFiniteMagnitude, .infinity] {
            #expect(try await store.prune(olderThan: age, now: at(2)).isEmpty)
        }
        for age: TimeInterval in [-1, -.infinity, .nan] {
            #expect(await storeError { try await store.prune(olderThan: age, now: at(2)) }?.code == .invalidArgument)
        }
        #expect(try await store.prune(olderThan: 0, now: at(2)).map(\.id) == [id])
    }

    func listAndPositions() async throws {
        let store = try await makeStore()
        let a = try await store.submit(submission(priority: 0), owner: 1, maxQueued: 10, now: at(0)).job
        let b = try await store.submit(submission(priority: 1), owner: 2, maxQueued: 10, now: at(0)).job
        let c = try await store.submit(submission(priority: 0), owner: 2, maxQueued: 10, now: at(0)).job
        #expect(a.queuePosition == 1 && b.queuePosition == 1 && c.queuePosition == 3)
        #expect(try await store.get(id: a.id).queuePosition == 2)
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(1)))
        #expect(claimed.job.id == b.id)

        let all = try await store.list(JobFilter())
        #expect(all.map(\.id) == [a.id, b.id, c.id])
        #expect(all.map(\.queuePosition) == [1, nil, 2])
        #expect(try await store.list(JobFilter(states: [.running])).map(\.id) == [b.id])
        #expect(try await store.list(JobFilter(states: [.queued], ownerUID: 2)).map(\.id) == [c.id])
        #expect(try await store.list(JobFilter(ownerUID: 2)).map(\.id) == [b.id, c.id])
        #expect(try await store.list(JobFilter(limit: 1)).map(\.id) == [a.id])
    }

    func invalidInput() async throws {
        let store = try await makeStore()
        #expect(await storeError { try await store.get(id: 424242) }?.code == .notFound)
        #expect(
            await storeError { try await store.cancel(id: 424242, requesterUID: 0, isAdmin: true, now: at(0)) }?.code
                == .notFound)
        #expect(
            await storeError {
                try await store.heartbeat(id: 424242, token: LeaseToken(rawValue: 1), leaseDuration: 60, now: at(0))
            }?.code == .notFound)
        let notJSON = JobSubmission(params: "{not json", length: 4)
        #expect(
            await storeError { try await store.submit(notJSON, owner: 1, maxQueued: 10, now: at(0)) }?.code
                == .invalidArgument)
        #expect(
            await storeError { try await store.submit(submission(length: 0), owner: 1, maxQueued: 10, now: at(0)) }?
                .code == .invalidArgument)
        #expect(
            await storeError { try await store.claim(workerID: "", leaseDuration: 60, now: at(0)) }?.code
                == .invalidArgument)
        #expect(try await store.list(JobFilter()).isEmpty)
    }

    func claimMatching() async throws {
        let store = try await makeStore()
        func submit(_ digest: String?, _ priority: Int) async throws -> Int64 {
            try await store.submit(
                JobSubmission(params: sampleParams, length: 4, priority: priority, pipelineDigest: digest),
                owner: 1, maxQueued: 100, now: at(0)
            ).job.id
        }
        let a1 = try await submit("sha256:a", 0)
        let b1 = try await submit("sha256:b", 0)
        let a2 = try await submit("sha256:a", 0)
        let aHigh = try await submit("sha256:a", 5)
        let none = try await submit(nil, 0)
        let a = ClaimFilter(pipelineDigest: "sha256:a", priority: 0)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: a, now: at(1))?.job.id == a1)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: a, now: at(1))?.job.id == a2)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: a, now: at(1)) == nil)
        let unset = ClaimFilter(pipelineDigest: nil, priority: 0)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: unset, now: at(1))?.job.id == none)
        // A paused queue gives nothing, filter or not.
        try await store.setPaused(true)
        let b = ClaimFilter(pipelineDigest: "sha256:b", priority: 0)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: b, now: at(1)) == nil)
        try await store.setPaused(false)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, now: at(1))?.job.id == aHigh)
        // Next in line only: b1 waits first, so an `a` job may not join; then b1 may.
        let a3 = try await submit("sha256:a", 0)
        let aNext = ClaimFilter(pipelineDigest: "sha256:a", priority: 0, nextInLineOnly: true)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: aNext, now: at(1)) == nil)
        let bNext = ClaimFilter(pipelineDigest: "sha256:b", priority: 0, nextInLineOnly: true)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: bNext, now: at(1))?.job.id == b1)
        var excluded = aNext
        excluded.excluding = [a3]
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: excluded, now: at(1)) == nil)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: aNext, now: at(1))?.job.id == a3)
        // Jobs that crashed a worker (here: all that were running) join no batch unless the filter allows it.
        let a4 = try await submit("sha256:a", 0)
        _ = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(1)))
        for job in try await store.list(JobFilter(states: [.running])) {
            _ = try await store.recordWorkerCrash(
                id: job.id, token: try #require(job.leaseToken), message: "SIGSEGV", now: at(2))
        }
        #expect(try await store.get(id: a4).crashCount == 1)
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: a, now: at(3)) == nil)
        var crashedToo = a
        crashedToo.neverCrashed = false
        #expect(try await store.claim(workerID: "w", leaseDuration: 60, matching: crashedToo, now: at(3))?.job.id == a1)
    }

    func countsByState() async throws {
        let store = try await makeStore()
        #expect(try await store.counts().isEmpty)
        for _ in 0..<3 { _ = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)) }
        let claimed = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(1)))
        _ = try await store.complete(id: claimed.job.id, token: claimed.token, outputDir: "/o", now: at(2))
        _ = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(3)))
        #expect(try await store.counts() == [.queued: 1, .running: 1, .succeeded: 1])
    }

    func livePins() async throws {
        let store = try await makeStore()
        #expect(try await store.livePipelinePins().isEmpty)
        func submit(_ digest: String?) async throws -> Int64 {
            try await store.submit(
                JobSubmission(params: sampleParams, length: 4, pipelineDigest: digest), owner: 1, maxQueued: 10,
                now: at(0)
            ).job.id
        }
        let a1 = try await submit("sha256:a"), b = try await submit("sha256:b"), a2 = try await submit("sha256:a")
        _ = try await submit(nil)
        let done = try await submit("sha256:c")
        _ = try await store.cancel(id: done, requesterUID: 1, isAdmin: false, now: at(1))
        let running = try #require(try await store.claim(workerID: "w", leaseDuration: 60, now: at(2)))
        #expect(running.job.id == a1)
        // Queued, retryable and running jobs pin; terminal ones and jobs without a digest do not.
        #expect(try await store.livePipelinePins() == ["sha256:a": [a1, a2], "sha256:b": [b]])
        _ = try await store.complete(id: a1, token: running.token, outputDir: "/o", now: at(3))
        #expect(try await store.livePipelinePins() == ["sha256:a": [a2], "sha256:b": [b]])
    }

    func pruneByState() async throws {
        let store = try await makeStore()
        let done = try await succeededJob(store, output: "/o")
        let canceled = try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id
        _ = try await store.cancel(id: canceled, requesterUID: 1, isAdmin: false, now: at(1))
        // Non-terminal states in the set are ignored.
        #expect(try await store.prune(olderThan: 0, states: [.succeeded, .queued], now: at(10)).map(\.id) == [done])
        #expect(try await store.prune(olderThan: 0, states: [.queued], now: at(10)).isEmpty)
        #expect(try await store.list(JobFilter()).map(\.id) == [canceled])
    }

    func pruneInBatches() async throws {
        let store = try await makeStore()
        var ids: [Int64] = []
        for _ in 0..<5 { ids.append(try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id) }
        for id in ids { _ = try await store.cancel(id: id, requesterUID: 1, isAdmin: false, now: at(1)) }
        let states: Set<JobState> = [.canceled]
        #expect(
            try await store.prune(olderThan: 0, states: states, now: at(2), limit: 2).map(\.id) == [ids[0], ids[1]])
        #expect(try await store.list(JobFilter()).map(\.id) == Array(ids.suffix(3)))
        #expect(
            try await store.prune(olderThan: 0, states: states, now: at(2), limit: 2).map(\.id) == [ids[2], ids[3]])
        #expect(try await store.prune(olderThan: 0, states: states, now: at(2), limit: 2).map(\.id) == [ids[4]])
        #expect(try await store.prune(olderThan: 0, states: states, now: at(2), limit: 2).isEmpty)
    }

    func listNewest() async throws {
        let store = try await makeStore()
        var ids: [Int64] = []
        for _ in 0..<5 { ids.append(try await store.submit(submission(), owner: 1, maxQueued: 10, now: at(0)).job.id) }
        #expect(try await store.list(JobFilter(limit: 2, newest: true)).map(\.id) == Array(ids.suffix(2)))
        #expect(try await store.list(JobFilter(limit: 2)).map(\.id) == Array(ids.prefix(2)))
        let newest = try await store.list(JobFilter(limit: 3, newest: true))
        #expect(newest.map(\.queuePosition) == [3, 4, 5])
    }
}
