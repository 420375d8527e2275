// The node's heartbeat: "last seen" in the node registry, and whether this host is drained.

import Foundation
import GriditAPI
import GriditJobQueue
import GriditStateDatabase
import Logging
import ServiceLifecycle

public struct NodeHeartbeatService: Service {
    let context: DaemonContext

    public init(context: DaemonContext) { self.context = context }

    public func run() async throws {
        let every = Duration.milliseconds(Int64(context.configuration.nodeHeartbeatInterval * 1000))
        var failing = false
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let node = context.node
                let draining = try await context.nodes.touchNode(
                    id: node.id, hostname: node.hostname, version: griditVersion, now: Date())
                context.applyDraining(draining)
                if failing { context.logger.notice("node heartbeat recorded again") }
                failing = false
                context.conditions.databaseAnswered()
            } catch {
                // Jobs are fenced by their own leases; this dates "last seen", and tells `status`
                // that the shared database does not answer.
                if !context.singleHost { context.conditions.databaseFailed("\(error)", at: Date()) }
                if !failing {
                    context.logger.warning("node heartbeat failed", metadata: ["error": "\(error)"])
                }
                failing = true
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: every) }
        }
    }
}

extension DaemonContext {
    /// Records this host's draining flag (from the node heartbeat, or a drain through this
    /// host's API), logging each change; an undrain wakes the worker.
    func applyDraining(_ draining: Bool) {
        guard nodeState.draining != draining else { return }
        nodeState.draining = draining
        if draining {
            logger.notice("this host is drained: it claims no job; running jobs finish")
        } else {
            logger.notice("this host is undrained: it claims jobs again")
            monitor.wake()
        }
    }
}
