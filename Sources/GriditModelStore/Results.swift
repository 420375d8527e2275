// What the store's commands return, in the store's own terms: dates are `Date`, stored JSON
// documents are their bytes, digests are `sha256:<64 hex>` strings and sizes are bytes. The
// daemon maps them to GriditAPI's wire types (GriditBackend, ModelStore+Wire.swift); this module
// knows no wire format.

import Foundation

/// How `import` puts a source file into the store.
public enum LinkMode: String, Sendable, CaseIterable {
    /// Reflink (copy-on-write clone) if the filesystem can, else a copy: the blob never shares
    /// bytes with a file someone may still write.
    case auto
    /// Copy-on-write clone (`FICLONE`; btrfs, XFS): no extra space and independent of the source.
    case reflink
    /// A second name for the same file, only on request: no extra space, but writing the source
    /// in place changes the blob (a load or `verify` then finds and quarantines it). The source's
    /// mode is left alone; it must be on the store's filesystem.
    case hardlink
    case copy
}

/// One file of a pipeline version.
public struct StoredBlob: Sendable, Equatable {
    /// `manifest`, or a pipeline file role: `stage1.config`, `stage1.weights`, `stage2.config`, …
    public var role: String
    public var digest: String
    public var size: Int64
    public var mediaType: String
    /// The blob file (absolute), where the result names one.
    public var path: String? = nil
    /// `import` only: how it was stored (`reflink`, `hardlink`, `copy`), or `existing` when an
    /// identical blob was already in a store root.
    public var stored: String? = nil
}

/// What `importModel` stored and tagged.
public struct ImportReport: Sendable, Equatable {
    /// `NAME:TAG` now pointing at the version.
    public var reference: String
    /// The manifest digest: what jobs pin.
    public var digest: String
    /// Manifest plus distinct blobs, in bytes.
    public var size: Int64
    /// What the tag pointed to before (nil: it is new; equal to `digest`: nothing changed).
    public var previous: String?
    public var blobs: [StoredBlob]
    /// Bytes actually written into the store (copies); 0 when everything was linked or known.
    public var bytesWritten: Int64
    public var warnings: [String]
    /// The model origin the version was published to (every host of the cluster pulls it from
    /// there); nil without an origin, or when publishing failed (then a warning says why).
    public var published: String? = nil
}

/// A tag, or a version no tag points at, as `list` shows it.
public struct ListedVersion: Sendable, Equatable {
    /// Nil for a version no tag points at (kept because a live job pins it; gc removes it after).
    public var name: String?
    public var tag: String?
    public var digest: String
    public var size: Int64
    public var created: Date
    /// Mapped by this process right now.
    public var loaded: Bool
    /// Live jobs (of the `JobPins` given) pinned to this version.
    public var jobs: Int
    /// Nil for the writable root; the path of the read-only site root that holds it otherwise.
    public var root: String?

    /// `NAME:TAG`, or nil when untagged.
    public var reference: String? { name.flatMap { n in tag.map { "\(n):\($0)" } } }
}

public struct StoreListing: Sendable, Equatable {
    public var models: [ListedVersion]
}

/// One change of a tag.
public struct TagEvent: Sendable, Equatable {
    public var name: String
    public var tag: String
    /// `import`, `tag` or `rm`.
    public var action: String
    /// What the tag pointed to after the event (nil: removed).
    public var digest: String?
    /// What it pointed to before (nil: it did not exist).
    public var previous: String?
    public var at: Date

    public var reference: String { "\(name):\(tag)" }
}

/// Everything `show` knows about one version.
public struct VersionDetails: Sendable, Equatable {
    public var digest: String
    /// Every `NAME:TAG` pointing at it.
    public var references: [String]
    public var created: Date
    public var size: Int64
    /// Nil: the writable root; else the site root holding it.
    public var root: String?
    /// Where it was imported from.
    public var source: String?
    /// The manifest blob's bytes (JSON: format, the pipeline with blob digests, the blob list).
    public var manifest: Data
    /// The model config blobs' bytes (JSON) by role (`stage1.config`, …).
    public var configs: [String: Data]
    /// Manifest first, then the pipeline's files, with their paths.
    public var blobs: [StoredBlob]
    /// Changes of the tags that point, or pointed, at this version (of the one tag asked for
    /// when the reference was NAME:TAG), oldest first.
    public var history: [TagEvent]
    /// Ids of live jobs pinned to it.
    public var jobs: [Int64]
    public var loaded: Bool
}

/// What `tag` changed.
public struct TagChange: Sendable, Equatable {
    public var reference: String
    public var digest: String
    public var previous: String?
}

/// What `remove` took away.
public struct TagRemoval: Sendable, Equatable {
    /// The tags removed.
    public var removed: [String]
    public var digest: String
    /// Tags still pointing at the version.
    public var remaining: [String]
    /// Live jobs still pinned to it (its blobs stay until they finish).
    public var jobs: Int
}

/// One blob as `verify` found it.
public struct BlobCheck: Sendable, Equatable {
    public enum Status: String, Sendable {
        case ok
        /// The content no longer hashes to its name; the blob was moved to quarantine/.
        case mismatch
        case missing
        case unreadable
    }

    public var digest: String
    public var path: String?
    public var size: Int64?
    public var status: Status
    /// The digest the content hashes to now (mismatch only).
    public var actual: String? = nil
    public var quarantinedTo: String? = nil
    /// What went wrong and what to do (non-ok only).
    public var message: String? = nil
    /// `NAME:TAG` (or digests of untagged versions) that reference the blob.
    public var usedBy: [String] = []
}

public struct VerifyReport: Sendable, Equatable {
    public var entries: [BlobCheck]
    public var bytesHashed: Int64

    public var ok: Bool { entries.allSatisfy { $0.status == .ok } }
}

/// What `gc` deleted, or would delete with `dryRun`.
public struct GCReport: Sendable, Equatable {
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
}

/// The bundle `export` wrote.
public struct ExportedBundle: Sendable, Equatable {
    public var digest: String
    public var references: [String]
    /// The bundle written (`-` for standard output).
    public var path: String
    public var size: Int64
    public var blobs: Int
}

/// A mapped blob and how much of it is in memory.
public struct MappedBlob: Sendable, Equatable {
    public var digest: String
    public var path: String
    public var size: Int64
    /// Bytes of the file in the page cache (`mincore`).
    public var resident: Int64
}

/// One loaded model (a keep-alive cache entry), or blobs mapped outside the cache.
public struct MappedModel: Sendable, Equatable {
    /// The cache key (a manifest digest for pipelines), or `pid N` for another process's mappings.
    public var key: String
    public var references: [String]
    /// Jobs using it now.
    public var leases: Int
    public var lastUsed: Date?
    /// When it is unmapped if still idle (nil: in use, or not managed by a cache).
    public var expiresAt: Date?
    public var blobs: [MappedBlob]
    /// Set for mappings found in another process (`/proc/PID/maps`).
    public var pid: Int32? = nil
}

/// What `ps` found mapped.
public struct MappedModels: Sendable, Equatable {
    public var entries: [MappedModel]
}

/// One finding of the store's environment checks.
public struct StoreCheck: Sendable, Equatable {
    public enum Status: String, Sendable { case ok, warning, error }

    /// What was checked, e.g. `state directory writable`.
    public var name: String
    public var status: Status
    /// The path component concerned.
    public var path: String?
    public var message: String
    /// What to do about it (non-ok only).
    public var fix: String? = nil
}

public struct StoreCheckReport: Sendable, Equatable {
    public var checks: [StoreCheck]
    /// No check failed (warnings allowed).
    public var ok: Bool { !checks.contains { $0.status == .error } }
}
