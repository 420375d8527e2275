import CModelStore
import Foundation
import Glibc
import GriditAPI
import GriditDiffusion
import GriditModelStore
import GriditModels
import GriditTestSupport
import Testing

/// One entry of a hand-made tar.
struct TarEntry {
    enum Kind {
        case file, directory
        case symlink(String)
        case hardlink(String)
        case characterDevice
    }
    var name: String
    var kind: Kind = .file
    var data: [UInt8] = []
}

/// Writes a tar with libarchive (what a hostile bundle could hold).
func writeTar(_ path: String, _ entries: [TarEntry]) throws {
    let a = archive_write_new()!
    defer { archive_write_free(a) }
    archive_write_set_format_pax_restricted(a)
    guard archive_write_open_filename(a, path) == ARCHIVE_OK else { throw CocoaError(.fileWriteUnknown) }
    for item in entries {
        let e = archive_entry_new()!
        defer { archive_entry_free(e) }
        archive_entry_set_pathname(e, item.name)
        archive_entry_set_perm(e, 0o644)
        switch item.kind {
        case .file:
            archive_entry_set_filetype(e, 0o100000)
            archive_entry_set_size(e, Int64(item.data.count))
        case .directory:
            archive_entry_set_filetype(e, 0o040000)
        case .symlink(let target):
            archive_entry_set_filetype(e, 0o120000)
            archive_entry_set_symlink(e, target)
        case .hardlink(let target):
            archive_entry_set_filetype(e, 0o100000)
            archive_entry_set_hardlink(e, target)
        case .characterDevice:
            archive_entry_set_filetype(e, 0o020000)
            archive_entry_set_rdev(e, 259)  // makedev(1, 3): /dev/null
        }
        guard archive_write_header(a, e) == ARCHIVE_OK else { throw CocoaError(.fileWriteUnknown) }
        if case .file = item.kind, !item.data.isEmpty {
            _ = item.data.withUnsafeBytes { archive_write_data(a, $0.baseAddress, $0.count) }
        }
    }
    archive_write_close(a)
}

/// The entries of a tar (name, bytes), read with libarchive.
func readTar(_ path: String) throws -> [(String, [UInt8])] {
    let a = archive_read_new()!
    defer { archive_read_free(a) }
    archive_read_support_format_tar(a)
    guard archive_read_open_filename(a, path, 1 << 16) == ARCHIVE_OK else { throw CocoaError(.fileReadUnknown) }
    var out: [(String, [UInt8])] = []
    var entry: OpaquePointer?
    while archive_read_next_header(a, &entry) == ARCHIVE_OK {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { archive_read_data(a, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        out.append((String(cString: archive_entry_pathname(entry!)), bytes))
    }
    return out
}

@Suite("Bundles: export and import")
struct BundleTests {
    @Test("export -> import on another store gives the same version; exports are byte-identical")
    func roundTrip() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let a = try ModelStore(stateDirectory: dir.file("a"))
        let imported = try a.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        let exported = try a.export("tiny:v1", to: dir.file("tiny.tar"))
        #expect(exported.blobs == 5 && exported.references == ["tiny:v1"])
        _ = try a.export("tiny:v1", to: dir.file("again.tar"))
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: dir.file("tiny.tar")))
                == Data(contentsOf: URL(fileURLWithPath: dir.file("again.tar"))))
        let names = try readTar(dir.file("tiny.tar")).map(\.0)
        #expect(names.first == "gridit-bundle.json")
        #expect(names.dropFirst().allSatisfy { $0.hasPrefix("blobs/sha256/") })

        let b = try ModelStore(stateDirectory: dir.file("b"))
        let result = try b.importModel(from: dir.file("tiny.tar"))
        #expect(result.reference == "tiny:v1" && result.digest == imported.digest)
        #expect(result.bytesWritten == imported.size)
        #expect(
            try b.show("tiny:v1", pins: JobPins()).blobs.map(\.digest)
                == a.show("tiny:v1", pins: JobPins()).blobs.map(\.digest))
        #expect(try b.verify(nil).ok)
        _ = try b.resolvePipeline(try b.resolve("tiny:v1"))
        // --name overrides the bundle's tags; importing a known version writes nothing.
        let renamed = try b.importModel(from: dir.file("tiny.tar"), name: "copy:v9")
        #expect(renamed.reference == "copy:v9" && renamed.bytesWritten == 0)
    }

    @Test(
        "a bundle read piece by piece (griditd's download) is the file's bytes, even if gc removes the version midway")
    func pieces() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let a = try ModelStore(stateDirectory: dir.file("a"))
        _ = try a.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        _ = try a.export("tiny:v1", to: dir.file("tiny.tar"))
        let bundle = try a.exportStream("tiny:v1", name: "the test's download")
        var bytes = try #require(try a.exportPiece(bundle, "tiny:v1"))
        _ = try a.remove("tiny:v1", pins: JobPins())
        _ = try a.gc(pins: JobPins())
        #expect(try FileManager.default.contentsOfDirectory(atPath: a.stateDirectory + "/blobs/sha256").isEmpty)
        while let piece = try a.exportPiece(bundle, "tiny:v1") { bytes += piece }
        #expect(Data(bytes) == (try Data(contentsOf: URL(fileURLWithPath: dir.file("tiny.tar")))))
    }

    @Test("a bundle with a flipped byte is refused and nothing is imported")
    func corruptBundle() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let a = try ModelStore(stateDirectory: dir.file("a"))
        _ = try a.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        _ = try a.export("tiny:v1", to: dir.file("tiny.tar"))
        let entries = try readTar(dir.file("tiny.tar"))
        var tampered = entries.map { TarEntry(name: $0.0, data: $0.1) }
        let victim = tampered.indices.max { tampered[$0].data.count < tampered[$1].data.count }!
        tampered[victim].data[tampered[victim].data.count / 2] ^= 1
        try writeTar(dir.file("bad.tar"), tampered)

        let b = try ModelStore(stateDirectory: dir.file("b"))
        let before = try StoreSnapshot(b)
        let error = storeError { try b.importModel(from: dir.file("bad.tar")) }
        #expect(error?.code == .digestMismatch)
        #expect(error?.message.contains(tampered[victim].name) == true)
        #expect(try StoreSnapshot(b) == before)
    }

    /// A valid bundle's entries plus `extra` at `position`, then expects import to fail naming
    /// `mention`, with the store unchanged.
    func expectHostile(_ extra: [TarEntry], at position: Int = 1, mention: String) throws {
        try expectHostile({ $0.insert(contentsOf: extra, at: position) }, mention: mention)
    }

    func expectHostile(_ modify: (inout [TarEntry]) -> Void, mention: String) throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let a = try ModelStore(stateDirectory: dir.file("a"))
        _ = try a.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        _ = try a.export("tiny:v1", to: dir.file("tiny.tar"))
        var entries = try readTar(dir.file("tiny.tar")).map { TarEntry(name: $0.0, data: $0.1) }
        modify(&entries)
        try writeTar(dir.file("hostile.tar"), entries)

        let b = try ModelStore(stateDirectory: dir.file("b"))
        let before = try StoreSnapshot(b)
        let error = storeError { try b.importModel(from: dir.file("hostile.tar")) }
        #expect(error?.code == .invalidInput, "\(String(describing: error))")
        #expect(error?.message.contains(mention) == true, "\(String(describing: error))")
        #expect(error?.message.contains("nothing was imported") == true)
        #expect(try StoreSnapshot(b) == before)
        #expect(!FileManager.default.fileExists(atPath: dir.file("evil")), "nothing was written outside the store")
    }

    @Test func parentPath() throws { try expectHostile([TarEntry(name: "../evil", data: [1])], mention: "'..'") }
    @Test func nestedParentPath() throws {
        try expectHostile([TarEntry(name: "blobs/../../evil", data: [1])], mention: "'..'")
    }
    @Test func absolutePath() throws {
        try expectHostile([TarEntry(name: "/tmp/evil", data: [1])], mention: "absolute path")
    }
    @Test func symlink() throws {
        try expectHostile([TarEntry(name: "blobs/sha256/x", kind: .symlink("/etc/passwd"))], mention: "symbolic link")
    }
    @Test func hardlink() throws {
        try expectHostile(
            [TarEntry(name: "blobs/sha256/y", kind: .hardlink("gridit-bundle.json"))], at: 2, mention: "hard link")
    }
    @Test func device() throws {
        try expectHostile([TarEntry(name: "blobs/null", kind: .characterDevice)], mention: "device")
    }
    @Test func unknownEntry() throws {
        try expectHostile([TarEntry(name: "notes.txt", data: [1])], mention: "unexpected entry")
    }
    @Test func unknownDirectory() throws {
        try expectHostile([TarEntry(name: "etc/", kind: .directory)], mention: "unexpected directory")
    }
    @Test func unlistedBlob() throws {
        let data: [UInt8] = [1, 2, 3]
        try expectHostile(
            [TarEntry(name: "blobs/sha256/" + BlobDigest(of: data).hex, data: data)], mention: "does not list")
    }
    @Test("a bundle of many blobs is refused at the first one too many, before it can hold griditd's descriptors")
    func tooManyBlobs() throws {
        let many = (0..<100).map { i -> TarEntry in
            let data = Array("blob \(i)".utf8)
            return TarEntry(name: "blobs/sha256/" + BlobDigest(of: data).hex, data: data)
        }
        try expectHostile(many, mention: "more than 9 blobs")
    }
    @Test func duplicateEntry() throws {
        try expectHostile({ $0.insert($0[1], at: 2) }, mention: "appears twice")
    }

    @Test("a truncated bundle is refused")
    func truncatedBundle() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let a = try ModelStore(stateDirectory: dir.file("a"))
        _ = try a.importModel(from: try writePipeline(in: dir.file("src")), name: "tiny:v1", link: .copy)
        _ = try a.export("tiny:v1", to: dir.file("tiny.tar"))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir.file("tiny.tar")))
        try bytes.prefix(bytes.count * 2 / 3).write(to: URL(fileURLWithPath: dir.file("cut.tar")))
        let b = try ModelStore(stateDirectory: dir.file("b"))
        let before = try StoreSnapshot(b)
        let error = storeError { try b.importModel(from: dir.file("cut.tar")) }
        #expect(error?.code == .invalidInput)
        #expect(error?.message.contains("truncated") == true, "\(String(describing: error))")
        #expect(try StoreSnapshot(b) == before)
    }
}
