import Foundation
import GriditJobQueue
import GriditStateDatabase
import PostgresNIO

/// The hosts sharing the queue (`node`, migration 0002). Times follow the store's clock, so a
/// node's "last seen" is the database's instant on every host.
extension PostgresJobStore: NodeRegistry {
    public func registerNode(id: String, hostname: String, version: String, now: Date) async throws(StateError) {
        let uuid = try Self.nodeUUID(id), now = injected(now)
        try await transaction(onUnknownCommit: .retry) { connection in
            _ = try await connection.sql(
                """
                INSERT INTO node (id, hostname, version, started_at, last_seen_at)
                SELECT \(uuid), \(hostname), \(version), t, t FROM (SELECT coalesce(\(now)::timestamptz, now()) AS t) AS clock
                ON CONFLICT (id) DO UPDATE
                   SET hostname = excluded.hostname, version = excluded.version,
                       started_at = excluded.started_at, last_seen_at = excluded.last_seen_at
                """)
        }
    }

    public func touchNode(id: String, hostname: String, version: String, now: Date) async throws(StateError) -> Bool {
        let uuid = try Self.nodeUUID(id), at = injected(now)
        let draining = try await transaction(onUnknownCommit: .retry) { connection in
            try await connection.sql(
                """
                UPDATE node SET last_seen_at = coalesce(\(at)::timestamptz, now()) WHERE id = \(uuid) RETURNING draining
                """
            ).first(Bool.self)
        }
        if let draining { return draining }
        // Removed while it ran (`nodes rm`, a wiped node table): it is alive, so it registers
        // again as it would at start (drained hosts for a whole restored cluster would stop it).
        logger.warning(
            "this node was missing from the registry (griditctl nodes rm while it ran, or a restored database); it registered again",
            metadata: ["node.id": "\(id)"])
        try await registerNode(id: id, hostname: hostname, version: version, now: now)
        return false
    }

    public func nodes() async throws(StateError) -> [NodeRecord] {
        try await read { connection in
            var records: [NodeRecord] = []
            let query = PostgresQuery(unsafeSQL: Self.selectNodes + " ORDER BY hostname, id")
            for row in try await connection.sql(query) {
                records.append(try self.decodeNode(row))
            }
            return records
        }
    }

    public func setDraining(id: String, _ draining: Bool, now: Date) async throws(StateError) -> NodeRecord {
        guard let uuid = UUID(uuidString: id) else { throw StateError.nodeNotFound(id) }
        return try await transaction(onUnknownCommit: .retry) { connection in
            try await connection.sql("UPDATE node SET draining = \(draining) WHERE id = \(uuid)")
            let query = PostgresQuery(unsafeSQL: Self.selectNodes + " WHERE id = $1", binds: Self.binds(uuid))
            for row in try await connection.sql(query) { return try self.decodeNode(row) }
            throw StateError.nodeNotFound(id)
        }
    }

    public func removeNode(id: String, unseenFor: TimeInterval, now: Date) async throws(StateError) {
        let uuid = try Self.nodeUUID(id), at = injected(now)
        try await transaction(
            onUnknownCommit: .resolve { connection, _ in
                try await connection.sql("SELECT 1 FROM node WHERE id = \(uuid)").rows.isEmpty
                    ? .committed(()) : .notCommitted
            }
        ) { connection in
            var found: (unseen: Double, running: Int)?
            for row in try await connection.sql(
                """
                SELECT extract(epoch FROM coalesce(\(at)::timestamptz, now()) - last_seen_at)::float8,
                       (SELECT count(*) FROM job WHERE node_id = node.id AND state = 'running')::int8
                  FROM node WHERE id = \(uuid) FOR UPDATE
                """)
            {
                let (unseen, running) = try row.decode((Double, Int64).self)
                found = (unseen, Int(running))
            }
            guard let found else { throw StateError.nodeNotFound(id) }
            guard found.unseen >= unseenFor else {
                throw StateError(
                    .invalidTransition,
                    "node \(id) was seen \(Int(found.unseen)) s ago, not gone (\(Int(unseenFor)) s unseen): "
                        + "stop griditd there first (drain it to let its jobs finish)")
            }
            guard found.running == 0 else {
                throw StateError(
                    .invalidTransition,
                    "node \(id) still holds \(found.running) running job(s); other hosts requeue them once "
                        + "their leases expire, then it can be removed")
            }
            try await connection.sql("DELETE FROM node WHERE id = \(uuid)")
        }
    }

    public func sharedRootMark(proposing proposed: String?) async throws(StateError) -> String? {
        try await transaction(onUnknownCommit: .retry) { connection in
            if let proposed {
                try await connection.sql(
                    """
                    INSERT INTO cluster_fact (name, value) VALUES ('shared_root_mark', \(proposed))
                    ON CONFLICT (name) DO NOTHING
                    """)
            }
            return try await connection.sql("SELECT value FROM cluster_fact WHERE name = 'shared_root_mark'")
                .first(String.self)
        }
    }

    /// Every node column, its id as text, and its running jobs (through `job_running_node`).
    static let selectNodes = """
        SELECT id::text AS id, hostname, version, started_at, last_seen_at, draining,
               (SELECT count(*) FROM job WHERE state = 'running' AND node_id = node.id) AS running_jobs,
               extract(epoch FROM now() - last_seen_at)::float8 AS unseen
          FROM node
        """

    func decodeNode(_ postgresRow: PostgresRow) throws -> NodeRecord {
        let row = postgresRow.makeRandomAccess()
        var record = NodeRecord(
            id: try row["id"].decode(String.self), hostname: try row["hostname"].decode(String.self),
            version: try row["version"].decode(String.self), startedAt: try row["started_at"].decode(Date.self),
            lastSeen: try row["last_seen_at"].decode(Date.self), draining: try row["draining"].decode(Bool.self),
            runningJobs: try row["running_jobs"].decode(Int.self))
        // By the database's clock, as "last seen" was written: no host's own clock is asked.
        if clock == .database { record.unseenFor = try row["unseen"].decode(Double.self) }
        return record
    }

    static func nodeUUID(_ id: String) throws(StateError) -> UUID {
        guard let uuid = UUID(uuidString: id) else {
            throw StateError(.invalidArgument, "a node id is a UUID (got '\(id)')")
        }
        return uuid
    }

    private static func binds(_ values: UUID...) -> PostgresBindings {
        var binds = PostgresBindings()
        for value in values { binds.append(value) }
        return binds
    }
}
