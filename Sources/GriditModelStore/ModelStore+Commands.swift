import Foundation
import GriditDiffusion
import GriditStateDatabase

extension ModelStore {
    // MARK: list

    /// Every tag (site roots' too) and every version no tag points at, with size, creation time,
    /// whether it is loaded and how many of the live jobs `pins` holds pin it.
    public func list(pins: JobPins) throws(ModelStoreError) -> StoreListing {
        let loaded = loadedKeys()
        let pins = pins.jobs
        let (tags, manifests, references) = try read { db in
            (try StoreSQL.tags(db), try StoreSQL.manifests(db), try StoreSQL.allBlobSizes(db))
        }
        var rows: [ListedVersion] = []
        let byDigest = Dictionary(uniqueKeysWithValues: manifests.map { ($0.digest, $0) })
        func size(_ m: StoreSQL.ManifestRow) -> Int64 { m.size + (references[m.digest]?.values.reduce(0, +) ?? 0) }
        for site in sites {
            for entry in siteRefs(site) {
                rows.append(
                    ListedVersion(
                        name: entry.name, tag: entry.tag, digest: entry.digest.description,
                        size: (try? siteVersionSize(entry.digest, site)) ?? 0, created: entry.created,
                        loaded: loaded.contains(entry.digest.description), jobs: pins[entry.digest]?.count ?? 0,
                        root: site.path))
            }
        }
        for t in tags {
            guard let m = byDigest[t.manifest] else { continue }
            rows.append(
                ListedVersion(
                    name: t.name, tag: t.tag, digest: m.digest.description, size: size(m),
                    created: Date(unixMillis: m.createdAt),
                    loaded: loaded.contains(m.digest.description), jobs: pins[m.digest]?.count ?? 0, root: nil))
        }
        let tagged = Set(tags.map(\.manifest))
        for m in manifests where !tagged.contains(m.digest) {
            rows.append(
                ListedVersion(
                    name: nil, tag: nil, digest: m.digest.description, size: size(m),
                    created: Date(unixMillis: m.createdAt),
                    loaded: loaded.contains(m.digest.description), jobs: pins[m.digest]?.count ?? 0, root: nil))
        }
        return StoreListing(models: rows)
    }

    private func siteVersionSize(_ digest: BlobDigest, _ site: StoreRoot) throws -> Int64 {
        let path = site.blobPath(digest)
        guard let data = FileManager.default.contents(atPath: path) else { return 0 }
        let m = try PipelineManifest.decode(data, name: digest.description)
        return Int64(data.count)
            + Dictionary(m.blobs.map { ($0.digest, $0.size) }, uniquingKeysWith: { a, _ in a }).values.reduce(0, +)
    }

    /// Keys of loaded models (cache entries and mapping pins), e.g. manifest digests.
    func loadedKeys() -> Set<String> {
        let snapshot = mappings.snapshot()
        return Set(snapshot.caches.map(\.key) + snapshot.pins.map(\.owner))
    }

    // MARK: show

    /// The manifest, the model configs, the blobs with their paths, the tag history and the jobs
    /// (of `pins`) pinning the version `reference` names.
    public func show(_ reference: String, pins: JobPins) throws(ModelStoreError) -> VersionDetails {
        let parsed = try ModelReference(parsing: reference)
        let digest = try resolve(parsed)
        let manifest = try loadManifest(digest)
        let manifestPath = try checkedBlob(digest, what: "the manifest of \(digest)", full: false)
        let manifestBytes = FileManager.default.contents(atPath: manifestPath) ?? Data()
        let pins = pins.jobs[digest] ?? []
        let (row, localTags, history) = try read { db in
            let history: [StoreSQL.EventRow]
            if case .tag(let name, let tag) = parsed {
                history = try StoreSQL.history(db, name: name, tag: tag)
            } else {
                history = try StoreSQL.history(db, digest: digest)
            }
            return (try StoreSQL.manifest(db, digest), try StoreSQL.tags(db, pointingAt: digest), history)
        }
        var references = sites.flatMap { site in
            siteRefs(site).filter { $0.digest == digest }.map { "\($0.name):\($0.tag)" }
        }
        references += localTags.map(\.reference)
        let site = row == nil ? sites.first { siteRefs($0).contains { $0.digest == digest } } : nil
        let created =
            row.map { Date(unixMillis: $0.createdAt) }
            ?? site.flatMap { s in siteRefs(s).first { $0.digest == digest }?.created }
            ?? Date(timeIntervalSince1970: 0)

        var configs: [String: Data] = [:]
        var blobs = [
            StoredBlob(
                role: "manifest", digest: digest.description, size: Int64(manifestBytes.count),
                mediaType: MediaType.manifest, path: manifestPath)
        ]
        for b in manifest.blobs {
            let path = try checkedBlob(b.digest, what: "\(b.role.rawValue) of \(digest)", full: false)
            blobs.append(
                StoredBlob(
                    role: b.role.rawValue, digest: b.digest.description, size: b.size, mediaType: b.mediaType,
                    path: path))
            if b.mediaType != MediaType.safetensors, b.size <= PipelineValidation.maxJSONSize,
                let data = FileManager.default.contents(atPath: path)
            {
                configs[b.role.rawValue] = data
            }
        }
        let size =
            Int64(manifestBytes.count)
            + Dictionary(manifest.blobs.map { ($0.digest, $0.size) }, uniquingKeysWith: { a, _ in a }).values.reduce(
                0, +)
        return VersionDetails(
            digest: digest.description, references: references, created: created, size: size, root: site?.path,
            source: row?.source, manifest: manifestBytes, configs: configs, blobs: blobs,
            history: history.map(Self.event), jobs: pins, loaded: loadedKeys().contains(digest.description))
    }

    static func event(_ e: StoreSQL.EventRow) -> TagEvent {
        TagEvent(
            name: e.name, tag: e.tag, action: e.action, digest: e.manifest?.description,
            previous: e.previous?.description, at: Date(unixMillis: e.at))
    }

    /// The history of every tag (of `name` only, if given), oldest first.
    public func history(name: String? = nil) throws(ModelStoreError) -> [TagEvent] {
        try read { db in try StoreSQL.history(db) }.filter { name == nil || $0.name == name }.map(Self.event)
    }

    // MARK: tag

    /// Points `destination` (NAME:TAG) at the version `source` names; the change is recorded in
    /// the tag's history. A version of a site root gets a local record so it can be tagged here.
    /// In a cluster the tag is the cluster's: the origin's tag moves too (its version must be there).
    public func tag(_ source: String, _ destination: String) throws(ModelStoreError) -> TagChange {
        try requireWritable("tag")
        let digest = try resolve(source)
        // Pending until the tag is written: a gc meanwhile keeps the version and its blobs.
        holdPending([digest])
        defer { releasePending([digest]) }
        let (name, tag) = try ModelReference.parseTag(destination)
        if let origin = originRoot, origin.existingBlob(digest) == nil {
            throw ModelStoreError(
                .notFound,
                "the model origin \(origin.path) does not hold \(digest), so no host of the cluster could run it by this tag",
                hint: "import the model on this host (it publishes the version), then tag it")
        }
        let manifest = try loadManifest(digest)
        let manifestSize = Int64(FileManager.default.contents(atPath: blobPath(digest))?.count ?? 1)
        let at = nowMillis
        let site = sites.first { siteRefs($0).contains { $0.digest == digest } }
        let written = try write { db in
            if try StoreSQL.manifest(db, digest) == nil {
                // Not a site root's version: a gc removed it between the look-up and the hold.
                guard let site else { return (found: false, previous: nil as BlobDigest?) }
                try StoreSQL.insertManifest(
                    db,
                    StoreSQL.ManifestRow(
                        digest: digest, size: manifestSize, createdAt: at, source: "site root \(site.path)"),
                    blobs: manifest.blobs.map {
                        StoreSQL.BlobRow(
                            role: $0.role.rawValue, digest: $0.digest, size: $0.size, mediaType: $0.mediaType)
                    })
            }
            return (
                found: true,
                previous: try StoreSQL.setTag(db, name: name, tag: tag, manifest: digest, action: "tag", at: at)
            )
        }
        guard written.found else {
            throw ModelStoreError(
                .notFound, "\(digest) was removed (models gc) while it was being tagged",
                hint: "import the model again, then tag it")
        }
        let previous = written.previous
        writeRefs()
        if let origin = originRoot {
            do { try publishTags([(name, tag)], digest: digest, to: origin) } catch {
                throw ModelStoreError(
                    .io,
                    "\(name):\(tag) now names \(digest) on this host, but not in the model origin: \(error.message)",
                    hint: "run the same `models tag` again once the shared root is reachable")
            }
        }
        return TagChange(reference: "\(name):\(tag)", digest: digest.description, previous: previous?.description)
    }

    // MARK: rm

    /// Removes a tag (`NAME:TAG`), or every tag pointing at a version (`NAME@sha256:…`: of that
    /// name; `sha256:…`: all). The version's blobs stay until `gc`, and not even gc removes them
    /// while a live job pins the version (the result counts those of `pins`). In a cluster the
    /// origin's tag goes too while it names the same version.
    public func remove(_ reference: String, pins: JobPins) throws(ModelStoreError) -> TagRemoval {
        try requireWritable("rm")
        let parsed = try ModelReference(parsing: reference)
        let at = nowMillis
        let digest: BlobDigest
        let targets: [(name: String, tag: String)]
        switch parsed {
        case .tag(let name, let tag):
            guard let row = try read({ try StoreSQL.tag($0, name: name, tag: tag) }) else {
                if let site = sites.first(where: { siteRefs($0).contains { $0.name == name && $0.tag == tag } }) {
                    throw ModelStoreError(
                        .readOnly, "\(name):\(tag) is in the read-only site root \(site.path)",
                        hint: "its tags are managed on the machine that owns that root")
                }
                throw ModelStoreError(.notFound, "no tag \(name):\(tag)", hint: "`models list` shows the tags")
            }
            digest = row.manifest
            targets = [(name, tag)]
        case .pinned(let name, _):
            digest = try resolve(parsed)
            targets = try read { db in try StoreSQL.tags(db, pointingAt: digest) }
                .filter { $0.name == name }.map { ($0.name, $0.tag) }
        case .digest, .digestPrefix:
            digest = try resolve(parsed)
            targets = try read { db in try StoreSQL.tags(db, pointingAt: digest) }.map { ($0.name, $0.tag) }
        }
        guard !targets.isEmpty else {
            throw ModelStoreError(
                .notFound, "no local tag points at \(digest)", hint: "`models gc` removes untagged versions")
        }
        // A tag that moved to another version since it was looked up stays.
        let (removed, remaining) = try write { db in
            let removed = try targets.filter {
                try StoreSQL.removeTag(db, name: $0.name, tag: $0.tag, ifAt: digest, at: at) != nil
            }
            return (removed.map { "\($0.name):\($0.tag)" }, try StoreSQL.tags(db, pointingAt: digest).map(\.reference))
        }
        guard !removed.isEmpty else {
            throw ModelStoreError(
                .notFound, "no local tag points at \(digest) any more (moved meanwhile)",
                hint: "`models list` shows the tags")
        }
        let jobs = pins.jobs[digest]?.count ?? 0
        writeRefs()
        if let origin = originRoot {
            for t in targets where Self.originTag(origin, name: t.name, tag: t.tag) == digest {
                let path = Self.originTagPath(origin, name: t.name, tag: t.tag)
                guard unlink(path) == 0 || errno == ENOENT else {
                    throw ModelStoreError(
                        .io,
                        "\(t.name):\(t.tag) is removed on this host, but not from the model origin (\(path): \(String(cString: strerror(errno))))",
                        hint: "other hosts still run it by this tag; run the same `models rm` again")
                }
            }
        }
        return TagRemoval(removed: removed, digest: digest.description, remaining: remaining, jobs: jobs)
    }
}
