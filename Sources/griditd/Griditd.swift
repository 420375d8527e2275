import ArgumentParser
import GriditAPI

@main
struct Griditd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "griditd",
        abstract: "The gridit daemon: a durable job queue and worker for GriDiT image sequences.",
        version: griditVersion,
        subcommands: [Serve.self])
}
