// The output directory of a finished run:
//   frames/frame_00000.png …     every frame, 8-bit (hard links to the work directory's files when possible)
//   preview.apng                 animated PNG of the first frames (at most 1024, at most 256 px)
//   contact_sheet.png            up to 256 evenly spaced frames in a grid
//   sequence.json                pipeline and blob digests, spec, settings, plan, timings, SHA-256 of every frame,
//                                the griditd job that wrote it
// It is assembled under a temporary name next to the destination and renamed into place when
// complete, so the destination either does not exist or is whole.

import Foundation
import GriditDiffusion
import GriditDurable
import GriditImage
import GriditJobSpec

/// How `finish(into:)` renders the preview and the contact sheet.
public struct OutputOptions: Sendable, Equatable {
    public var previewFPS: Int
    public var maxPreviewFrames: Int
    /// Preview frames larger than this are shrunk by an integer factor.
    public var maxPreviewSize: Int
    /// Tiles per contact-sheet row (nil: K², one grid's worth, at most the frame count).
    public var contactSheetColumns: Int?
    public var maxContactSheetTiles: Int
    public var maxContactSheetTileSize: Int

    public init(
        previewFPS: Int = 8, maxPreviewFrames: Int = 1024, maxPreviewSize: Int = 256, contactSheetColumns: Int? = nil,
        maxContactSheetTiles: Int = 256, maxContactSheetTileSize: Int = 128
    ) {
        self.previewFPS = previewFPS
        self.maxPreviewFrames = max(1, maxPreviewFrames)
        self.maxPreviewSize = max(1, maxPreviewSize)
        self.contactSheetColumns = contactSheetColumns
        self.maxContactSheetTiles = max(1, maxContactSheetTiles)
        self.maxContactSheetTileSize = max(1, maxContactSheetTileSize)
    }
}

/// The content of `sequence.json`.
public struct SequenceSummary: Codable, Sendable, Equatable {
    public struct Pipeline: Codable, Sendable, Equatable {
        public var name: String?
        public var digest: String
        public var blobs: [String: String]
    }

    public struct FrameFile: Codable, Sendable, Equatable {
        public var file: String
        public var sha256: String
    }

    public struct Rendering: Codable, Sendable, Equatable {
        public var file: String
        /// Frames shown (the first ones for the preview; evenly spaced ones for the sheet).
        public var frames: Int
        public var width: Int
        public var height: Int
        public var fps: Int?
    }

    public var format: String
    public var frames: Int
    public var frameSize: Int
    public var channels: Int
    public var pipeline: Pipeline
    public var seed: UInt64
    public var spec: JobSpec
    public var settings: RunSettings
    public var plan: SequencePlan
    public var timings: RunTimings
    public var preview: Rendering
    public var contactSheet: Rendering
    public var files: [FrameFile]
    /// The griditd job that wrote it (nil from `griditd run`): retention removes a folder only
    /// while it is that job's.
    public var job: Int64?

    enum CodingKeys: String, CodingKey {
        case format, frames, channels, pipeline, seed, spec, settings, plan, timings, preview, files, job
        case frameSize = "frame_size", contactSheet = "contact_sheet"
    }

    public static let currentFormat = "gridit.sequence.v1"
}

extension SequenceRun {
    /// Whether `output` holds this run's finished output already: a `sequence.json` of the same
    /// pipeline and settings (a daemon that died after the rename, before it recorded the success),
    /// in whichever precision the host that wrote it ran (a bf16 job finished on a host with
    /// AVX512_BF16 is done, also for a host without).
    public func isFinished(at output: String) -> Bool {
        struct Identity: Decodable {
            struct Pipeline: Decodable { var digest: String }
            var pipeline: Pipeline
            var settings: RunSettings
        }
        guard let data = FileManager.default.contents(atPath: output + "/sequence.json"),
            let found = try? JSONDecoder().decode(Identity.self, from: data)
        else { return false }
        var written = found.settings.filledAsOlderVersions()
        written.precisionUsed = settings.precisionUsed
        return found.pipeline.digest == pipeline.identity.digest && written == settings
    }

    /// Writes the output directory `output` of this complete run and returns what
    /// `sequence.json` says. `output` must not exist; its parent must. On any error nothing is
    /// left at `output` (nor a temporary directory next to it). `alive` is called for every frame
    /// linked and read, and every frame the preview decodes: on a slow disk the frames of a long
    /// sequence take minutes, which must not look like a hung engine.
    @discardableResult
    public func finish(
        into output: String, job: Int64? = nil, options: OutputOptions = OutputOptions(), alive: () -> Void = {}
    ) throws -> SequenceSummary {
        guard isComplete else {
            throw EngineError.invalid(
                "the run is not complete (\(framesDone) of \(plan.frames) frames)",
                hint: "execute it to the end first")
        }
        let out = (output as NSString).standardizingPath
        let parent = (out as NSString).deletingLastPathComponent
        let name = (out as NSString).lastPathComponent
        if Files.exists(out) {
            throw EngineError.invalid(
                "output '\(out)' already exists", hint: "choose another output directory or remove it")
        }
        guard Files.isDirectory(parent.isEmpty ? "." : parent) else {
            throw EngineError.invalid("the parent of output '\(out)' is not a directory", hint: "create it first")
        }
        var template = Array("\(parent.isEmpty ? "." : parent)/.\(name).partial-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw EngineError.posix("mkdtemp next to", path: out)
        }
        let temporary = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var done = false
        defer { if !done { Files.remove(temporary) } }
        _ = chmod(temporary, 0o755)

        try Files.makeDirectory(temporary + "/frames")
        var files: [SequenceSummary.FrameFile] = []
        files.reserveCapacity(plan.frames)
        for i in 0..<plan.frames {
            let relative = "frames/" + Self.frameName(i)
            try Files.linkOrCopy(framePath(i), to: temporary + "/" + relative)
            files.append(.init(file: relative, sha256: Files.sha256(try Files.read(framePath(i)))))
            alive()
        }
        DurableFiles.syncDirectory(temporary + "/frames")
        let preview = try writePreview(to: temporary + "/preview.apng", options: options, alive: alive)
        let sheet = try writeContactSheet(to: temporary + "/contact_sheet.png", options: options)
        let summary = SequenceSummary(
            format: SequenceSummary.currentFormat, frames: plan.frames, frameSize: plan.outputFrameSize,
            channels: plan.channels,
            pipeline: .init(name: pipeline.spec.name, digest: pipeline.identity.digest, blobs: pipeline.identity.blobs),
            seed: settings.seed, spec: spec, settings: settings, plan: plan, timings: timings,
            preview: preview, contactSheet: sheet, files: files, job: job)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try Files.write(try encoder.encode(summary), to: temporary + "/sequence.json")
        DurableFiles.syncDirectory(temporary)
        if Files.exists(out) {
            throw EngineError.invalid("output '\(out)' appeared while writing", hint: "choose another output directory")
        }
        try Files.rename(temporary, to: out)
        done = true
        return summary
    }

    private func frameImage(_ i: Int, maxSize: Int) throws -> Image8 {
        let image = try PNG.decode(try Files.read(framePath(i)))
        return image.downsampled(by: ContactSheet.shrinkFactor(size: max(image.width, image.height), maxSize: maxSize))
    }

    private func writePreview(
        to path: String, options: OutputOptions, alive: () -> Void
    ) throws -> SequenceSummary.Rendering {
        let count = min(plan.frames, options.maxPreviewFrames)
        let first = try frameImage(0, maxSize: options.maxPreviewSize)
        // APNG frames are grey or RGB; an RGBA frame cannot occur (the models write 1 or 3 channels).
        try DurableFile.write(to: path, failure: Files.failure) { (out) throws(EngineError) in
            do {
                let writer = try AnimatedPNGWriter(
                    width: first.width, height: first.height, channels: first.channels,
                    frameCount: count, fps: options.previewFPS
                ) { bytes in try out.write(bytes) }
                try writer.append(first)
                for i in 1..<max(count, 1) {
                    try writer.append(try frameImage(i, maxSize: options.maxPreviewSize))
                    alive()
                }
                try writer.finish()
            } catch {
                throw EngineError.classify(error)
            }
        }
        return .init(
            file: "preview.apng", frames: count, width: first.width, height: first.height, fps: options.previewFPS)
    }

    private func writeContactSheet(to path: String, options: OutputOptions) throws -> SequenceSummary.Rendering {
        let selection = ContactSheet.selection(count: plan.frames, maxTiles: options.maxContactSheetTiles)
        let tiles = try selection.map { try frameImage($0, maxSize: options.maxContactSheetTileSize) }
        let columns = options.contactSheetColumns ?? min(plan.frames, plan.k * plan.k)
        let sheet = ContactSheet.render(tiles, columns: max(1, columns))
        try Files.write(try PNG.encode(sheet), to: path)
        return .init(
            file: "contact_sheet.png", frames: selection.count, width: sheet.width, height: sheet.height, fps: nil)
    }
}
