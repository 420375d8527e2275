// Results of the model store's commands (`griditd models …` offline, `griditctl models …` through
// the daemon), on the wire. GriditModelStore returns its own types and griditd maps them to these
// (GriditBackend, ModelStore+Wire.swift); both CLIs print them as tables (`render`,
// ModelsRender.swift) or as JSON (`--json`). Keys are snake_case whatever the encoder's key
// strategy; digests are `sha256:<64 hex>` strings; sizes are bytes.

import Foundation

/// One file of a pipeline version.
public struct ModelBlob: Codable, Sendable, Equatable {
    /// `manifest`, or a pipeline file role: `stage1.config`, `stage1.weights`, `stage2.config`, …
    public var role: String
    public var digest: String
    public var size: Int64
    public var mediaType: String
    /// The blob file (absolute), where the result names one.
    public var path: String?
    /// `import` only: how it was stored (`reflink`, `hardlink`, `copy`), or `existing` when an
    /// identical blob was already in a store root.
    public var stored: String?

    public init(
        role: String, digest: String, size: Int64, mediaType: String, path: String? = nil,
        stored: String? = nil
    ) {
        self.role = role
        self.digest = digest
        self.size = size
        self.mediaType = mediaType
        self.path = path
        self.stored = stored
    }

    enum CodingKeys: String, CodingKey {
        case role, digest, size, path, stored
        case mediaType = "media_type"
    }
}

public struct ModelImportResult: Codable, Sendable, Equatable {
    /// `NAME:TAG` now pointing at the version.
    public var reference: String
    /// The manifest digest: what jobs pin.
    public var digest: String
    /// Manifest plus distinct blobs, in bytes.
    public var size: Int64
    /// What the tag pointed to before (nil: it is new; equal to `digest`: nothing changed).
    public var previous: String?
    public var blobs: [ModelBlob]
    /// Bytes actually written into the store (copies); 0 when everything was linked or known.
    public var bytesWritten: Int64
    public var warnings: [String]
    /// The model origin the version was published to, for every host of the cluster to pull;
    /// nil on one host, or when publishing failed (a warning says why).
    public var published: String?

    public init(
        reference: String, digest: String, size: Int64, previous: String?, blobs: [ModelBlob],
        bytesWritten: Int64, warnings: [String], published: String? = nil
    ) {
        self.reference = reference
        self.digest = digest
        self.size = size
        self.previous = previous
        self.blobs = blobs
        self.bytesWritten = bytesWritten
        self.warnings = warnings
        self.published = published
    }

    enum CodingKeys: String, CodingKey {
        case reference, digest, size, previous, blobs, warnings, published
        case bytesWritten = "bytes_written"
    }
}

public struct ModelListEntry: Codable, Sendable, Equatable {
    /// Nil for a version no tag points at (kept because a live job pins it; gc removes it after).
    public var name: String?
    public var tag: String?
    public var digest: String
    public var size: Int64
    public var created: Timestamp
    /// Mapped by the daemon right now.
    public var loaded: Bool
    /// Queued, retryable or running jobs pinned to this version.
    public var jobs: Int
    /// Nil for the writable root; the path of the read-only site root that holds it otherwise.
    public var root: String?

    public init(
        name: String?, tag: String?, digest: String, size: Int64, created: Timestamp, loaded: Bool,
        jobs: Int, root: String?
    ) {
        self.name = name
        self.tag = tag
        self.digest = digest
        self.size = size
        self.created = created
        self.loaded = loaded
        self.jobs = jobs
        self.root = root
    }

    /// `NAME:TAG`, or nil when untagged.
    public var reference: String? { name.flatMap { n in tag.map { "\(n):\($0)" } } }
}

public struct ModelListResult: Codable, Sendable, Equatable {
    public var models: [ModelListEntry]
    public init(models: [ModelListEntry]) { self.models = models }
}

/// One change of a tag.
public struct ModelTagEvent: Codable, Sendable, Equatable {
    public var name: String
    public var tag: String
    /// `import`, `tag` or `rm`.
    public var action: String
    /// What the tag pointed to after the event (nil: removed).
    public var digest: String?
    /// What it pointed to before (nil: it did not exist).
    public var previous: String?
    public var at: Timestamp

    public init(name: String, tag: String, action: String, digest: String?, previous: String?, at: Timestamp) {
        self.name = name
        self.tag = tag
        self.action = action
        self.digest = digest
        self.previous = previous
        self.at = at
    }

    public var reference: String { "\(name):\(tag)" }
}

public struct ModelShowResult: Codable, Sendable, Equatable {
    public var digest: String
    /// Every `NAME:TAG` pointing at it.
    public var references: [String]
    public var created: Timestamp
    public var size: Int64
    /// Nil: the writable root; else the site root holding it.
    public var root: String?
    /// Where it was imported from.
    public var source: String?
    /// The manifest document (format, the pipeline with blob digests, the blob list).
    public var manifest: JSONValue
    /// Model configs by role (`stage1.config`, …).
    public var configs: [String: JSONValue]
    /// Manifest first, then the pipeline's files, with their paths.
    public var blobs: [ModelBlob]
    /// Changes of the tags that point, or pointed, at this version (of the one tag asked for
    /// when the reference was NAME:TAG), oldest first.
    public var history: [ModelTagEvent]
    /// Ids of live jobs pinned to it.
    public var jobs: [Int64]
    public var loaded: Bool

    public init(
        digest: String, references: [String], created: Timestamp, size: Int64, root: String?,
        source: String?, manifest: JSONValue, configs: [String: JSONValue], blobs: [ModelBlob],
        history: [ModelTagEvent], jobs: [Int64], loaded: Bool
    ) {
        self.digest = digest
        self.references = references
        self.created = created
        self.size = size
        self.root = root
        self.source = source
        self.manifest = manifest
        self.configs = configs
        self.blobs = blobs
        self.history = history
        self.jobs = jobs
        self.loaded = loaded
    }
}

public struct ModelTagResult: Codable, Sendable, Equatable {
    public var reference: String
    public var digest: String
    public var previous: String?

    public init(reference: String, digest: String, previous: String?) {
        self.reference = reference
        self.digest = digest
        self.previous = previous
    }
}

public struct ModelRemoveResult: Codable, Sendable, Equatable {
    /// The tags removed.
    public var removed: [String]
    public var digest: String
    /// Tags still pointing at the version.
    public var remaining: [String]
    /// Live jobs still pinned to it (its blobs stay until they finish).
    public var jobs: Int

    public init(removed: [String], digest: String, remaining: [String], jobs: Int) {
        self.removed = removed
        self.digest = digest
        self.remaining = remaining
        self.jobs = jobs
    }
}

public enum ModelVerifyStatus: String, Codable, Sendable {
    case ok
    /// The content no longer hashes to its name; the blob was moved to quarantine/.
    case mismatch
    case missing
    case unreadable
}

public struct ModelVerifyEntry: Codable, Sendable, Equatable {
    public var digest: String
    public var path: String?
    public var size: Int64?
    public var status: ModelVerifyStatus
    /// The digest the content hashes to now (mismatch only).
    public var actual: String?
    public var quarantinedTo: String?
    /// What went wrong and what to do (non-ok only).
    public var message: String?
    /// `NAME:TAG` (or digests of untagged versions) that reference the blob.
    public var usedBy: [String]

    public init(
        digest: String, path: String?, size: Int64?, status: ModelVerifyStatus, actual: String? = nil,
        quarantinedTo: String? = nil, message: String? = nil, usedBy: [String] = []
    ) {
        self.digest = digest
        self.path = path
        self.size = size
        self.status = status
        self.actual = actual
        self.quarantinedTo = quarantinedTo
        self.message = message
        self.usedBy = usedBy
    }

    enum CodingKeys: String, CodingKey {
        case digest, path, size, status, actual, message
        case quarantinedTo = "quarantined_to"
        case usedBy = "used_by"
    }
}

public struct ModelVerifyResult: Codable, Sendable, Equatable {
    public var entries: [ModelVerifyEntry]
    public var bytesHashed: Int64

    public init(entries: [ModelVerifyEntry], bytesHashed: Int64) {
        self.entries = entries
        self.bytesHashed = bytesHashed
    }

    public var ok: Bool { entries.allSatisfy { $0.status == .ok } }

    enum CodingKeys: String, CodingKey {
        case entries, ok
        case bytesHashed = "bytes_hashed"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        entries = try c.decode([ModelVerifyEntry].self, forKey: .entries)
        bytesHashed = try c.decode(Int64.self, forKey: .bytesHashed)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(entries, forKey: .entries)
        try c.encode(ok, forKey: .ok)
        try c.encode(bytesHashed, forKey: .bytesHashed)
    }
}

public struct ModelGCResult: Codable, Sendable, Equatable {
    public var dryRun: Bool
    /// Blob digests deleted (or that would be, with dry run).
    public var removedBlobs: [String]
    /// Versions no tag and no live job referenced.
    public var removedManifests: [String]
    /// Leftover temporary files of interrupted imports.
    public var removedTemporary: [String]
    public var freedBytes: Int64
    /// Unreferenced blobs kept because a process has them mapped.
    public var keptMapped: [String]

    public init(
        dryRun: Bool, removedBlobs: [String], removedManifests: [String], removedTemporary: [String],
        freedBytes: Int64, keptMapped: [String]
    ) {
        self.dryRun = dryRun
        self.removedBlobs = removedBlobs
        self.removedManifests = removedManifests
        self.removedTemporary = removedTemporary
        self.freedBytes = freedBytes
        self.keptMapped = keptMapped
    }

    enum CodingKeys: String, CodingKey {
        case dryRun = "dry_run"
        case removedBlobs = "removed_blobs"
        case removedManifests = "removed_manifests"
        case removedTemporary = "removed_temporary"
        case freedBytes = "freed_bytes"
        case keptMapped = "kept_mapped"
    }
}

public struct ModelExportResult: Codable, Sendable, Equatable {
    public var digest: String
    public var references: [String]
    /// The bundle written (`-` for standard output).
    public var path: String
    public var size: Int64
    public var blobs: Int

    public init(digest: String, references: [String], path: String, size: Int64, blobs: Int) {
        self.digest = digest
        self.references = references
        self.path = path
        self.size = size
        self.blobs = blobs
    }
}

/// A mapped blob and how much of it is in memory.
public struct ModelMappedBlob: Codable, Sendable, Equatable {
    public var digest: String
    public var path: String
    public var size: Int64
    /// Bytes of the file in the page cache (`mincore`).
    public var resident: Int64

    public init(digest: String, path: String, size: Int64, resident: Int64) {
        self.digest = digest
        self.path = path
        self.size = size
        self.resident = resident
    }
}

/// One loaded model (a keep-alive cache entry), or blobs mapped outside the cache.
public struct ModelPSEntry: Codable, Sendable, Equatable {
    /// The cache key (a manifest digest for pipelines), or `pid N` for another process's mappings.
    public var key: String
    public var references: [String]
    /// Jobs using it now.
    public var leases: Int
    public var lastUsed: Timestamp?
    /// When it is unmapped if still idle (nil: in use, or not managed by a cache).
    public var expiresAt: Timestamp?
    public var blobs: [ModelMappedBlob]
    /// Set for mappings found in another process (`/proc/PID/maps`).
    public var pid: Int32?

    public init(
        key: String, references: [String], leases: Int, lastUsed: Timestamp?, expiresAt: Timestamp?,
        blobs: [ModelMappedBlob], pid: Int32? = nil
    ) {
        self.key = key
        self.references = references
        self.leases = leases
        self.lastUsed = lastUsed
        self.expiresAt = expiresAt
        self.blobs = blobs
        self.pid = pid
    }

    public var size: Int64 { blobs.reduce(0) { $0 + $1.size } }
    public var resident: Int64 { blobs.reduce(0) { $0 + $1.resident } }

    enum CodingKeys: String, CodingKey {
        case key, references, leases, blobs, pid
        case lastUsed = "last_used"
        case expiresAt = "expires_at"
    }
}

public struct ModelPSResult: Codable, Sendable, Equatable {
    public var entries: [ModelPSEntry]
    public init(entries: [ModelPSEntry]) { self.entries = entries }
}

/// One finding of the store's environment checks (`griditd models check`, `griditctl doctor`).
public struct ModelStoreCheck: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable { case ok, warning, error }

    /// What was checked, e.g. `state directory writable`.
    public var name: String
    public var status: Status
    /// The path component concerned.
    public var path: String?
    public var message: String
    /// What to do about it (non-ok only).
    public var fix: String?

    public init(name: String, status: Status, path: String?, message: String, fix: String? = nil) {
        self.name = name
        self.status = status
        self.path = path
        self.message = message
        self.fix = fix
    }
}

public struct ModelStoreCheckResult: Codable, Sendable, Equatable {
    public var checks: [ModelStoreCheck]
    public init(checks: [ModelStoreCheck]) { self.checks = checks }
    /// No check failed (warnings allowed).
    public var ok: Bool { !checks.contains { $0.status == .error } }

    enum CodingKeys: String, CodingKey { case checks, ok }

    public init(from decoder: any Decoder) throws {
        checks = try decoder.container(keyedBy: CodingKeys.self).decode([ModelStoreCheck].self, forKey: .checks)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(checks, forKey: .checks)
        try c.encode(ok, forKey: .ok)
    }
}
