// Imports streamed over the socket (`griditctl models import` of a path griditd cannot see, like
// `docker load`): the request body, staged by griditd in a file of its own, is an exported
// bundle or a tar of a pipeline folder. The stream's SHA-256 (computed by griditctl) is checked
// first; a pipeline's tar is then unpacked into a private folder, refusing what a bundle refuses
// (links, devices, absolute or `..` names), and imported from there through `importModel`, so
// every check of an import by path (regular files, configs' size, finite weights, the binding
// of each model to its weights) applies unchanged.

import CModelStore
import Foundation
import GriditCheckpoint
import GriditDiffusion

#if canImport(Glibc)
import Glibc
#endif

extension ModelStore {
    /// What an upload's body holds.
    public enum UploadKind: String, Sendable, CaseIterable {
        /// A file written by `models export`.
        case bundle
        /// A tar of a pipeline folder: `pipeline.json` and the files it names, by their names.
        case pipeline
    }

    /// Most entries and folder depth of a pipeline's tar (a pipeline names eight files at most).
    static let maxUploadEntries = 64
    static let maxUploadDepth = 8

    /// Imports the staged upload `file` (griditd's, removed by the caller) after checking that it
    /// hashes to `sha256`. The folder a pipeline is unpacked into (`<file>.d`) is removed here.
    public func importUpload(
        _ file: String, kind: UploadKind, sha256: BlobDigest, name: String?, progress: ImportProgress? = nil
    ) throws(ModelStoreError) -> ImportReport {
        try requireWritable("import")
        let (digest, size) = try hashFile(path: file)
        guard digest == sha256 else {
            throw ModelStoreError(
                .digestMismatch,
                "the uploaded \(kind.rawValue) (\(size) bytes) hashes to \(digest), not to \(sha256) as griditctl "
                    + "sent it: it was damaged on the way; nothing was imported",
                hint: "run the import again")
        }
        switch kind {
        case .bundle:
            // Only a tar: a pipeline JSON here could name other files of griditd's tmp/.
            var head = [UInt8](repeating: 0, count: 262)
            let fd = open(file, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw posixError("open", path: file, errno: errno) }
            let n = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            close(fd)
            guard n == 262, Array(head[257..<262]) == Array("ustar".utf8) else {
                throw ModelStoreError(
                    .invalidInput, "the uploaded bundle is not a tar; nothing was imported",
                    hint: "upload a file written by `models export`, or a pipeline as kind=pipeline")
            }
            return try importModel(from: file, name: name, progress: progress)
        case .pipeline:
            let folder = file + ".d"
            defer { try? FileManager.default.removeItem(atPath: folder) }
            try Self.unpackPipeline(file, into: folder, limit: size)
            try Self.checkUploadHolds(folder)
            return try importModel(from: folder, name: name, progress: progress)
        }
    }

    /// Every file the uploaded `pipeline.json` names came with it. Said in the upload's terms:
    /// the folder is griditd's own, which the sender never sees. (A `pipeline.json` that does
    /// not decode is left to the import, which says why.)
    static func checkUploadHolds(_ folder: String) throws(ModelStoreError) {
        guard let data = FileManager.default.contents(atPath: folder + "/pipeline.json"),
            let spec = try? JSONDecoder().decode(PipelineSpec.self, from: data)
        else { return }
        for (role, reference) in spec.files
        where !reference.hasPrefix("/") && !reference.split(separator: "/").contains("..")
            && !FileManager.default.fileExists(atPath: folder + "/" + reference)
        {
            throw ModelStoreError(
                .invalidInput,
                "the uploaded pipeline lacks '\(reference)', which its pipeline.json names as \(role.rawValue); nothing was imported",
                hint: "send every file pipeline.json names (a griditctl older than griditd may not know the "
                    + "\(role.rawValue.split(separator: ".")[0]) files: upgrade it)")
        }
    }

    /// Unpacks the tar `file` into the new folder `folder` (mode 0700): regular files and folders
    /// only, at most `limit` bytes in all (a sparse entry cannot grow past the upload).
    static func unpackPipeline(_ file: String, into folder: String, limit: Int64) throws(ModelStoreError) {
        func bad(_ why: String) -> ModelStoreError {
            ModelStoreError(
                .invalidInput, "the uploaded pipeline: \(why); nothing was imported",
                hint: "griditctl sends a pipeline folder as a tar of pipeline.json and the files it names")
        }
        guard mkdir(folder, 0o700) == 0 else { throw posixError("mkdir", path: folder, errno: errno) }
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw posixError("open", path: file, errno: errno) }
        defer { close(fd) }
        let tar = try TarReader(fd: fd, bad: bad)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ioChunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var entries = 0
        var written: Int64 = 0
        while let entry = try tar.next() {
            entries += 1
            guard entries <= maxUploadEntries else { throw bad("more than \(maxUploadEntries) entries") }
            let (raw, name, isDirectory) = try TarEntry.check(entry, holds: "pipeline uploads", bad: bad)
            let components = name.split(separator: "/").filter { $0 != "." }
            guard components.count <= maxUploadDepth else { throw bad("entry '\(raw)' is nested too deep") }
            guard let last = components.last else { continue }  // the folder itself
            // Folders on the way are made here, so none of them can be a link.
            var parent = folder
            for component in components.dropLast() {
                parent += "/" + component
                guard mkdir(parent, 0o700) == 0 || errno == EEXIST else {
                    throw posixError("mkdir", path: parent, errno: errno)
                }
            }
            if isDirectory {
                guard mkdir(parent + "/" + last, 0o700) == 0 || errno == EEXIST else {
                    throw posixError("mkdir", path: parent + "/" + last, errno: errno)
                }
                continue
            }
            let path = parent + "/" + last
            let out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard out >= 0 else {
                if errno == EEXIST { throw bad("entry '\(raw)' appears twice") }
                throw posixError("create", path: path, errno: errno)
            }
            defer { close(out) }
            while true {
                let n = archive_read_data(tar.archive, buffer.baseAddress, buffer.count)
                guard n >= 0 else { throw bad("reading '\(raw)' failed (\(tar.message))") }
                if n == 0 { break }
                written += Int64(n)
                guard written <= limit else { throw bad("its entries hold more bytes than the upload") }
                var offset = 0
                while offset < n {
                    let w = Glibc.write(out, buffer.baseAddress! + offset, n - offset)
                    if w < 0 && errno == EINTR { continue }
                    guard w > 0 else { throw posixError("write", path: path, errno: errno) }
                    offset += w
                }
            }
        }
    }
}
