import Foundation
import GriditCheckpoint
import GriditDiffusion
import GriditImage
import GriditModels

/// Every failure the engine reports: a code that says what the caller should do, what is wrong,
/// and the fix.
///
/// Codes and what a daemon does with them:
/// - `invalid_input`: the request, the pipeline or its files are wrong; retrying cannot help, fail the job.
/// - `interrupted`: `shouldStop` asked the run to stop; the work directory is resumable.
/// - `disk_full`: ENOSPC/EDQUOT while writing; the work directory is intact, retry when there is space.
/// - `transient`: another I/O failure that may pass (retry with backoff).
/// - `internal`: a bug (a broken invariant); not worth retrying.
public struct EngineError: Error, CustomStringConvertible, Sendable, Equatable {
    public struct Code: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        public static let invalidInput = Code(rawValue: "invalid_input")
        public static let interrupted = Code(rawValue: "interrupted")
        public static let diskFull = Code(rawValue: "disk_full")
        public static let transient = Code(rawValue: "transient")
        public static let `internal` = Code(rawValue: "internal")

        public var description: String { rawValue }
    }

    public var code: Code
    public var message: String
    public var hint: String?

    public init(_ code: Code, _ message: String, hint: String? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
    }

    /// Whether running the same request again later may succeed (`disk_full`, `transient`,
    /// `interrupted`); `invalid_input` and `internal` will fail the same way.
    public var isRetryable: Bool { code == .diskFull || code == .transient || code == .interrupted }

    public var description: String { hint.map { "\(message). Hint: \($0)" } ?? message }

    static func invalid(_ message: String, hint: String? = nil) -> EngineError {
        EngineError(.invalidInput, message, hint: hint)
    }

    /// The run was stopped between steps by `shouldStop`.
    public static let interrupted = EngineError(
        .interrupted, "the run was stopped",
        hint: "run it again on the same work directory to resume")

    /// Classifies any error the layers below throw.
    public static func classify(_ error: any Error, context: String? = nil) -> EngineError {
        func prefixed(_ m: String) -> String { context.map { "\($0): \(m)" } ?? m }
        switch error {
        case let e as EngineError:
            return e
        case let e as PipelineError:
            return .invalid(prefixed(e.description), hint: "fix the pipeline file (see docs/PIPELINE_FORMAT.md)")
        case let e as ModelError:
            return .invalid(prefixed(e.description))
        case let e as BindingError:
            return .invalid(prefixed(e.description))
        case let e as CheckpointError:
            if let errno = e.errno, errno == ENOSPC || errno == EDQUOT {
                return EngineError(
                    .diskFull, prefixed(e.message + " (\(e.path))"),
                    hint: "free disk space, then run again on the same work directory")
            }
            if e.code == .writeFailed { return EngineError(.transient, prefixed(e.description)) }
            return .invalid(prefixed(e.description))
        case let e as ImageError:
            return .invalid(prefixed(e.description))
        case let e as DiffusionError:
            return EngineError(.internal, prefixed(e.description))
        case let e as CocoaError where e.code == .fileWriteOutOfSpace:
            return EngineError(.diskFull, prefixed(e.localizedDescription), hint: "free disk space and run again")
        case let e as CocoaError where e.isFileError:
            // Foundation's file calls (creating folders, listing them): I/O that may pass.
            return EngineError(.transient, prefixed(e.localizedDescription))
        default:
            // Nothing below throws anything else: an error nobody classified is a bug, and a bug
            // fails the same way again.
            return EngineError(.internal, prefixed("unexpected error: \(error)"))
        }
    }

    /// An error for a failed system call on `path`.
    static func posix(_ call: String, path: String, errno code: Int32 = errno) -> EngineError {
        let text = String(cString: strerror(code))
        if code == ENOSPC || code == EDQUOT {
            return EngineError(
                .diskFull, "\(call) '\(path)': \(text)",
                hint: "free disk space, then run again on the same work directory")
        }
        if code == EACCES || code == EPERM || code == EROFS {
            return .invalid("\(call) '\(path)': \(text)", hint: "choose a directory this user may write")
        }
        return EngineError(.transient, "\(call) '\(path)': \(text)")
    }
}
