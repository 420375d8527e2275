// `griditctl models ...`: the model store's commands, run by the daemon. The answers carry the
// store's result type as JSON (printed with --json) and the same text `griditd models` prints.

import ArgumentParser
import Foundation
import GriditAPI

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage pipeline versions in griditd's model store.",
        subcommands: [
            List.self, Show.self, Import.self, Tag.self, Convert.self, Remove.self, Verify.self, GC.self, Export.self,
            PS.self,
        ],
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
    static func print(_ reply: HTTPReply, json: Bool, output: Output) throws {
        guard let object = try? JSONSerialization.jsonObject(with: reply.body) as? [String: Any] else {
            throw CLIError("griditd sent an unreadable model reply", status: ExitStatus.daemonError)
        }
        if json {
            let result = object["result"] ?? NSNull()
            let data =
                (try? JSONSerialization.data(withJSONObject: result, options: [.fragmentsAllowed])) ?? Data("null".utf8)
            output.printRawJSON(data)
        } else {
            output.stdout(object["text"] as? String ?? "")
        }
    }

    struct List: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List names, tags and digests.", aliases: ["ls"])
        @OptionGroup var global: GlobalOptions
        func run(client: GriditClient, output: Output) throws {
            try Models.print(try client.call("GET", "/v1/models"), json: global.json, output: output)
        }
    }

    struct Show: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a version: manifest, configs, blobs, tag history.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "NAME:TAG, NAME@sha256:<hex> or sha256:<hex>.") var reference: String
        func run(client: GriditClient, output: Output) throws {
            try Models.print(
                try client.call("GET", "/v1/models/" + segment(reference)), json: global.json, output: output)
        }
    }

    struct Import: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Import a pipeline JSON (with its files) or an exported bundle. Admins.",
            discussion:
                "The daemon reads PATH itself, with your permissions: the pipeline's files must be inside its folder (no symbolic links, no '..') and readable by you and by griditd's user. Where griditd cannot see PATH (its unit hides /home and /tmp from it), griditctl streams the bundle, or the pipeline and its files, over the socket instead, hash-checked, like `docker load`."
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "pipeline.json, the folder that holds it, or a bundle .tar.") var path: String
        @Option(help: "NAME:TAG for the imported version (default: the folder's or bundle's name, :latest).")
        var name: String?
        @Option(help: "auto (reflink where the filesystem can, else copy), hardlink or copy.") var link: String?
        @Flag(help: "Stream PATH over the socket even where griditd could read it.") var upload = false

        func validate() throws {
            if let link, !["auto", "hardlink", "copy"].contains(link) {
                throw ValidationError("--link must be auto, hardlink or copy")
            }
            if upload, link != nil { throw ValidationError("--link applies to imports by path, not to --upload") }
        }

        /// The file to import and its name: a folder means its pipeline.json, named after the folder.
        var source: (path: String, name: String) {
            var url = URL(fileURLWithPath: path).standardizedFileURL
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
                url.appendPathComponent("pipeline.json")
            }
            let base =
                url.lastPathComponent == "pipeline.json"
                ? url.deletingLastPathComponent().lastPathComponent : url.deletingPathExtension().lastPathComponent
            return (url.path, name ?? "\(base.lowercased()):latest")
        }

        func run(client: GriditClient, output: Output) throws {
            let (absolute, name) = source
            // What griditctl cannot find does not exist; what it finds and griditd does not is hidden
            // from griditd, and goes over the socket.
            guard FileManager.default.fileExists(atPath: absolute) else {
                throw CLIError(
                    "\(absolute) does not exist (nor does griditd look for it: the path is checked here first)",
                    status: ExitStatus.badInput)
            }
            if !upload {
                let body = APICoding.encode(ImportModelRequest(path: absolute, name: name, link: link))
                do {
                    return try Models.print(
                        try client.call("POST", "/v1/models/import", body: body), json: global.json, output: output)
                } catch let error as CLIError where error.code == "not_found" {
                    output.stderr(
                        "griditd cannot see \(absolute): it exists here, but not in griditd's view of the filesystem "
                            + "(its unit's ProtectHome=/PrivateTmp= hide /home and /tmp); sending it over the socket\n")
                }
            }
            try Models.print(
                try send(absolute, name: name, client: client, output: output), json: global.json, output: output)
        }

        /// Streams the bundle or pipeline at `path` (hashing it first), with a progress bar on a terminal.
        func send(_ path: String, name: String, client: GriditClient, output: Output) throws -> HTTPReply {
            let upload = try ModelUpload(path: path)
            let bar = TransferBar(total: upload.length, output: output)
            let digest = try upload.contentDigest { bar.show("hashing", $0) }
            let reply: HTTPReply
            do {
                reply = try client.http.upload(
                    withQuery("/v1/models/upload", [("kind", upload.kind), ("name", name)]),
                    headers: ["Content-Type": "application/x-tar", "Content-Digest": digest], length: upload.length
                ) { write in try upload.stream(write) { bar.show("sending", $0) } }
            } catch let error as ConnectionError {
                bar.finish()
                throw GriditClient.cliError(error)
            }
            bar.finish()
            try GriditClient.check(reply)
            return reply
        }
    }

    struct Tag: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Point TARGET (NAME:TAG) at what SOURCE resolves to. Admins.")
        @OptionGroup var global: GlobalOptions
        @Argument var source: String
        @Argument var target: String
        func run(client: GriditClient, output: Output) throws {
            let body = APICoding.encode(TagModelRequest(source: source, target: target))
            try Models.print(try client.call("POST", "/v1/models/tag", body: body), json: global.json, output: output)
        }
    }

    struct Convert: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Store a version's DiT weights in another precision, as a new version with its own digest. Admins.",
            discussion:
                "--precision bf16 stores the weight of every matrix product as BF16 (half its bytes) and sets the pipeline's defaults.precision to bf16; run in bf16, the new version gives the source's bf16 outputs bit for bit. The source stays as it was; converting it again gives the same digest."
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The version to convert: NAME:TAG, NAME@sha256:<hex> or sha256:<hex>.") var reference: String
        @Option(help: "The precision to store: bf16.") var precision: String
        @Option(
            name: [.customLong("tag"), .customLong("name")],
            help: "NAME:TAG for the new version (default: NAME:TAG-bf16, or NAME:bf16 for NAME@sha256:…).")
        var tag: String?
        func run(client: GriditClient, output: Output) throws {
            let body = APICoding.encode(ConvertModelRequest(ref: reference, precision: precision, tag: tag))
            try Models.print(
                try client.call("POST", "/v1/models/convert", body: body), json: global.json, output: output)
        }
    }

    struct Remove: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Remove a tag (blobs stay until `models gc`). Admins.")
        @OptionGroup var global: GlobalOptions
        @Argument var reference: String
        func run(client: GriditClient, output: Output) throws {
            try Models.print(
                try client.call("DELETE", "/v1/models/" + segment(reference)), json: global.json, output: output)
        }
    }

    struct Verify: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-hash a version's blobs (or all) and report mismatches (exit status 1 if any). Admins.")
        @OptionGroup var global: GlobalOptions
        @Argument var reference: String?
        @Flag(help: "Every blob in the store.") var all = false

        func validate() throws {
            guard (reference != nil) != all else { throw ValidationError("name a REFERENCE or pass --all") }
        }

        func run(client: GriditClient, output: Output) throws {
            let body = APICoding.encode(VerifyModelsRequest(reference: reference, all: all ? true : nil))
            let reply = try client.call("POST", "/v1/models/verify", body: body)
            try Models.print(reply, json: global.json, output: output)
            // A check that finds corruption must fail scripts and monitors, like `griditd models verify`.
            let result = try Models.result(ModelVerifyResult.self, from: reply)
            if !result.ok {
                let bad = result.entries.filter { $0.status != .ok }.count
                output.stderr("griditctl: verify found \(bad) bad blob(s)\n")
                throw ExitCode(ExitStatus.failure)
            }
        }
    }

    struct GC: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "gc", abstract: "Delete blobs no version, waiting job or mapping uses. Admins.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Only report what would be deleted.") var dryRun = false
        func run(client: GriditClient, output: Output) throws {
            let body = APICoding.encode(GCModelsRequest(dryRun: dryRun ? true : nil))
            try Models.print(try client.call("POST", "/v1/models/gc", body: body), json: global.json, output: output)
        }
    }

    struct Export: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a version as a single-file bundle (for `models import` elsewhere).")
        @OptionGroup var global: GlobalOptions
        @Argument var reference: String
        @Option(name: .shortAndLong, help: "Bundle file to write.") var output: String

        func run(client: GriditClient, output printer: Output) throws {
            try client.download("/v1/models/\(segment(reference))/bundle", to: output)
            if global.json {
                struct Written: Encodable { var path: String }
                printer.printJSON(Written(path: output))
            } else {
                printer.stdout("wrote \(output)\n")
            }
        }
    }

    struct PS: ClientCommand {
        static let configuration = CommandConfiguration(
            commandName: "ps", abstract: "Show the mapped models and their resident size.")
        @OptionGroup var global: GlobalOptions
        func run(client: GriditClient, output: Output) throws {
            try Models.print(try client.call("GET", "/v1/models/ps"), json: global.json, output: output)
        }
    }
}
