import ArgumentParser
import Foundation
import GriditAPI
import GriditJobSpec

#if canImport(Glibc)
import Glibc
#endif

struct Submit: ClientCommand {
    static let configuration = CommandConfiguration(
        abstract: "Queue a sequence generation job.",
        discussion: """
            The job is durable once this returns: it survives daemon restarts and crashes. With --wait (or --out) griditctl follows it to the end, with a progress bar on a terminal.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(parsing: .unconditional, help: "Number of frames to generate.")
    var length: Int

    @Option(
        help: ArgumentHelp(
            "NAME:TAG, NAME@sha256:<hex> or sha256:<hex> (default: the daemon's default model; `griditctl models list`).",
            valueName: "ref"))
    var model: String?

    @OptionGroup var sampling: SamplingOptions

    @Option(
        parsing: .unconditional,
        help:
            "Higher runs first; FIFO within a priority (negative values too: --priority -3). Users who are not admins: -1000...0 unless griditd allows more."
    )
    var priority: Int?

    @Option(help: "Submitting the same key again returns the same job (safe retries from scripts).")
    var idempotencyKey: String?

    @Option(parsing: .unconditional, help: "Attempts for transient errors before the job fails.")
    var maxAttempts: Int?

    @Option(
        help: ArgumentHelp(
            "The output folder's name on the server, <state>/outputs/named/<uid>/<name> (default <state>/outputs/job-<id>); --out copies the frames to you.",
            valueName: "name"))
    var outputName: String?

    /// The old spelling of --output-name, too close to --out.
    @Option(name: .customLong("output"), help: .hidden)
    var deprecatedOutput: String?

    @Flag(help: "Follow the job until it ends; exit 1 unless it succeeded.")
    var wait = false

    @Flag(help: "Print griditd's plan and time estimate for this job, and submit nothing.")
    var dryRun = false

    @OptionGroup var follow: FollowOptions

    /// The job's spec, as the flags give it.
    var spec: JobSpec {
        JobSpec(length: length, model: model, output: outputName ?? deprecatedOutput, parameters: sampling.parameters)
    }

    func validate() throws {
        do { try spec.validate() } catch { throw ValidationError(error.message) }
        if dryRun && (wait || follow.out != nil) {
            throw ValidationError("--dry-run submits nothing to wait for; drop --wait and --out")
        }
        if outputName != nil && deprecatedOutput != nil {
            throw ValidationError("--output is the old name of --output-name; give one of them")
        }
    }

    func run(client: GriditClient, output: Output) throws {
        if deprecatedOutput != nil {
            output.stderr(
                "griditctl: --output is deprecated: it names the folder on the server, now --output-name (--out DIR copies the frames to you)\n"
            )
        }
        let request = SubmitJobRequest(
            spec: spec, priority: priority, idempotencyKey: idempotencyKey, maxAttempts: maxAttempts)
        if dryRun {
            let plan = try client.post("/v1/jobs/plan", request, as: JobPlanResponse.self)
            output.emit(plan, json: global.json) { Self.describe(plan) }
            return
        }
        let response = try client.post("/v1/jobs", request, as: SubmitJobResponse.self)
        let job = response.job
        guard wait || follow.out != nil else {
            if global.json {
                output.printJSON(response)
            } else {
                let note = response.deduplicated ? " (the idempotency key matched an earlier job)" : ""
                let position = job.queuePosition.map { ", queue position \($0)" } ?? ""
                output.stdout("job \(job.id) \(job.state.rawValue)\(position)\(note)\n")
            }
            return
        }
        if !global.json {
            output.stderr("job \(job.id) submitted (seed \(job.spec.parameters.seed.map(String.init) ?? "?"))\n")
        }
        try follow.follower(client, json: global.json, output: output).run(job.id)
    }
}

extension Submit {
    /// The plan as griditd gives it, then the estimate against its limit.
    static func describe(_ plan: JobPlanResponse) -> String {
        var text = plan.plan.isEmpty || plan.plan.hasSuffix("\n") ? plan.plan : plan.plan + "\n"
        if let digest = plan.pipelineDigest { text += "model:    \(digest)\n" }
        text += "estimate: \(Rendering.duration(plan.estimatedSeconds)) at griditd's nominal rate"
        if let limit = plan.limitSeconds {
            text +=
                plan.estimatedSeconds > limit
                ? "; over its limit of \(Rendering.duration(limit)) per job: a submit would be refused"
                : " (limit \(Rendering.duration(limit)) per job)"
        }
        return text + "\n"
    }
}

/// How `submit --wait` and `jobs watch` follow a job, and where the frames go after.
struct FollowOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Copy the finished frames into this new or empty folder of yours (submit: implies --wait).",
            valueName: "dir"))
    var out: String?

    @Option(
        help: ArgumentHelp(
            "Without a terminal (CI logs), print a progress line every this many seconds; 0: state changes only.",
            valueName: "seconds"))
    var progressInterval: Double = 10

    func validate() throws {
        if let out { try OutputCopier.checkDestination(out, named: "--out \(out)") }
        guard progressInterval.isFinite, progressInterval >= 0 else {
            throw ValidationError("--progress-interval must be 0 or more seconds")
        }
    }

    func follower(_ client: GriditClient, json: Bool, output: Output) -> JobFollower {
        JobFollower(client: client, json: json, output: output, out: out, progressInterval: progressInterval)
    }
}

struct Jobs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, inspect, follow, fetch, cancel, retry, remove and prune jobs.",
        subcommands: [
            List.self, Show.self, Watch.self, Fetch.self, Cancel.self, Retry.self, Remove.self, Prune.self,
        ],
        defaultSubcommand: List.self)

    struct List: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List jobs (yours; an admin sees everyone's).", aliases: ["ls"])

        @OptionGroup var global: GlobalOptions

        @Option(help: "Only these states, comma-separated (queued,running,retryable,succeeded,failed,canceled,dead).")
        var state: String?

        @Option(help: "Show at most this many (the newest).")
        var limit = 100

        @Flag(help: "Everyone's jobs (admins).")
        var all = false

        func validate() throws {
            if let state {
                for name in state.split(separator: ",") where JobState(rawValue: String(name)) == nil {
                    throw ValidationError(
                        "unknown state '\(name)'; states are \(JobState.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
            }
            guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be 1...10000") }
        }

        func run(client: GriditClient, output: Output) throws {
            let path = withQuery(
                "/v1/jobs", [("state", state), ("limit", String(limit)), ("owner", all ? "all" : nil)])
            let list = try client.get(path, as: JobList.self)
            output.emit(list, json: global.json) { Rendering.jobsTable(list.jobs, userName: output.userName) }
        }
    }

    struct Show: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one job, with its error history.", aliases: ["get"])

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Job id.") var id: Int64

        func run(client: GriditClient, output: Output) throws {
            let job = try client.get("/v1/jobs/\(id)", as: JobInfo.self)
            if global.json {
                output.printJSON(job)
                return
            }
            // The tags that point at the job's version now; the job itself keeps only the digest.
            let models = try? Models.result(ModelListResult.self, from: try client.call("GET", "/v1/models"))
            let tags = (models?.models ?? []).filter { $0.digest == job.pipelineDigest }.compactMap { m in
                m.name.map { "\($0):\(m.tag ?? "")" }
            }
            output.stdout(Rendering.jobDetail(job, tags: tags, userName: output.userName))
        }
    }

    struct Watch: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Follow a job until it ends (--out DIR: then copy its frames); exit 1 unless it succeeded.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Job id.") var id: Int64
        @OptionGroup var follow: FollowOptions

        func run(client: GriditClient, output: Output) throws {
            try follow.follower(client, json: global.json, output: output).run(id)
        }
    }

    struct Fetch: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy a finished job's frames and files over the socket into a folder of yours.",
            discussion: "griditd's output folders are private to it; this is how their owner (or an admin) gets them.",
            aliases: ["cp"])

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Job id.") var id: Int64
        @Argument(help: "A new or empty folder.") var directory: String

        func validate() throws { try OutputCopier.checkDestination(directory, named: directory) }

        func run(client: GriditClient, output: Output) throws {
            try OutputCopier(client: client).copy(job: id, into: directory)
            if !global.json { output.stderr("job \(id)'s output copied to \(directory)\n") }
        }
    }

    struct Cancel: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cancel a job: a waiting job at once, a running one at its next step (it stays listed).")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Job id.") var id: Int64

        func run(client: GriditClient, output: Output) throws {
            let job = try client.post("/v1/jobs/\(id)/cancel", as: JobInfo.self)
            output.emit(job, json: global.json) {
                job.state == .running ? "job \(id) will stop at its next step\n" : "job \(id) \(job.state.rawValue)\n"
            }
        }
    }

    struct Retry: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Queue a failed, canceled or dead job again (it resumes from its saved progress).")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Job id.") var id: Int64

        func run(client: GriditClient, output: Output) throws {
            let job = try client.post("/v1/jobs/\(id)/retry", as: JobInfo.self)
            output.emit(job, json: global.json) {
                "job \(id) \(job.state.rawValue)\(job.queuePosition.map { ", queue position \($0)" } ?? "")\n"
            }
        }
    }

    struct Prune: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete finished jobs and their outputs (admins).",
            discussion: """
                Without --older-than griditd's retention applies (by default succeeded jobs 7 days after they finished, failed, canceled and dead ones 30 days; `griditd serve --keep-succeeded/--keep-failed`). Asks for confirmation on a terminal, like `docker system prune`; elsewhere (scripts, CI) it needs --yes.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("Age such as 90s, 30m, 12h, 7d (0 = every finished job).", valueName: "age"))
        var olderThan: String?

        @Flag(help: "Keep the output folders on disk.")
        var keepOutputs = false

        @OptionGroup var confirmation: Confirmation

        func validate() throws {
            if let olderThan, parseDuration(olderThan) == nil {
                throw ValidationError("--older-than '\(olderThan)' is not an age like 90s, 30m, 12h or 7d")
            }
        }

        /// What the confirmation lists, as `docker system prune` does.
        var warning: String {
            let what =
                olderThan.map {
                    "every finished job (succeeded, failed, canceled, dead) that finished more than \($0) ago"
                }
                ?? "every finished job older than griditd's retention (succeeded: 7d, failed, canceled and dead: 30d, unless griditd sets others)"
            return "WARNING! This will remove:\n  - \(what)\n"
                + (keepOutputs ? "" : "  - the output folders (frames) of those jobs\n")
                + "Are you sure you want to continue? [y/N] "
        }

        func run(client: GriditClient, output: Output) throws {
            guard try confirmation.confirmed("jobs prune", warning, output: output) else {
                output.stderr("nothing pruned\n")
                return
            }
            let request = PruneRequest(
                olderThanSeconds: olderThan.flatMap(parseDuration), keepOutputs: keepOutputs ? true : nil)
            let result = try client.post("/v1/jobs/prune", request, as: PruneResponse.self)
            output.emit(result, json: global.json) {
                let ids = result.pruned.prefix(20).map { "\($0.id)" }.joined(separator: " ")
                let more = result.pruned.count > 20 ? " …" : ""
                return
                    "pruned \(result.pruned.count) job\(result.pruned.count == 1 ? "" : "s")\(ids.isEmpty ? "" : ": \(ids)\(more)")\n"
            }
        }
    }
}

extension Jobs {
    struct Remove: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Delete a finished job with its outputs, as `docker rm` does (`jobs cancel` stops a live one).",
            discussion: "Asks for confirmation on a terminal; elsewhere (scripts, CI) it needs --yes.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Job id.") var id: Int64

        @Flag(help: "Keep the output folder on disk.")
        var keepOutputs = false

        @OptionGroup var confirmation: Confirmation

        var warning: String {
            "WARNING! This will remove job \(id)"
                + (keepOutputs
                    ? "" : " and its output folder (frames); `griditctl jobs cp \(id) DIR` copies them first")
                + ".\nAre you sure you want to continue? [y/N] "
        }

        func run(client: GriditClient, output: Output) throws {
            guard try confirmation.confirmed("jobs rm", warning, output: output) else {
                output.stderr("job \(id) kept\n")
                return
            }
            let removed = try client.delete(
                withQuery("/v1/jobs/\(id)", [("keep_outputs", keepOutputs ? "true" : nil)]), as: PruneResponse.self)
            output.emit(removed, json: global.json) {
                removed.pruned.map { job in
                    let folder = job.outputDir.map { dir in
                        if keepOutputs { return "; kept \(dir)" }
                        // An older griditd does not say; it removed the folder.
                        return job.outputRemoved == false
                            ? "; left \(dir): it does not hold this job's output now" : " and \(dir)"
                    }
                    return "removed job \(job.id) (\(job.state.rawValue))\(folder ?? "")\n"
                }.joined()
            }
        }
    }
}

/// `--yes` of the commands that delete, and their question, as `docker system prune` asks it.
struct Confirmation: ParsableArguments {
    @Flag(
        name: [.customShort("y"), .long, .customShort("f"), .customLong("force")],
        help: "Do not ask for confirmation.")
    var yes = false

    /// True to go on: --yes, or a yes on the terminal. Without either a terminal or --yes it
    /// refuses (exit 2), so that a script never deletes by accident.
    func confirmed(_ command: String, _ warning: String, output: Output) throws(CLIError) -> Bool {
        if yes { return true }
        guard let confirm = output.confirm else {
            throw CLIError(
                "\(command) deletes jobs and their frames and asks first, but there is no terminal to ask on; pass --yes",
                status: ExitStatus.usage)
        }
        return confirm(warning)
    }
}

/// Follows a job's event stream to its end: a redrawn progress bar on a terminal, one line per
/// state change otherwise. Reconnects while griditd restarts (the job is durable).
struct JobFollower {
    let client: GriditClient
    let json: Bool
    let output: Output
    /// Where the finished frames are copied (`--out`).
    var out: String? = nil
    /// Seconds between progress lines without a terminal; 0: none.
    var progressInterval: Double = 10
    /// The clock of the progress lines without a terminal (a test's own).
    var now: () -> Date = Date.init

    /// Follows the job to its end, copies its frames if `--out` asks for them, and prints the outcome.
    func run(_ id: Int64) throws {
        // Ctrl-C stops griditctl only: say so, and how to pick the job up again.
        output.onInterrupt(
            "\ngriditctl: stopped following job \(id); it keeps running in griditd. Follow it: griditctl jobs watch \(id)"
                + " · its frames when done: griditctl jobs cp \(id) DIR · cancel it: griditctl jobs cancel \(id)\n")
        let final = try follow(id)
        if final.state == .succeeded, let out {
            try OutputCopier(client: client).copy(job: final.id, into: out)
            if !json { output.stderr("frames copied to \(out)\n") }
        }
        try Self.finish(final, json: json, output: output)
    }

    func follow(_ id: Int64) throws(CLIError) -> JobInfo {
        let bar = !json && output.stderrIsTerminal
        // Without a terminal: a plain line at a steady interval, the first at once.
        let lines = !json && !bar && progressInterval > 0
        var lastLine: Date?
        var last: JobInfo?
        var lastState: JobState?
        var reconnects = 0
        while true {
            var drewBar = false
            do {
                let reply = try client.http.stream("/v1/jobs/\(id)/events") { line in
                    guard let event = try? APICoding.decoder().decode(JobEventMessage.self, from: line) else {
                        return true
                    }
                    reconnects = 0
                    switch event.kind {
                    case .job:
                        guard let job = event.job else { return true }
                        last = job
                        if job.state != lastState, !json {
                            if drewBar { output.stderr("\r\u{1B}[K") }
                            output.stderr(Rendering.stateLine(job) + "\n")
                            drewBar = false
                        }
                        lastState = job.state
                        return !job.state.isTerminal
                    case .step:
                        guard let step = event.step else { return true }
                        if bar {
                            output.stderr(
                                "\r\u{1B}[K" + Rendering.progressLine(jobID: id, step: step, width: terminalWidth()))
                            drewBar = true
                        } else if lines, lastLine.map({ now().timeIntervalSince($0) >= progressInterval }) ?? true {
                            lastLine = now()
                            output.stderr(Rendering.progressLine(jobID: id, step: step, width: 120) + "\n")
                        }
                        return true
                    }
                }
                if drewBar { output.stderr("\n") }
                try GriditClient.check(reply)
            } catch let error as ConnectionError where error.kind != .permissionDenied && reconnects < 60 {
                if reconnects == 0 && !json {
                    output.stderr("griditd went away; reconnecting (the job is safe in the queue)...\n")
                }
                reconnects += 1
                sleep(1)
                continue
            } catch let error as ConnectionError {
                throw GriditClient.cliError(error)
            } catch let error as CLIError {
                throw error
            } catch {
                throw CLIError("\(error)", status: ExitStatus.failure)
            }
            if let last, last.state.isTerminal { return last }
            // The stream ended early (daemon restarting): look again.
            reconnects += 1
            if reconnects > 60 {
                throw CLIError("lost track of job \(id); `griditctl jobs show \(id)`", status: ExitStatus.unreachable)
            }
            sleep(1)
        }
    }

    /// Prints the outcome and exits 1 unless the job succeeded.
    static func finish(_ job: JobInfo, json: Bool, output: Output) throws {
        if json {
            output.printJSON(job)
        } else if job.state == .succeeded {
            output.stdout((job.outputDir ?? "") + "\n")
        }
        guard job.state == .succeeded else { throw ExitCode(ExitStatus.failure) }
    }

    private func terminalWidth() -> Int {
        var size = winsize()
        return ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : 100
    }
}

/// Copies a finished job's output over the socket into a folder of the caller's: into a private
/// folder beside it first, which then takes the folder's place, so the destination ends up with
/// this job's files alone or is left as it was (a failed copy leaves nothing behind).
struct OutputCopier {
    let client: GriditClient

    /// The copy goes into a new or empty folder only (never mixed with other files). Checked
    /// again when the copy is put in place, which may be hours later (`submit --out`).
    static func checkDestination(_ directory: String, named name: String) throws {
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: directory), !entries.isEmpty {
            throw ValidationError("\(name) is not empty; name a new or empty folder")
        }
    }

    func copy(job id: Int64, into directory: String) throws(CLIError) {
        let list = try client.get("/v1/jobs/\(id)/files", as: OutputFileList.self)
        let staging = try Self.makeStaging(for: directory)
        do throws(CLIError) {
            for file in list.files {
                let components = file.path.split(separator: "/")
                guard !components.contains(where: { $0 == ".." || $0 == "." }) else { continue }
                let target = staging + "/" + components.joined(separator: "/")
                do {
                    try FileManager.default.createDirectory(
                        atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                } catch {
                    throw CLIError("cannot create \(target): \(error.localizedDescription)", status: ExitStatus.failure)
                }
                try client.download(
                    "/v1/jobs/\(id)/files/" + components.map { segment(String($0)) }.joined(separator: "/"), to: target)
            }
            try Self.place(staging, at: directory)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
    }

    /// A folder only the caller can enter (mkdtemp), next to `directory` (its parents created).
    private static func makeStaging(for directory: String) throws(CLIError) -> String {
        let path = (directory as NSString).standardizingPath
        let parent = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        do {
            try FileManager.default.createDirectory(
                atPath: parent.isEmpty ? "." : parent, withIntermediateDirectories: true)
        } catch {
            throw CLIError("cannot create \(parent): \(error.localizedDescription)", status: ExitStatus.failure)
        }
        var template = Array("\(parent.isEmpty ? "." : parent)/.\(name).partial-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw CLIError(
                "cannot create a folder next to \(directory): \(String(cString: strerror(errno)))",
                status: ExitStatus.failure, code: "local")
        }
        return String(cString: template)
    }

    /// Puts the finished copy in place: renamed to `directory` if that does not exist (or is an
    /// empty folder the rename may replace), else moved into it entry by entry if it is an empty
    /// folder of the caller's. Anything else (a file, a link, someone else's folder, a folder that
    /// filled up meanwhile) is refused, and the destination left as it was.
    static func place(_ staging: String, at directory: String) throws(CLIError) {
        chmod(staging, 0o777 & ~currentUmask())
        if rename(staging, directory) == 0 { return }
        let refused = CLIError(
            "\(directory) is not a new folder nor an empty folder of yours any more; the job's files were not copied",
            status: ExitStatus.failure, code: "local")
        var st = stat()
        guard lstat(directory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_uid == geteuid(),
            let existing = try? FileManager.default.contentsOfDirectory(atPath: directory), existing.isEmpty,
            let entries = try? FileManager.default.contentsOfDirectory(atPath: staging)
        else { throw refused }
        for entry in entries where rename(staging + "/" + entry, directory + "/" + entry) != 0 {
            throw CLIError(
                "cannot move \(entry) into \(directory): \(String(cString: strerror(errno)))",
                status: ExitStatus.failure,
                code: "local")
        }
        rmdir(staging)
    }
}
