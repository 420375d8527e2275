// The model store's results as GriditAPI's wire types: the one place they meet, used by the
// daemon's `ModelCatalog` (ModelStoreCatalog.swift) and by `griditd models …` offline, so both
// print and encode the same JSON.

import Foundation
import GriditAPI
import GriditModelStore

extension ModelBlob {
    public init(_ blob: StoredBlob) {
        self.init(
            role: blob.role, digest: blob.digest, size: blob.size, mediaType: blob.mediaType, path: blob.path,
            stored: blob.stored)
    }
}

extension ModelImportResult {
    public init(_ report: ImportReport) {
        self.init(
            reference: report.reference, digest: report.digest, size: report.size, previous: report.previous,
            blobs: report.blobs.map(ModelBlob.init), bytesWritten: report.bytesWritten, warnings: report.warnings,
            published: report.published)
    }
}

extension ModelListResult {
    public init(_ listing: StoreListing) {
        self.init(
            models: listing.models.map { v in
                ModelListEntry(
                    name: v.name, tag: v.tag, digest: v.digest, size: v.size, created: Timestamp(v.created),
                    loaded: v.loaded, jobs: v.jobs, root: v.root)
            })
    }
}

extension ModelTagEvent {
    public init(_ event: TagEvent) {
        self.init(
            name: event.name, tag: event.tag, action: event.action, digest: event.digest, previous: event.previous,
            at: Timestamp(event.at))
    }
}

extension ModelShowResult {
    /// Stored JSON documents become `JSONValue`s; a config blob that is not JSON is left out.
    public init(_ version: VersionDetails) {
        self.init(
            digest: version.digest, references: version.references, created: Timestamp(version.created),
            size: version.size, root: version.root, source: version.source,
            manifest: JSONValue(json: version.manifest) ?? .null,
            configs: version.configs.compactMapValues { JSONValue(json: $0) },
            blobs: version.blobs.map(ModelBlob.init), history: version.history.map(ModelTagEvent.init),
            jobs: version.jobs, loaded: version.loaded)
    }
}

extension ModelTagResult {
    public init(_ change: TagChange) {
        self.init(reference: change.reference, digest: change.digest, previous: change.previous)
    }
}

extension ModelRemoveResult {
    public init(_ removal: TagRemoval) {
        self.init(removed: removal.removed, digest: removal.digest, remaining: removal.remaining, jobs: removal.jobs)
    }
}

extension ModelVerifyResult {
    public init(_ report: VerifyReport) {
        self.init(
            entries: report.entries.map { e in
                ModelVerifyEntry(
                    digest: e.digest, path: e.path, size: e.size, status: ModelVerifyStatus(e.status),
                    actual: e.actual, quarantinedTo: e.quarantinedTo, message: e.message, usedBy: e.usedBy)
            }, bytesHashed: report.bytesHashed)
    }
}

extension ModelVerifyStatus {
    init(_ status: BlobCheck.Status) {
        switch status {
        case .ok: self = .ok
        case .mismatch: self = .mismatch
        case .missing: self = .missing
        case .unreadable: self = .unreadable
        }
    }
}

extension ModelGCResult {
    public init(_ report: GCReport) {
        self.init(
            dryRun: report.dryRun, removedBlobs: report.removedBlobs, removedManifests: report.removedManifests,
            removedTemporary: report.removedTemporary, freedBytes: report.freedBytes, keptMapped: report.keptMapped)
    }
}

extension ModelExportResult {
    public init(_ bundle: ExportedBundle) {
        self.init(
            digest: bundle.digest, references: bundle.references, path: bundle.path, size: bundle.size,
            blobs: bundle.blobs)
    }
}

extension ModelPSResult {
    public init(_ mapped: MappedModels) {
        self.init(
            entries: mapped.entries.map { m in
                ModelPSEntry(
                    key: m.key, references: m.references, leases: m.leases, lastUsed: m.lastUsed.map(Timestamp.init),
                    expiresAt: m.expiresAt.map(Timestamp.init),
                    blobs: m.blobs.map {
                        ModelMappedBlob(digest: $0.digest, path: $0.path, size: $0.size, resident: $0.resident)
                    }, pid: m.pid)
            })
    }
}

extension ModelStoreCheckResult {
    public init(_ report: StoreCheckReport) {
        self.init(
            checks: report.checks.map { c in
                ModelStoreCheck(
                    name: c.name, status: ModelStoreCheck.Status(c.status), path: c.path, message: c.message,
                    fix: c.fix)
            })
    }
}

extension ModelStoreCheck.Status {
    init(_ status: StoreCheck.Status) {
        switch status {
        case .ok: self = .ok
        case .warning: self = .warning
        case .error: self = .error
        }
    }
}
