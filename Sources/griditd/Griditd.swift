// griditd: the gridit daemon executable. Thin: every subcommand parses its options and calls a
// library target. The root lists the subcommands; each lives in its own files (`models`:
// Models*.swift, GriditModelStore).
import ArgumentParser

@main
struct Griditd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "griditd",
        abstract: "The gridit daemon and its offline tools.",
        subcommands: [Models.self])
}
