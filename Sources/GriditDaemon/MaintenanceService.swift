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
            let now = ContinuousClock.now
            if now - lastReap >= .seconds(config.reapInterval) {
                lastReap = now
                await reapExpiredLeases()
            }
            if now - lastPrune >= .seconds(config.pruneInterval) {
                lastPrune = now
                _ = try? await Retention.prune(context, olderThan: nil, keepOutputs: false)
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
            for job in try await context.store.recoverExpiredLeases(now: Date(), sparing: supervised) {
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

/// Deleting finished jobs and their folders (the hourly retention pass and `jobs prune`).
enum Retention {
    /// `olderThan` nil applies the configured retention per state.
    static func prune(
        _ context: DaemonContext, olderThan: TimeInterval?, keepOutputs: Bool
    ) async throws(StateError) -> [PrunedJob] {
        let config = context.configuration
        let now = Date()
        var pruned: [PrunedJob] = []
        if let olderThan {
            pruned = try await context.store.prune(olderThan: olderThan, now: now)
        } else {
            pruned += try await context.store.prune(olderThan: config.keepSucceeded, states: [.succeeded], now: now)
            pruned += try await context.store.prune(
                olderThan: config.keepFailed, states: [.failed, .canceled, .dead], now: now)
        }
        for job in pruned {
            removeInside(context.layout.work, context.layout.workDirectory(job: job.id))
            if !keepOutputs, let output = job.outputDir { removeInside(context.layout.outputs, output) }
            context.monitor.changed(job.id)
        }
        if !pruned.isEmpty {
            context.logger.info("pruned finished jobs", metadata: ["count": "\(pruned.count)"])
        }
        return pruned
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
