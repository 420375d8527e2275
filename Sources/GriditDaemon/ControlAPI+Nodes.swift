// The hosts sharing the queue: `nodes list`, `nodes drain` / `undrain`, and the host of each job.

import Foundation
import GriditAPI
import GriditJobQueue
import GriditStateDatabase
import Hummingbird
import Logging

extension ControlAPI {
    /// Every host: id, hostname, version, last seen, running jobs, draining. Any member may look.
    func listNodes(_ request: APIRequest) async throws(APIError) -> Response {
        .json(NodeList(nodes: try await nodeInfos()))
    }

    /// Drains (or undrains) one host, named by its node id, a unique prefix of it, or its
    /// hostname when no other host has that name. Admins only: it stops a host's work.
    func drain(
        _ draining: Bool, _ request: APIRequest, _ params: [String: String]
    ) async throws(APIError)
        -> Response
    {
        try requireAdmin(request, "\(draining ? "drain" : "undrain") a node")
        let node = try await resolveNode(params["node"] ?? "")
        let changed: NodeRecord
        do {
            changed = try await context.nodes.setDraining(id: node.id, draining, now: Date())
        } catch {
            throw Self.translate(error)
        }
        if node.id == context.node.id {
            context.applyDraining(draining)
            await context.refreshStatus()
        }
        context.logger.notice(
            draining ? "node drained" : "node undrained",
            metadata: ["node.id": "\(node.id)", "node.hostname": "\(node.hostname)", "uid": "\(request.caller.uid)"])
        return .json(nodeInfo(changed))
    }

    /// Forgets a host that is gone (`nodes rm`): unseen for `nodeGoneAfter`, running no job, not
    /// the one answering. Admins only. It registers again if its griditd starts.
    func removeNode(_ request: APIRequest, _ params: [String: String]) async throws(APIError) -> Response {
        try requireAdmin(request, "remove a node")
        let node = try await resolveNode(params["node"] ?? "")
        guard node.id != context.node.id else {
            throw APIError(
                .conflict,
                "node \(node.id) (\(node.hostname)) is the host answering; run `griditctl nodes rm` on another host "
                    + "once this one's griditd is stopped for good")
        }
        do {
            try await context.nodes.removeNode(
                id: node.id, unseenFor: context.configuration.nodeGoneAfter, now: Date())
        } catch {
            throw Self.translate(error)
        }
        context.logger.notice(
            "node removed",
            metadata: ["node.id": "\(node.id)", "node.hostname": "\(node.hostname)", "uid": "\(request.caller.uid)"])
        return .json(node)
    }

    func nodeInfos() async throws(APIError) -> [NodeInfo] {
        let records: [NodeRecord]
        do {
            records = try await context.nodes.nodes()
        } catch {
            throw Self.translate(error)
        }
        return records.map(nodeInfo)
    }

    private func nodeInfo(_ r: NodeRecord) -> NodeInfo {
        let unseen = r.unseenFor ?? Date().timeIntervalSince(r.lastSeen)
        return NodeInfo(
            id: r.id, hostname: r.hostname, version: r.version, startedAt: r.startedAt, lastSeen: r.lastSeen,
            draining: r.draining, runningJobs: r.runningJobs, current: r.id == context.node.id,
            gone: unseen >= context.configuration.nodeGoneAfter, unseenSeconds: r.unseenFor)
    }

    private func resolveNode(_ name: String) async throws(APIError) -> NodeInfo {
        let nodes = try await nodeInfos()
        let lowered = name.lowercased()
        if let exact = nodes.first(where: { $0.id == lowered }) { return exact }
        var matches = nodes.filter { $0.hostname == name }
        if matches.isEmpty, lowered.count >= 4 { matches = nodes.filter { $0.id.hasPrefix(lowered) } }
        switch matches.count {
        case 1: return matches[0]
        case 0:
            throw APIError(
                .notFound,
                "no node '\(name.prefix(60))': name one by its id, a unique prefix of it (4 characters or more) or "
                    + "its hostname (`griditctl nodes list`)")
        default:
            throw APIError(
                .badRequest,
                "'\(name.prefix(60))' names \(matches.count) nodes (\(matches.map { $0.id.prefix(8) }.joined(separator: ", "))); "
                    + "give more of the node id")
        }
    }

    /// `jobs` with the hostname of each one's node (when the registry can be read).
    func withHosts(_ jobs: [JobInfo]) async -> [JobInfo] {
        guard jobs.contains(where: { $0.node != nil }), let records = try? await context.nodes.nodes() else {
            return jobs
        }
        let hostnames = Dictionary(records.map { ($0.id, $0.hostname) }, uniquingKeysWith: { first, _ in first })
        return jobs.map { job in
            var job = job
            job.host = job.node.flatMap { hostnames[$0] }
            return job
        }
    }
}
