// `griditctl models ...`: the model store's commands, run by the daemon. The answers carry the
// store's result type as JSON (printed with --json) and the same text `griditd models` prints.
import ArgumentParser
import Foundation
import GriditAPI

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage pipeline versions in griditd's model store.",
        subcommands: [List.self, Show.self, Import.self, Tag.self, Remove.self, Verify.self, GC.self, Export.self, PS.self],
        defaultSubcommand: List.self)

    /// The `result` of a model command's reply, decoded.
    static func result<T: Decodable>(_ type: T.Type, from reply: HTTPReply) throws(CLIError) -> T {
        guard let object = try? JSONSerialization.jsonObject(with: reply.body) as? [String: Any],
              let result = object["result"],
              let data = try? JSONSerialization.data(withJSONObject: result, options: [.fragmentsAllowed]),
              let decoded = try? APICoding.decoder().decode(T.self, from: data)
        else {
            throw CLIError("griditd sent an unreadable model reply", status: ExitStatus.daemonError)
        }
        return decoded
    }

    /// Prints a model command's reply: its `text`, or its `result` with --json.
    static func print(_ reply: HTTPReply, json: Bool) throws {
        guard let object = try? JSONSerialization.jsonObject(with: reply.body) as? [String: Any] else {
            throw CLIError("griditd sent an unreadable model reply", status: ExitStatus.daemonError)
        }
        if json {
            let result = object["result"] ?? NSNull()
            let data = (try? JSONSerialization.data(withJSONObject: result, options: [.fragmentsAllowed])) ?? Data("null".utf8)
            Output.printRawJSON(data)
        } else {
            Output.stdout(object["text"] as? String ?? "")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List names, tags and digests.", aliases: ["ls"])
        @OptionGroup var global: GlobalOptions
        func run() throws { try Models.print(try global.client.call("GET", "/v1/models"), json: global.json) }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a version: manifest, configs, blobs, tag history.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "NAME:TAG, NAME@sha256:<hex> or sha256:<hex>.") var reference: String
        func run() throws {
            try Models.print(try global.client.call("GET", "/v1/models/" + segment(reference)), json: global.json)
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Import a pipeline JSON (with its files) or an exported bundle. Admins.",
            discussion: "The daemon reads PATH itself: it must be readable by griditd's user.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "pipeline.json or a bundle .tar.") var path: String
        @Option(help: "NAME:TAG for the imported version.") var name: String
        @Option(help: "auto (hardlink on the same filesystem, else copy), hardlink or copy.") var link: String?

        func validate() throws {
            if let link, !["auto", "hardlink", "copy"].contains(link) { throw ValidationError("--link must be auto, hardlink or copy") }
        }

        func run() throws {
            let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
            let body = APICoding.encode(ImportModelRequest(path: absolute, name: name, link: link))
            try Models.print(try global.client.call("POST", "/v1/models/import", body: body), json: global.json)
        }
    }

    struct Tag: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Point TARGET (NAME:TAG) at what SOURCE resolves to. Admins.")
        @OptionGroup var global: GlobalOptions
        @Argument var source: String
        @Argument var target: String
        func run() throws {
            let body = APICoding.encode(TagModelRequest(source: source, target: target))
            try Models.print(try global.client.call("POST", "/v1/models/tag", body: body), json: global.json)
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Remove a tag (blobs stay until `models gc`). Admins.")
        @OptionGroup var global: GlobalOptions
        @Argument var reference: String
        func run() throws {
            try Models.print(try global.client.call("DELETE", "/v1/models/" + segment(reference)), json: global.json)
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-hash a version's blobs (or all) and report mismatches (exit status 1 when any is bad). Admins.")
        @OptionGroup var global: GlobalOptions
        @Argument var reference: String?
        @Flag(help: "Every blob in the store.") var all = false

        func validate() throws {
            guard (reference != nil) != all else { throw ValidationError("name a REFERENCE or pass --all") }
        }

        func run() throws {
            let body = APICoding.encode(VerifyModelsRequest(reference: reference, all: all ? true : nil))
            let reply = try global.client.call("POST", "/v1/models/verify", body: body)
            try Models.print(reply, json: global.json)
            // Found corruption is a failure for scripts, as with `griditd models verify`.
            guard try Models.result(ModelVerifyResult.self, from: reply).ok else { throw ExitCode.failure }
        }
    }

    struct GC: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gc", abstract: "Delete blobs no version, waiting job or mapping uses. Admins.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Only report what would be deleted.") var dryRun = false
        func run() throws {
            let body = APICoding.encode(GCModelsRequest(dryRun: dryRun ? true : nil))
            try Models.print(try global.client.call("POST", "/v1/models/gc", body: body), json: global.json)
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a version as a single-file bundle (for `models import` elsewhere).")
        @OptionGroup var global: GlobalOptions
        @Argument var reference: String
        @Option(name: .shortAndLong, help: "Bundle file to write.") var output: String

        func run() throws {
            try global.client.download("/v1/models/\(segment(reference))/bundle", to: output)
            if global.json {
                struct Written: Encodable { var path: String }
                Output.printJSON(Written(path: output))
            } else {
                Output.stdout("wrote \(output)\n")
            }
        }
    }

    struct PS: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ps", abstract: "Show the mapped models and their resident size.")
        @OptionGroup var global: GlobalOptions
        func run() throws { try Models.print(try global.client.call("GET", "/v1/models/ps"), json: global.json) }
    }
}
