import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Crash-test hooks: with `GRIDIT_TEST_PAUSE_AT=<label>` in the environment, the process stops
/// for good at the first labelled point it reaches, after writing the label to the file named by
/// `GRIDIT_TEST_PAUSE_FILE` (if set), so that a test can `kill -9` it exactly there. Without the
/// variable a point costs one comparison.
///
/// Labels in an import: `import.copying` (a file over 1 MiB partly copied to ingest/), `import.ingested`
/// (every file in ingest/ and validated, nothing published), `import.published` (blobs under
/// their names, database not yet committed), `import.committed` (tag committed).
enum TestHooks {
    private static let pauseAt = ProcessInfo.processInfo.environment["GRIDIT_TEST_PAUSE_AT"]
    private static let pauseFile = ProcessInfo.processInfo.environment["GRIDIT_TEST_PAUSE_FILE"]

    static func pause(at label: String) {
        guard let pauseAt, pauseAt == label else { return }
        if let pauseFile {
            try? Data(label.utf8).write(to: URL(fileURLWithPath: pauseFile), options: .atomic)
        }
        while true { sleep(3600) }
    }
}
