// `griditd models …`: the model store offline, for provisioning scripts (the same operations as
// `griditctl models …`, which the daemon serves). Commands that change the store refuse while a
// daemon holds the state directory; read-only ones run beside it.

import ArgumentParser
import Foundation
import GriditAPI
import GriditBackend
import GriditDaemon
import GriditJobQueue
import GriditJobSpec
import GriditJobStorePostgres
import GriditModelStore
import Logging

#if canImport(Glibc)
import Glibc
#endif

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "Manage the content-addressed model store offline.",
        discussion: """
            References: NAME[:TAG] (tag latest by default), NAME@sha256:<64 hex> (an exact version), \
            sha256:<hex> (a unique prefix of 6 or more digits will do). While griditd runs on the same \
            state directory, use `griditctl models …` for the commands that change the store.
            Exit status: 0 ok, 1 verify found bad blobs, 64 bad usage, 65 bad input or a digest mismatch, \
            66 not found, 74 I/O or database error, 75 a daemon owns the state directory, 77 permission denied.
            """,
        subcommands: [
            ModelsImport.self, ModelsList.self, ModelsShow.self, ModelsTag.self, ModelsRemove.self, ModelsVerify.self,
            ModelsGC.self, ModelsExport.self, ModelsPS.self, ModelsHistory.self, ModelsCheck.self,
            ModelsConvert.self,
        ])
}

struct StoreOptions: ParsableArguments {
    @Option(name: .customLong("state-dir"), help: "The state directory (env GRIDIT_STATE_DIR).")
    var stateDirectory: String = ProcessInfo.processInfo.environment["GRIDIT_STATE_DIR"] ?? "/var/lib/gridit"

    @Option(
        name: .customLong("site-root"),
        help:
            "A read-only site root, searched before the state directory; repeatable (env GRIDIT_SITE_ROOTS, colon-separated)."
    )
    var siteRoots: [String] = []

    @Option(
        help:
            "The job queue on PostgreSQL, as `griditd serve` takes it (env GRIDIT_DATABASE, or the config file): gc, list, show and rm read the versions live jobs pin there."
    )
    var database: String?

    @Option(
        name: .customLong("shared-root"),
        help:
            "The cluster's shared root, as `griditd serve` takes it (env GRIDIT_SHARED_ROOT, or the config file): import publishes to its model origin (<shared-root>/models)."
    )
    var sharedRoot: String?

    @Option(help: "griditd's config file, read for database and shared-root (default /etc/gridit/griditd.conf).")
    var config: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    var allSiteRoots: [String] {
        siteRoots
            + (ProcessInfo.processInfo.environment["GRIDIT_SITE_ROOTS"] ?? "").split(separator: ":").map(String.init)
    }

    func session(_ command: String, mutating: Bool, origin: String? = nil) throws -> OfflineSession {
        try storeCall { () throws(ModelStoreError) in
            try OfflineSession.open(
                stateDirectory: stateDirectory, siteRoots: allSiteRoots, origin: origin, command: command,
                mutating: mutating)
        }
    }

    /// `griditd serve`'s configuration for this state directory (its flags here, the environment,
    /// the config file): whether the queue is on PostgreSQL, and the shared root.
    func daemonConfiguration() async throws -> DaemonConfiguration {
        let flags = ["state-dir": stateDirectory, "database": database, "shared-root": sharedRoot].compactMapValues {
            $0
        }
        do {
            return try await DaemonSettings.resolve(
                flags: flags, environment: ProcessInfo.processInfo.environment, configFile: config
            ).configuration
        } catch {
            FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
            throw ExitCode(78)
        }
    }

    /// The shared root's mark, checked (or, on a new cluster, written) through the job database as
    /// `griditd serve` does: an import must not publish to an empty mount point.
    func checkSharedRoot(_ configuration: DaemonConfiguration) async throws {
        guard let shared = configuration.sharedRoot,
            let location = try PostgresLocation.configured(url: configuration.databaseURL)
        else { return }
        let jobs = Self.clusterQueue(location)
        do {
            try await jobs.withRunningPool {
                _ = try await jobs.migrate()
                _ = try await SharedRootMark.establish(shared, nodes: jobs)
            }
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(69)
        }
    }

    /// A session for a command that adds a version: with the cluster's settings, after the shared
    /// root's mark is checked, one that publishes to the origin as `griditd serve` does.
    func publishingSession(_ command: String) async throws -> OfflineSession {
        let configuration = try await daemonConfiguration()
        try await checkSharedRoot(configuration)
        return try session(command, mutating: true, origin: configuration.layout.modelOrigin)
    }

    /// The cluster's job queue for one offline command: a few rows read or written, no LISTEN.
    static func clusterQueue(_ location: PostgresLocation) -> PostgresJobStore {
        PostgresJobStore(location: location, logger: Logger(label: "gridit.postgres"), notifications: false)
    }

    /// Which versions live jobs pin: the configured job queue's answer (PostgreSQL, shared by
    /// every host, when `database` is set; else the session's SQLite database).
    func pins(_ session: OfflineSession) async throws -> JobPins {
        let configuration = try await daemonConfiguration()
        do {
            guard let location = try PostgresLocation.configured(url: configuration.databaseURL) else {
                return JobPins(digests: try await SQLiteJobStore(database: session.store.database).livePipelinePins())
            }
            let jobs = Self.clusterQueue(location)
            return try await jobs.withRunningPool { JobPins(digests: try await jobs.livePipelinePins()) }
        } catch {
            FileHandle.standardError.write(Data("error: reading which models live jobs pin: \(error)\n".utf8))
            throw ExitCode(74)
        }
    }

    /// Prints `value` as JSON or as `text`.
    func emit<T: Encodable>(_ value: T, _ text: () -> String) {
        if json {
            print(String(decoding: APICoding.encode(value, pretty: true), as: UTF8.self))
        } else {
            print(text(), terminator: "")
        }
    }
}

/// Runs a store call; a `ModelStoreError` becomes a message on stderr and an exit status.
func storeCall<T>(_ body: () throws(ModelStoreError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(exitStatus(error.code))
    }
}

func exitStatus(_ code: ModelStoreError.Code) -> Int32 {
    switch code {
    case .invalidReference: return 64
    case .invalidInput, .digestMismatch: return 65
    case .notFound: return 66
    case .daemonRunning: return 75
    case .permission, .readOnly: return 77
    default: return 74
    }
}

struct ModelsImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import a pipeline (pipeline.json with its files, or a folder holding one) or an exported bundle.")

    @Argument(help: "pipeline.json, a folder with one, or a bundle (.tar) from `models export`.")
    var path: String

    @Option(help: "NAME:TAG to give the version (default: the bundle's tags, or the pipeline's name:latest).")
    var name: String?

    @Option(
        help:
            "How files enter the store: auto (reflink where the filesystem can, else copy), reflink, hardlink (the source becomes the blob) or copy."
    )
    var link: LinkMode = .auto

    @OptionGroup var options: StoreOptions

    func run() async throws {
        let session = try await options.publishingSession("import")
        let progress = isatty(2) == 1 && !options.json ? ProgressLine() : nil
        let result = try storeCall { () throws(ModelStoreError) in
            ModelImportResult(
                try session.store.importModel(
                    from: path, name: name, link: link, progress: progress.map { p in { p.update($0, $1, $2) } }))
        }
        progress?.finish()
        options.emit(result) { result.render() }
    }
}

extension LinkMode: ExpressibleByArgument {}

struct ModelsConvert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Store a version's DiT weights in another precision, as a new version with its own digest.",
        discussion: """
            --precision bf16 stores the weights of every matrix product as BF16 (half their bytes; \
            biases, embeddings, the VAE and the configs as they were) and sets the pipeline's \
            defaults.precision to bf16. Run in bf16, the new version gives the source's bf16 outputs \
            bit for bit and loads with half the memory. The source version stays as it was. While \
            griditd runs, `griditctl models convert REF --precision bf16 [--tag NAME:TAG]` does it.
            """)

    @Argument(help: "The version to convert: NAME:TAG, NAME@sha256:… or sha256:….")
    var reference: String

    @Option(help: "The precision to store: bf16.")
    var precision: String

    @Option(
        name: [.customLong("tag"), .customLong("name")],
        help: "NAME:TAG to give the new version (default: NAME:TAG-bf16, or NAME:bf16 for NAME@sha256:…).")
    var name: String?

    @OptionGroup var options: StoreOptions

    func run() async throws {
        // Like an import: with the cluster's settings the new version is published to the origin.
        let session = try await options.publishingSession("convert")
        let result = try storeCall { () throws(ModelStoreError) in
            ModelImportResult(try session.store.convert(reference, precision: precision, name: name))
        }
        options.emit(result) { result.render() }
    }
}

/// A progress line on stderr while files stream in.
final class ProgressLine {
    private var last = Date.distantPast

    func update(_ file: String, _ done: Int64, _ total: Int64?) {
        let now = Date()
        guard now.timeIntervalSince(last) > 0.2 || done == total else { return }
        last = now
        let name = (file as NSString).lastPathComponent
        let amount = total.map { "\(formatBytes(done)) / \(formatBytes($0))" } ?? formatBytes(done)
        FileHandle.standardError.write(Data("\r\u{1B}[K\(name): \(amount)".utf8))
    }

    func finish() { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
}

struct ModelsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List tags and versions: digest, size, created, loaded, live jobs.",
        aliases: ["ls"])

    @OptionGroup var options: StoreOptions

    func run() async throws {
        let session = try options.session("list", mutating: false)
        let pins = try await options.pins(session)
        let result = try storeCall { () throws(ModelStoreError) in ModelListResult(try session.store.list(pins: pins)) }
        options.emit(result) { result.render() }
    }
}

struct ModelsShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show a version: manifest, configs, blobs, tag history, pinning jobs.")

    @Argument(help: "NAME:TAG, NAME@sha256:… or sha256:….")
    var reference: String

    @OptionGroup var options: StoreOptions

    func run() async throws {
        let session = try options.session("show", mutating: false)
        let pins = try await options.pins(session)
        let result = try storeCall { () throws(ModelStoreError) in
            ModelShowResult(try session.store.show(reference, pins: pins))
        }
        options.emit(result) { result.render() }
    }
}

struct ModelsTag: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tag", abstract: "Point a tag at a version (the old target stays in the tag's history).")

    @Argument(help: "The version: NAME:TAG, NAME@sha256:… or sha256:….")
    var source: String

    @Argument(help: "The tag to set: NAME:TAG.")
    var destination: String

    @OptionGroup var options: StoreOptions

    func run() throws {
        let session = try options.session("tag", mutating: true)
        let result = try storeCall { () throws(ModelStoreError) in
            ModelTagResult(try session.store.tag(source, destination))
        }
        options.emit(result) { result.render() }
    }
}

struct ModelsRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove a tag (NAME:TAG), or every tag of a version (NAME@sha256:…, sha256:…); blobs stay until gc.")

    @Argument(help: "NAME:TAG, NAME@sha256:… or sha256:….")
    var reference: String

    @OptionGroup var options: StoreOptions

    func run() async throws {
        let session = try options.session("rm", mutating: true)
        let pins = try await options.pins(session)
        let result = try storeCall { () throws(ModelStoreError) in
            ModelRemoveResult(try session.store.remove(reference, pins: pins))
        }
        options.emit(result) { result.render() }
    }
}

struct ModelsVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify", abstract: "Re-hash blobs; bad ones are quarantined and reported (exit status 1).")

    @Argument(help: "The version to verify (NAME:TAG, …).")
    var reference: String?

    @Flag(help: "Verify every version and every blob file.")
    var all = false

    @OptionGroup var options: StoreOptions

    func validate() throws {
        guard (reference == nil) == all else { throw ValidationError("give a reference or --all (not both)") }
    }

    func run() throws {
        let session = try options.session("verify", mutating: false)
        let result = try storeCall { () throws(ModelStoreError) in
            ModelVerifyResult(try session.store.verify(all ? nil : reference))
        }
        options.emit(result) { result.render() }
        if !result.ok { throw ExitCode(1) }
    }
}

struct ModelsGC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract:
            "Delete untagged versions no live job pins, unreferenced blobs (unless mapped), and leftovers of interrupted imports."
    )

    @Flag(help: "Only report what would be deleted.")
    var dryRun = false

    @OptionGroup var options: StoreOptions

    func run() async throws {
        let session = try options.session("gc", mutating: true)
        let pins = try await options.pins(session)
        let result = try storeCall { () throws(ModelStoreError) in
            ModelGCResult(try session.store.gc(dryRun: dryRun, pins: pins))
        }
        options.emit(result) { result.render() }
    }
}

struct ModelsExport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a version as one bundle file (tar) for `models import` on another machine.")

    @Argument(help: "NAME:TAG, NAME@sha256:… or sha256:….")
    var reference: String

    @Option(name: .shortAndLong, help: "The bundle to write (- for standard output).")
    var output: String

    @OptionGroup var options: StoreOptions

    func run() throws {
        let session = try options.session("export", mutating: false)
        let result = try storeCall { () throws(ModelStoreError) in
            ModelExportResult(try session.store.export(reference, to: output))
        }
        if output != "-" { options.emit(result) { result.render() } }
    }
}

struct ModelsPS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps", abstract: "What is mapped, by which process, and how much of it is resident.")

    @OptionGroup var options: StoreOptions

    func run() throws {
        let session = try options.session("ps", mutating: false)
        let result = ModelPSResult(session.store.ps())
        options.emit(result) { result.render() }
    }
}

struct ModelsHistory: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "Every change of every tag (of NAME only, if given), oldest first.")

    @Argument(help: "A model name.")
    var name: String?

    @OptionGroup var options: StoreOptions

    func run() throws {
        let session = try options.session("history", mutating: false)
        let events = try storeCall { () throws(ModelStoreError) in
            try session.store.history(name: name).map(ModelTagEvent.init)
        }
        options.emit(events) {
            renderTable(
                headers: ["when", "tag", "action", "digest", "previous"],
                rows: events.map { e in
                    [
                        e.at.description, e.reference, e.action, e.digest.map(shortDigest) ?? "-",
                        e.previous.map(shortDigest) ?? "-",
                    ]
                })
        }
    }
}

struct ModelsCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract:
            "Check permissions and filesystems of the state directory (and of a file to import); names what to fix.")

    @Option(help: "A file you mean to import.")
    var source: String?

    @Option(help: "The --link mode you mean to use.")
    var link: LinkMode?

    @OptionGroup var options: StoreOptions

    func run() throws {
        let result = ModelStoreCheckResult(
            StoreChecks.run(
                stateDirectory: options.stateDirectory, siteRoots: options.allSiteRoots, source: source, link: link))
        options.emit(result) { result.render() }
        if !result.ok { throw ExitCode(77) }
    }
}
