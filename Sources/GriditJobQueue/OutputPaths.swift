import Foundation

/// Output folders are stored relative to the state directory (the database's folder:
/// `outputs/job-12`), so that a state directory moved or restored elsewhere keeps its jobs'
/// outputs. Rows written before hold absolute paths: under the state directory they read as they
/// are; under the folder it was moved from, the tail the layout gives them (`outputs/job-<id>`,
/// `outputs/named/<uid>/<name>`) finds them again. No schema change: the column stays TEXT.
public enum OutputPaths {
    /// What the database keeps for `path`: relative when it lies inside `root`.
    public static func stored(_ path: String?, root: String) -> String? {
        guard let path, path.hasPrefix(root + "/") else { return path }
        return String(path.dropFirst(root.count + 1))
    }

    /// The absolute folder of a name stored relative to `root` (a shared queue's shared root,
    /// mounted at its own place on each host); an absolute one (written before there was a root,
    /// or outside it) as it is. No moved-folder guesses: another host's folder is not this one's.
    public static func resolved(_ stored: String?, root: String) -> String? {
        guard let stored, !stored.hasPrefix("/") else { return stored }
        return root + "/" + stored
    }

    /// The absolute folder of a stored value.
    static func resolved(_ stored: String?, root: String, id: Int64, owner: UInt32) -> String? {
        guard let stored else { return nil }
        guard stored.hasPrefix("/") else { return root + "/" + stored }
        if stored.hasPrefix(root + "/") { return stored }
        let automatic = "/outputs/job-\(id)"
        if stored.hasSuffix(automatic) { return root + automatic }
        if let named = stored.range(of: "/outputs/named/\(owner)/") {
            return root + stored[named.lowerBound...]
        }
        return stored
    }
}
