import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditFaults
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

extension ModelStore {
    /// Progress of an import: the file (source path or bundle entry), bytes done, its size if known.
    public typealias ImportProgress = (_ file: String, _ done: Int64, _ total: Int64?) -> Void

    /// Imports a pipeline version: `path` is a pipeline JSON (with its files in its folder, or a
    /// folder holding `pipeline.json`) or a bundle written by `export`.
    ///
    /// Each file is read once, hashed on the way into ingest/ (reflinked, copied or, on request,
    /// hardlinked per `link`), then everything is validated (configs, safetensors headers, finite
    /// weights, total binding of each model to its weights) before anything is published.
    /// Identical blobs are stored once. The version becomes visible only when its tag commits;
    /// any error leaves the store unchanged.
    ///
    /// Files are opened through `OpenFolder`: the pipeline names files inside its own folder
    /// only (no absolute path, no `..`, no symbolic link), only regular files are read (a FIFO or
    /// device is refused without being opened), and with a `reader` every file must be one that
    /// identity could read itself.
    ///
    /// - Parameters:
    ///   - name: `NAME:TAG` to point at the version; default: the bundle's tags, or the
    ///     pipeline's `name` with tag `latest`.
    ///   - reader: whose permissions the source files must grant (the daemon passes its caller's);
    ///     nil: this process's own, which the kernel checks.
    public func importModel(
        from path: String, name: String? = nil, link: LinkMode = .auto, reader: FileReader? = nil,
        progress: ImportProgress? = nil
    ) throws(ModelStoreError) -> ImportReport {
        try requireWritable("import")
        let requested = try name.map { (n) throws(ModelStoreError) in try ModelReference.parseTag(n) }
        let (folder, source) = try Self.openSource(
            path.hasPrefix("/") ? path : joinPath(FileManager.default.currentDirectoryPath, path), reader: reader)
        var head = [UInt8](repeating: 0, count: 512)
        let n = head.withUnsafeMutableBytes { pread(source.fd, $0.baseAddress, 512, 0) }
        guard n >= 0 else { throw posixError("import: read", path: source.path, errno: errno) }
        let isTar = n == 512 && Array(head[257..<262]) == Array("ustar".utf8)
        if isTar {
            return try importBundle(source, tags: requested.map { [$0] }, progress: progress)
        }
        guard let first = head[0..<n].first(where: { ![9, 10, 13, 32].contains($0) }), first == UInt8(ascii: "{") else {
            throw ModelStoreError(
                .invalidInput, "\(source.path) is neither a pipeline JSON nor a bundle (tar)",
                hint:
                    "import the pipeline.json that lists the model files (docs/PIPELINE_FORMAT.md), or a file from `models export`"
            )
        }
        return try importPipeline(source, in: folder, tag: requested, link: link, progress: progress)
    }

    /// The folder of `path` and the file to import in it: `path` itself, or the folder's
    /// pipeline.json. Symbolic links in `path` are resolved first (whoever named it chose them);
    /// what the pipeline names is then resolved inside the real folder.
    static func openSource(_ path: String, reader: FileReader?) throws(ModelStoreError) -> (OpenFolder, OpenedFile) {
        do throws(SafeOpenError) {
            let real = try SafeOpen.realPath(path)
            var status = stat()
            guard stat(real, &status) == 0 else { throw SafeOpenError.call("stat", real, errno) }
            let isFolder = status.st_mode & S_IFMT == S_IFDIR
            let folder = try OpenFolder(isFolder ? real : (real as NSString).deletingLastPathComponent, reader: reader)
            return (folder, try folder.file(isFolder ? "pipeline.json" : (real as NSString).lastPathComponent))
        } catch {
            throw ModelStoreError(error)
        }
    }

    private func importPipeline(
        _ source: OpenedFile, in folder: OpenFolder, tag requested: (name: String, tag: String)?, link: LinkMode,
        progress: ImportProgress?
    ) throws(ModelStoreError) -> ImportReport {
        let path = source.path
        let bytes: [UInt8]?
        do { bytes = try source.readAll(limit: Int(PipelineValidation.maxJSONSize)) } catch {
            throw ModelStoreError(error)
        }
        guard let bytes else {
            throw ModelStoreError(
                .invalidInput,
                "\(path) is over \(PipelineValidation.maxJSONSize) bytes; a pipeline file is a small JSON document")
        }
        let spec: PipelineSpec
        do { spec = try PipelineSpec.decode(Data(bytes), path: path) } catch {
            throw ModelStoreError(.invalidInput, "\(error)", hint: "see docs/PIPELINE_FORMAT.md")
        }
        let tag: (name: String, tag: String)
        if let requested {
            tag = requested
        } else if let name = spec.name {
            tag = try ModelReference.parseTag(name)
        } else {
            throw ModelStoreError(
                .invalidReference, "\(path) has no \"name\"; say what to call the version",
                hint: "add --name NAME:TAG (e.g. --name moving-digits:v1)")
        }
        var names: [PipelineSpec.FileRole: String] = [:]
        var byPath: [String: IngestFile] = [:]
        var ingested: [PipelineSpec.FileRole: IngestFile] = [:]
        for (role, file) in spec.files {
            names[role] = joinPath(folder.path, file)
            if let done = byPath[file] {
                ingested[role] = done
                continue
            }
            do throws(ModelStoreError) {
                let opened: OpenedFile
                do { opened = try folder.file(file) } catch { throw ModelStoreError(error) }
                let f = try IngestFile.fromFile(
                    opened, into: local, mode: link, progress: progress.map { p in { p(opened.path, $0, $1) } })
                byPath[file] = f
                ingested[role] = f
            } catch {
                throw ModelStoreError(error.code, "\(role.rawValue) of \(path): \(error.message)", hint: error.hint)
            }
        }
        try PipelineValidation.validate(spec.mapFiles { role, _ in ingested[role]!.path }, names: names)
        let manifest = PipelineManifest(spec: spec, files: ingested.mapValues { ($0.digest, $0.size) })
        let manifestFile = try IngestFile.fromBytes(manifest.encoded(), into: local)
        return try commit(
            manifest: manifest, manifestFile: manifestFile, files: Array(byPath.values),
            existing: [:], source: path, tags: [tag])
    }

    private func importBundle(
        _ source: OpenedFile, tags requested: [(name: String, tag: String)]?, progress: ImportProgress?
    ) throws(ModelStoreError) -> ImportReport {
        let path = source.path
        let contents = try BundleReader.read(
            source, into: local, progress: progress.map { p in { p($0, $1, nil) } })
        var tags = requested ?? []
        if requested == nil {
            for text in contents.index.tags { tags.append(try ModelReference.parseTag(text)) }
        }
        guard !tags.isEmpty else {
            throw ModelStoreError(
                .invalidReference, "bundle \(path) names no tag; say what to call the version",
                hint: "add --name NAME:TAG")
        }
        return try importVersion(
            contents.index.manifest, files: contents.blobs, source: path, tags: tags, publish: true,
            names: { "\(path):blobs/sha256/\($0.hex)" }
        ) {
            ModelStoreError(
                .invalidInput, "bundle \(path): \($0); nothing was imported", hint: "export the bundle again")
        }
    }

    /// Validates and commits version `manifestDigest` whose files were read into ingest/ (`files`
    /// by digest: the manifest and the blobs not stored yet; any other blob of the manifest must
    /// have an intact copy in a store root): a bundle's, or a pull's from the origin. `names`
    /// says where a blob came from in validation messages, `bad` words a refusal.
    func importVersion(
        _ manifestDigest: BlobDigest, files: [BlobDigest: IngestFile], source path: String,
        tags: [(name: String, tag: String)], publish: Bool, names name: (BlobDigest) -> String,
        bad: (String) -> ModelStoreError
    ) throws(ModelStoreError) -> ImportReport {
        let manifestPath: String
        if let file = files[manifestDigest] {
            manifestPath = file.path
        } else if let existing = try intactCopy(manifestDigest) {
            manifestPath = existing
        } else {
            throw bad("it does not hold its manifest \(manifestDigest)")
        }
        guard let bytes = FileManager.default.contents(atPath: manifestPath), bytes.count <= PipelineManifest.maxSize
        else {
            throw bad("its manifest is unreadable or too large")
        }
        let manifest = try PipelineManifest.decode(bytes, name: "\(manifestDigest) in \(path)")

        var paths: [PipelineSpec.FileRole: String] = [:]
        var existing: [BlobDigest: String] = [:]
        // Blobs found in a store root are reused: gc must keep them from now on.
        let reused = manifest.blobs.map(\.digest)
        holdPending(reused)
        defer { releasePending(reused) }
        for blob in manifest.blobs {
            if let file = files[blob.digest] {
                guard file.size == blob.size else {
                    throw bad("blobs/sha256/\(blob.digest.hex) has \(file.size) bytes, the manifest says \(blob.size)")
                }
                paths[blob.role] = file.path
            } else if let found = try intactCopy(blob.digest) {
                paths[blob.role] = found
                existing[blob.digest] = found
            } else {
                throw bad("it lacks \(blob.role.rawValue) (\(blob.digest)) and no store root has it")
            }
        }
        let listed = Set(manifest.blobs.map(\.digest) + [manifestDigest])
        if let extra = files.keys.sorted().first(where: { !listed.contains($0) }) {
            throw bad("it holds blobs/sha256/\(extra.hex), which its manifest does not list")
        }
        let names = Dictionary(uniqueKeysWithValues: manifest.blobs.map { ($0.role, name($0.digest)) })
        try PipelineValidation.validate(manifest.pipeline.mapFiles { role, _ in paths[role]! }, names: names)

        return try commit(
            manifest: manifest, manifestDigest: manifestDigest, manifestSize: Int64(bytes.count),
            manifestFile: files[manifestDigest], files: files.filter { $0.key != manifestDigest }.map(\.value),
            existing: existing, source: path, tags: tags, publish: publish)
    }

    /// Keeps `digests` from gc (which runs under the same lock) until `releasePending`: blobs an
    /// import or a pull has written or decided to reuse, until its version is committed.
    func holdPending(_ digests: [BlobDigest]) {
        pending.withLock { p in for d in digests { p[d, default: 0] += 1 } }
    }

    func releasePending(_ digests: [BlobDigest]) {
        pending.withLock { p in
            for d in digests {
                p[d]! -= 1
                if p[d] == 0 { p.removeValue(forKey: d) }
            }
        }
    }

    /// Publishes the ingested files and the manifest, then commits the version and its tags in one
    /// transaction. Until the commit the blobs are `pending` (gc keeps them); a crash before it
    /// leaves at most complete, unreferenced blobs, which the next gc removes. No tags: an
    /// untagged version (a pull). `publish`: copy the version to the origin too, if there is one.
    func commit(
        manifest: PipelineManifest, manifestDigest: BlobDigest? = nil, manifestSize: Int64? = nil,
        manifestFile: IngestFile?, files: [IngestFile], existing: [BlobDigest: String], source: String,
        tags: [(name: String, tag: String)], publish: Bool = true, ownSources: Bool = false
    ) throws(ModelStoreError) -> ImportReport {
        let digest = manifestDigest ?? manifestFile!.digest
        let toPublish = files + (manifestFile.map { [$0] } ?? [])
        let digests = toPublish.map(\.digest) + Array(existing.keys) + [digest]
        holdPending(digests)
        defer { releasePending(digests) }
        FaultInjection.current.pause(at: "import.ingested", stateDirectory: stateDirectory)

        var warnings: [String] = []
        var stored: [BlobDigest: String] = [:]
        var written: Int64 = 0
        var published: [IngestFile] = []
        for file in toPublish where stored[file.digest] == nil {
            if let path = try intactCopy(file.digest, warnings: &warnings) {
                file.discard()
                stored[file.digest] = path.hasPrefix(local.blobsDirectory) ? "existing" : "existing (site root)"
                continue
            }
            switch try file.publish() {
            case .added:
                stored[file.digest] = file.method.rawValue
                written += file.bytesWritten
                published.append(file)
            case .alreadyPresent:
                stored[file.digest] = "existing"
            }
        }
        for d in existing.keys where stored[d] == nil { stored[d] = "existing" }
        FaultInjection.current.pause(at: "import.published", stateDirectory: stateDirectory)

        // The origin gets the version before this store commits it: a job that names the version
        // can be submitted only after the commit, so a host that claims it finds it there.
        var publishedTo: String?
        if publish, let origin = originRoot {
            do {
                // Blobs not in `existing` were just stored here: `publishVersion` reads them at `blobPath`.
                try publishVersion(digest, blobs: manifest.blobs.map(\.digest), paths: existing, to: origin)
                publishedTo = origin.path
            } catch {
                warnings.append(
                    "stored here, but not published to the model origin \(origin.path) (\(error.message)): "
                        + "other hosts cannot pull it; import it again once the origin is reachable")
            }
        }

        let at = nowMillis
        let blobRows = manifest.blobs.map {
            StoreSQL.BlobRow(role: $0.role.rawValue, digest: $0.digest, size: $0.size, mediaType: $0.mediaType)
        }
        let size =
            (manifestSize ?? manifestFile?.size ?? 0)
            + Dictionary(manifest.blobs.map { ($0.digest, $0.size) }, uniquingKeysWith: { a, _ in a }).values.reduce(
                0, +)
        let manifestRow = StoreSQL.ManifestRow(
            digest: digest, size: manifestSize ?? manifestFile!.size, createdAt: at, source: source)
        let previous: [BlobDigest?] = try write { db in
            try StoreSQL.insertManifest(db, manifestRow, blobs: blobRows)
            for file in published {
                // The stat taken when the content was known to hash right, not a fresh one.
                try StoreSQL.recordCheck(
                    db, path: local.blobPath(file.digest), digest: file.digest, identity: file.identity, at: at)
            }
            return try tags.map { t in
                try StoreSQL.setTag(db, name: t.name, tag: t.tag, manifest: digest, action: "import", at: at)
            }
        }
        // The tags last: they name the version for the cluster only once this store has it too.
        if let origin = originRoot, publishedTo != nil, !tags.isEmpty {
            do { try publishTags(tags, digest: digest, to: origin) } catch {
                warnings.append(
                    "published to the model origin \(origin.path), but not its tag(s) (\(error.message)): other hosts "
                        + "run it by digest, not by tag; import it again to publish them")
            }
        }
        FaultInjection.current.pause(at: "import.committed", stateDirectory: stateDirectory)
        writeRefs()
        let linked = toPublish.filter { $0.method == .hardlink && stored[$0.digest] == "hardlink" }.count
        if linked > 0 && !ownSources {  // a conversion's temporary files: nobody else writes them
            warnings.append(
                "\(linked) file(s) were hardlinked: each source file IS the stored blob now, so editing it in place changes the model "
                    + "(verify and every load re-hash a changed blob and quarantine it). Use --link copy or auto to keep the sources independent"
            )
        }
        for t in tags {
            if let site = sites.first(where: { siteRefs($0).contains { $0.name == t.name && $0.tag == t.tag } }) {
                warnings.append(
                    "\(t.name):\(t.tag) also exists in the site root \(site.path), which is searched first; use \(t.name)@\(digest) to run this version"
                )
            }
        }

        var blobs = [
            StoredBlob(
                role: "manifest", digest: digest.description, size: manifestRow.size,
                mediaType: MediaType.manifest, path: blobPath(digest), stored: stored[digest])
        ]
        blobs += manifest.blobs.map { b in
            StoredBlob(
                role: b.role.rawValue, digest: b.digest.description, size: b.size, mediaType: b.mediaType,
                path: blobPath(b.digest), stored: stored[b.digest])
        }
        return ImportReport(
            reference: tags.first.map { "\($0.name):\($0.tag)" } ?? digest.description, digest: digest.description,
            size: size, previous: previous.first.flatMap { $0?.description }, blobs: blobs, bytesWritten: written,
            warnings: warnings, published: publishedTo)
    }

    /// The path of an intact copy of `digest` in any root, or nil. A corrupt copy in the writable
    /// root is quarantined (the import then stores its fresh copy) and reported in `warnings`.
    func intactCopy(_ digest: BlobDigest) throws(ModelStoreError) -> String? {
        var ignored: [String] = []
        return try intactCopy(digest, warnings: &ignored)
    }

    func intactCopy(_ digest: BlobDigest, warnings: inout [String]) throws(ModelStoreError) -> String? {
        for root in blobRoots {
            switch try inspect(digest, in: root, full: false, what: "blob \(digest)") {
            case .absent: continue
            case .intact(let path): return path
            case .corrupt(let path, let actual):
                let error = try mismatch(digest, actual: actual, at: path, in: root, what: "the stored copy")
                warnings.append(error.message + (root.writable ? "; replaced by the imported copy" : ""))
            }
        }
        return nil
    }

    /// Where blob `digest` is read from (first root holding it; the writable root's path if none).
    func blobPath(_ digest: BlobDigest) -> String {
        blobRoots.first { $0.existingBlob(digest) != nil }?.blobPath(digest) ?? local.blobPath(digest)
    }
}
