// Progress for people and for programs: a one-line bar redrawn in place on a terminal, or JSON
// lines (one object per line) when the output is a pipe or a log.

import Foundation
import GriditJobSpec

public final class ProgressPrinter {
    public enum Style: Sendable { case bar, jsonLines, none }

    public let style: Style
    private let write: (String) -> Void
    private let interval: TimeInterval
    private var lastStep = Date.distantPast, lastProgress = Date.distantPast
    private var lastStepStage: Stage?, lastProgressStage: Stage?
    private var barShown = false
    /// The run's frame count, from its steps: a durable report with that many frames is the last.
    private var frames: Int?

    /// `write` receives whole pieces of text (with their newlines or carriage returns).
    /// Step updates are drawn at most every `interval` seconds.
    public init(style: Style, interval: TimeInterval = 0.2, write: @escaping (String) -> Void) {
        self.style = style
        self.interval = interval
        self.write = write
    }

    /// Hooks that print; `shouldStop` is passed through.
    public func hooks(shouldStop: @escaping () -> Bool = { false }) -> RunHooks {
        RunHooks(onProgress: { [self] in progress($0) }, onStep: { [self] in step($0) }, shouldStop: shouldStop)
    }

    public func step(_ s: StepProgress) {
        frames = s.frames
        let now = Date()
        guard s.stage != lastStepStage || now.timeIntervalSince(lastStep) >= interval else { return }
        lastStep = now
        lastStepStage = s.stage
        switch style {
        case .none: return
        case .jsonLines: emitJSON(["event": "step", "progress": s])
        case .bar:
            let what = s.stage == .grid ? "grid \(s.grid)/\(s.grids)" : "frame \(s.frame)/\(s.frames)"
            drawBar(
                "\(s.stage == .grid ? "stage 1" : "stage 2")  \(what)  step \(s.step)/\(s.steps)",
                fraction: s.fraction ?? 0, eta: s.etaSeconds)
        }
    }

    public func progress(_ p: JobProgress) {
        let done = p.stage == .sr && p.framesDone == frames
        switch style {
        case .none: return
        case .jsonLines:
            // Every durable unit would be too many lines for long runs: throttle like the steps,
            // but always report stage changes and the end.
            let now = Date()
            guard done || p.stage != lastProgressStage || now.timeIntervalSince(lastProgress) >= interval
            else { return }
            lastProgress = now
            lastProgressStage = p.stage
            emitJSON(["event": "progress", "progress": p])
        case .bar:
            if done {
                drawBar("done  \(p.framesDone) frames", fraction: 1, eta: 0)
                write("\n")
                barShown = false
            }
        }
    }

    /// Ends a bar line that is still open (call before printing anything else).
    public func close() {
        if barShown { write("\n") }
        barShown = false
    }

    private func drawBar(_ label: String, fraction: Double, eta: Double?) {
        let width = 24, filled = Int((min(max(fraction, 0), 1) * Double(width)).rounded(.down))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let etaText = eta.map { "  ETA \(formatDuration($0))" } ?? ""
        write("\r\(label)  [\(bar)] \(String(format: "%3.0f", fraction * 100))%\(etaText)\u{1B}[K")
        barShown = true
    }

    private func emitJSON(_ object: [String: any Encodable]) {
        var parts: [String] = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for key in object.keys.sorted() {
            guard let data = try? encoder.encode(AnyEncodable(object[key]!)) else { continue }
            parts.append("\"\(key)\":" + String(decoding: data, as: UTF8.self))
        }
        write("{" + parts.joined(separator: ",") + "}\n")
    }
}

private struct AnyEncodable: Encodable {
    let value: any Encodable
    init(_ value: any Encodable) { self.value = value }
    func encode(to encoder: any Encoder) throws { try value.encode(to: encoder) }
}
