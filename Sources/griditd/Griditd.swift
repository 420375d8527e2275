// griditd: the gridit daemon executable. Thin: every subcommand parses its options and calls a
// library target. The root lists the subcommands; each lives in its own files (`serve`:
// Serve.swift, GriditDaemon; `config`: Config.swift, GriditDaemon's settings; `backup` and
// `restore`: Backup.swift, GriditStateDatabase; `run`: Run.swift, GriditEngine; `models`:
// Models*.swift, GriditModelStore; `worker`, hidden: Worker.swift, the engine process `serve`
// starts).

import ArgumentParser
import GriditAPI

@main
struct Griditd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "griditd",
        abstract:
            "The gridit daemon: a durable job queue and worker for GriDiT image sequences, and its offline tools.",
        version: griditVersion,
        subcommands: [
            Serve.self, ConfigCommand.self, BackupCommand.self, RestoreCommand.self, RunCommand.self, Models.self,
            WorkerCommand.self,
        ])
}
