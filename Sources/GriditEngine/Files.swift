// File operations of the work directory and the output: whole files appear atomically through
// GriditDurable's `DurableFile` (temporary name, fsync, rename, fsync of the directory), errors
// are classified (a full disk is `disk_full`), and SHA-256 digests are streamed with swift-crypto.

import Crypto
import Foundation
import GriditCheckpoint
import GriditDurable
import GriditFaults
import GriditTensor

enum Files {
    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    static func isDirectory(_ path: String) -> Bool {
        var dir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &dir) && dir.boolValue
    }

    /// The `disk-full-under` fault point (GriditFaults): creating anything below its folder
    /// fails with ENOSPC. Without it a write costs one comparison.
    private static func checkSpace(_ path: String) throws {
        if FaultInjection.current.diskIsFull(for: path) { throw EngineError.posix("write", path: path, errno: ENOSPC) }
    }

    /// Writes `bytes` to `path` all-or-nothing and durably (`DurableFile`).
    static func write(_ bytes: [UInt8], to path: String) throws {
        try checkSpace(path)
        try DurableFile.write(bytes, to: path, failure: failure)
    }

    /// A failed durable write as the engine reports it (a full disk is `disk_full`).
    static func failure(_ error: DurableFileError) -> EngineError {
        EngineError.classify(CheckpointError.durable(error))
    }

    /// Writes `data` to `path` all-or-nothing and durably.
    static func write(_ data: Data, to path: String) throws { try write([UInt8](data), to: path) }

    /// Writes a float32 tensor as `.npy`, all-or-nothing and durably.
    static func write(_ tensor: Tensor, to path: String) throws {
        try checkSpace(path)
        do { try NPY.write(tensor, to: path) } catch { throw EngineError.classify(error) }
    }

    /// The float32 tensor of a `.npy` written by `write(_:to:)`, or nil when it is absent or not of
    /// `shape` (then it is removed: it will be recomputed).
    static func readTensor(_ path: String, shape: [Int]) -> Tensor? {
        guard exists(path) else { return nil }
        if let npy = try? NPYArray(path: path), npy.shape == shape, npy.dtype == .float32 {
            return npy.floatTensor()
        }
        try? FileManager.default.removeItem(atPath: path)
        return nil
    }

    /// `mkdir -p`, then fsync of the parent so the new directory survives a crash.
    static func makeDirectory(_ path: String) throws {
        if isDirectory(path) { return }
        try checkSpace(path)
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw EngineError.posix("mkdir", path: path, errno: (error as NSError).underlyingErrno ?? EIO)
        }
        DurableFiles.syncDirectory((path as NSString).deletingLastPathComponent)
    }

    static func rename(_ from: String, to: String) throws {
        do { try DurableFiles.rename(from, to: to) } catch {
            throw EngineError.posix("rename to '\(to)'", path: from, errno: error.errno)
        }
    }

    /// Hard-links `from` at `to` (same file system), else copies it durably (through `write`, so
    /// that a full disk is `disk_full`, not an I/O error).
    static func linkOrCopy(_ from: String, to: String) throws {
        try checkSpace(to)
        if link(from, to) == 0 { return }
        try write(try read(from), to: to)
    }

    static func remove(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

    static func read(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EngineError(.transient, "cannot read '\(path)'")
        }
        return [UInt8](data)
    }

    /// "sha256:<hex>" of the file at `path`, read in 4 MiB chunks (not through a mapping, so a
    /// large checkpoint does not become resident).
    static func sha256(ofFile path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw EngineError.invalid(
                "cannot open '\(path)' to hash it", hint: "check that the file exists and is readable")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let chunk: Data
            do { chunk = try handle.read(upToCount: 4 << 20) ?? Data() } catch {
                throw EngineError(.transient, "reading '\(path)': \(error.localizedDescription)")
            }
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
        }
        return "sha256:" + hex(hasher.finalize())
    }

    static func sha256(_ bytes: [UInt8]) -> String { "sha256:" + hex(SHA256.hash(data: bytes)) }

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}

extension NSError {
    /// The POSIX errno inside a Foundation file error, if any.
    var underlyingErrno: Int32? {
        if domain == NSPOSIXErrorDomain { return Int32(code) }
        return (userInfo[NSUnderlyingErrorKey] as? NSError)?.underlyingErrno
    }
}
