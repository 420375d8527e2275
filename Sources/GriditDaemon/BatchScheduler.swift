// The jobs of one running batch as a pure state machine, like the job queue's `JobStateMachine`:
// the worker feeds it what happens (the engine's hooks, jobs claimed to join, what the database
// answered, the clock) and performs the actions it returns. No I/O, no lock, no clock of its own,
// so that its rules are tested with fixed instants (BatchSchedulerTests).

import Foundation
import GriditJobQueue
import GriditJobSpec

struct BatchScheduler {
    struct Settings: Sendable, Hashable {
        /// Most jobs in the batch at once, those waiting to join included.
        var maxJobs: Int
        /// A job that made progress since its last heartbeat gets one this often (a hung engine
        /// makes none, so its lease expires).
        var heartbeatEvery: TimeInterval
        /// The lease each claim and heartbeat asks for. A job whose lease was last granted or
        /// renewed (as sent: the database's instant is later) `leaseDuration - fenceMargin`
        /// ago is stopped and nothing more is written for it (self-fencing): by the time the
        /// lease may expire and another host take the job, this one has let go of it.
        var leaseDuration: TimeInterval = .infinity
        /// Time left to stop the engine at its next step before the lease can expire.
        var fenceMargin: TimeInterval = 0
    }

    enum Event: Sendable {
        /// A job claimed while the batch runs, to join it at the engine's next `admit`.
        case offered(ExecutionItem, ClaimedJob)
        /// The engine asks for the jobs to join between its batched forwards.
        case admit
        /// A durable unit of a job: its new resume point.
        case durable(Int64, JobProgress)
        /// A denoising step of a job: its sign of life.
        case stepDone(Int64)
        /// A job left the engine's batch.
        case finished(Int64, ExecutionOutcome)
        /// The database's answer to a progress save or heartbeat: a user asked to cancel the job.
        case cancelRequested(Int64)
        /// The database refused a write for the job: another worker owns it now.
        case leaseLost(Int64)
        /// A heartbeat sent at `sentAt` renewed the job's lease.
        case renewed(Int64, sentAt: Date)
        /// The clock alone: stops the jobs whose lease could not be renewed in time.
        case fence
        /// The clock: progress to save, heartbeats due, outcomes to record. `stops` holds why
        /// the batch's jobs were asked to stop (an outcome's record depends on it). The `final`
        /// tick, after the engine returned, sends no heartbeat.
        case tick(stops: [Int64: StopReason], final: Bool)
        /// The engine returned: the batch takes no more jobs; the claims it never took go back,
        /// and a job it never reported is an internal failure.
        case engineReturned
    }

    enum Action: Sendable, Equatable {
        /// The answer to `admit`: the jobs that join now (possibly none).
        case join([ExecutionItem])
        /// A claim the engine never took (the batch had ended): the job starts the next batch.
        case handBack(ClaimedJob)
        case saveProgress(Int64, LeaseToken, JobProgress)
        case heartbeat(Int64, LeaseToken)
        /// Ask the engine to stop the job at its next step.
        case stop(Int64, StopReason)
        /// The job's outcome, as the transition the queue records.
        case record(Int64, LeaseToken, Record)
    }

    /// What the queue records for a job that left the batch.
    enum Record: Sendable, Equatable {
        /// `running → succeeded`, its output folder complete.
        case complete(outputDir: String)
        case fail(JobFailure)
        /// The engine crashed under it, and it is held responsible.
        case crash(String)
        /// Requeued at its progress, no crash or attempt counted.
        case requeue(String)
        case acknowledgeCancel
        /// Handed back to the queue at its progress (shutdown, a full state filesystem).
        case releaseLease(StopReason)
        /// Nothing is written: another worker owns the job, or the database is lost.
        case nothing(StopReason)
    }

    private struct Member {
        var item: ExecutionItem
        var token: LeaseToken
        /// Claimed to join: its claim, handed back if the engine never takes it.
        var claim: ClaimedJob?
        /// Offered, not taken by the engine yet (heartbeated while it waits: a batched forward
        /// of a large model can outlast a lease).
        var waiting = false
        var reported = false
        /// Progress not saved yet.
        var progress: JobProgress?
        /// A step or durable unit since the last heartbeat.
        var active = false
        var lastHeartbeat: Date
        /// When the latest claim or heartbeat that granted the lease was sent.
        var leaseFrom: Date
        /// Stopped for want of a renewed lease: nothing more is written for it.
        var fenced = false
    }

    let settings: Settings
    private var members: [Int64: Member] = [:]
    /// Offered jobs in the order the engine takes them.
    private var inbox: [Int64] = []
    /// Outcomes not recorded yet, in the order they came.
    private var outcomes: [(Int64, ExecutionOutcome)] = []
    private(set) var isClosed = false

    /// A batch of `items`, claimed with `tokens`, starting at `now`; `leaseFrom` holds when
    /// each lease was granted or last renewed (default: `now`).
    init(
        _ items: [ExecutionItem], tokens: [Int64: LeaseToken], settings: Settings, now: Date,
        leaseFrom: [Int64: Date] = [:]
    ) {
        self.settings = settings
        for item in items {
            guard let token = tokens[item.jobID] else { continue }
            members[item.jobID] = Member(
                item: item, token: token, lastHeartbeat: now, leaseFrom: leaseFrom[item.jobID] ?? now)
        }
    }

    /// Every job that has been in the batch, reported or not: a claim to join never takes a
    /// second run of a job the engine may still have.
    var memberIDs: Set<Int64> { Set(members.keys) }

    /// Jobs in the batch or waiting to join it, not reported yet.
    var activeCount: Int { members.values.filter { !$0.reported }.count }

    /// Whether a job may be claimed to join now.
    var hasRoom: Bool { !isClosed && activeCount < settings.maxJobs }

    func item(_ id: Int64) -> ExecutionItem? { members[id]?.item }

    mutating func handle(_ event: Event, now: Date) -> [Action] {
        switch event {
        case .offered(let item, let claim):
            guard !isClosed else { return [.handBack(claim)] }
            members[item.jobID] = Member(
                item: item, token: claim.token, claim: claim, waiting: true, lastHeartbeat: now, leaseFrom: now)
            inbox.append(item.jobID)
            return []
        case .admit:
            defer { inbox = [] }
            for id in inbox { members[id]?.waiting = false }
            return [.join(inbox.compactMap { members[$0]?.item })]
        case .durable(let id, let progress):
            members[id]?.progress = progress
            members[id]?.active = true
            return []
        case .stepDone(let id):
            members[id]?.active = true
            return []
        case .finished(let id, let outcome):
            guard let member = members[id], !member.reported else { return [] }
            members[id]?.reported = true
            outcomes.append((id, outcome))
            return []
        case .cancelRequested(let id):
            return members[id] == nil ? [] : [.stop(id, .cancel)]
        case .leaseLost(let id):
            return members[id] == nil ? [] : [.stop(id, .leaseLost)]
        case .renewed(let id, let sentAt):
            if let from = members[id]?.leaseFrom, sentAt > from { members[id]?.leaseFrom = sentAt }
            return []
        case .fence:
            return fence(now: now)
        case .tick(let stops, let final):
            return fence(now: now) + flush(now: now, stops: stops, heartbeats: !final)
        case .engineReturned:
            isClosed = true
            var actions: [Action] = []
            for id in inbox {
                if let claim = members.removeValue(forKey: id)?.claim { actions.append(.handBack(claim)) }
            }
            inbox = []
            for (id, member) in members.sorted(by: { $0.key < $1.key }) where !member.reported {
                members[id]?.reported = true
                outcomes.append(
                    (id, .failed(JobFailure(.internalError, "the engine returned without reporting job \(id)"))))
            }
            return actions
        }
    }

    /// Stops every job whose lease was not renewed in time, once; from then on it gets no
    /// progress save, heartbeat or outcome.
    private mutating func fence(now: Date) -> [Action] {
        var actions: [Action] = []
        for id in members.keys.sorted() {
            let member = members[id]!
            guard !member.fenced, !member.reported || outcomes.contains(where: { $0.0 == id }),
                now.timeIntervalSince(member.leaseFrom) >= settings.leaseDuration - settings.fenceMargin
            else { continue }
            members[id]?.fenced = true
            actions.append(.stop(id, .fenced))
        }
        return actions
    }

    /// Progress saves and heartbeats (by job id), then each outcome: its last progress first
    /// (the resume point of an interrupted job), then its record.
    private mutating func flush(now: Date, stops: [Int64: StopReason], heartbeats: Bool) -> [Action] {
        var actions: [Action] = []
        for id in members.keys.sorted() {
            var member = members[id]!
            guard !member.fenced else {
                members[id]?.progress = nil
                continue
            }
            let due =
                heartbeats && (member.active || member.waiting) && !member.reported
                && now.timeIntervalSince(member.lastHeartbeat) >= settings.heartbeatEvery
            if let progress = member.progress { actions.append(.saveProgress(id, member.token, progress)) }
            if due { actions.append(.heartbeat(id, member.token)) }
            member.progress = nil
            if due {
                member.active = false
                member.lastHeartbeat = now
            }
            members[id] = member
        }
        for (id, outcome) in outcomes {
            guard let member = members[id] else { continue }
            let stop = member.fenced ? .fenced : stops[id]
            actions.append(.record(id, member.token, Self.record(outcome, stop: stop, item: member.item)))
        }
        outcomes = []
        return actions
    }

    /// The transition the queue records for a job that left the engine with `outcome`, asked to
    /// stop for `stop`.
    static func record(_ outcome: ExecutionOutcome, stop: StopReason?, item: ExecutionItem) -> Record {
        if let stop, stop == .databaseLost || stop == .fenced { return .nothing(stop) }
        switch outcome {
        case .succeeded:
            return .complete(outputDir: item.outputDirectory)
        case .failed(let failure):
            return .fail(failure)
        case .crashed(let crash):
            return crash.counted ? .crash(crash.message) : .requeue(crash.message)
        case .interrupted:
            switch stop {
            case .cancel?: return .acknowledgeCancel
            case .shutdown?: return .releaseLease(.shutdown)
            case .diskFull?: return .releaseLease(.diskFull)
            case .leaseLost?: return .nothing(.leaseLost)
            case .databaseLost?, .fenced?: return .nothing(stop!)
            case nil:
                return .fail(JobFailure(.internalError, "the engine stopped the job although nobody asked it to"))
            }
        }
    }
}
