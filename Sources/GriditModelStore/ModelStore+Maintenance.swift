import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditDurable
import GriditStateDatabase
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

extension ModelStore {
    // MARK: verify

    /// Re-hashes every blob of the version `reference` names, or (nil) of every version plus every
    /// blob file of the writable root. A blob that no longer hashes to its name is moved to
    /// quarantine/ (when this process owns the state directory) and reported.
    public func verify(
        _ reference: String? = nil, progress: ImportProgress? = nil
    ) throws(ModelStoreError) -> VerifyReport {
        var versions: [BlobDigest] = []
        if let reference {
            versions = [try resolve(reference)]
        } else {
            versions = try read { try StoreSQL.manifests($0) }.map(\.digest)
            for site in sites {
                for e in siteRefs(site) where !versions.contains(e.digest) { versions.append(e.digest) }
            }
        }
        let labels = try versionLabels()
        var entries: [BlobCheck] = []
        var done: [BlobDigest: Int] = [:]
        var hashed: Int64 = 0

        func check(_ digest: BlobDigest, usedBy label: String?) throws(ModelStoreError) -> BlobCheck.Status {
            if let i = done[digest] {
                if let label, !entries[i].usedBy.contains(label) { entries[i].usedBy.append(label) }
                return entries[i].status
            }
            var entry = BlobCheck(
                digest: digest.description, path: nil, size: nil, status: .missing,
                message: "no store root holds it; import the model again", usedBy: label.map { [$0] } ?? [])
            for root in blobRoots {
                guard let (path, identity) = root.existingBlob(digest) else { continue }
                entry.path = path
                entry.size = identity.size
                do {
                    let (actual, size) = try hashFile(path: path) { progress?(path, $0, identity.size) }
                    hashed += size
                    if actual == digest {
                        entry.status = .ok
                        entry.message = nil
                        if access == .readWrite {
                            let at = nowMillis
                            _ = try? database.write {
                                try StoreSQL.recordCheck($0, path: path, digest: digest, identity: identity, at: at)
                            }
                        }
                    } else {
                        let (error, moved) = try quarantineReport(
                            digest, actual: actual, at: path, in: root, what: "verify")
                        entry.status = .mismatch
                        entry.actual = actual.description
                        entry.message = error.message + ". Fix: " + (error.hint ?? "")
                        entry.quarantinedTo = moved
                    }
                } catch {
                    entry.status = .unreadable
                    entry.message = error.description
                }
                break
            }
            done[digest] = entries.count
            entries.append(entry)
            return entry.status
        }

        for version in versions {
            let label = labels[version] ?? version.description
            guard try check(version, usedBy: label) == .ok, let path = entries[done[version]!].path,
                let data = FileManager.default.contents(atPath: path)
            else { continue }
            guard let manifest = try? PipelineManifest.decode(data, name: version.description) else {
                entries[done[version]!].status = .mismatch
                entries[done[version]!].message = "the manifest does not decode; import the model again"
                continue
            }
            for blob in manifest.blobs { _ = try check(blob.digest, usedBy: "\(label) \(blob.role.rawValue)") }
        }
        if reference == nil {
            for digest in local.blobDigests() { _ = try check(digest, usedBy: nil) }
        }
        return VerifyReport(entries: entries, bytesHashed: hashed)
    }

    /// `NAME:TAG, …` (or nothing) for each version.
    func versionLabels() throws(ModelStoreError) -> [BlobDigest: String] {
        var names: [BlobDigest: [String]] = [:]
        for t in try read({ try StoreSQL.tags($0) }) { names[t.manifest, default: []].append(t.reference) }
        for site in sites { for e in siteRefs(site) { names[e.digest, default: []].append("\(e.name):\(e.tag)") } }
        return names.mapValues { $0.joined(separator: ", ") }
    }

    // MARK: gc

    /// Deletes versions no tag and no live job of `pins` references, then every blob file of the
    /// writable root that no remaining version references, unless this process or another maps it
    /// or an import in progress is about to reference it; and removes the temporary files of dead
    /// imports. With `dryRun` nothing is deleted. Site roots are never touched.
    ///
    /// `pins` comes from the job store (`JobStore.livePipelinePins`), read just before: a job
    /// submitted after that pins a version by its tag (which gc keeps) or by the digest of an
    /// untagged version, which it may lose (the job then fails `model_missing`), as it could
    /// when gc and the job queue shared a transaction (a submit resolves before it inserts).
    public func gc(dryRun: Bool = false, pins: JobPins) throws(ModelStoreError) -> GCReport {
        try requireWritable("gc")
        let result: Result<GCReport, ModelStoreError> = pending.withLock { pending in
            do throws(ModelStoreError) {
                return .success(try collect(pending: Set(pending.keys), pinned: Set(pins.jobs.keys), dryRun: dryRun))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// How long a file in the origin's `ingest/` or `tags/`, or a conversion's file, must be
    /// untouched to count as left over.
    static let originIngestAge: time_t = 3600
    /// The name ending of a conversion's file in `ingest/`.
    static let convertingSuffix = ".converting"

    /// The `ingest/` files of dead imports (a live importer holds a lock on its own; a dead one,
    /// even after kill -9, does not) and their bytes; removed with `remove`. Only regular files
    /// named `<uuid>.partial`, the names importers make, are considered, and the files of killed
    /// conversions (`<uuid>.converting` and its durable write's temporary, which hold no lock:
    /// by age, untouched for `originIngestAge`). In the cluster's origin (`origin`), where the
    /// writer may be another host and NFS emulates no `flock` of a file opened read-only, the
    /// test is age for all (a live copy writes every chunk); there also the `tags/` temporaries
    /// of killed tag writes.
    func deadIngestFiles(remove: Bool, origin: StoreRoot? = nil) -> (paths: [String], bytes: Int64) {
        let oldest = time(nil) - Self.originIngestAge
        var candidates: [(path: String, byAge: Bool)] = []
        let folders = origin.map { [$0.ingestDirectory, $0.tagsDirectory] } ?? [local.ingestDirectory]
        for folder in folders {
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted() {
                if name.hasSuffix(".partial") {
                    candidates.append((joinPath(folder, name), origin != nil))
                } else if name.hasSuffix(Self.convertingSuffix) || DurableFiles.isTemporary(name) {
                    candidates.append((joinPath(folder, name), true))
                }
            }
        }
        var paths: [String] = []
        var bytes: Int64 = 0
        for (path, byAge) in candidates {
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            guard let id = FileIdentity.of(fd: fd), id.isRegular else { continue }
            if byAge {
                guard id.mtimeNs / 1_000_000_000 < Int64(oldest) else { continue }
            } else {
                guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { continue }
            }
            bytes += id.size
            if remove { unlink(path) }
            paths.append(path)
        }
        return (paths, bytes)
    }

    private func collect(
        pending: Set<BlobDigest>, pinned: Set<BlobDigest>, dryRun: Bool
    ) throws(ModelStoreError)
        -> GCReport
    {
        var inUse = mappings.inUse()
        for digests in Residency.mappedByOtherProcesses(blobsDirectory: local.blobsDirectory).values {
            inUse.formUnion(digests)
        }

        let (doomed, keep) = try write { db -> ([BlobDigest], Set<BlobDigest>) in
            var kept = Set(try StoreSQL.tags(db).map(\.manifest))
            kept.formUnion(pinned)
            kept.formUnion(pending)
            let doomed = try StoreSQL.manifests(db).map(\.digest).filter { !kept.contains($0) }
            if !dryRun { for d in doomed { try StoreSQL.deleteManifest(db, d) } }
            var keep = kept
            for (manifest, blobs) in try StoreSQL.allBlobReferences(db) where kept.contains(manifest) {
                keep.formUnion(blobs)
            }
            return (doomed, keep)
        }

        var removed: [String] = []
        var keptMapped: [String] = []
        var freed: Int64 = 0
        var forgotten: [String] = []
        for digest in local.blobDigests() where !keep.contains(digest) && !pending.contains(digest) {
            if inUse.contains(digest) {
                keptMapped.append(digest.description)
                continue
            }
            let path = local.blobPath(digest)
            let size = FileIdentity.of(path: path)?.size ?? 0
            if !dryRun {
                guard unlink(path) == 0 || errno == ENOENT else {
                    throw posixError("gc: unlink", path: path, errno: errno)
                }
                forgotten.append(path)
            }
            removed.append(digest.description)
            freed += size
        }
        if !forgotten.isEmpty {
            DurableFiles.syncDirectory(local.blobsDirectory)
            _ = try? database.write { db in for p in forgotten { try StoreSQL.forgetCheck(db, path: p) } }
        }

        var (temporary, temporaryBytes) = deadIngestFiles(remove: !dryRun)
        if let originRoot {
            let (leftovers, bytes) = deadIngestFiles(remove: !dryRun, origin: originRoot)
            temporary += leftovers
            temporaryBytes += bytes
        }
        freed += temporaryBytes
        return GCReport(
            dryRun: dryRun, removedBlobs: removed, removedManifests: doomed.map(\.description),
            removedTemporary: temporary, freedBytes: freed, keptMapped: keptMapped)
    }

    // MARK: export

    /// Writes the version `reference` names as a single-file bundle (tar) to `path`, or to standard
    /// output for `-`. The file appears complete or not at all (temporary name, fsync, rename).
    /// Every blob is re-hashed while it is written; a bad one aborts the export and is quarantined.
    public func export(_ reference: String, to path: String) throws(ModelStoreError) -> ExportedBundle {
        let destination =
            path == "-" || path.hasPrefix("/") ? path : joinPath(FileManager.default.currentDirectoryPath, path)
        let bundle = try exportStream(reference, name: path == "-" ? "standard output" : destination)
        func write(to fd: Int32) throws(ModelStoreError) {
            while let piece = try exportPiece(bundle, reference) {
                var done = 0
                while done < piece.count {
                    let n = piece.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
                    if n < 0, errno == EINTR { continue }
                    guard n > 0 else { throw posixError("writing the bundle", path: bundle.name, errno: errno) }
                    done += n
                }
            }
        }
        let manifest = bundle.index.manifest.description, tags = bundle.index.tags
        if path == "-" {
            try write(to: 1)
            return ExportedBundle(digest: manifest, references: tags, path: "-", size: 0, blobs: bundle.items.count)
        }
        try DurableFile.write(
            to: destination, failure: { posixError("export: \($0.call)", path: $0.path, errno: $0.errno) }
        ) {
            (out) throws(ModelStoreError) in try write(to: out.fileDescriptor)
        }
        return ExportedBundle(
            digest: manifest, references: tags, path: destination,
            size: FileIdentity.of(path: destination)?.size ?? 0, blobs: bundle.items.count)
    }

    /// The bundle of `reference` as pieces (`models export`, and griditd's download of it, which
    /// sends them as they come: nothing is staged on disk), with the version and the tags it
    /// carries. Read it with `exportPiece`, which quarantines a blob found corrupt.
    public func exportStream(_ reference: String, name: String) throws(ModelStoreError) -> BundleStream {
        let parsed = try ModelReference(parsing: reference)
        let digest = try resolve(parsed)
        let manifest = try loadManifest(digest)
        var items = [
            BundleStream.Item(digest: digest, path: try checkedBlob(digest, what: "the manifest", full: false))
        ]
        var seen: Set<BlobDigest> = [digest]
        for b in manifest.blobs where seen.insert(b.digest).inserted {
            items.append(
                BundleStream.Item(digest: b.digest, path: try checkedBlob(b.digest, what: b.role.rawValue, full: false))
            )
        }
        let tags: [String]
        if case .tag(let name, let tag) = parsed {
            tags = ["\(name):\(tag)"]
        } else {
            tags = (try versionLabels()[digest] ?? "").split(separator: ",").map {
                $0.trimmingCharacters(in: .whitespaces)
            }
        }
        let index = BundleIndex(format: BundleIndex.format, manifest: digest, tags: tags)
        return try BundleStream(index: index, items: items, name: name)
    }

    /// `bundle`'s next piece; a blob that fails its digest is quarantined through the normal path.
    public func exportPiece(_ bundle: BundleStream, _ reference: String) throws(ModelStoreError) -> [UInt8]? {
        do {
            return try bundle.next()
        } catch  where error.code == .digestMismatch {
            for item in bundle.items {
                if case .corrupt(let p, let actual) = try inspect(item.digest, in: local, full: true, what: "export") {
                    throw try mismatch(item.digest, actual: actual, at: p, in: local, what: "export of \(reference)")
                }
            }
            throw error
        }
    }

    // MARK: ps

    /// What is mapped: this process's cache entries and pins (with resident bytes from `mincore`),
    /// and blobs other processes map (from /proc, where this user may look).
    public func ps() -> MappedModels {
        let snapshot = mappings.snapshot()
        let labels = (try? versionLabels()) ?? [:]
        // A key is a version's digest, with `+precision` when it is loaded converted (bf16).
        func references(_ key: String) -> [String] {
            BlobDigest(String(key.prefix { $0 != "+" })).flatMap { labels[$0] }.map { $0.components(separatedBy: ", ") }
                ?? []
        }
        func blob(_ digest: BlobDigest, _ path: String) -> MappedBlob {
            if let file = snapshot.shared[digest]?.file {
                return MappedBlob(
                    digest: digest.description, path: path, size: Int64(file.size),
                    resident: Residency.residentBytes(base: file.base, size: file.size))
            }
            return MappedBlob(
                digest: digest.description, path: path, size: FileIdentity.of(path: path)?.size ?? 0,
                resident: Residency.residentBytes(path: path))
        }
        var entries: [MappedModel] = []
        var covered = Set<BlobDigest>()
        for c in snapshot.caches {
            covered.formUnion(c.blobs.keys)
            entries.append(
                MappedModel(
                    key: c.key, references: c.references.isEmpty ? references(c.key) : c.references, leases: c.leases,
                    lastUsed: c.lastUsed, expiresAt: c.expiresAt,
                    blobs: c.blobs.sorted { $0.key < $1.key }.map { blob($0.key, $0.value) }, pid: c.pid))
        }
        let cacheKeys = Set(snapshot.caches.map(\.key))
        for pin in snapshot.pins where !cacheKeys.contains(pin.owner) {
            covered.formUnion(pin.blobs.keys)
            entries.append(
                MappedModel(
                    key: pin.owner, references: references(pin.owner), leases: 1, lastUsed: nil, expiresAt: nil,
                    blobs: pin.blobs.sorted { $0.key < $1.key }.map { blob($0.key, $0.value) }))
        }
        let loose = snapshot.shared.filter { !covered.contains($0.key) }
        if !loose.isEmpty {
            entries.append(
                MappedModel(
                    key: "mapped", references: [], leases: 0, lastUsed: nil, expiresAt: nil,
                    blobs: loose.sorted { $0.key < $1.key }.map { blob($0.key, $0.value.path) }))
        }
        let reported = Set(snapshot.caches.compactMap(\.pid))  // listed above with their caches
        for root in blobRoots {
            for (pid, digests) in Residency.mappedByOtherProcesses(blobsDirectory: root.blobsDirectory).sorted(by: {
                $0.key < $1.key
            }) where !reported.contains(pid) {
                entries.append(
                    MappedModel(
                        key: "pid \(pid)", references: [], leases: 0, lastUsed: nil, expiresAt: nil,
                        blobs: digests.sorted().map { blob($0, root.blobPath($0)) }, pid: pid))
            }
        }
        return MappedModels(entries: entries)
    }

    // MARK: checks

    /// The permission and filesystem checks of this store (and of importing `source`, if given).
    public func checks(source: String? = nil, link: LinkMode? = nil) -> StoreCheckReport {
        StoreChecks.run(stateDirectory: stateDirectory, siteRoots: siteRoots, source: source, link: link)
    }
}
