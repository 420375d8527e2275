// The SQL of the model store on its own tables (migrations/0002_create_model_store.sql) of the
// state database; it never reads the job queue's (live jobs' pins come from `JobStore`). Every
// function runs inside a transaction its caller opened (`StateDatabase.write` / `read`).

import Foundation
import GRDB
import GriditStateDatabase

#if canImport(Glibc)
import Glibc
#endif

enum StoreSQL {
    struct ManifestRow {
        var digest: BlobDigest
        var size: Int64
        var createdAt: Int64
        var source: String
    }

    struct BlobRow {
        var role: String
        var digest: BlobDigest
        var size: Int64
        var mediaType: String
    }

    struct TagRow {
        var name: String
        var tag: String
        var manifest: BlobDigest
        var updatedAt: Int64
        var reference: String { "\(name):\(tag)" }
    }

    // MARK: Manifests

    static func insertManifest(_ db: Database, _ row: ManifestRow, blobs: [BlobRow]) throws {
        try db.execute(
            sql: "INSERT OR IGNORE INTO model_manifest (digest, size, created_at, source) VALUES (?, ?, ?, ?)",
            arguments: [row.digest.description, row.size, row.createdAt, row.source])
        for b in blobs {
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO model_manifest_blob (manifest, role, digest, size, media_type)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                arguments: [row.digest.description, b.role, b.digest.description, b.size, b.mediaType])
        }
    }

    static func manifest(_ db: Database, _ digest: BlobDigest) throws -> ManifestRow? {
        try Row.fetchOne(db, sql: "SELECT * FROM model_manifest WHERE digest = ?", arguments: [digest.description])
            .map(manifestRow)
    }

    static func manifests(_ db: Database) throws -> [ManifestRow] {
        try Row.fetchAll(db, sql: "SELECT * FROM model_manifest ORDER BY created_at, digest").map(manifestRow)
    }

    /// Manifests whose digest starts with `sha256:<hex>`.
    static func manifests(_ db: Database, prefix hex: String) throws -> [BlobDigest] {
        try String.fetchAll(
            db, sql: "SELECT digest FROM model_manifest WHERE substr(digest, 8, ?) = ?",
            arguments: [hex.count, hex]
        ).compactMap(BlobDigest.init)
    }

    private static func manifestRow(_ r: Row) -> ManifestRow {
        ManifestRow(
            digest: BlobDigest(r["digest"] as String)!, size: r["size"], createdAt: r["created_at"], source: r["source"]
        )
    }

    static func blobs(_ db: Database, of manifest: BlobDigest) throws -> [BlobRow] {
        try Row.fetchAll(
            db, sql: "SELECT * FROM model_manifest_blob WHERE manifest = ? ORDER BY rowid",
            arguments: [manifest.description]
        ).map { r in
            BlobRow(
                role: r["role"], digest: BlobDigest(r["digest"] as String)!, size: r["size"], mediaType: r["media_type"]
            )
        }
    }

    /// Manifest digest -> the blob digests it lists.
    static func allBlobReferences(_ db: Database) throws -> [BlobDigest: Set<BlobDigest>] {
        var out: [BlobDigest: Set<BlobDigest>] = [:]
        for r in try Row.fetchAll(db, sql: "SELECT manifest, digest FROM model_manifest_blob") {
            out[BlobDigest(r["manifest"] as String)!, default: []].insert(BlobDigest(r["digest"] as String)!)
        }
        return out
    }

    /// Manifest digest -> its distinct blobs and their sizes.
    static func allBlobSizes(_ db: Database) throws -> [BlobDigest: [BlobDigest: Int64]] {
        var out: [BlobDigest: [BlobDigest: Int64]] = [:]
        for r in try Row.fetchAll(db, sql: "SELECT manifest, digest, size FROM model_manifest_blob") {
            out[BlobDigest(r["manifest"] as String)!, default: [:]][BlobDigest(r["digest"] as String)!] = r["size"]
        }
        return out
    }

    static func deleteManifest(_ db: Database, _ digest: BlobDigest) throws {
        try db.execute(sql: "DELETE FROM model_manifest WHERE digest = ?", arguments: [digest.description])
    }

    // MARK: Tags

    static func tags(_ db: Database) throws -> [TagRow] {
        try Row.fetchAll(db, sql: "SELECT * FROM model_tag ORDER BY name, tag").map(tagRow)
    }

    static func tag(_ db: Database, name: String, tag: String) throws -> TagRow? {
        try Row.fetchOne(db, sql: "SELECT * FROM model_tag WHERE name = ? AND tag = ?", arguments: [name, tag]).map(
            tagRow)
    }

    static func tags(_ db: Database, pointingAt digest: BlobDigest) throws -> [TagRow] {
        try Row.fetchAll(
            db, sql: "SELECT * FROM model_tag WHERE manifest = ? ORDER BY name, tag",
            arguments: [digest.description]
        ).map(tagRow)
    }

    private static func tagRow(_ r: Row) -> TagRow {
        TagRow(
            name: r["name"], tag: r["tag"], manifest: BlobDigest(r["manifest"] as String)!, updatedAt: r["updated_at"])
    }

    /// Points NAME:TAG at `manifest` and appends the change to the history (unless nothing
    /// changed). Returns what the tag pointed to before.
    @discardableResult
    static func setTag(
        _ db: Database, name: String, tag: String, manifest: BlobDigest, action: String, at: Int64
    ) throws
        -> BlobDigest?
    {
        let previous = try self.tag(db, name: name, tag: tag)?.manifest
        guard previous != manifest else { return previous }
        try db.execute(
            sql: """
                INSERT INTO model_tag (name, tag, manifest, updated_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (name, tag) DO UPDATE SET manifest = excluded.manifest, updated_at = excluded.updated_at
                """,
            arguments: [name, tag, manifest.description, at])
        try db.execute(
            sql: "INSERT INTO model_tag_event (name, tag, action, manifest, previous, at) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [name, tag, action, manifest.description, previous?.description, at])
        return previous
    }

    /// Removes the tag if it still points at `manifest` (it may have moved since the caller looked).
    static func removeTag(
        _ db: Database, name: String, tag: String, ifAt manifest: BlobDigest, at: Int64
    ) throws -> BlobDigest? {
        guard let previous = try self.tag(db, name: name, tag: tag)?.manifest, previous == manifest else { return nil }
        try db.execute(sql: "DELETE FROM model_tag WHERE name = ? AND tag = ?", arguments: [name, tag])
        try db.execute(
            sql:
                "INSERT INTO model_tag_event (name, tag, action, manifest, previous, at) VALUES (?, ?, 'rm', NULL, ?, ?)",
            arguments: [name, tag, previous.description, at])
        return previous
    }

    struct EventRow {
        var name, tag, action: String
        var manifest, previous: BlobDigest?
        var at: Int64
    }

    /// The history of one tag, or of every tag that pointed at `digest`, oldest first.
    static func history(
        _ db: Database, name: String? = nil, tag: String? = nil, digest: BlobDigest? = nil
    ) throws -> [EventRow] {
        let rows: [Row]
        if let name, let tag {
            rows = try Row.fetchAll(
                db, sql: "SELECT * FROM model_tag_event WHERE name = ? AND tag = ? ORDER BY id",
                arguments: [name, tag])
        } else if let digest {
            rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM model_tag_event WHERE (name, tag) IN
                      (SELECT name, tag FROM model_tag_event WHERE manifest = ?1 OR previous = ?1)
                    ORDER BY id
                    """,
                arguments: [digest.description])
        } else {
            rows = try Row.fetchAll(db, sql: "SELECT * FROM model_tag_event ORDER BY id")
        }
        return rows.map { r in
            EventRow(
                name: r["name"], tag: r["tag"], action: r["action"],
                manifest: (r["manifest"] as String?).flatMap(BlobDigest.init),
                previous: (r["previous"] as String?).flatMap(BlobDigest.init), at: r["at"])
        }
    }

    // MARK: Integrity-check cache

    static func checked(_ db: Database, path: String) throws -> (digest: BlobDigest, identity: FileIdentity)? {
        guard let r = try Row.fetchOne(db, sql: "SELECT * FROM model_blob_check WHERE path = ?", arguments: [path]),
            let digest = BlobDigest(r["digest"] as String)
        else { return nil }
        let identity = FileIdentity(
            size: r["size"], device: UInt64(bitPattern: r["device"] as Int64),
            inode: UInt64(bitPattern: r["inode"] as Int64),
            mtimeNs: r["mtime_ns"], ctimeNs: r["ctime_ns"], mode: UInt32(S_IFREG))
        return (digest, identity)
    }

    static func recordCheck(
        _ db: Database, path: String, digest: BlobDigest, identity id: FileIdentity, at: Int64
    ) throws {
        try db.execute(
            sql: """
                INSERT INTO model_blob_check (path, digest, size, device, inode, mtime_ns, ctime_ns, checked_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (path) DO UPDATE SET digest = excluded.digest, size = excluded.size, device = excluded.device,
                  inode = excluded.inode, mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns,
                  checked_at = excluded.checked_at
                """,
            arguments: [
                path, digest.description, id.size, Int64(bitPattern: id.device), Int64(bitPattern: id.inode),
                id.mtimeNs, id.ctimeNs, at,
            ])
    }

    static func forgetCheck(_ db: Database, path: String) throws {
        try db.execute(sql: "DELETE FROM model_blob_check WHERE path = ?", arguments: [path])
    }
}

extension FileIdentity {
    /// Same file, same content as when recorded: size, device, inode, mtime and ctime equal (any
    /// write or chmod changes ctime, which users cannot set back).
    func matches(_ recorded: FileIdentity) -> Bool {
        size == recorded.size && device == recorded.device && inode == recorded.inode && mtimeNs == recorded.mtimeNs
            && ctimeNs == recorded.ctimeNs
    }
}
