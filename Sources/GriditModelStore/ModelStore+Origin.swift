// The model origin of a cluster: a store root on the shared root (`<shared-root>/models`, the
// layout of a state directory's `blobs/sha256` and `ingest`) that holds every version imported on
// any host. An import publishes its version there; a host whose own store lacks a job's version
// pulls it by digest before running the job. Both go through the import path: each file is copied
// into the receiving root's ingest/, hashed on its way, read back, and must hash to its name; a
// pull also validates the pipeline as an import does. A host runs jobs from its own copy only:
// the origin's files are never mapped, and a corrupt one never reaches a host's blobs/.

import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditDurable
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

extension ModelStore {
    /// Creates the origin's folders if missing; the folder above it must exist.
    static func prepareOrigin(_ origin: String) throws(ModelStoreError) {
        let parent = (origin as NSString).deletingLastPathComponent
        guard FileIdentity.exists(directory: parent) else {
            throw ModelStoreError(
                .notFound, "the model origin's folder \(parent) does not exist",
                hint: "mount the shared root (griditd never creates it)")
        }
        for dir in ["blobs/sha256", "ingest"] {
            let path = joinPath(origin, dir)
            do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
                throw ModelStoreError(
                    .permission, "cannot create the model origin's folder \(path): \(error.localizedDescription)",
                    hint: "the shared root must be writable by griditd's user on every host")
            }
        }
    }

    /// Copies version `digest` from the origin into this store (untagged: gc removes it once no
    /// live job pins it, and it is pulled again when needed), after the same checks as an import.
    /// Concurrent pulls of one version copy it once: the others wait and find it here. Returns
    /// nil when the version was complete here already. `copying` is called after each chunk copied.
    ///
    /// Throws `io` when the origin does not hold the version (yet), `notFound` when it lacks a
    /// blob of the version's manifest, `digestMismatch` when
    /// a file of the origin does not hash to its name (nothing of the version is stored), and
    /// `io` when the origin cannot be reached (its folder is gone: the shared root is not
    /// mounted), which is worth another try.
    public func pull(_ digest: BlobDigest, copying: (() -> Void)? = nil) throws(ModelStoreError) -> ImportReport? {
        try requireWritable("pulling a model")
        guard let origin = originRoot else { throw Self.noVersion(digest) }
        let lock = pulls.withLock { locks in
            if let lock = locks[digest] { return lock }
            let lock = NSLock()
            locks[digest] = lock
            return lock
        }
        lock.lock()
        defer { lock.unlock() }
        if (try? resolvePipeline(digest)) != nil { return nil }

        var status = stat()
        let found = stat(origin.blobsDirectory, &status) == 0
        guard found, status.st_mode & S_IFMT == S_IFDIR else {
            let reason = found ? "not a folder" : String(cString: strerror(errno))
            throw ModelStoreError(
                .io, "the model origin \(origin.path) cannot be reached (\(origin.blobsDirectory): \(reason))",
                hint: "mount the shared root on this host; the job is tried again")
        }
        // An import publishes before it commits, but one whose origin was unreachable commits
        // anyway (with a warning) and its version reaches the origin only when it is imported
        // again: worth another try, not a missing model.
        let manifestFile: IngestFile
        do {
            manifestFile = try fetch(
                digest, from: origin, size: nil, what: "the manifest of \(digest)", copying: copying)
        } catch  where error.code == .notFound {
            throw ModelStoreError(
                .io, "\(error.message) (yet: the host that imported it may not have reached the origin)",
                hint: "the job is tried again; if no host imported the model, import it on one")
        }
        guard manifestFile.size <= Int64(PipelineManifest.maxSize),
            let bytes = FileManager.default.contents(atPath: manifestFile.path)
        else {
            throw ModelStoreError(
                .invalidInput, "the manifest \(digest) in the model origin \(origin.path) is too large")
        }
        let manifest = try PipelineManifest.decode(bytes, name: "\(digest) in the model origin \(origin.path)")
        // A blob found here (another version's) is reused: gc must keep it from now on.
        let reused = manifest.blobs.map(\.digest)
        holdPending(reused)
        defer { releasePending(reused) }
        var files = [digest: manifestFile]
        for blob in manifest.blobs where files[blob.digest] == nil {
            if try intactCopy(blob.digest) != nil { continue }
            files[blob.digest] = try fetch(
                blob.digest, from: origin, size: blob.size, what: "\(blob.role.rawValue) of \(digest)",
                copying: copying)
        }
        return try importVersion(
            digest, files: files, source: origin.path, tags: [], publish: false,
            names: { origin.blobPath($0) }
        ) {
            ModelStoreError(
                .invalidInput, "version \(digest) in the model origin \(origin.path): \($0); nothing was stored",
                hint: "import the model again on a host that holds it")
        }
    }

    /// Blob `digest` of `origin`, copied into this store's ingest/ and checked against its name.
    private func fetch(
        _ digest: BlobDigest, from origin: StoreRoot, size: Int64?, what: String, copying: (() -> Void)?
    ) throws(ModelStoreError) -> IngestFile {
        let opened: OpenedFile
        do { opened = try OpenFolder(origin.blobsDirectory, reader: nil).file(digest.hex) } catch {
            guard error.reason == .notFound else { throw ModelStoreError(error) }
            throw ModelStoreError(
                .notFound, "\(what): neither this host's store nor the model origin \(origin.path) holds \(digest)",
                hint: "import the model on a host of the cluster (that publishes it to the origin)")
        }
        let corrupt = { (why: String) in
            ModelStoreError(
                .digestMismatch,
                "\(what): the model origin's copy \(origin.blobPath(digest)) \(why); it is corrupt, and nothing of the version was stored here",
                hint:
                    "import the model again on a host that holds it intact (that replaces the origin's copy), then retry the job"
            )
        }
        if let size, Int64(opened.status.st_size) != size {
            throw corrupt("has \(opened.status.st_size) bytes, not the \(size) its manifest lists")
        }
        let file = try IngestFile.fromFile(
            opened, into: local, mode: .copy, progress: copying.map { c in { _, _ in c() } })
        guard file.digest == digest else { throw corrupt("hashes to \(file.digest), not to its name") }
        return file
    }

    /// The digest of a reference for running a job: this store's (`resolve`), or for a tag this
    /// store does not know, the one the cluster's origin holds (a version imported on another
    /// host; the host that runs the job pulls it).
    public func resolveToRun(_ reference: String) throws(ModelStoreError) -> BlobDigest {
        do {
            return try resolve(reference)
        } catch  where error.code == .notFound {
            guard let origin = originRoot, case .tag(let name, let tag)? = try? ModelReference(parsing: reference),
                let digest = Self.originTag(origin, name: name, tag: tag)
            else { throw error }
            guard origin.existingBlob(digest) != nil else {
                throw ModelStoreError(
                    .notFound, "the model origin's tag \(name):\(tag) names \(digest), which the origin does not hold",
                    hint: "import the model again on a host of the cluster")
            }
            return digest
        }
    }

    /// `<origin>/tags/<name>:<tag>` (a name's `/` written `%2F`, so that `org:model` and
    /// `org/model:x` cannot meet): the version a tag names across the cluster, as the last import
    /// that published it set it.
    static func originTagPath(_ origin: StoreRoot, name: String, tag: String) -> String {
        joinPath(origin.tagsDirectory, name.replacingOccurrences(of: "/", with: "%2F") + ":" + tag)
    }

    static func originTag(_ origin: StoreRoot, name: String, tag: String) -> BlobDigest? {
        guard let bytes = FileBytes.read(originTagPath(origin, name: name, tag: tag)) else { return nil }
        return BlobDigest(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Points `tags` at `digest` in the origin (after its version is there): each a small file
    /// replaced whole (written aside, renamed), so a reader sees the old digest or the new one.
    func publishTags(
        _ tags: [(name: String, tag: String)], digest: BlobDigest, to origin: StoreRoot
    )
        throws(ModelStoreError)
    {
        let folder = origin.tagsDirectory
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
            throw ModelStoreError(.io, "cannot create \(folder): \(error.localizedDescription)")
        }
        for t in tags {
            let path = Self.originTagPath(origin, name: t.name, tag: t.tag)
            try DurableFile.write(Array((digest.description + "\n").utf8), to: path) {
                ModelStoreError(.io, "cannot write the tag \(t.name):\(t.tag) to \(path): \($0)")
            }
        }
    }

    /// Copies version `digest` (manifest `digest`, its `blobs`, each read from `paths`) into
    /// `origin`: blobs first, the manifest last (a host that finds the manifest finds its blobs).
    /// A file the origin holds intact is kept; one that does not hash to its name is replaced.
    /// Each copy is hashed on its way: a local file that changed is refused, not published.
    func publishVersion(
        _ digest: BlobDigest, blobs: [BlobDigest], paths: [BlobDigest: String], to origin: StoreRoot
    ) throws(ModelStoreError) {
        var done = Set<BlobDigest>()
        for blob in blobs + [digest] where done.insert(blob).inserted {
            let present = origin.existingBlob(blob) != nil
            if present, (try? hashFile(path: origin.blobPath(blob)).0) == blob { continue }
            let path = paths[blob] ?? blobPath(blob)
            let opened: OpenedFile
            do {
                opened = try OpenFolder((path as NSString).deletingLastPathComponent, reader: nil).file(
                    (path as NSString).lastPathComponent)
            } catch {
                throw ModelStoreError(error)
            }
            let file = try IngestFile.fromFile(opened, into: origin, mode: .copy)
            guard file.digest == blob else {
                throw ModelStoreError(
                    .digestMismatch, "\(path) changed while it was published: it hashes to \(file.digest)")
            }
            _ = try file.publish(replacing: present)
        }
    }
}
