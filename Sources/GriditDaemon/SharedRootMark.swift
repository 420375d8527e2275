// The mark of a cluster's shared root: `<shared-root>/.gridit-cluster` holds a token that the
// job database holds too (`NodeRegistry.sharedRootMark`). A share that is not mounted leaves an
// empty mount point, a plain local folder where griditd would put work folders and outputs that
// no other host sees; a wrong share mixes two clusters' files. Either shows as a missing or
// different token: griditd does not start, and a running host claims nothing until it is back.

import CDispatch  // declares `struct stat` first once Hummingbird is a dependency
import Foundation
import GriditJobQueue

#if canImport(Glibc)
import Glibc
#endif

public enum SharedRootMark {
    public static let fileName = ".gridit-cluster"

    /// What the mark file of `root` holds: its token, or nil when there is none. Read without
    /// following a link or waiting on a pipe, 128 bytes at most: anyone may be able to write
    /// the shared root.
    public static func read(_ root: String) throws(DaemonError) -> String? {
        let path = root + "/" + fileName
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            guard errno == ENOENT else {
                throw DaemonError(
                    "cannot read \(path) (\(String(cString: strerror(errno)))); it must be a plain file griditd's user reads"
                )
            }
            return nil
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            throw DaemonError("\(path) is not a plain file; remove it and start griditd again")
        }
        var bytes = [UInt8](repeating: 0, count: 128)
        let count = Glibc.read(fd, &bytes, bytes.count)
        guard count >= 0 else { throw DaemonError("cannot read \(path): \(String(cString: strerror(errno)))") }
        return String(decoding: bytes.prefix(count), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// At start: the token of `root`, checked against the database's. Where the database has
    /// one, the mark must hold it and nothing is written. On a new cluster the mark is adopted
    /// if there is one, else written (a plain file, created whole or not at all) and proposed;
    /// a mark this call wrote is removed again unless the database took it.
    public static func establish(_ root: String, nodes: any NodeRegistry) async throws -> String {
        if let cluster = try await nodes.sharedRootMark(proposing: nil) {
            if let problem = check(root, token: cluster) { throw DaemonError(problem) }
            return cluster
        }
        var written = false
        do {
            var found = try read(root)
            if found == nil {
                written = try create(root, token: UUID().uuidString.lowercased())
                found = try read(root)
            }
            guard let token = found, !token.isEmpty else {
                throw DaemonError(
                    "\(root)/\(fileName) is empty; remove it and start griditd again (it writes a new one)")
            }
            let cluster = try await nodes.sharedRootMark(proposing: token)
            guard let cluster, cluster != token else { return token }
            throw DaemonError(problem(root, found: written ? nil : token, expected: cluster))
        } catch {
            if written { unlink(root + "/" + fileName) }
            throw error
        }
    }

    /// Nil when `root` holds `token`; else what is wrong, for the operator.
    static func check(_ root: String, token: String) -> String? {
        do {
            let found = try read(root)
            return found == token ? nil : problem(root, found: found, expected: token)
        } catch {
            return error.message
        }
    }

    private static func problem(_ root: String, found: String?, expected: String) -> String {
        if found == nil {
            return "the shared root \(root) lacks this cluster's mark \(fileName) (token \(expected)): the shared "
                + "filesystem is not mounted there (an empty mount point) or another folder is named; mount the "
                + "share every host of the cluster mounts, or fix --shared-root (docs/CLUSTER.md)"
        }
        return "the shared root \(root) belongs to another cluster: its \(fileName) holds \(found!), this cluster's "
            + "database holds \(expected); mount this cluster's share, or fix --shared-root or --database (docs/CLUSTER.md)"
    }

    /// Writes `token` as the mark of `root` unless it has one; true when this call wrote it.
    private static func create(_ root: String, token: String) throws(DaemonError) -> Bool {
        let path = root + "/" + fileName
        let temporary = path + "." + token + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw DaemonError("cannot write \(temporary): \(String(cString: strerror(errno)))")
        }
        defer { unlink(temporary) }
        let bytes = Array((token + "\n").utf8)
        let complete = write(fd, bytes, bytes.count) == bytes.count && fsync(fd) == 0
        close(fd)
        guard complete else { throw DaemonError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        // A link never replaces a file: of two hosts starting at once, one mark wins.
        guard link(temporary, path) == 0 else {
            guard errno == EEXIST else {
                throw DaemonError("cannot create \(path): \(String(cString: strerror(errno)))")
            }
            return false
        }
        return true
    }
}
