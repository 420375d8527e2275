import ArgumentParser
import Foundation
import GriditAPI
import GriditJobSpec

#if canImport(Glibc)
import Glibc
#endif

struct Queue: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pause, resume or show the queue.", subcommands: [QueueStatusCommand.self, Pause.self, Resume.self],
        defaultSubcommand: QueueStatusCommand.self)

    struct QueueStatusCommand: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "status", abstract: "Jobs by state, and whether the queue is paused.")
        @OptionGroup var global: GlobalOptions

        func run(client: GriditClient, output: Output) throws {
            let queue = try client.get("/v1/queue", as: QueueStatus.self)
            output.emit(queue, json: global.json) { Queue.describe(queue) }
        }
    }

    struct Pause: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop starting jobs (persisted across restarts); the running job finishes. Admins.")
        @OptionGroup var global: GlobalOptions

        func run(client: GriditClient, output: Output) throws {
            let queue = try client.post("/v1/queue/pause", as: QueueStatus.self)
            output.emit(queue, json: global.json) {
                "queue paused; \(queue.counts.queued + queue.counts.retryable) jobs waiting\n"
            }
        }
    }

    struct Resume: ClientCommand {
        static let configuration = CommandConfiguration(abstract: "Start jobs again. Admins.")
        @OptionGroup var global: GlobalOptions

        func run(client: GriditClient, output: Output) throws {
            let queue = try client.post("/v1/queue/resume", as: QueueStatus.self)
            output.emit(queue, json: global.json) { "queue resumed\n" }
        }
    }

    static func describe(_ queue: QueueStatus) -> String {
        let c = queue.counts
        return """
            Queue:      \(queue.paused ? "paused (`griditctl queue resume` starts it)" : "running")
            Depth:      \(c.depth) of \(queue.maxQueued) (\(c.running) running, \(c.queued) queued, \(c.retryable) retrying)
            Finished:   \(c.succeeded) succeeded, \(c.failed) failed, \(c.canceled) canceled, \(c.dead) dead

            """
    }
}

struct Status: ClientCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show griditd's version, uptime, queue, your jobs' positions and the loaded models.")
    @OptionGroup var global: GlobalOptions

    func run(client: GriditClient, output: Output) throws {
        let status = try client.get("/v1/status", as: DaemonStatus.self)
        if global.json {
            output.printJSON(status)
            return
        }
        var text = """
            griditd \(status.version) (API \(status.apiVersion)), pid \(status.pid), up \(Rendering.duration(status.uptimeSeconds))
            State dir:  \(status.stateDirectory)\(status.sharedRoot.map { "\nShared:     \($0) (work folders and outputs)" } ?? "")\(status.diskFreeBytes.map { "\nFree:       \(formatBytes($0))\(status.sharedRoot == nil ? "" : " (on the fuller of the two)")" } ?? "")
            Engine:     \(status.engineAvailable ? "ready, \(status.blasThreads) BLAS threads" : "not in this build (jobs stay queued)")

            """
        if let worker = status.worker {
            text +=
                "Worker:     \(worker.pid.map { "pid \($0), " } ?? "")\(worker.state), started \(worker.starts) time(s)"
                + (worker.lastExit.map { "; last one \($0)" } ?? "") + "\n"
        }
        text +=
            "Models:     \(status.modelStoreAvailable ? "\(status.loadedModels.count) loaded" : "no model store in this build")\n\n"
        for notice in status.notices { text += "NOTE:       \(notice.message)\n" }
        if !status.notices.isEmpty { text += "\n" }
        text += Queue.describe(status.queue)
        for job in status.running {
            let live =
                job.progress.live.map { " \($0.stage) grid \($0.grid)/\($0.grids) step \($0.step)/\($0.steps)" } ?? ""
            text += "Running:    job \(job.id) (uid \(job.ownerUID))\(live)\n"
        }
        if !status.yourJobs.isEmpty {
            text +=
                "Your jobs:  "
                + status.yourJobs.map { j in
                    "\(j.id) \(j.state.rawValue)" + (j.queuePosition.map { " #\($0)" } ?? "")
                }.joined(separator: ", ") + "\n"
        }
        if let nodes = status.nodes {
            text += "\nHosts (\(nodes.count), * answered):\n" + Rendering.nodesTable(nodes)
        }
        if !status.loadedModels.isEmpty {
            text +=
                "\n"
                + renderTable(
                    headers: ["model", "digest", "precision", "resident", "jobs"],
                    rows: status.loadedModels.map {
                        [
                            $0.names.first ?? "-", String($0.digest.prefix(19)), $0.precision ?? "-",
                            $0.residentBytes.map(formatBytes) ?? "-", String($0.activeJobs),
                        ]
                    })
        }
        output.stdout(text)
    }
}

/// Local and daemon-side checks, each with a fix.
struct Doctor: ClientCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the socket, your group, the state directory, disk space and BLAS threads.")
    @OptionGroup var global: GlobalOptions

    struct Check: Encodable {
        var name: String
        var ok: Bool
        var detail: String
        var fix: String?
    }

    func run(client: GriditClient, output: Output) throws {
        var checks: [Check] = []
        let path = global.socket
        var st = stat()
        if lstat(path, &st) != 0 {
            checks.append(
                Check(
                    name: "socket", ok: false, detail: "\(path) does not exist",
                    fix: "start griditd (`systemctl enable --now griditd.socket`, or `griditd serve --socket \(path)`)")
            )
        } else if (st.st_mode & S_IFMT) != S_IFSOCK {
            checks.append(
                Check(
                    name: "socket", ok: false, detail: "\(path) is not a socket", fix: "remove it and restart griditd"))
        } else {
            // A 0666 socket is as shipped: griditd itself refuses callers outside its groups.
            let group = groupName(st.st_gid) ?? String(st.st_gid)
            let mode = String(st.st_mode & 0o777, radix: 8)
            checks.append(Check(name: "socket", ok: true, detail: "\(path) (mode \(mode), group \(group))", fix: nil))
        }
        var status: DaemonStatus?
        do {
            status = try client.get("/v1/status", as: DaemonStatus.self)
            checks.append(Check(name: "daemon", ok: true, detail: "griditd \(status!.version) answers", fix: nil))
            let role = status!.caller.admin ? "an admin" : "a member"
            checks.append(
                Check(name: "group", ok: true, detail: "you (uid \(getuid())) may use griditd, as \(role)", fix: nil))
        } catch  where error.code == APIError.Code.forbidden.rawValue {
            checks.append(
                Check(
                    name: "group", ok: false, detail: error.message,
                    fix: "sudo usermod -aG gridit $USER, then log in again"))
        } catch {
            checks.append(Check(name: "daemon", ok: false, detail: error.message, fix: "see `journalctl -u griditd`"))
        }
        if let status {
            checks.append(stateDirectoryCheck(status.stateDirectory))
            if let free = status.diskFreeBytes {
                let ok = free >= status.minFreeBytes * 4
                checks.append(
                    Check(
                        name: "disk", ok: ok,
                        detail:
                            "\(formatBytes(free)) free in \(status.stateDirectory)"
                            + (status.sharedRoot.map { " or \($0), whichever has less" } ?? ""),
                        fix: ok
                            ? nil
                            : "free space or prune old jobs (`griditctl jobs prune`); below \(formatBytes(status.minFreeBytes)) no job starts"
                    ))
            }
            let cpus = ProcessInfo.processInfo.activeProcessorCount
            let threads = status.blasThreads
            checks.append(
                Check(
                    name: "blas", ok: threads <= cpus,
                    detail: "\(threads) BLAS thread\(threads == 1 ? "" : "s") on \(cpus) CPU\(cpus == 1 ? "" : "s")",
                    fix: threads <= cpus
                        ? nil : "more threads than CPUs slows every product down: griditd serve --blas-threads \(cpus)")
            )
            checks.append(
                Check(
                    name: "engine", ok: status.engineAvailable,
                    detail: status.engineAvailable ? "ready" : "this griditd has no engine; jobs stay queued",
                    fix: status.engineAvailable ? nil : "install a griditd built with the engine"))
            if status.modelStoreAvailable { checks += storeChecks(client) }
        }
        if global.json {
            output.printJSON(checks)
        } else {
            for c in checks {
                output.stdout(
                    "\(c.ok ? "ok  " : "FAIL") \(c.name.padding(toLength: 7, withPad: " ", startingAt: 0)) \(c.detail)\n"
                )
                if let fix = c.fix { output.stdout("     \(String(repeating: " ", count: 7)) fix: \(fix)\n") }
            }
        }
        if checks.contains(where: { !$0.ok }) { throw ExitCode(ExitStatus.failure) }
    }

    /// The model store's permission and filesystem checks as griditd's user sees them, and
    /// whether it holds a model to run.
    private func storeChecks(_ client: GriditClient) -> [Check] {
        var checks: [Check] = []
        do {
            let result = try Models.result(ModelStoreCheckResult.self, from: try client.call("GET", "/v1/models/check"))
            for c in result.checks {
                checks.append(
                    Check(
                        name: "store", ok: c.status != .error,
                        detail: "\(c.name): \(c.message)"
                            + (c.status == .warning ? " (warning)" : ""), fix: c.fix))
            }
            let list = try Models.result(ModelListResult.self, from: try client.call("GET", "/v1/models"))
            let names = Set(list.models.compactMap { m in m.name.map { "\($0):\(m.tag ?? "")" } }).sorted()
            checks.append(
                Check(
                    name: "models", ok: !names.isEmpty,
                    detail: names.isEmpty ? "the model store holds no model" : names.joined(separator: ", "),
                    fix: names.isEmpty ? "griditctl models import PATH/pipeline.json --name NAME:TAG" : nil))
        } catch {
            checks.append(Check(name: "store", ok: false, detail: error.message, fix: "see `journalctl -u griditd`"))
        }
        return checks
    }

    /// Which path component keeps the daemon's state directory from being what it should.
    private func stateDirectoryCheck(_ root: String) -> Check {
        var st = stat()
        guard stat(root, &st) == 0 else {
            let reason = String(cString: strerror(errno))
            var component = ""
            for part in root.split(separator: "/") {
                component += "/" + part
                if access(component, X_OK) != 0 {
                    return Check(
                        name: "state", ok: true,
                        detail: "\(root): cannot look inside \(component) as uid \(getuid()) (\(reason))",
                        fix: nil)
                }
            }
            return Check(name: "state", ok: false, detail: "\(root): \(reason)", fix: "check --state-dir")
        }
        let mode = st.st_mode & 0o777
        let owner = userName(st.st_uid) ?? String(st.st_uid)
        let open = (mode & 0o007) != 0
        return Check(
            name: "state", ok: !open, detail: "\(root) (owner \(owner), mode \(String(mode, radix: 8)))",
            fix: open
                ? "chmod o-rwx \(root) (griditd does at its next start): any user could read or change jobs and frames"
                : nil)
    }

    private func groupName(_ gid: gid_t) -> String? {
        guard let g = getgrgid(gid) else { return nil }
        return String(cString: g.pointee.gr_name)
    }

    private func userName(_ uid: uid_t) -> String? {
        guard let p = getpwuid(uid) else { return nil }
        return String(cString: p.pointee.pw_name)
    }
}
