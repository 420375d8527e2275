import ArgumentParser
import Foundation
import GriditAPI

struct Nodes: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the griditd hosts sharing the queue; drain one for maintenance; remove one that is gone.",
        subcommands: [List.self, Drain.self, Undrain.self, Remove.self], defaultSubcommand: List.self)

    struct List: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract:
                "Every host: node id, hostname, version, state (up, draining, gone), last seen, running jobs (* answered).",
            aliases: ["ls"])
        @OptionGroup var global: GlobalOptions

        func run(client: GriditClient, output: Output) throws {
            let list = try client.get("/v1/nodes", as: NodeList.self)
            if global.json { output.printJSON(list) } else { output.stdout(Rendering.nodesTable(list.nodes)) }
        }
    }

    struct Drain: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Stop one host claiming jobs (its running jobs finish); `queue pause` pauses every host. Admins.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The node: its id, a unique prefix of it (4+ characters), or its hostname.") var node: String

        func run(client: GriditClient, output: Output) throws {
            try Nodes.set(draining: true, node, client: client, output: output, json: global.json)
        }
    }

    struct Undrain: ClientCommand {
        static let configuration = CommandConfiguration(abstract: "Let a drained host claim jobs again. Admins.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The node: its id, a unique prefix of it (4+ characters), or its hostname.") var node: String

        func run(client: GriditClient, output: Output) throws {
            try Nodes.set(draining: false, node, client: client, output: output, json: global.json)
        }
    }

    struct Remove: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract:
                "Forget a host that is gone for good (unseen for 30 s or more, no running job). Admins. It registers again if its griditd starts.",
            aliases: ["remove"])
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The node: its id, a unique prefix of it (4+ characters), or its hostname.") var node: String

        func run(client: GriditClient, output: Output) throws {
            let removed = try client.delete("/v1/nodes/\(segment(node))", as: NodeInfo.self)
            output.emit(removed, json: global.json) { "node \(removed.id) (\(removed.hostname)) removed\n" }
        }
    }

    static func set(draining: Bool, _ node: String, client: GriditClient, output: Output, json: Bool) throws {
        let shown = try client.post(
            "/v1/nodes/\(segment(node))/\(draining ? "drain" : "undrain")", as: NodeInfo.self)
        if json {
            output.printJSON(shown)
        } else if draining {
            output.stdout(
                "node \(shown.id) (\(shown.hostname)) drained: it claims no job; "
                    + "\(shown.runningJobs) running job(s) finish there\n")
        } else {
            output.stdout("node \(shown.id) (\(shown.hostname)) undrained: it claims jobs again\n")
        }
    }
}
