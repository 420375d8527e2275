// griditd's swift-log backend. Under systemd (stderr is the journal stream named by
// $JOURNAL_STREAM) every entry goes to journald with structured fields, so that
// `journalctl -u griditd JOB_ID=12` or `journalctl STAGE=sr` work; elsewhere one plain line per
// entry on stderr: `2026-01-02T03:04:05.678Z info gridit.worker: job claimed job.id=12 stage=grid`.
// Entries are written by `LogWriter`'s thread, in order: a log that blocks never blocks griditd.

import CDispatch  // declares `struct stat` and `timespec` first once Hummingbird is a dependency
import CSystemd
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

public struct DaemonLogHandler: LogHandler {
    public enum Sink: Sendable {
        case journal
        case stderr
    }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let sink: Sink

    public init(label: String, sink: Sink, level: Logger.Level = .info) {
        self.label = label
        self.sink = sink
        self.logLevel = level
    }

    /// `.journal` when stderr is the journal stream systemd set up for us.
    public static func detectSink(environment: [String: String] = ProcessInfo.processInfo.environment) -> Sink {
        guard let stream = environment["JOURNAL_STREAM"] else { return .stderr }
        let parts = stream.split(separator: ":")
        var st = stat()
        guard parts.count == 2, fstat(STDERR_FILENO, &st) == 0 else { return .stderr }
        return "\(st.st_dev)" == parts[0] && "\(st.st_ino)" == parts[1] ? .journal : .stderr
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        switch sink {
        case .journal:
            var fields = [
                "MESSAGE=\(event.message)",
                "PRIORITY=\(Self.syslogPriority(event.level))",
                "SYSLOG_IDENTIFIER=griditd",
                "GRIDIT_LOGGER=\(label)",
                "CODE_FILE=\(event.file)",
                "CODE_LINE=\(event.line)",
                "CODE_FUNC=\(event.function)",
            ]
            for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
                fields.append("\(Self.journalFieldName(key))=\(value)")
            }
            let entry = fields
            LogWriter.shared.submit { Self.sendToJournal(entry) }
        case .stderr:
            var line = "\(Self.timestamp()) \(event.level) \(label): \(event.message)"
            for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
                line += " \(key)=\(Self.quoteIfNeeded("\(value)"))"
            }
            line += "\n"
            let bytes = Array(line.utf8)
            LogWriter.shared.submit {
                var offset = 0
                while offset < bytes.count {
                    let n = bytes.withUnsafeBytes {
                        Glibc.write(STDERR_FILENO, $0.baseAddress! + offset, $0.count - offset)
                    }
                    if n <= 0 { break }
                    offset += n
                }
            }
        }
    }

    /// `job.id` → `JOB_ID`: journald field names are upper-case letters, digits and `_`, and
    /// must not start with `_` or a digit.
    static func journalFieldName(_ key: String) -> String {
        var name = String(key.uppercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
        while name.hasPrefix("_") { name.removeFirst() }
        if name.first?.isNumber ?? true { name = "F" + name }
        return String(name.prefix(64))
    }

    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    private static func sendToJournal(_ fields: [String]) {
        let buffers = fields.map { Array($0.utf8) }
        var vectors: [iovec] = []
        vectors.reserveCapacity(buffers.count)
        func send(_ index: Int) {
            guard index < buffers.count else {
                _ = vectors.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
                return
            }
            buffers[index].withUnsafeBytes { raw in
                vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count))
                send(index + 1)
            }
        }
        send(0)
    }

    private static func quoteIfNeeded(_ value: String) -> String {
        value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline })
            ? "\""
                + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n") + "\""
            : value
    }

    private static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
            parts.tm_hour, parts.tm_min, parts.tm_sec, Int(ts.tv_nsec / 1_000_000))
    }
}
