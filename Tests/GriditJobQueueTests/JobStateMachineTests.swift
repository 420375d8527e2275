import Foundation
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import Testing

@Suite("JobStateMachine")
struct JobStateMachineTests {
    let machine = JobStateMachine(policy: RetryPolicy(backoffBase: 10, backoffCap: 600, maxCrashes: 2))
    let token = LeaseToken(rawValue: 42)
    let otherToken = LeaseToken(rawValue: 43)

    func job(_ state: JobState = .queued, attempt: Int = 0, maxAttempts: Int = 3) -> Job {
        var job = Job(
            id: 7, ownerUID: 1000, params: "{}", length: 16, createdAt: at(0), updatedAt: at(0),
            maxAttempts: maxAttempts, notBefore: at(0))
        job.state = state
        job.attempt = attempt
        if state == .running {
            job.leaseOwner = "w"
            job.leaseToken = token
            job.leaseExpiresAt = at(60)
            job.startedAt = at(0)
        }
        return job
    }

    func running(attempt: Int = 1, maxAttempts: Int = 3) -> Job {
        job(.running, attempt: attempt, maxAttempts: maxAttempts)
    }

    /// Every (event, state) pair: which are allowed. Worker events use the right token.
    @Test("transition table")
    func table() {
        let events: [(String, JobEvent, Set<JobState>)] = [
            ("claim", .claim(workerID: "w", token: token, leaseDuration: 60), [.queued, .retryable]),
            ("heartbeat", .heartbeat(token: token, leaseDuration: 60), [.running]),
            ("progress", .saveProgress(token: token, progress: JobProgress()), [.running]),
            ("succeed", .succeed(token: token, outputDir: "/o"), [.running]),
            ("fail", .fail(token: token, errorClass: "io", message: "m", retryable: true), [.running]),
            ("ack cancel", .acknowledgeCancel(token: token), [.running]),
            ("release", .releaseLease(token: token), [.running]),
            ("requeue", .requeue(token: token, reason: "killed from outside"), [.running]),
            ("worker crashed", .workerCrashed(token: token, message: "SIGSEGV"), [.running]),
            ("cancel", .cancel, [.queued, .retryable, .running, .canceled]),
            ("lease expired", .leaseExpired, [.running]),
            ("orphaned", .orphaned, [.running]),
            ("retry", .retry, [.failed, .canceled, .dead]),
            ("prune", .prune, [.succeeded, .failed, .canceled, .dead]),
        ]
        for (name, event, allowed) in events {
            for state in JobState.allCases {
                let result = Result { () throws(StateError) in try machine.apply(event, to: job(state), now: at(100)) }
                switch result {
                case .success:
                    #expect(allowed.contains(state), "\(name) from \(state) should be refused")
                case .failure(let error):
                    #expect(!allowed.contains(state), "\(name) from \(state) should be allowed: \(error)")
                    #expect([.invalidTransition, .leaseLost].contains(error.code))
                }
            }
        }
    }

    @Test("terminal states refuse worker events with invalid_transition; live ones with lease_lost")
    func fencing() throws {
        for state in JobState.terminal {
            #expect(throws: StateError.self) {
                try machine.apply(.succeed(token: token, outputDir: "/o"), to: job(state), now: at(1))
            }
            do {
                _ = try machine.apply(.heartbeat(token: token, leaseDuration: 60), to: job(state), now: at(1))
            } catch {
                #expect(error.code == .invalidTransition)
            }
        }
        do {
            _ = try machine.apply(.succeed(token: otherToken, outputDir: "/o"), to: running(), now: at(1))
            Issue.record("a foreign token must be refused")
        } catch {
            #expect(error.code == .leaseLost)
            #expect(error.jobID == 7)
        }
    }

    @Test("claim takes the lease and counts an attempt")
    func claim() throws {
        let t = try machine.apply(.claim(workerID: "w9", token: token, leaseDuration: 30), to: job(), now: at(5))
        #expect(t.job.state == .running && t.job.attempt == 1)
        #expect(t.job.leaseOwner == "w9" && t.job.leaseToken == token && t.job.leaseExpiresAt == at(35))
        #expect(t.job.startedAt == at(5) && t.job.updatedAt == at(5))
        var later = job()
        later.notBefore = at(10)
        #expect(throws: StateError.self) {
            try machine.apply(.claim(workerID: "w", token: token, leaseDuration: 30), to: later, now: at(9))
        }
        #expect(throws: StateError.self) {
            try machine.apply(.claim(workerID: "", token: token, leaseDuration: 30), to: job(), now: at(9))
        }
    }

    @Test("heartbeat extends the lease from now")
    func heartbeat() throws {
        let t = try machine.apply(.heartbeat(token: token, leaseDuration: 60), to: running(), now: at(50))
        #expect(t.job.leaseExpiresAt == at(110) && t.job.state == .running)
    }

    @Test("backoff is base · 2^attempt, capped")
    func backoff() {
        let policy = RetryPolicy(backoffBase: 10, backoffCap: 600, maxCrashes: 2)
        #expect((0...8).map { policy.backoff(afterAttempt: $0) } == [10, 20, 40, 80, 160, 320, 600, 600, 600])
        #expect(policy.backoff(afterAttempt: 10_000) == 600)
    }

    @Test("transient failure: retryable with backoff until attempts run out")
    func transient() throws {
        let fail = JobEvent.fail(token: token, errorClass: "io", message: "EIO", retryable: true)
        let first = try machine.apply(fail, to: running(attempt: 1), now: at(100))
        #expect(first.job.state == .retryable && first.job.notBefore == at(120))
        #expect(first.job.leaseToken == nil && first.job.finishedAt == nil)
        #expect(
            first.effects == [
                .recordError(JobErrorRecord(jobID: 7, attempt: 1, at: at(100), errorClass: "io", message: "EIO"))
            ])
        let second = try machine.apply(fail, to: running(attempt: 2), now: at(100))
        #expect(second.job.notBefore == at(140))
        let last = try machine.apply(fail, to: running(attempt: 3), now: at(100))
        #expect(last.job.state == .failed && last.job.finishedAt == at(100))
        #expect(last.job.errorMessage?.contains("gave up after 3 of 3") == true)
    }

    @Test("permanent failure fails at once; a failure after a cancel request cancels")
    func permanentAndCanceled() throws {
        let permanent = try machine.apply(
            .fail(token: token, errorClass: "invalid", message: "bad", retryable: false), to: running(), now: at(1))
        #expect(permanent.job.state == .failed && permanent.job.errorClass == "invalid")
        var canceling = running()
        canceling.cancelRequested = true
        let canceled = try machine.apply(
            .fail(token: token, errorClass: "io", message: "x", retryable: true), to: canceling, now: at(1))
        #expect(canceled.job.state == .canceled)
    }

    @Test("lease expiry: first crash requeues with progress, second is dead")
    func crashes() throws {
        var job = running()
        job.progress = JobProgress(stage: .sr, gridsDone: 3, framesDone: 7)
        #expect(throws: StateError.self) { try machine.apply(.leaseExpired, to: job, now: at(59)) }
        let first = try machine.apply(.leaseExpired, to: job, now: at(60))
        #expect(first.job.state == .queued && first.job.crashCount == 1 && first.job.notBefore == at(60))
        #expect(first.job.progress == job.progress && first.job.leaseToken == nil)
        #expect(first.effects.count == 1)

        var again = first.job
        again.state = .running
        again.leaseOwner = "w"
        again.leaseToken = token
        again.leaseExpiresAt = at(100)
        let second = try machine.apply(.leaseExpired, to: again, now: at(100))
        #expect(second.job.state == .dead && second.job.crashCount == 2 && second.job.finishedAt == at(100))
        #expect(second.job.errorClass == workerCrashedErrorClass)
    }

    @Test("an engine crash counts like an expired lease, fenced by the token; the second is dead")
    func engineCrashes() throws {
        let first = try machine.apply(
            .workerCrashed(token: token, message: "the engine crashed (SIGSEGV)"), to: running(), now: at(5))
        #expect(first.job.state == .queued && first.job.crashCount == 1 && first.job.attempt == 1)
        #expect(first.job.errorMessage?.hasPrefix("the engine crashed (SIGSEGV) (crash 1 of 2)") == true)
        #expect(first.effects.count == 1)
        var again = first.job
        again.state = .running
        again.attempt = 2
        again.leaseOwner = "w"
        again.leaseToken = token
        again.leaseExpiresAt = at(100)
        #expect(throws: StateError.self) {
            try machine.apply(.workerCrashed(token: otherToken, message: "x"), to: again, now: at(6))
        }
        let second = try machine.apply(.workerCrashed(token: token, message: "SIGBUS"), to: again, now: at(6))
        #expect(second.job.state == .dead && second.job.crashCount == 2)
    }

    @Test("griditd's death (orphaned), a release and a requeue count neither a crash nor an attempt, however often")
    func uncountedReturns() throws {
        var job = running(attempt: 3, maxAttempts: 3)
        job.progress = JobProgress(stage: .sr, gridsDone: 4, framesDone: 9)
        for _ in 0..<10 {
            let orphaned = try machine.apply(.orphaned, to: job, now: at(1))  // ignores the lease time
            #expect(orphaned.job.state == .queued && orphaned.job.crashCount == 0 && orphaned.job.attempt == 2)
            #expect(orphaned.job.progress == job.progress && orphaned.job.leaseToken == nil)
            #expect(orphaned.effects.count == 1, "the interruption is in the history")
            if case .recordError(let record) = orphaned.effects.first {
                #expect(record.errorClass == interruptedErrorClass)
            }
        }
        let released = try machine.apply(.releaseLease(token: token), to: job, now: at(2))
        #expect(released.job.state == .queued && released.job.attempt == 2 && released.effects.isEmpty)
        let requeued = try machine.apply(
            .requeue(token: token, reason: "killed from outside (SIGKILL)"), to: job, now: at(3))
        #expect(requeued.job.state == .queued && requeued.job.attempt == 2 && requeued.job.crashCount == 0)
        #expect(requeued.effects.count == 1)
        // A cancel requested meanwhile completes instead.
        var canceling = job
        canceling.cancelRequested = true
        #expect(try machine.apply(.orphaned, to: canceling, now: at(4)).job.state == .canceled)
        #expect(
            try machine.apply(.requeue(token: token, reason: "r"), to: canceling, now: at(4)).job.state == .canceled)
    }

    @Test("cancel: waiting jobs at once, running by request, canceled idempotent")
    func cancel() throws {
        #expect(try machine.apply(.cancel, to: job(.queued), now: at(1)).job.state == .canceled)
        #expect(try machine.apply(.cancel, to: job(.retryable), now: at(1)).job.state == .canceled)
        let requested = try machine.apply(.cancel, to: running(), now: at(1)).job
        #expect(requested.state == .running && requested.cancelRequested && requested.leaseToken == token)
        let acknowledged = try machine.apply(.acknowledgeCancel(token: token), to: requested, now: at(2)).job
        #expect(acknowledged.state == .canceled && acknowledged.leaseToken == nil)
        // A stop for a cancel the row no longer holds (asked before a retry): requeued, uncounted.
        let stale = try machine.apply(.acknowledgeCancel(token: token), to: running(), now: at(2))
        #expect(stale.job.state == .queued && stale.job.leaseToken == nil && stale.job.attempt == running().attempt - 1)
        #expect(stale.effects.contains { if case .recordError = $0 { true } else { false } })
        let done = job(.canceled)
        #expect(try machine.apply(.cancel, to: done, now: at(3)).job == done)
    }

    @Test("retry resets counters and keeps progress")
    func retry() throws {
        var dead = job(.dead, attempt: 2)
        dead.crashCount = 2
        dead.errorClass = workerCrashedErrorClass
        dead.finishedAt = at(5)
        dead.progress = JobProgress(stage: .sr, gridsDone: 2, framesDone: 3)
        let t = try machine.apply(.retry, to: dead, now: at(9))
        #expect(t.job.state == .queued && t.job.attempt == 0 && t.job.crashCount == 0)
        #expect(t.job.finishedAt == nil && t.job.errorClass == nil && t.job.notBefore == at(9))
        #expect(t.job.progress == dead.progress)
    }

    @Test("progress cannot be negative, and may pass the length (official mode writes K² + 2K·N frames)")
    func progressRange() throws {
        #expect(throws: StateError.self) {
            try machine.apply(
                .saveProgress(token: token, progress: JobProgress(stage: .sr, gridsDone: 1, framesDone: -1)),
                to: running(), now: at(1))
        }
        let job = running()
        let past = JobProgress(stage: .sr, gridsDone: 3, framesDone: job.length + 8)
        #expect(
            try machine.apply(.saveProgress(token: token, progress: past), to: job, now: at(1)).job.progress == past)
    }

    @Test("prune deletes terminal jobs and hands back the output dir")
    func prune() throws {
        var done = job(.succeeded)
        done.outputDir = "/out/7"
        #expect(try machine.apply(.prune, to: done, now: at(1)).effects == [.delete(outputDir: "/out/7")])
    }
}
