// GriditModelStore: the content-addressed model store of a griditd state directory.
//
// - `ModelStore`: import / list / show / tag / rm / verify / gc / export / ps, `resolve` and
//   `pipeline(_:)` for the daemon (layout in Layout.swift, SQL in StoreSQL.swift).
// - `PipelineManifest`: one pipeline version, stored as a blob and named by its digest.
// - `ModelReference`: NAME:TAG, NAME@sha256:…, sha256:….
// - `BlobMappings`, `KeepAliveCache`: one mapping per blob, loaded models kept while in use and a
//   keep-alive period after (KeepAliveCache.swift).
// - `StoreChecks`: permission and filesystem checks that name the path component and the fix.
// - `OfflineSession`: how `griditd models` opens a state directory next to (or without) a daemon.
//
// Every call blocks (file I/O, hashing, SQLite): call it from a dedicated thread, not from
// Swift's cooperative pool.

import Foundation
import GRDB
import GriditDiffusion
import GriditDurable
import GriditStateDatabase
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public final class ModelStore: Sendable {
    public enum Access: Sendable {
        /// The process owns the state directory (it holds the `StateDirectoryLock`).
        case readWrite
        /// Another process (the daemon) owns it: nothing is written, not even the database.
        case readOnly
    }

    /// The state directory, resolved to an absolute path without symbolic links.
    public let stateDirectory: String
    /// Read-only site roots, searched before the state directory for tags (blobs: after).
    public let siteRoots: [String]
    public let access: Access
    public let database: StateDatabase
    /// What this process has mapped; gc never deletes those blobs.
    public let mappings: BlobMappings
    /// The model origin of a cluster (`<shared-root>/models`): imports publish to it, and
    /// `pull` copies versions this store lacks from it (ModelStore+Origin.swift). Nil: none.
    public let origin: String?

    let local: StoreRoot
    let sites: [StoreRoot]
    let originRoot: StoreRoot?
    /// One lock per version being pulled, so that concurrent pulls of it copy it once.
    let pulls = Mutex([BlobDigest: NSLock]())
    let now: @Sendable () -> Date
    /// Blobs of imports between publish and commit (a count per digest). gc holds this lock
    /// while it decides and deletes, so an import's blobs are always either pending or committed.
    let pending = Mutex([BlobDigest: Int]())

    /// The migration that creates the store's tables.
    static let migration = "0002_create_model_store"

    /// Opens the store of `stateDirectory` (default `/var/lib/gridit`).
    ///
    /// With `.readWrite` the directory and its subdirectories are created if missing and the
    /// database is migrated; failures name the path component that denies access and the fix.
    /// Pass the process's already opened `database` (the daemon shares it with the job queue).
    /// With `origin` (read-write only) its `blobs/sha256` and `ingest` folders are created if
    /// missing; the folder above it must exist (the shared root is never made here).
    public init(
        stateDirectory: String, siteRoots: [String] = [], origin: String? = nil, database: StateDatabase? = nil,
        access: Access = .readWrite, mappings: BlobMappings = BlobMappings(),
        now: @escaping @Sendable () -> Date = { Date() }
    ) throws(ModelStoreError) {
        self.access = access
        self.mappings = mappings
        self.now = now
        if access == .readWrite {
            for dir in ["", "blobs/sha256", "ingest", "quarantine"] {
                let path = dir.isEmpty ? stateDirectory : joinPath(stateDirectory, dir)
                do {
                    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
                } catch {
                    throw StoreChecks.explainFailure(creating: path, stateDirectory: stateDirectory)
                }
            }
            if let problem = StoreChecks.writeProblem(stateDirectory) { throw problem }
        } else if !FileIdentity.exists(directory: stateDirectory) {
            throw ModelStoreError(
                .notFound, "there is no state directory \(stateDirectory)",
                hint: "check --state-dir (or GRIDIT_STATE_DIR)")
        }
        let canonical = Self.canonical(stateDirectory)
        self.stateDirectory = canonical
        local = StoreRoot(path: canonical, writable: access == .readWrite)
        self.siteRoots = siteRoots.map(Self.canonical)
        sites = self.siteRoots.map { StoreRoot(path: $0, writable: false) }
        if let origin, access == .readWrite {
            try Self.prepareOrigin(origin)
            self.origin = Self.canonical(origin)
            originRoot = StoreRoot(path: self.origin!, writable: true)
        } else {
            self.origin = nil
            originRoot = nil
        }

        if let database {
            self.database = database
        } else {
            let path = joinPath(canonical, StateDatabase.fileName)
            if access == .readOnly, !FileManager.default.fileExists(atPath: path) {
                throw ModelStoreError(
                    .notFound, "there is no state database \(path) yet",
                    hint: "start griditd, or run a `griditd models` command that changes the store")
            }
            do {
                // Read-write means this process holds the state directory: the database is checked
                // against its identity marker (a lost one is never replaced silently).
                self.database =
                    access == .readWrite
                    ? try StateDatabase.openOwned(path: path).database : try StateDatabase(path: path, migrate: false)
            } catch {
                throw ModelStoreError(
                    .database, error.message, hint: error.code == .schemaTooNew ? "use the newer griditd" : nil)
            }
        }
        let applied: [String]
        do { applied = try self.database.appliedMigrations() } catch { throw ModelStoreError(.database, error.message) }
        guard applied.contains(Self.migration) else {
            throw ModelStoreError(
                .database,
                "the state database \(self.database.path) has no model store tables (migration \(Self.migration))",
                hint: "upgrade the running griditd, or stop it and run this command again")
        }
        if access == .readWrite {
            writeRefs()
            // Leftovers of imports killed before a restart: nothing will ever publish them.
            _ = deadIngestFiles(remove: true)
        }
    }

    static func canonical(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : joinPath(FileManager.default.currentDirectoryPath, path)
        guard let resolved = realpath(absolute, nil) else { return (absolute as NSString).standardizingPath }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    var nowMillis: Int64 { now().unixMillis }

    func requireWritable(_ what: String) throws(ModelStoreError) {
        guard access == .readWrite else {
            throw ModelStoreError(
                .daemonRunning, "\(what) changes the store, and a running griditd owns \(stateDirectory)",
                hint: "use `griditctl models …` (the daemon does it), or stop griditd first")
        }
    }

    func read<T>(_ body: (GRDBDatabase) throws -> T) throws(ModelStoreError) -> T {
        do { return try database.read(body) } catch { throw ModelStoreError(.database, error.message) }
    }

    func write<T>(_ body: (GRDBDatabase) throws -> T) throws(ModelStoreError) -> T {
        try requireWritable("this command")
        do { return try database.write(body) } catch { throw ModelStoreError(.database, error.message) }
    }

    // MARK: - Resolving

    /// The manifest digest a reference names now; a job records it, so retagging never changes
    /// what a queued job runs. Site roots are searched before the state directory.
    public func resolve(_ reference: String) throws(ModelStoreError) -> BlobDigest {
        try resolve(ModelReference(parsing: reference))
    }

    public func resolve(_ reference: ModelReference) throws(ModelStoreError) -> BlobDigest {
        switch reference {
        case .tag(let name, let tag):
            for site in sites {
                if let entry = siteRefs(site).first(where: { $0.name == name && $0.tag == tag }) { return entry.digest }
            }
            if let row = try read({ try StoreSQL.tag($0, name: name, tag: tag) }) { return row.manifest }
            let known =
                try read { db in try StoreSQL.tags(db).filter { $0.name == name }.map(\.tag) }
                + sites.flatMap { siteRefs($0).filter { $0.name == name }.map(\.tag) }
            throw ModelStoreError(
                .notFound,
                "no model \(name):\(tag)"
                    + (known.isEmpty
                        ? " (no tag of \(name) exists)"
                        : " (tags of \(name): \(Set(known).sorted().joined(separator: ", ")))"),
                hint: "`models list` shows what exists; `models import` adds a version")
        case .pinned(let name, let digest):
            guard isVersion(digest) else { throw Self.noVersion(digest) }
            let named =
                try read { db in
                    try StoreSQL.history(db, digest: digest).contains { $0.name == name }
                        || StoreSQL.tags(db, pointingAt: digest).contains { $0.name == name }
                } || sites.contains { siteRefs($0).contains { $0.name == name && $0.digest == digest } }
            guard named else {
                throw ModelStoreError(
                    .notFound, "\(digest) exists but was never tagged \(name)",
                    hint:
                        "use sha256:\(digest.hex), or the name it was imported as (`models show sha256:\(digest.short)`)"
                )
            }
            return digest
        case .digest(let digest):
            guard isVersion(digest) else { throw Self.noVersion(digest) }
            return digest
        case .digestPrefix(let hex):
            var matches = Set(try read { try StoreSQL.manifests($0, prefix: hex) })
            for site in sites { matches.formUnion(siteRefs(site).map(\.digest).filter { $0.hex.hasPrefix(hex) }) }
            guard matches.count <= 1 else {
                throw ModelStoreError(
                    .invalidReference, "sha256:\(hex) is ambiguous (\(matches.count) versions start with it)",
                    hint: "give more digits")
            }
            guard let digest = matches.first else {
                throw ModelStoreError(
                    .notFound, "no version's digest starts with sha256:\(hex)", hint: "`models list` shows the digests")
            }
            return digest
        }
    }

    /// A manifest recorded in the database or listed by a site root.
    func isVersion(_ digest: BlobDigest) -> Bool {
        if (try? read({ try StoreSQL.manifest($0, digest) })) != nil { return true }
        return sites.contains { site in siteRefs(site).contains { $0.digest == digest } }
    }

    static func noVersion(_ digest: BlobDigest) -> ModelStoreError {
        ModelStoreError(
            .notFound, "no pipeline version \(digest)",
            hint: "`models list` shows the versions; `models import` adds one")
    }

    // MARK: - Loading (the daemon's path)

    /// The pipeline of version `digest` with every file reference an absolute blob path, and the
    /// blob of each file role, in one call, after an
    /// integrity check of each blob: its stat must match the one recorded when its content last
    /// hashed right (else it is hashed again). A blob that fails is moved to quarantine/ and the
    /// call throws `digestMismatch`.
    public func resolvePipeline(_ digest: BlobDigest) throws(ModelStoreError) -> ResolvedPipeline {
        let manifest = try loadManifest(digest)
        var paths: [PipelineSpec.FileRole: String] = [:]
        var blobs: [PipelineSpec.FileRole: BlobDigest] = [:]
        for blob in manifest.blobs {
            paths[blob.role] = try checkedBlob(blob.digest, what: "\(blob.role.rawValue) of \(digest)", full: false)
            blobs[blob.role] = blob.digest
        }
        return ResolvedPipeline(
            digest: digest, spec: manifest.pipeline.mapFiles { role, _ in paths[role]! }, blobs: blobs)
    }

    /// The decoded manifest of a version (the manifest blob is always fully re-hashed: it is small).
    public func manifest(_ digest: BlobDigest) throws(ModelStoreError) -> PipelineManifest {
        try loadManifest(digest)
    }

    func loadManifest(_ digest: BlobDigest) throws(ModelStoreError) -> PipelineManifest {
        guard isVersion(digest) else { throw Self.noVersion(digest) }
        let path = try checkedBlob(digest, what: "the manifest of \(digest)", full: true)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelStoreError(.io, "cannot read the manifest \(path)")
        }
        return try PipelineManifest.decode(data, name: digest.description)
    }

    /// Roots a blob may be read from: the state directory first (local disk), then site roots.
    var blobRoots: [StoreRoot] { [local] + sites }

    /// The path of an intact copy of blob `digest`. `full` re-hashes even when the recorded stat
    /// matches. A copy that fails is quarantined (writable root) and `digestMismatch` thrown.
    func checkedBlob(_ digest: BlobDigest, what: String, full: Bool) throws(ModelStoreError) -> String {
        for root in blobRoots {
            switch try inspect(digest, in: root, full: full, what: what) {
            case .absent: continue
            case .intact(let path): return path
            case .corrupt(let path, let actual):
                throw try mismatch(digest, actual: actual, at: path, in: root, what: what)
            }
        }
        throw ModelStoreError(
            .notFound,
            "\(what): blob \(digest) is missing from every store root (\(blobRoots.map(\.path).joined(separator: ", ")))",
            hint: "import the model again (its blobs may have been quarantined: see quarantine/)")
    }

    enum BlobState {
        case absent
        case intact(String)
        case corrupt(path: String, actual: BlobDigest)
    }

    /// Whether `root` holds an intact copy of `digest`: its stat equals the one recorded when it
    /// last hashed right (unless `full`), or it hashes right now (then the stat is recorded).
    func inspect(
        _ digest: BlobDigest, in root: StoreRoot, full: Bool, what: String
    ) throws(ModelStoreError) -> BlobState {
        guard let (path, identity) = root.existingBlob(digest) else { return .absent }
        if !full, let recorded = try? read({ try StoreSQL.checked($0, path: path) }),
            recorded.digest == digest, identity.matches(recorded.identity)
        {
            return .intact(path)
        }
        let actual: BlobDigest
        do {
            actual = try hashFile(path: path).0
        } catch {
            throw ModelStoreError(error.code, "\(what): \(error.message)", hint: error.hint)
        }
        guard actual == digest else { return .corrupt(path: path, actual: actual) }
        if access == .readWrite, let after = FileIdentity.of(path: path), after.matches(identity) {
            let at = nowMillis
            _ = try? database.write {
                try StoreSQL.recordCheck($0, path: path, digest: digest, identity: identity, at: at)
            }
        }
        return .intact(path)
    }

    /// Quarantines a corrupt blob of the writable root and describes it.
    func mismatch(
        _ digest: BlobDigest, actual: BlobDigest, at path: String, in root: StoreRoot, what: String
    )
        throws(ModelStoreError) -> ModelStoreError
    {
        try quarantineReport(digest, actual: actual, at: path, in: root, what: what).error
    }

    /// The same, also returning where the blob went (nil when the root is not writable here).
    func quarantineReport(
        _ digest: BlobDigest, actual: BlobDigest, at path: String, in root: StoreRoot, what: String
    )
        throws(ModelStoreError) -> (error: ModelStoreError, quarantinedTo: String?)
    {
        var message =
            "\(what): blob \(path) hashes to \(actual), not \(digest): its content changed (disk error or a write to the file)"
        var hint = "import the model again (griditd models import / griditctl models import)"
        var moved: String?
        if root.writable {
            moved = try root.quarantine(digest, now: now())
            _ = try? database.write { try StoreSQL.forgetCheck($0, path: path) }
            message += "; it was moved to \(moved!)"
        } else {
            hint =
                root.path == stateDirectory
                ? "stop griditd or use `griditctl models verify`, which quarantines it; then import the model again"
                : "the blob is in the read-only site root \(root.path): ask its owner to restore it"
        }
        return (ModelStoreError(.digestMismatch, message, hint: hint), moved)
    }

    // MARK: - Site roots and refs.json

    struct RefsFile: Codable {
        static let format = "gridit.refs.v1"
        struct Entry: Equatable {
            var name: String
            var tag: String
            var digest: BlobDigest
            /// RFC 3339 with milliseconds in the file (`2026-01-02T03:04:05.678Z`).
            var created: Date
        }
        var format: String
        var tags: [Entry]
    }

    func siteRefs(_ root: StoreRoot) -> [RefsFile.Entry] {
        // Read on every `status` and `models ps`: FileBytes, not Foundation (which leaks on empty files).
        guard let bytes = FileBytes.read(root.refsPath),
            let refs = try? JSONDecoder().decode(RefsFile.self, from: Data(bytes)), refs.format == RefsFile.format
        else { return [] }
        return refs.tags
    }

    /// Rewrites refs.json from the database (best effort: the database is the truth here).
    func writeRefs() {
        guard access == .readWrite,
            let entries = try? read({ db in
                try StoreSQL.tags(db).map { t in
                    RefsFile.Entry(
                        name: t.name, tag: t.tag, digest: t.manifest,
                        created: Date(unixMillis: try StoreSQL.manifest(db, t.manifest)?.createdAt ?? t.updatedAt))
                }
            })
        else { return }
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? e.encode(RefsFile(format: RefsFile.format, tags: entries)) else { return }
        if let existing = FileManager.default.contents(atPath: local.refsPath), existing == data { return }
        // Best effort: rewritten at the next change.
        try? DurableFile.write([UInt8](data), to: local.refsPath, failure: { $0 })
    }
}

extension ModelStore.RefsFile.Entry: Codable {
    enum CodingKeys: String, CodingKey { case name, tag, digest, created }

    private static let createdStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        tag = try c.decode(String.self, forKey: .tag)
        digest = try c.decode(BlobDigest.self, forKey: .digest)
        let text = try c.decode(String.self, forKey: .created)
        guard let date = (try? Self.createdStyle.parse(text)) ?? (try? Date.ISO8601FormatStyle().parse(text)) else {
            throw DecodingError.dataCorruptedError(
                forKey: .created, in: c, debugDescription: "not an RFC 3339 timestamp: \(text)")
        }
        created = date
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(tag, forKey: .tag)
        try c.encode(digest, forKey: .digest)
        try c.encode(created.formatted(Self.createdStyle), forKey: .created)
    }
}

/// GRDB's database connection, under a name that does not need `import GRDB` in every file.
typealias GRDBDatabase = Database

extension FileIdentity {
    static func exists(directory: String) -> Bool { FileIdentity.of(path: directory)?.isDirectory == true }
}

/// Which versions live jobs (queued, retryable, running) pin, as the job store says
/// (`JobStore.livePipelinePins`): the model store keeps them and shows them, but does not read
/// the job queue's tables itself.
public struct JobPins: Sendable, Equatable {
    /// Manifest digest → ids of the jobs pinning it, ascending.
    public var jobs: [BlobDigest: [Int64]]

    public init(_ jobs: [BlobDigest: [Int64]] = [:]) { self.jobs = jobs }

    /// From the job store's answer; a pin that is not a manifest digest pins nothing here.
    public init(digests: [String: [Int64]]) {
        var jobs: [BlobDigest: [Int64]] = [:]
        for (digest, ids) in digests { if let d = BlobDigest(digest) { jobs[d] = ids.sorted() } }
        self.init(jobs)
    }
}

/// A version as `ModelStore.resolvePipeline` hands it out: its pipeline with absolute blob paths
/// (each checked against its digest) and the blob of each file role. What griditd hands its
/// engine worker with a batch, so that the worker opens no database.
public struct ResolvedPipeline: Codable, Sendable, Equatable {
    /// The manifest digest.
    public var digest: BlobDigest
    public var spec: PipelineSpec
    public var blobs: [PipelineSpec.FileRole: BlobDigest]

    public init(digest: BlobDigest, spec: PipelineSpec, blobs: [PipelineSpec.FileRole: BlobDigest]) {
        self.digest = digest
        self.spec = spec
        self.blobs = blobs
    }
}

extension PipelineSpec.FileRole: CodingKeyRepresentable {}
