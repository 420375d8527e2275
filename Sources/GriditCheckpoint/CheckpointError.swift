import GriditDurable

#if canImport(Glibc)
import Glibc
#endif

/// Everything that can go wrong reading or writing a checkpoint file (safetensors, `.npy`).
///
/// A struct with a nested `Code` so that new cases do not break callers' `switch`es. Two errors
/// are equal when their codes are equal (handy in tests: `#expect(error.code == .truncated)`);
/// the other fields are context for people: the file, the tensor, what was found, what to do.
///
/// `description` reads like `file '/ckpt/dit.safetensors': tensor 'x_embedder.proj.weight':
/// data_offsets [0, 4096] end past the data section (1024 bytes) [badOffsets]. Hint: ...`.
public struct CheckpointError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Raw: String, Sendable {
            case fileNotFound, unreadable, empty, truncated, headerTooLarge, badHeader, duplicateTensor
            case unsupportedDType, badOffsets, overlap, shapeMismatch, missingTensor, unsupportedLayout
            case writeFailed, invalidArgument
        }
        private let raw: Raw
        private init(_ raw: Raw) { self.raw = raw }

        /// `open` said ENOENT/ENOTDIR.
        public static let fileNotFound = Code(.fileNotFound)
        /// The file exists but cannot be opened or mapped: permissions, a directory, `fstat`/`mmap` failed.
        public static let unreadable = Code(.unreadable)
        /// The file has zero bytes.
        public static let empty = Code(.empty)
        /// The file ends before its own header says it should (includes files shorter than 8 bytes).
        public static let truncated = Code(.truncated)
        /// The declared header length is over the cap (100 MB for safetensors).
        public static let headerTooLarge = Code(.headerTooLarge)
        /// The header is not what the format requires: bad UTF-8 or JSON, wrong types, missing fields,
        /// bad dims, bad magic or version.
        public static let badHeader = Code(.badHeader)
        /// A tensor name appears twice in the header (a JSON parser would silently keep the last).
        public static let duplicateTensor = Code(.duplicateTensor)
        /// A dtype this reader does not know, or knows but cannot turn into float32.
        public static let unsupportedDType = Code(.unsupportedDType)
        /// `data_offsets` is not `[begin, end]` with `begin <= end <= data section size`.
        public static let badOffsets = Code(.badOffsets)
        /// Two tensors' byte ranges overlap.
        public static let overlap = Code(.overlap)
        /// The byte length does not equal product(shape) × element size (or the data does not fit).
        public static let shapeMismatch = Code(.shapeMismatch)
        /// `tensor(named:)` for a name the file does not hold.
        public static let missingTensor = Code(.missingTensor)
        /// A layout this reader does not take (`.npy` with `fortran_order: True`).
        public static let unsupportedLayout = Code(.unsupportedLayout)
        /// Writing failed: creating the temporary file, `write`, `fsync` or `rename`.
        public static let writeFailed = Code(.writeFailed)
        /// A writer was given something it cannot write (negative dims, a reserved name, ...).
        public static let invalidArgument = Code(.invalidArgument)

        public var description: String { raw.rawValue }

        /// The hint used when the thrower gives none.
        var defaultHint: String {
            switch raw {
            case .fileNotFound: return "check the path"
            case .unreadable: return Hints.permissions
            case .empty, .truncated: return Hints.incomplete
            case .unsupportedDType: return Hints.toFloat32
            case .missingTensor: return "check the name against the model's binding table"
            case .unsupportedLayout: return Hints.npyResave
            case .writeFailed: return "check that the directory exists, is writable and has free space"
            case .invalidArgument: return "fix the arguments given to the writer"
            case .headerTooLarge, .badHeader, .duplicateTensor, .badOffsets, .overlap, .shapeMismatch:
                return Hints.reexport
            }
        }
    }

    public var code: Code
    /// The file concerned.
    public var path: String
    /// The tensor concerned, if the problem is with one tensor.
    public var tensor: String?
    /// What was found, in words (with the syscall and errno text for system-call failures).
    public var message: String
    /// What to do about it (a default for the code when the thrower gives none).
    public var hint: String?
    /// The errno of a failed system call (so callers can tell a full disk, ENOSPC, from the rest).
    public var errno: Int32?

    public init(
        code: Code, path: String, tensor: String? = nil, message: String, hint: String? = nil,
        errno: Int32? = nil
    ) {
        self.code = code
        self.path = path
        self.tensor = tensor
        self.message = message
        self.hint = hint ?? code.defaultHint
        self.errno = errno
    }

    public var description: String {
        var text = "file '\(path)': "
        if let tensor { text += "tensor '\(tensor)': " }
        text += "\(message) [\(code)]"
        if let hint { text += ". Hint: \(hint)" }
        return text
    }

    public static func == (lhs: CheckpointError, rhs: CheckpointError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}

// MARK: - Hints and system-call errors shared by the readers and writers

enum Hints {
    static let reexport =
        "re-export the checkpoint with tools/convert_checkpoint.py or safetensors.torch.save_file"
    static let incomplete =
        "the file is incomplete (interrupted copy or write?): copy it again, or " + reexport
    static let toFloat32 = "convert the tensor to F32 (tools/convert_checkpoint.py does)"
    static let permissions = "check that the path names a regular file this user may read"
    static let npyResave = "re-save it with numpy.save(path, numpy.ascontiguousarray(a, dtype=numpy.float32))"
}

/// `strerror(code)` as a Swift string.
func errnoText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text) + " (errno \(code))"
}

extension CheckpointError {
    /// A failed system call: the message names the call and the errno text, as `mmap failed: ...`.
    /// A failed durable write (`DurableFile`) as a `writeFailed` error with its hint.
    public static func durable(_ e: DurableFileError) -> CheckpointError {
        let hint =
            e.call.hasPrefix("mkstemp")
            ? "check that the directory exists and is writable"
            : e.call == "write" ? "check free disk space" : nil
        return syscall(e.call, errno: e.errno, path: e.path, as: .writeFailed, hint: hint)
    }

    static func syscall(
        _ call: String, errno code: Int32, path: String, as errorCode: Code, hint: String? = nil
    ) -> CheckpointError {
        CheckpointError(
            code: errorCode, path: path, message: "\(call) failed: \(errnoText(code))", hint: hint,
            errno: code)
    }
}
