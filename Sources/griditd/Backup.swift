// `griditd backup DEST` and `griditd restore BACKUP`: parse and call GriditStateDatabase's
// `StateBackup`. No logic lives here.

import ArgumentParser
import Foundation
import GriditAPI
import GriditJobSpec
import GriditStateDatabase

struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract:
            "Copy the state directory's database (jobs, model catalog) to DEST, consistently, while griditd runs.",
        discussion: """
            SQLite's online backup: the copy is the database at one commit, whatever griditd writes meanwhile. Run it as griditd's user or root (sudo -u gridit griditd backup /backup/gridit.sqlite). Copy the model blobs and outputs afterwards (rsync -a /var/lib/gridit/blobs /var/lib/gridit/refs.json /var/lib/gridit/outputs /backup/); `griditd restore` puts the database back.
            """)

    @Argument(help: ArgumentHelp("The backup file to write (must not exist).", valueName: "dest"))
    var destination: String

    @Option(name: .customLong("state-dir"), help: "The state directory (env GRIDIT_STATE_DIR).")
    var stateDirectory: String = ProcessInfo.processInfo.environment["GRIDIT_STATE_DIR"] ?? "/var/lib/gridit"

    func run() throws {
        let database = (stateDirectory as NSString).appendingPathComponent(StateDatabase.fileName)
        do {
            let summary = try StateBackup.backup(databasePath: database, to: destination)
            print(
                "backed up \(database) to \(summary.path): \(formatBytes(summary.bytes)), \(summary.jobs) jobs, "
                    + "database \(summary.databaseID), schema \(summary.migrations.last ?? "none")")
        } catch {
            FileHandle.standardError.write(Data("griditd backup: \(error.message)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Put a `griditd backup` file back as the state directory's database (griditd stopped).",
        discussion: """
            Takes the state directory's lock (griditd must be stopped; exit 75 otherwise), checks the backup, copies it in beside the database and checks the copy, then moves the database there and its -wal and -shm files aside (jobs.sqlite.before-restore-<time>, -wal, -shm: a set that can itself be restored) and renames the copy into place; a failure before that changes nothing. griditd adopts it at its next start. Jobs that ran after the backup are not in it; their outputs stay on disk.
            """)

    @Argument(help: ArgumentHelp("A file `griditd backup` wrote.", valueName: "backup"))
    var backup: String

    @Option(name: .customLong("state-dir"), help: "The state directory (env GRIDIT_STATE_DIR).")
    var stateDirectory: String = ProcessInfo.processInfo.environment["GRIDIT_STATE_DIR"] ?? "/var/lib/gridit"

    func run() throws {
        do {
            let lock = try StateDirectoryLock(stateDirectory: stateDirectory)
            defer { lock.release() }
            let (summary, moved) = try StateBackup.restore(
                backup, stateDirectory: stateDirectory, outputLevels: JobSpec.maxOutputLevels)
            for path in moved { print("moved aside: \(path)") }
            print(
                "restored \(backup) to \(summary.path): \(summary.jobs) jobs, database \(summary.databaseID); start griditd"
            )
        } catch {
            FileHandle.standardError.write(Data("griditd restore: \(error.message)\n".utf8))
            throw ExitCode(error.code == .locked ? 75 : 1)
        }
    }
}
