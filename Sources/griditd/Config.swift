// `griditd config show`: the settings `griditd serve` would run with, and where each comes from.

import ArgumentParser
import Foundation
import GriditAPI
import GriditDaemon

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "The daemon's configuration.",
        subcommands: [Show.self, Template.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the configuration `griditd serve` would run with, and where each value comes from.",
            discussion: """
                Takes the flags of `serve` and reads the same environment and config file. The output is a config file (GRIDIT_<NAME>=value), each line with its source: a flag, the environment, the config file or the default. Precedence: flags > environment > file > defaults.
                """)

        @OptionGroup var settings: SettingFlags

        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            let resolved = try await settings.resolve()
            if json {
                struct Shown: Encodable {
                    var configFile: String
                    var configFileExists: Bool
                    var settings: [SettingValue]
                    enum CodingKeys: String, CodingKey {
                        case settings
                        case configFile = "config_file"
                        case configFileExists = "config_file_exists"
                    }
                }
                let shown = Shown(
                    configFile: resolved.configFile, configFileExists: resolved.configFileExists,
                    settings: resolved.values)
                print(String(decoding: APICoding.encode(shown, pretty: true), as: UTF8.self))
                return
            }
            print("# griditd's configuration: flags > environment > config file > defaults")
            print(
                "# config file: \(resolved.configFile)\(resolved.configFileExists ? "" : " (missing: defaults apply)")")
            let width = resolved.values.map { $0.environmentName.count + $0.value.count + 1 }.max() ?? 0
            for value in resolved.values {
                let line = "\(value.environmentName)=\(value.value)"
                let source =
                    switch value.source {
                    case .flag: "flag \(value.origin ?? "")"
                    case .environment: "environment"
                    case .file: "config file \(resolved.configFile)"
                    case .default: "default"
                    }
                print(line.padding(toLength: max(width, line.count), withPad: " ", startingAt: 0) + "  # " + source)
            }
        }
    }

    struct Template: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a config file with every setting at its default and what it does (systemd/griditd.conf).")

        func run() { print(DaemonSettings.template(), terminator: "") }
    }
}
