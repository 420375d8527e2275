// Housekeeping on timers: expired leases back to the queue (or dead), retention, STATUS=.

import Foundation
import GriditAPI
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import Logging
import ServiceLifecycle

public struct MaintenanceService: Service {
    let context: DaemonContext

    public init(context: DaemonContext) { self.context = context }

    public func run() async throws {
        let config = context.configuration
        var lastReap = ContinuousClock.now - .seconds(3600)
        var lastPrune = ContinuousClock.now - .seconds(Int64(config.pruneInterval))
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await context.measureSharedRoot()
            let now = ContinuousClock.now
            if now - lastReap >= .seconds(config.reapInterval) {
                lastReap = now
                await reapExpiredLeases()
            }
            // Not while the shared root does not answer: removing its folders would hang.
            if now - lastPrune >= .seconds(config.pruneInterval),
                config.keepSucceeded != nil || config.keepFailed != nil, context.conditions.sharedRootProblem == nil
            {
                lastPrune = now
                do {
                    _ = try await Retention.prune(context, olderThan: nil, keepOutputs: false)
                } catch {
                    context.logger.error(
                        "retention pass failed; it runs again in \(formatAge(config.pruneInterval))",
                        metadata: ["error": "\(error.message)"])
                }
            }
            _ = context.startBlocker(remakeReserve: false)  // notices a lost database even with no worker
            await context.refreshStatus()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(min(5, config.reapInterval))) }
        }
    }

    private func reapExpiredLeases() async {
        do {
            // Jobs of a supervised worker process are spared: their supervisor sees a stall or a
            // crash itself, and an expired lease there means griditd was stopped (SIGSTOP,
            // suspend), which says nothing about the job.
            let supervised = context.engine?.worker != nil ? Set(context.monitor.runningIDs) : []
            let expired = try await context.store.recoverExpiredLeases(now: Date(), sparing: supervised)
            context.metrics.leasesExpired(expired.count)
            for job in expired {
                context.logger.warning(
                    "lease expired: \(job.errorMessage ?? "")",
                    metadata: ["job.id": "\(job.id)", "state": "\(job.state.rawValue)"])
                context.monitor.changed(job.id)
                context.monitor.wake()
            }
        } catch {
            context.logger.error("recovering expired leases failed", metadata: ["error": "\(error)"])
        }
    }
}

/// Deleting finished jobs and their folders (the retention pass and `jobs prune`).
enum Retention {
    /// Jobs deleted per transaction: a first pass over a long history holds submits and
    /// heartbeats up for one batch at a time.
    static let batchSize = 500

    /// `olderThan` nil applies the configured retention per state (a state whose retention is
    /// off is kept). `requester`: the uid of a `jobs prune`, nil for the retention pass.
    static func prune(
        _ context: DaemonContext, olderThan: TimeInterval?, keepOutputs: Bool, requester: UInt32? = nil,
        batchSize: Int = batchSize
    ) async throws(StateError) -> [PruneResponse.Pruned] {
        let config = context.configuration
        let now = Date()
        var passes: [(states: Set<JobState>, age: TimeInterval)] = []
        if let olderThan {
            passes = [(Set(JobState.terminal), olderThan)]
        } else {
            if let keep = config.keepSucceeded { passes.append(([.succeeded], keep)) }
            if let keep = config.keepFailed { passes.append(([.failed, .canceled, .dead], keep)) }
        }
        precondition(batchSize > 0)
        let by = requester.map { "jobs prune by uid \($0)" } ?? "retention"
        var results: [PruneResponse.Pruned] = []
        for (states, age) in passes {
            while true {
                // The retention pass yields to a stop between batches; the next pass goes on.
                if requester == nil && (Task.isShuttingDownGracefully || Task.isCancelled) { return results }
                let batch: [PrunedJob]
                do {
                    batch = try await context.store.prune(olderThan: age, states: states, now: now, limit: batchSize)
                } catch  where !results.isEmpty {
                    throw StateError(
                        error.code,
                        error.message + "; \(results.count) jobs were pruned before it (the journal lists them): "
                            + "prune again for the rest")
                }
                context.metrics.jobsPruned(batch.count)
                // Removing folders blocks (for long on a network filesystem): not on a pool thread.
                let removed = await WorkerThread.once {
                    batch.map { removeFolders(of: $0, keepOutputs: keepOutputs, context) }
                }
                for (job, removeOutput) in zip(batch, removed) {
                    // One line per job, so that the journal says where every job's frames went.
                    context.logger.notice(
                        "pruned job \(job.id) (\(job.state.rawValue), finished more than \(formatAge(age)) ago; \(by))\(Self.outputNote(job, removeOutput, keepOutputs))",
                        metadata: [
                            "job.id": "\(job.id)", "state": "\(job.state.rawValue)",
                            "reason": "\(requester == nil ? "retention" : "prune")",
                            "output": "\(job.outputDir ?? "")", "output.removed": "\(removeOutput)",
                        ])
                    results.append(
                        PruneResponse.Pruned(
                            id: job.id, state: job.state, outputDir: job.outputDir, outputRemoved: removeOutput))
                }
                if batch.count < batchSize { break }
            }
        }
        return results
    }

    /// `jobs rm`: one finished job of the caller's (or anyone's, for an admin), with its folders.
    static func remove(
        _ context: DaemonContext, id: Int64, keepOutputs: Bool, requester: UInt32, isAdmin: Bool
    ) async throws(StateError) -> PruneResponse.Pruned {
        let job = try await context.store.delete(id: id, requesterUID: requester, isAdmin: isAdmin, now: Date())
        context.metrics.jobsPruned(1)
        let removeOutput = await WorkerThread.once { removeFolders(of: job, keepOutputs: keepOutputs, context) }
        context.logger.notice(
            "removed job \(job.id) (\(job.state.rawValue); jobs rm by uid \(requester))\(outputNote(job, removeOutput, keepOutputs))",
            metadata: [
                "job.id": "\(job.id)", "state": "\(job.state.rawValue)", "reason": "rm",
                "output": "\(job.outputDir ?? "")", "output.removed": "\(removeOutput)",
            ])
        return PruneResponse.Pruned(id: job.id, state: job.state, outputDir: job.outputDir, outputRemoved: removeOutput)
    }

    /// ", removed DIR", ", kept DIR" or ", left DIR (…)" for the journal.
    private static func outputNote(_ job: PrunedJob, _ removed: Bool, _ keepOutputs: Bool) -> String {
        guard let output = job.outputDir else { return "" }
        if removed { return ", removed \(output)" }
        return keepOutputs ? ", kept \(output)" : ", left \(output) (it does not hold this job's output now)"
    }

    /// A deleted job's work folder, and its output folder unless kept; whether that went.
    private static func removeFolders(of job: PrunedJob, keepOutputs: Bool, _ context: DaemonContext) -> Bool {
        removeInside(context.layout.work, context.layout.workDirectory(job: job.id))
        guard !keepOutputs, let output = job.outputDir,
            output == context.layout.automaticOutputDirectory(job: job.id) || holdsOutput(of: job, output)
        else {
            context.monitor.changed(job.id)
            return false
        }
        removeInside(context.layout.outputs, output)
        context.monitor.changed(job.id)
        return true
    }

    /// Whether the named output `folder` still holds `job`'s output, by its `sequence.json`. A
    /// user can remove the folder by hand, and a later job take the name (and be removed with
    /// `--keep-outputs`): its frames must not go with the old job. The job that wrote it is
    /// recorded since 2026-12-07; older outputs are matched by request (then by seed, before
    /// 2026-12-06) and model version. A folder without `sequence.json` is no finished output.
    static func holdsOutput(of job: PrunedJob, _ folder: String) -> Bool {
        struct Writer: Decodable { var job: Int64? }
        struct Recorded: Decodable {
            struct Pipeline: Decodable { var digest: String }
            var pipeline: Pipeline
            var seed: UInt64
            var spec: JobSpec?
        }
        guard let data = FileManager.default.contents(atPath: folder + "/sequence.json"),
            let writer = try? JSONDecoder().decode(Writer.self, from: data)
        else { return false }
        if let id = writer.job { return id == job.id }
        guard let recorded = try? JSONDecoder().decode(Recorded.self, from: data),
            let spec = try? JobSpec(storedJSON: job.params, length: job.length),
            job.pipelineDigest.map({ $0 == recorded.pipeline.digest }) ?? true
        else { return false }
        return recorded.spec.map { $0 == spec } ?? (recorded.seed == spec.parameters.seed)
    }

    /// Removes `path` only if it lies strictly inside `root` (a corrupt row must never make
    /// griditd delete anything else).
    static func removeInside(_ root: String, _ path: String) {
        let root = URL(fileURLWithPath: root).standardizedFileURL.path
        let target = URL(fileURLWithPath: path).standardizedFileURL.path
        guard target.hasPrefix(root + "/"), target.count > root.count + 1 else { return }
        try? FileManager.default.removeItem(atPath: target)
    }
}
