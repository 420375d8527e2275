// What `griditctl models import` streams when griditd cannot see the path (its unit's
// ProtectHome=/PrivateTmp= hide /home and /tmp): an exported bundle as it is, or a pipeline
// folder as a tar of pipeline.json and the files it names, like `docker load`. The stream is
// read twice: once for its SHA-256 (sent first, as Content-Digest) and once to send it; griditd
// refuses an upload that does not hash to it. The daemon applies every check of an import by
// path to what it receives; the checks here only keep griditctl from sending what it would
// refuse (a symbolic link, a file outside the folder).

import Crypto
import Foundation
import GriditAPI

#if canImport(Glibc)
import Glibc
#endif

struct ModelUpload {
    /// One tar entry (or, for a bundle, the whole stream): a name and the local file.
    struct Entry {
        var name: String
        var path: String
        var size: Int64
    }

    /// `bundle` or `pipeline` (the upload's `kind`).
    var kind: String
    var entries: [Entry]

    /// The stream's length: a bundle's size, or the tar's (headers, padded data, two end blocks).
    var length: Int64 {
        guard kind == "pipeline" else { return entries.reduce(0) { $0 + $1.size } }
        return entries.reduce(1024) {
            $0 + Int64(Self.headers(name: $1.name, size: $1.size).count) + ($1.size + 511) / 512 * 512
        }
    }

    /// What to send for `path`: a bundle (a tar file), or the pipeline JSON `path` names
    /// (a folder means its pipeline.json) with the files it names.
    init(path: String) throws {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw CLIError("\(path) does not exist", status: ExitStatus.badInput)
        }
        let json = isFolder.boolValue ? path + "/pipeline.json" : path
        let file = try Self.regularFile(json)
        if !isFolder.boolValue, Self.isTar(json) {
            kind = "bundle"
            entries = [file]
            return
        }
        kind = "pipeline"
        let folder = (json as NSString).deletingLastPathComponent
        guard
            let data = FileManager.default.contents(atPath: json),
            let pipeline = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            throw CLIError("\(json) is neither a pipeline JSON nor a bundle (tar)", status: ExitStatus.badInput)
        }
        var entries = [Entry(name: "pipeline.json", path: json, size: file.size)]
        // The files of docs/PIPELINE_FORMAT.md: each model's config and weights.
        for stage in ["stage1", "guide", "stage2", "vae"] {
            guard let model = pipeline[stage] as? [String: Any] else { continue }
            for key in ["config", "weights"] {
                guard let name = model[key] as? String, !entries.contains(where: { $0.name == name }) else { continue }
                let parts = name.split(separator: "/", omittingEmptySubsequences: false)
                guard !name.hasPrefix("/"), !parts.contains(where: { $0.isEmpty || $0 == ".." || $0 == "." }) else {
                    throw CLIError(
                        "\(json): \(stage).\(key) '\(name)' is not a path inside the pipeline's folder",
                        status: ExitStatus.badInput)
                }
                var walked = folder
                for part in parts.dropLast() {
                    walked += "/" + part
                    var st = stat()
                    guard lstat(walked, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
                        throw CLIError(
                            "\(walked) is not a folder (a symbolic link?); a pipeline's files are in its own folder",
                            status: ExitStatus.badInput)
                    }
                }
                var entry = try Self.regularFile(folder + "/" + name)
                entry.name = name
                entries.append(entry)
            }
        }
        self.entries = entries
    }

    /// `path` if it is a regular file (not a link), with its size.
    static func regularFile(_ path: String) throws -> Entry {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            throw CLIError("\(path): \(String(cString: strerror(errno)))", status: ExitStatus.badInput)
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw CLIError(
                "\(path) is not a regular file (a symbolic link, folder or device); griditd imports regular files only",
                status: ExitStatus.badInput)
        }
        return Entry(name: (path as NSString).lastPathComponent, path: path, size: Int64(st.st_size))
    }

    static func isTar(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: 512)) ?? Data()
        return head.count == 512 && head[257..<262] == Data("ustar".utf8)
    }

    /// Writes the stream in pieces to `write`; `progress` gets the bytes done so far.
    func stream(_ write: (Data) -> Void, progress: (Int64) -> Void = { _ in }) throws {
        var done: Int64 = 0
        func emit(_ data: Data) {
            write(data)
            done += Int64(data.count)
            progress(done)
        }
        for entry in entries {
            if kind == "pipeline" { emit(Self.headers(name: entry.name, size: entry.size)) }
            guard let handle = FileHandle(forReadingAtPath: entry.path) else {
                throw CLIError(
                    "cannot read \(entry.path): \(String(cString: strerror(errno)))", status: ExitStatus.badInput)
            }
            defer { try? handle.close() }
            var left = entry.size
            while left > 0 {
                let chunk = try handle.read(upToCount: Int(min(left, 1 << 20))) ?? Data()
                guard !chunk.isEmpty else {
                    throw CLIError("\(entry.path) shrank while it was being sent", status: ExitStatus.badInput)
                }
                emit(chunk)
                left -= Int64(chunk.count)
            }
            if kind == "pipeline", entry.size % 512 != 0 { emit(Data(count: Int(512 - entry.size % 512))) }
        }
        if kind == "pipeline" { emit(Data(count: 1024)) }
    }

    /// The stream's SHA-256 as an RFC 9530 Content-Digest value (`sha-256=:<base64>:`).
    func contentDigest(progress: (Int64) -> Void = { _ in }) throws -> String {
        var hasher = SHA256()
        try stream({ hasher.update(data: $0) }, progress: progress)
        return "sha-256=:" + Data(hasher.finalize()).base64EncodedString() + ":"
    }

    /// An entry's headers: ustar's, after a pax header with the whole path where the name fits
    /// neither ustar's 100 bytes nor a split into its 155-byte prefix and 100-byte name.
    static func headers(name: String, size: Int64) -> Data {
        if let (prefix, rest) = ustarSplit(name) { return tarHeader(name: rest, prefix: prefix, size: size) }
        // A pax record is "LENGTH path=NAME\n", LENGTH counting its own digits.
        let body = " path=\(name)\n".utf8.count
        var length = body + String(body).count
        while length != body + String(length).count { length = body + String(length).count }
        let record = Data("\(length) path=\(name)\n".utf8)
        var data = tarHeader(name: "PaxHeader", prefix: "", size: Int64(record.count), type: "x")
        data += record + Data(count: (512 - record.count % 512) % 512)
        return data + tarHeader(name: "long-name", prefix: "", size: size)  // readers of pax take the record's
    }

    /// `name` as ustar's prefix and name fields, if it fits them.
    static func ustarSplit(_ name: String) -> (prefix: String, rest: String)? {
        if name.utf8.count <= 100 { return ("", name) }
        guard let slash = name.utf8.prefix(156).lastIndex(of: UInt8(ascii: "/")) else { return nil }
        let (prefix, rest) = (String(name[..<slash]), String(name[name.index(after: slash)...]))
        return rest.utf8.count <= 100 && !rest.isEmpty ? (prefix, rest) : nil
    }

    /// A POSIX ustar header of `type` ("0": a file, "x": pax records): mode 0644, owner 0, mtime
    /// 0; sizes of 8 GiB and more in base 256 (read by libarchive and GNU tar).
    static func tarHeader(name: String, prefix: String, size: Int64, type: Character = "0") -> Data {
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int, width: Int) {
            for (i, byte) in text.utf8.prefix(width).enumerated() { header[offset + i] = byte }
        }
        func octal(_ value: Int64, at offset: Int, width: Int) {
            put(
                String(repeating: "0", count: width - 1 - String(value, radix: 8).count) + String(value, radix: 8),
                at: offset, width: width - 1)
        }
        put(name, at: 0, width: 100)
        octal(0o644, at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        if size < 0o77777777777 {
            octal(size, at: 124, width: 12)
        } else {
            header[124] = 0x80
            for i in 0..<8 { header[135 - i] = UInt8(truncatingIfNeeded: size >> (8 * Int64(i))) }
        }
        octal(0, at: 136, width: 12)
        header[156] = type.asciiValue!
        put("ustar", at: 257, width: 6)
        put("00", at: 263, width: 2)
        put(prefix, at: 345, width: 155)
        put("        ", at: 148, width: 8)
        let sum = header.reduce(0) { $0 + Int64($1) }
        octal(sum, at: 148, width: 7)
        header[155] = 0x20
        return Data(header)
    }
}

/// A byte-count progress bar on stderr when it is a terminal (nothing otherwise), redrawn at
/// each whole percent.
final class TransferBar {
    let total: Int64
    let output: Output
    private var shown: (String, Int)?

    init(total: Int64, output: Output) {
        self.total = max(total, 1)
        self.output = output
    }

    func show(_ label: String, _ done: Int64) {
        guard output.stderrIsTerminal else { return }
        let percent = Int(done * 100 / total)
        guard shown.map({ $0 != (label, percent) }) ?? true else { return }
        shown = (label, percent)
        let filled = percent * 30 / 100
        output.stderr(
            "\r\(label)  [" + String(repeating: "#", count: filled) + String(repeating: "-", count: 30 - filled)
                + "] \(String(format: "%3d", percent))%  \(Self.bytes(done))/\(Self.bytes(total))\u{1B}[K")
    }

    func finish() {
        if output.stderrIsTerminal, shown != nil { output.stderr("\n") }
    }

    static func bytes(_ n: Int64) -> String {
        n >= 1 << 30
            ? String(format: "%.1f GiB", Double(n) / Double(1 << 30))
            : String(format: "%.1f MiB", Double(n) / Double(1 << 20))
    }
}
