// What a killed griditd leaves in its state directory and a restart removes: output folders
// being written (`.<name>.partial-XXXXXX` next to where `outputs/<name>` goes, made by
// `SequenceRun.finish(into:)`; the job writes them again from its work folder), model exports
// staged by a griditd before 2026-12-08 (`tmp/export-<uuid>.tar`,
// `tmp/.export-<uuid>.tar.partial-<uuid>`; exports are streamed from the blobs now) and uploads
// being received or unpacked (`tmp/upload-<uuid>.part`, `tmp/upload-<uuid>.part.d/`). Only names
// griditd makes, of the type it makes, are removed; a link is never followed, finished outputs
// (they hold sequence.json) are not searched, and anything else stays where it is. Under a
// shared root (several hosts) a partial output goes only once untouched for a lease.

import CDispatch  // declares `struct stat` and `timespec` first once Hummingbird is a dependency
import Foundation
import GriditJobSpec
import Logging

#if canImport(Glibc)
import Glibc
#endif

enum Leftovers {
    /// Removes the leftovers under `layout` and returns their paths. Call only while holding the
    /// state directory's lock (no other griditd on this state directory can be writing them).
    /// `partialOutputsUntouchedFor`: where other hosts write outputs too, only partial folders
    /// in which nothing was modified for that long go.
    @discardableResult
    static func remove(
        in layout: StateLayout, partialOutputsUntouchedFor age: TimeInterval? = nil, logger: Logger
    ) -> [String] {
        // Partial folders sit beside their destination: outputs/named/<uid>/ and up to
        // maxOutputLevels − 1 folders of the name above them.
        let outputs = partialOutputs(in: layout.outputs, depth: 2 + JobSpec.maxOutputLevels).filter { path in
            guard let age else { return true }
            return newestModification(under: path).map { $0 < Date().timeIntervalSince1970 - age } ?? false
        }
        let exports = entries(in: layout.tmp, type: S_IFREG) { name in
            (name.hasPrefix("export-") && name.hasSuffix(".tar"))
                || (name.hasPrefix(".export-") && isPartialName(name, mkdtemp: false))
        }
        let uploads =
            entries(in: layout.tmp, type: S_IFREG) { isUploadName($0, suffix: ".part") }
            + entries(in: layout.tmp, type: S_IFDIR) { isUploadName($0, suffix: ".part.d") }
        var removed: [String] = []
        for path in outputs + exports + uploads {
            do {
                try FileManager.default.removeItem(atPath: path)
                removed.append(path)
            } catch {
                logger.warning(
                    "cannot remove a leftover of an earlier run", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
        if !removed.isEmpty {
            logger.notice(
                "removed \(removed.count) leftover(s) of an interrupted run", metadata: ["paths": "\(removed)"])
        }
        return removed
    }

    /// The latest modification time of `path` or anything inside it (links not followed): a
    /// writer adding frames to a subfolder leaves the top folder's own time as it was.
    static func newestModification(under path: String) -> TimeInterval? {
        var status = stat()
        guard lstat(path, &status) == 0 else { return nil }
        var newest = Double(status.st_mtim.tv_sec)
        for case let name as String in FileManager.default.enumerator(atPath: path) ?? .init() {
            if lstat(path + "/" + name, &status) == 0 { newest = max(newest, Double(status.st_mtim.tv_sec)) }
        }
        return newest
    }

    /// `upload-<uuid><suffix>` (`UploadPolicy`'s staged bodies, the model store's unpacked folders).
    static func isUploadName(_ name: String, suffix: String) -> Bool {
        guard name.hasPrefix("upload-"), name.hasSuffix(suffix) else { return false }
        return UUID(uuidString: String(name.dropFirst(7).dropLast(suffix.count))) != nil
    }

    /// `.<name>.partial-<suffix>`: six mkdtemp characters, or a UUID.
    static func isPartialName(_ name: String, mkdtemp: Bool) -> Bool {
        guard name.hasPrefix("."), let marker = name.range(of: ".partial-", options: .backwards),
            marker.lowerBound > name.index(after: name.startIndex)
        else { return false }
        let suffix = name[marker.upperBound...]
        if mkdtemp { return suffix.count == 6 && suffix.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) } }
        return UUID(uuidString: String(suffix)) != nil
    }

    /// Partial output folders in `folder` and, `depth` levels down, in the folders that hold
    /// outputs (`--output cats/run-1`): not hidden, not a finished output themselves.
    private static func partialOutputs(in folder: String, depth: Int) -> [String] {
        let here = entries(in: folder, type: S_IFDIR) { isPartialName($0, mkdtemp: true) }
        guard depth > 1 else { return here }
        let parents = entries(in: folder, type: S_IFDIR) { !$0.hasPrefix(".") }
            .filter { !StateLayout.isFinishedOutput($0) }
        return here + parents.flatMap { partialOutputs(in: $0, depth: depth - 1) }
    }

    /// Entries of `folder` whose name passes `matches` and whose own type (lstat) is `type`.
    private static func entries(in folder: String, type: mode_t, matches: (String) -> Bool) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter(matches).map { folder + "/" + $0 }.filter { path in
            var status = stat()
            return lstat(path, &status) == 0 && status.st_mode & S_IFMT == type
        }.sorted()
    }
}
