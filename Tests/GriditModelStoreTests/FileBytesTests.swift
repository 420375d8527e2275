import Foundation
import GriditTestSupport
import Testing

@testable import GriditModelStore

#if canImport(Glibc)
import Glibc
#endif

@Suite("FileBytes")
struct FileBytesTests {
    @Test("reads files whole: empty ones, /proc ones that stat as 0 bytes; never a FIFO, never waiting")
    func reads() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let empty = dir.file("empty"), text = dir.file("text"), fifo = dir.file("fifo")
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        _ = FileManager.default.createFile(atPath: text, contents: Data("hello\n".utf8))
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(FileBytes.read(empty) == [])
        #expect(FileBytes.read(text) == Array("hello\n".utf8))
        #expect(FileBytes.read(text, limit: 3) == Array("hel".utf8))
        #expect(FileBytes.read(fifo) == nil, "a FIFO is refused at once (no writer would block the open)")
        #expect(FileBytes.read(dir.path) == nil)
        #expect(FileBytes.read(dir.file("missing")) == nil)
        let maps = try #require(FileBytes.read("/proc/self/maps"))
        #expect(String(decoding: maps, as: UTF8.self).contains("/"), "a /proc file that stats as 0 bytes is read whole")
    }
}
