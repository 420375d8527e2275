import ArgumentParser

/// The gridit daemon executable. Subcommands live in their own files (`Run*.swift`, …).
@main
struct Griditd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "griditd",
        abstract: "Generate long image sequences with GriDiT.",
        subcommands: [RunCommand.self])
}
