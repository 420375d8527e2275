/// The one error type thrown by the state database (GriditStateDatabase) and the job queue on it
/// (GriditJobQueue).
///
/// A struct with a nested `Code` so that new cases do not break callers that switch on them
/// (style 3.3). `message` names the problem and, where there is one, the fix.
public struct StateError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Value: String, Hashable, Sendable {
            case queueFull = "queue_full"
            case ownerJobLimit = "owner_job_limit"
            case ownerWorkLimit = "owner_work_limit"
            case ownerHistoryLimit = "owner_history_limit"
            case outputTaken = "output_taken"
            case notFound = "not_found"
            case leaseLost = "lease_lost"
            case forbidden
            case invalidTransition = "invalid_transition"
            case invalidArgument = "invalid_argument"
            case schemaTooNew = "schema_too_new"
            case locked
            case busy
            case database
            case diskFull = "disk_full"
            case databaseLost = "database_lost"
            case io
        }
        fileprivate let value: Value

        /// `queued + retryable + running >= maxQueued`; the job was not created. (griditctl: exit 75)
        public static let queueFull = Code(value: .queueFull)
        /// The owner's live jobs would exceed `SubmitLimits.maxQueuedPerOwner`; nothing was created.
        public static let ownerJobLimit = Code(value: .ownerJobLimit)
        /// The owner's live jobs' estimated work would exceed `SubmitLimits.maxWorkPerOwner`.
        public static let ownerWorkLimit = Code(value: .ownerWorkLimit)
        /// The owner has `SubmitLimits.maxRecordedPerOwner` jobs recorded, finished ones included.
        public static let ownerHistoryLimit = Code(value: .ownerHistoryLimit)
        /// Another live job of the same owner writes to the output folder asked for, or to one
        /// inside or around it; nothing was created.
        public static let outputTaken = Code(value: .outputTaken)
        /// No job with that id (it may have been pruned).
        public static let notFound = Code(value: .notFound)
        /// The caller's lease token no longer owns the job (re-claimed, canceled, recovered).
        /// The worker must stop working on the job and write nothing more for it.
        public static let leaseLost = Code(value: .leaseLost)
        /// The requester does not own the job and is not an admin.
        public static let forbidden = Code(value: .forbidden)
        /// The event is not allowed from the job's current state (terminal states are final).
        public static let invalidTransition = Code(value: .invalidTransition)
        /// A parameter is out of range (empty worker id, length < 1, params not JSON, ...).
        public static let invalidArgument = Code(value: .invalidArgument)
        /// The database was migrated by a newer griditd; this binary refuses to touch it.
        public static let schemaTooNew = Code(value: .schemaTooNew)
        /// Another process holds the state directory lock.
        public static let locked = Code(value: .locked)
        /// SQLite stayed busy past the busy timeout.
        public static let busy = Code(value: .busy)
        /// Any other SQLite error (constraint, corruption, disk full, ...).
        public static let database = Code(value: .database)
        /// The database's filesystem is full (SQLITE_FULL, ENOSPC): nothing was written.
        public static let diskFull = Code(value: .diskFull)
        /// The database file is not the one griditd created in this state directory (deleted,
        /// replaced, truncated, or its write-ahead log lost): griditd refuses to start over silently.
        public static let databaseLost = Code(value: .databaseLost)
        /// A system call failed (open, flock, write).
        public static let io = Code(value: .io)

        /// Stable snake_case name, suitable for the control protocol and logs.
        public var name: String { value.rawValue }
        public var description: String { value.rawValue }
    }

    public var code: Code
    /// What went wrong and what to do about it.
    public var message: String
    /// The job concerned, when there is one.
    public var jobID: Int64?

    public init(_ code: Code, _ message: String, jobID: Int64? = nil) {
        self.code = code
        self.message = message
        self.jobID = jobID
    }

    public var description: String { "\(code.name): \(message)" }
}
