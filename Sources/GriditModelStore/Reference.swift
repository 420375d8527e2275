/// How a user names a pipeline version: `NAME[:TAG]` (tag `latest` when omitted), `NAME@sha256:<hex>`
/// (pinned: names the exact version whatever the tags say) or `sha256:<hex>` (a unique prefix of at
/// least 6 hex digits will do, as with docker image ids).
public enum ModelReference: Hashable, Sendable, CustomStringConvertible {
    case tag(name: String, tag: String)
    case pinned(name: String, digest: BlobDigest)
    case digest(BlobDigest)
    case digestPrefix(String)

    public static let defaultTag = "latest"

    /// Parses a reference; errors say which part is wrong and show the accepted forms.
    public init(parsing text: String) throws(ModelStoreError) {
        func bad(_ why: String) -> ModelStoreError {
            ModelStoreError(
                .invalidReference, "'\(text)' is not a model reference: \(why)",
                hint: "write NAME:TAG (e.g. moving-digits:v1), NAME@sha256:<64 hex> or sha256:<hex>")
        }
        if let at = text.firstIndex(of: "@") {
            let name = String(text[..<at])
            let rest = String(text[text.index(after: at)...])
            guard let digest = BlobDigest(rest) else { throw bad("'\(rest)' is not sha256:<64 hex digits>") }
            if let why = Self.nameProblem(name) { throw bad(why) }
            self = .pinned(name: name, digest: digest)
        } else if text.hasPrefix("sha256:") {
            if let digest = BlobDigest(text) {
                self = .digest(digest)
            } else {
                let hex = text.dropFirst(7).lowercased()
                guard hex.utf8.count >= 6, hex.utf8.count < 64, hex.utf8.allSatisfy(BlobDigest.isHexDigit) else {
                    throw bad("a digest is sha256: and 64 hex digits (or a unique prefix of at least 6)")
                }
                self = .digestPrefix(String(hex))
            }
        } else {
            let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let name = parts[0]
            let tag = parts.count == 2 ? parts[1] : Self.defaultTag
            if let why = Self.nameProblem(name) { throw bad(why) }
            if let why = Self.tagProblem(tag) { throw bad(why) }
            self = .tag(name: name, tag: tag)
        }
    }

    /// Parses `NAME[:TAG]` only (the destination of `tag` and `import --name`).
    public static func parseTag(_ text: String) throws(ModelStoreError) -> (name: String, tag: String) {
        let reference = try ModelReference(parsing: text)
        guard case .tag(let name, let tag) = reference else {
            throw ModelStoreError(
                .invalidReference, "'\(text)' names a digest; a tag is NAME:TAG",
                hint: "give a name and a tag, e.g. moving-digits:v2")
        }
        return (name, tag)
    }

    public var description: String {
        switch self {
        case .tag(let name, let tag): return "\(name):\(tag)"
        case .pinned(let name, let digest): return "\(name)@\(digest)"
        case .digest(let digest): return digest.description
        case .digestPrefix(let hex): return "sha256:\(hex)"
        }
    }

    /// Names: lower-case letters and digits in components joined by `.`, `_` or `-`, optionally
    /// `/`-separated (`org/model`), at most 128 characters.
    static func nameProblem(_ name: String) -> String? {
        guard !name.isEmpty else { return "the name is empty" }
        guard name.utf8.count <= 128 else { return "the name is longer than 128 characters" }
        for component in name.split(separator: "/", omittingEmptySubsequences: false) {
            guard let first = component.utf8.first, let last = component.utf8.last,
                isLowerAlnum(first), isLowerAlnum(last)
            else { return "name components start and end with a lower-case letter or digit ('\(name)')" }
            var previousSeparator = false
            for c in component.utf8 {
                if isLowerAlnum(c) {
                    previousSeparator = false
                } else if c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") {
                    if previousSeparator { return "two separators in a row in '\(name)'" }
                    previousSeparator = true
                } else {
                    return "names use lower-case letters, digits, '.', '_', '-' and '/' ('\(name)')"
                }
            }
        }
        return nil
    }

    /// Tags: letters, digits, `_`, `.`, `-`, not starting with `.` or `-`, at most 128 characters.
    static func tagProblem(_ tag: String) -> String? {
        guard let first = tag.utf8.first else { return "the tag after ':' is empty" }
        guard tag.utf8.count <= 128 else { return "the tag is longer than 128 characters" }
        guard first != UInt8(ascii: "."), first != UInt8(ascii: "-") else {
            return "a tag cannot start with '.' or '-'"
        }
        for c in tag.utf8
        where
            !(isLowerAlnum(c) || (65...90).contains(c) || c == UInt8(ascii: "_")
            || c == UInt8(ascii: ".") || c == UInt8(ascii: "-"))
        {
            return "tags use letters, digits, '_', '.' and '-' ('\(tag)')"
        }
        return nil
    }

    private static func isLowerAlnum(_ c: UInt8) -> Bool { (97...122).contains(c) || (48...57).contains(c) }
}
