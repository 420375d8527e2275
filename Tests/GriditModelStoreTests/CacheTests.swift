import Foundation
import GriditAPI
import GriditBackend
import GriditCheckpoint
import GriditDiffusion
import GriditModelStore
import GriditModels
import GriditTestSupport
import Synchronization
import Testing

@Suite("Keep-alive cache, shared mappings, ps")
struct CacheTests {
    final class Counter: Sendable {
        let value = Mutex(0)
        func increment() { value.withLock { $0 += 1 } }
        var count: Int { value.withLock { $0 } }
    }

    /// A loaded model: the DiT bound from the shared mapping of its weights blob.
    struct Loaded: Sendable {
        let dit: DiT
        let mapping: MappedFile
    }

    @Test("leases share one load and one mapping; idle entries go after the keep-alive, not before")
    func keepAlive() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        let v1 = try store.importModel(from: try writePipeline(in: dir.file("v1")), name: "tiny:v1")
        let digest = try store.resolve("tiny:v1")
        let spec = try store.resolvePipeline(digest).spec
        let weights = BlobDigest(v1.blobs[2].digest)!
        let clock = TestClock()
        let cache = KeepAliveCache<Loaded>(mappings: store.mappings, keepAlive: 600, now: { clock.now() })
        let loads = Counter()
        func lease() throws -> CacheLease<Loaded> {
            try cache.lease(digest.description, blobs: [weights: spec.stage1.weights], references: ["tiny:v1"]) { ctx in
                loads.increment()
                let mapping = try ctx.map(weights, path: spec.stage1.weights)
                return Loaded(
                    dit: try DiT(config: Tiny.stage1, source: try SafetensorsFile(mapping: mapping)), mapping: mapping)
            }
        }
        let a = try lease()
        let b = try lease()
        #expect(loads.count == 1)
        #expect(a.value.mapping === b.value.mapping, "one mapping per blob")
        // Another model over the same blob gets the same mapping too.
        let other = try store.mappings.map(weights, path: spec.stage1.weights)
        #expect(other === a.value.mapping)

        // In use: listed, loaded, protected, never evicted however long.
        #expect(try store.list(pins: JobPins()).models[0].loaded)
        clock.advance(10_000)
        #expect(cache.evictIdle().isEmpty)
        let ps = store.ps()
        let entry = try #require(ps.entries.first { $0.key == digest.description })
        #expect(entry.leases == 2 && entry.references == ["tiny:v1"] && entry.expiresAt == nil)
        #expect(entry.blobs.map(\.digest) == [weights.description])
        #expect(entry.blobs[0].size == v1.blobs[2].size)
        #expect(entry.blobs[0].resident > 0, "binding touched the header pages at least")
        #expect(ModelPSResult(ps).render().contains("tiny:v1"))

        a.release()
        a.release()  // idempotent
        b.release()
        #expect(cache.secondsUntilEviction(digest.description) == 600)
        clock.advance(599)
        #expect(cache.evictIdle().isEmpty)
        let again = try lease()  // a hit renews the keep-alive
        #expect(loads.count == 1)
        again.release()
        clock.advance(599)
        #expect(cache.evictIdle().isEmpty)
        clock.advance(1)
        #expect(cache.evictIdle() == [digest.description])
        #expect(cache.keys.isEmpty)
        #expect(!(try store.list(pins: JobPins()).models[0].loaded))
        let reloaded = try lease()
        #expect(loads.count == 2, "evicted entries load again")
        #expect(!cache.unload(digest.description), "in use: not unloaded")
        reloaded.release()
        #expect(cache.unload(digest.description))
        #expect(cache.keys.isEmpty)
        #expect(store.ps().entries.allSatisfy { $0.key != digest.description })
        // `other` and the leases' values above still hold the shared mapping: it stays in use.
        #expect(store.mappings.inUse() == [weights])
    }

    @Test("gc keeps the blobs of cached models even when no tag or job references them")
    func cachePinsBlobs() throws {
        let dir = TemporaryDirectory("gms")
        defer { dir.remove() }
        let store = try ModelStore(stateDirectory: dir.file("state"))
        _ = try store.importModel(from: try writePipeline(in: dir.file("v1")), name: "tiny:v1")
        let digest = try store.resolve("tiny:v1")
        let spec = try store.resolvePipeline(digest).spec
        let manifest = try store.manifest(digest)
        var blobs: [BlobDigest: String] = [digest: store.stateDirectory + "/blobs/sha256/" + digest.hex]
        for (blob, (_, path)) in zip(manifest.blobs, spec.files) { blobs[blob.digest] = path }
        let cache = KeepAliveCache<Int>(mappings: store.mappings, keepAlive: 0)
        let lease = try cache.lease(digest.description, blobs: blobs) { _ in 42 }
        _ = try store.remove("tiny:v1", pins: JobPins())
        let kept = try store.gc(pins: JobPins())
        #expect(kept.removedBlobs.isEmpty && kept.keptMapped.count == 5)
        lease.release()
        #expect(cache.evictIdle() == [digest.description])
        #expect(try store.gc(pins: JobPins()).removedBlobs.count == 5)
    }

    @Test("a failed load caches nothing and pins nothing")
    func failedLoad() throws {
        let mappings = BlobMappings()
        let cache = KeepAliveCache<Int>(mappings: mappings)
        struct Boom: Error {}
        let blob = BlobDigest(of: [1, 2, 3])
        #expect(throws: Boom.self) { try cache.lease("k", blobs: [blob: "/nonexistent"]) { _ in throw Boom() } }
        #expect(cache.keys.isEmpty)
        #expect(mappings.inUse().isEmpty)
    }
}
