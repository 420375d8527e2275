import GriditCheckpoint

/// The one error type of `GriditModelStore`: a code (stable snake_case name for the socket
/// protocol and exit statuses), what went wrong, and what to do about it.
public struct ModelStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Value: String, Hashable, Sendable {
            case notFound = "not_found"
            case invalidReference = "invalid_reference"
            case invalidInput = "invalid_input"
            case digestMismatch = "digest_mismatch"
            case permission
            case crossDevice = "cross_device"
            case readOnly = "read_only"
            case daemonRunning = "daemon_running"
            case noSpace = "no_space"
            case io
            case database
        }
        fileprivate let value: Value

        /// No such name, tag, version or blob.
        public static let notFound = Code(value: .notFound)
        /// Not `NAME[:TAG]`, `NAME@sha256:…` or `sha256:…`.
        public static let invalidReference = Code(value: .invalidReference)
        /// The thing to import is wrong: a bad pipeline file, config, safetensors header, a
        /// config that does not describe its weights, a hostile bundle. Nothing was stored.
        public static let invalidInput = Code(value: .invalidInput)
        /// A blob's content no longer hashes to its name (it is quarantined), or a bundle's file
        /// does not hash to the digest it claims.
        public static let digestMismatch = Code(value: .digestMismatch)
        /// A path cannot be read, entered or written by this user.
        public static let permission = Code(value: .permission)
        /// `--link hardlink` across filesystems.
        public static let crossDevice = Code(value: .crossDevice)
        /// The change concerns a read-only site root.
        public static let readOnly = Code(value: .readOnly)
        /// A daemon holds the state directory: use `griditctl models …`.
        public static let daemonRunning = Code(value: .daemonRunning)
        /// The filesystem is full.
        public static let noSpace = Code(value: .noSpace)
        /// Another system-call failure.
        public static let io = Code(value: .io)
        /// The SQLite database failed (busy, corrupt, newer schema, …).
        public static let database = Code(value: .database)

        public var name: String { value.rawValue }
        public var description: String { value.rawValue }
    }

    public var code: Code
    /// What went wrong, naming the file, blob, tensor or path component concerned.
    public var message: String
    /// What to do about it.
    public var hint: String?

    public init(_ code: Code, _ message: String, hint: String? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
    }

    /// A path refused by `SafeOpen` / `OpenFolder`.
    init(_ error: SafeOpenError) {
        let code: Code =
            switch error.reason {
            case .notFound: .notFound
            case .permission: .permission
            case .wrongType, .symbolicLink, .outsideFolder: .invalidInput
            case .system: .io
            }
        self.init(code, error.message, hint: error.hint)
    }

    public var description: String {
        "\(code.name): \(message)" + (hint.map { ". Fix: \($0)" } ?? "")
    }
}
