// The one registry of test fault points. Every one is set through one environment variable,
// `GRIDIT_TEST_FAULTS` (comma-separated), read once per process; production code asks this
// registry at named points and does nothing more when the variable is absent.

import Foundation
import GriditJobSpec

#if canImport(Glibc)
import Glibc
#endif

/// The faults of `GRIDIT_TEST_FAULTS`:
/// - `crash-after-claim=<job id>`: abort griditd right after claiming that job (griditd's own
///   death: the job is requeued without a crash);
/// - `crash-engine=<job id>`: abort the engine's worker process when it is handed that job (an
///   engine crash: counted against the jobs it was running);
/// - `free-bytes=<n>`: report `n` free bytes on the state filesystem (`disk_full` without
///   filling a disk);
/// - `disk-full-under=<dir>`: every file or folder the engine creates below `dir` fails with
///   ENOSPC (the disk-full tests of machines where no small filesystem can be mounted);
/// - `pause-at=grid:<n>` / `pause-at=sr:<n>`: stop the worker for good at the first denoising
///   step of stage-1 grid n or of frame n (1-based), of any job;
/// - `pause-at=<label>`: stop for good at a labelled point of the model store's import
///   (`import.copying`, `import.ingested`, `import.published`, `import.committed`).
/// A pause writes `<state dir>/test-paused` first, so that a test can `kill -9` the process at
/// a known point. griditd logs a warning at start when any fault is set.
public struct FaultInjection: Sendable, Hashable, CustomStringConvertible {
    public var crashAfterClaim: Set<Int64> = []
    public var crashEngine: Set<Int64> = []
    public var freeBytes: Int64?
    public var diskFullUnder: String?
    public var pauseAt: PausePoint?

    public static let variable = "GRIDIT_TEST_FAULTS"

    public init() {}

    public init(environment: [String: String]) throws(FaultInjectionError) {
        guard let spec = environment[Self.variable], !spec.isEmpty else { return }
        for item in spec.split(separator: ",") {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            switch (kv.first, kv.count == 2 ? kv[1] : nil) {
            case ("crash-after-claim", let v?) where Int64(v) != nil: crashAfterClaim.insert(Int64(v)!)
            case ("crash-engine", let v?) where Int64(v) != nil: crashEngine.insert(Int64(v)!)
            case ("free-bytes", let v?) where Int64(v) != nil: freeBytes = Int64(v)!
            case ("disk-full-under", let v?) where !v.isEmpty: diskFullUnder = v.hasSuffix("/") ? v : v + "/"
            case ("pause-at", let v?) where PausePoint(v) != nil: pauseAt = PausePoint(v)
            default:
                throw FaultInjectionError(
                    message: "\(Self.variable): unknown fault '\(item)' "
                        + "(known: crash-after-claim=<id>, crash-engine=<id>, free-bytes=<n>, disk-full-under=<dir>, "
                        + "pause-at=grid:<n>, pause-at=sr:<n>, pause-at=import.<step>)")
            }
        }
    }

    /// This process's faults, read once. A spec that does not parse stops the process: it is a
    /// test's mistake, and a test must not run without the fault it asked for.
    public static let current: FaultInjection = {
        do throws(FaultInjectionError) {
            return try FaultInjection(environment: ProcessInfo.processInfo.environment)
        } catch {
            fatalError(error.message)
        }
    }()

    public var isActive: Bool { self != FaultInjection() }

    public var description: String {
        var parts: [String] = crashAfterClaim.sorted().map { "crash-after-claim=\($0)" }
        parts += crashEngine.sorted().map { "crash-engine=\($0)" }
        if let freeBytes { parts.append("free-bytes=\(freeBytes)") }
        if let diskFullUnder { parts.append("disk-full-under=\(diskFullUnder)") }
        if let pauseAt { parts.append("pause-at=\(pauseAt)") }
        return parts.joined(separator: ",")
    }

    /// Whether creating `path` must fail with ENOSPC (`disk-full-under`).
    public func diskIsFull(for path: String) -> Bool { diskFullUnder.map { path.hasPrefix($0) } ?? false }

    /// Stops for good at a labelled point when `pause-at` names it (one comparison otherwise).
    public func pause(at label: String, stateDirectory: String) {
        guard case .label(label)? = pauseAt else { return }
        PausePoint.hold(label, stateDirectory: stateDirectory)
    }
}

/// Where `pause-at` stops a process.
public enum PausePoint: Sendable, Hashable, CustomStringConvertible {
    /// The first denoising step of stage-1 grid `unit` (`grid`) or of frame `unit` (`sr`), 1-based.
    case step(Stage, unit: Int)
    /// A labelled point (`import.copying`, …).
    case label(String)

    init?(_ text: String) {
        let parts = text.split(separator: ":")
        if parts.count == 1, text.hasPrefix("import.") {
            self = .label(text)
            return
        }
        guard parts.count == 2, let stage = Stage(rawValue: String(parts[0])), let n = Int(parts[1]), n >= 1 else {
            return nil
        }
        self = .step(stage, unit: n)
    }

    public var description: String {
        switch self {
        case .step(let stage, let unit): "\(stage.rawValue):\(unit)"
        case .label(let label): label
        }
    }

    public func matches(_ step: StepProgress) -> Bool {
        guard case .step(let stage, let unit) = self else { return false }
        return step.stage == stage && (stage == .grid ? step.grid : step.frame) >= unit
    }

    /// Writes `<state dir>/test-paused` and blocks the calling thread until the process is killed.
    public static func hold(_ note: String, stateDirectory: String) -> Never {
        try? Data("\(note)\n".utf8).write(
            to: URL(fileURLWithPath: stateDirectory + "/test-paused"), options: .atomic)
        while true { sleep(3600) }
    }
}

public struct FaultInjectionError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
