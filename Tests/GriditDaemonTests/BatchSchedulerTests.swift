// The running batch's rules, without I/O: fixed instants for the clock, events in, actions out.

import Foundation
import GriditJobQueue
import GriditJobSpec
import Testing

@testable import GriditDaemon

@Suite("BatchScheduler")
struct BatchSchedulerTests {
    let t0 = Date(timeIntervalSince1970: 1_000_000)
    func at(_ seconds: TimeInterval) -> Date { t0.addingTimeInterval(seconds) }

    func item(_ id: Int64) -> ExecutionItem {
        ExecutionItem(
            jobID: id, spec: JobSpec(length: 8, parameters: .init(seed: 1)), workDirectory: "/w/\(id)",
            outputDirectory: "/o/job-\(id)", resumeFrom: JobProgress(), attempt: 1)
    }

    func token(_ id: Int64) -> LeaseToken { LeaseToken(rawValue: 100 + id) }

    func claim(_ id: Int64) -> ClaimedJob {
        ClaimedJob(
            job: Job(id: id, ownerUID: 0, params: "{}", length: 8, createdAt: t0, updatedAt: t0, notBefore: t0),
            token: token(id))
    }

    /// A batch of jobs 1 and 2, at most 3 jobs, heartbeats every 10 s.
    func batch() -> BatchScheduler {
        BatchScheduler(
            [item(1), item(2)], tokens: [1: token(1), 2: token(2)], settings: .init(maxJobs: 3, heartbeatEvery: 10),
            now: t0)
    }

    func tick(
        _ s: inout BatchScheduler, _ seconds: TimeInterval, stops: [Int64: StopReason] = [:], final: Bool = false
    )
        -> [BatchScheduler.Action]
    {
        s.handle(.tick(stops: stops, final: final), now: at(seconds))
    }

    @Test("heartbeats go to jobs that made progress, once per period; progress is saved once")
    func heartbeats() {
        var s = batch()
        _ = s.handle(.stepDone(1), now: at(1))
        #expect(tick(&s, 5).isEmpty, "not due yet")
        #expect(tick(&s, 10) == [.heartbeat(1, token(1))], "job 2 made no step: no heartbeat, its lease runs out")
        #expect(tick(&s, 15).isEmpty, "one per period")
        _ = s.handle(.durable(2, JobProgress(stage: .grid, gridsDone: 1, framesDone: 0)), now: at(16))
        #expect(
            tick(&s, 17) == [
                .saveProgress(2, token(2), JobProgress(stage: .grid, gridsDone: 1, framesDone: 0)),
                .heartbeat(2, token(2)),  // the durable unit is its sign of life, and its period is over
            ])
        #expect(tick(&s, 18).isEmpty, "saved once")
        _ = s.handle(.stepDone(1), now: at(21))
        #expect(tick(&s, 40, final: true).isEmpty, "no heartbeat once the engine returned")
    }

    @Test("jobs join up to the batch's size; a waiting job is heartbeated; the engine takes it at its admit")
    func joining() {
        var s = batch()
        #expect(s.hasRoom && s.activeCount == 2)
        #expect(s.handle(.offered(item(3), claim(3)), now: at(1)).isEmpty)
        #expect(!s.hasRoom && s.memberIDs == [1, 2, 3])
        #expect(tick(&s, 11) == [.heartbeat(3, token(3))], "waiting for the engine: kept alive")
        #expect(s.handle(.admit, now: at(12)) == [.join([item(3)])])
        #expect(s.handle(.admit, now: at(13)) == [.join([])], "taken once")
        #expect(tick(&s, 21).isEmpty, "taken: its own steps keep it alive now")
        _ = s.handle(.finished(1, .succeeded), now: at(22))
        #expect(s.hasRoom, "a reported job frees its place")
        #expect(s.memberIDs.contains(1), "but is never claimed again while the batch runs")
    }

    @Test("each outcome becomes its record, after the job's last progress, in the order they came")
    func outcomes() {
        var s = batch()
        _ = s.handle(.durable(2, JobProgress(stage: .sr, gridsDone: 2, framesDone: 5)), now: at(1))
        _ = s.handle(.finished(2, .interrupted), now: at(2))
        _ = s.handle(.finished(1, .succeeded), now: at(3))
        _ = s.handle(.finished(1, .failed(JobFailure(.transient, "late"))), now: at(4))  // reported once only
        #expect(
            tick(&s, 5, stops: [2: .shutdown]) == [
                .saveProgress(2, token(2), JobProgress(stage: .sr, gridsDone: 2, framesDone: 5)),
                .record(2, token(2), .releaseLease(.shutdown)),
                .record(1, token(1), .complete(outputDir: "/o/job-1")),
            ])
        #expect(tick(&s, 6).isEmpty)
    }

    @Test("what an outcome records depends on why the job was asked to stop")
    func records() {
        let i = item(1)
        func record(_ outcome: ExecutionOutcome, _ stop: StopReason?) -> BatchScheduler.Record {
            BatchScheduler.record(outcome, stop: stop, item: i)
        }
        #expect(record(.interrupted, .cancel) == .acknowledgeCancel)
        #expect(record(.interrupted, .shutdown) == .releaseLease(.shutdown))
        #expect(record(.interrupted, .diskFull) == .releaseLease(.diskFull))
        #expect(record(.interrupted, .leaseLost) == .nothing(.leaseLost))
        #expect(record(.succeeded, .databaseLost) == .nothing(.databaseLost), "a lost database records nothing")
        #expect(
            record(.interrupted, nil)
                == .fail(JobFailure(.internalError, "the engine stopped the job although nobody asked it to")))
        #expect(record(.crashed(WorkerCrash(counted: true, message: "SIGSEGV")), nil) == .crash("SIGSEGV"))
        #expect(record(.crashed(WorkerCrash(counted: false, message: "killed")), .cancel) == .requeue("killed"))
        #expect(record(.succeeded, .cancel) == .complete(outputDir: "/o/job-1"), "finished before it saw the cancel")
    }

    @Test("a cancel seen by the database and a lost lease become stop requests for the batch's jobs")
    func stops() {
        var s = batch()
        #expect(s.handle(.cancelRequested(2), now: at(1)) == [.stop(2, .cancel)])
        #expect(s.handle(.leaseLost(1), now: at(1)) == [.stop(1, .leaseLost)])
        #expect(s.handle(.leaseLost(9), now: at(1)).isEmpty, "not a job of this batch")
    }

    @Test("when the engine returns: claims it never took go back, a job it never reported is an internal failure")
    func engineReturns() {
        var s = batch()
        _ = s.handle(.offered(item(3), claim(3)), now: at(1))
        _ = s.handle(.finished(1, .succeeded), now: at(2))
        #expect(s.handle(.engineReturned, now: at(3)) == [.handBack(claim(3))])
        #expect(s.isClosed && !s.hasRoom && s.memberIDs == [1, 2])
        #expect(s.handle(.offered(item(4), claim(4)), now: at(4)) == [.handBack(claim(4))], "closed: nothing joins")
        #expect(
            tick(&s, 5, final: true) == [
                .record(1, token(1), .complete(outputDir: "/o/job-1")),
                .record(2, token(2), .fail(JobFailure(.internalError, "the engine returned without reporting job 2"))),
            ])
    }

    @Test("self-fencing: a job whose lease was not renewed in time is stopped once, then gets no write at all")
    func fencing() {
        // Leases of 30 s, renewed every 10 s; the fence falls 30 - 6 = 24 s after the last renewal.
        var s = BatchScheduler(
            [item(1), item(2)], tokens: [1: token(1), 2: token(2)],
            settings: .init(maxJobs: 3, heartbeatEvery: 10, leaseDuration: 30, fenceMargin: 6), now: t0,
            leaseFrom: [1: at(-2)])
        _ = s.handle(.stepDone(1), now: at(1))
        _ = s.handle(.stepDone(2), now: at(1))
        #expect(tick(&s, 10) == [.heartbeat(1, token(1)), .heartbeat(2, token(2))])
        // Job 2's renewal (sent at 10 s) went through; job 1's did not (the database unreachable).
        #expect(s.handle(.renewed(2, sentAt: at(10)), now: at(11)).isEmpty)
        #expect(s.handle(.fence, now: at(21.9)).isEmpty, "job 1: granted at -2 s, fenced from 22 s")
        #expect(s.handle(.fence, now: at(22)) == [.stop(1, .fenced)])
        #expect(s.handle(.fence, now: at(23)).isEmpty, "stopped once")
        // Its progress, heartbeats and outcome are never written; job 2 carries on.
        _ = s.handle(.durable(1, JobProgress(stage: .grid, gridsDone: 1, framesDone: 0)), now: at(24))
        _ = s.handle(.stepDone(1), now: at(24))
        _ = s.handle(.stepDone(2), now: at(24))
        _ = s.handle(.finished(1, .interrupted), now: at(25))
        #expect(
            tick(&s, 25, stops: [1: .fenced]) == [.heartbeat(2, token(2)), .record(1, token(1), .nothing(.fenced))])
        // A job that finished but whose outcome waits for the writer is fenced too: nothing recorded.
        _ = s.handle(.finished(2, .succeeded), now: at(50))
        #expect(s.handle(.fence, now: at(50)) == [.stop(2, .fenced)])
        #expect(tick(&s, 50, final: true) == [.record(2, token(2), .nothing(.fenced))])
    }

    @Test("an outcome under a fence records nothing, whatever the outcome")
    func fencedRecords() {
        for outcome: ExecutionOutcome in [.succeeded, .interrupted, .failed(JobFailure(.transient, "x"))] {
            #expect(BatchScheduler.record(outcome, stop: .fenced, item: item(1)) == .nothing(.fenced))
        }
    }
}
