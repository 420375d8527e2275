import Foundation
import GriditCheckpoint
import Synchronization

/// The blobs this process uses: one shared read-only mapping per blob (every model built from the
/// same weights file reads the same pages), and pins that protect blobs from gc while a loaded
/// model uses them. `ModelStore.gc` skips every blob in `inUse()`; `ModelStore.ps` lists them.
public final class BlobMappings: Sendable {
    private struct Shared: Sendable {
        weak var file: MappedFile?
        let path: String
    }
    private struct Pin: Sendable {
        let owner: String
        let blobs: [BlobDigest: String]
    }
    private struct State: Sendable {
        var shared: [BlobDigest: Shared] = [:]
        var pins: [UInt64: Pin] = [:]
        var reporters: [UInt64: @Sendable () -> [CacheReport]] = [:]
        var nextID: UInt64 = 0
    }
    private let state = Mutex(State())

    public init() {}

    /// The mapping of `digest` at `path`: the one already made if any caller still holds it, else
    /// a new one. Mapping reads nothing; pages come in as tensors are used.
    public func map(_ digest: BlobDigest, path: String) throws(ModelStoreError) -> MappedFile {
        let result: Result<MappedFile, ModelStoreError> = state.withLock { s in
            if let file = s.shared[digest]?.file { return .success(file) }
            do {
                let file = try MappedFile(path: path)
                s.shared[digest] = Shared(file: file, path: path)
                return .success(file)
            } catch {
                return .failure(ModelStoreError(.io, "mapping blob \(digest): \(error)"))
            }
        }
        return try result.get()
    }

    /// Records that `owner` uses `blobs` (digest → path) until the pin is released; for loaders
    /// that map files themselves.
    public func pin(_ blobs: [BlobDigest: String], owner: String) -> MappingPin {
        let id = state.withLock { s in
            s.nextID += 1
            s.pins[s.nextID] = Pin(owner: owner, blobs: blobs)
            return s.nextID
        }
        return MappingPin { [weak self] in
            _ = self?.state.withLock { s in s.pins.removeValue(forKey: id) }
        }
    }

    /// Every blob mapped through `map` and still held, or pinned, or held by a reported cache
    /// (the engine's worker process's, loaded or loading).
    public func inUse() -> Set<BlobDigest> {
        let (held, reporters) = state.withLock { s in
            var digests = Set(s.shared.compactMap { $0.value.file == nil ? nil : $0.key })
            for pin in s.pins.values { digests.formUnion(pin.blobs.keys) }
            return (digests, Array(s.reporters.values))
        }
        return reporters.flatMap { $0() }.reduce(into: held) { $0.formUnion($1.blobs.keys) }
    }

    struct Snapshot {
        var pins: [(owner: String, blobs: [BlobDigest: String])]
        var shared: [BlobDigest: (path: String, file: MappedFile)]
        var caches: [CacheReport]
    }

    func snapshot() -> Snapshot {
        let (pins, shared, reporters) = state.withLock { s in
            (
                s.pins.sorted { $0.key < $1.key }.map { ($0.value.owner, $0.value.blobs) },
                s.shared.compactMapValues { entry in entry.file.map { (entry.path, $0) } },
                Array(s.reporters.values)
            )
        }
        return Snapshot(pins: pins, shared: shared, caches: reporters.flatMap { $0() })
    }

    /// Adds caches to what `ps` lists and `gc` keeps: this process's, or those another process
    /// (griditd's engine worker) reports.
    public func addReporter(_ report: @escaping @Sendable () -> [CacheReport]) {
        state.withLock { s in
            s.nextID += 1
            s.reporters[s.nextID] = report
        }
    }
}

/// A pin of `BlobMappings`: released by `release()` or when the last reference goes.
public final class MappingPin: Sendable {
    private let onRelease: Mutex<(@Sendable () -> Void)?>

    init(_ onRelease: @escaping @Sendable () -> Void) { self.onRelease = Mutex(onRelease) }

    public func release() {
        let action = onRelease.withLock { a in
            defer { a = nil }
            return a
        }
        action?()
    }

    deinit { release() }
}

/// What `ps` shows of one cache entry; what griditd's engine worker sends of its cache.
public struct CacheReport: Sendable, Codable, Equatable {
    public var key: String
    public var references: [String]
    public var leases: Int
    public var lastUsed: Date?
    public var expiresAt: Date?
    public var blobs: [BlobDigest: String]
    /// The process that holds it (nil: this one).
    public var pid: Int32?
}

/// Loaded models kept while in use and for `keepAlive` seconds after their last use, then dropped
/// (which unmaps their weights once nothing else holds them). Generic over what is loaded, so it
/// knows nothing of the engine: the daemon caches its loaded pipelines by manifest digest.
///
/// `lease` returns the entry for `key`, loading it first if needed (one load at a time; hits never
/// wait for a load). Every lease must be released (or dropped); `evictIdle()` (called by a periodic
/// service) drops entries idle past their keep-alive. All times come from the injected clock.
public final class KeepAliveCache<Value: Sendable>: Sendable {
    /// What a loader gets: the shared mappings, so that models sharing a blob share its pages.
    public struct LoadContext: Sendable {
        public let key: String
        let mappings: BlobMappings

        public func map(_ digest: BlobDigest, path: String) throws(ModelStoreError) -> MappedFile {
            try mappings.map(digest, path: path)
        }
    }

    private struct Entry: Sendable {
        let value: Value
        let pin: MappingPin
        let blobs: [BlobDigest: String]
        var references: [String]
        var leases: Int
        var lastUsed: Date
        var keepAlive: TimeInterval
    }

    public let keepAlive: TimeInterval
    private let mappings: BlobMappings
    private let now: @Sendable () -> Date
    private let entries = Mutex([String: Entry]())
    private let loadLock = NSLock()

    /// - Parameters:
    ///   - keepAlive: seconds an idle entry stays loaded (default 10 minutes).
    ///   - now: the clock (tests inject one).
    public init(mappings: BlobMappings, keepAlive: TimeInterval = 600, now: @escaping @Sendable () -> Date = { Date() })
    {
        self.mappings = mappings
        self.keepAlive = keepAlive
        self.now = now
        mappings.addReporter { [weak self] in self?.report() ?? [] }
    }

    /// The value for `key`, loaded by `load` if it is not cached. The entry's `blobs` are pinned
    /// (safe from gc, listed by ps) while it is cached. `keepAlive` overrides the default for this
    /// entry.
    public func lease(
        _ key: String, blobs: [BlobDigest: String], references: [String] = [], keepAlive: TimeInterval? = nil,
        load: (LoadContext) throws -> Value
    ) throws -> CacheLease<Value> {
        if let hit = take(key) { return hit }
        loadLock.lock()
        defer { loadLock.unlock() }
        if let hit = take(key) { return hit }
        let pin = mappings.pin(blobs, owner: key)
        let value = try load(LoadContext(key: key, mappings: mappings))
        let entry = Entry(
            value: value, pin: pin, blobs: blobs, references: references, leases: 1,
            lastUsed: now(), keepAlive: keepAlive ?? self.keepAlive)
        entries.withLock { $0[key] = entry }
        return CacheLease(key: key, value: value) { [weak self] in self?.release(key) }
    }

    private func take(_ key: String) -> CacheLease<Value>? {
        let value: Value? = entries.withLock { e in
            guard var entry = e[key] else { return nil }
            entry.leases += 1
            entry.lastUsed = now()
            e[key] = entry
            return entry.value
        }
        return value.map { v in CacheLease(key: key, value: v) { [weak self] in self?.release(key) } }
    }

    private func release(_ key: String) {
        entries.withLock { e in
            guard var entry = e[key] else { return }
            entry.leases -= 1
            entry.lastUsed = now()
            e[key] = entry
        }
    }

    /// Drops entries without leases idle for their keep-alive or longer; returns their keys.
    @discardableResult
    public func evictIdle() -> [String] {
        let t = now()
        let evicted: [(key: String, entry: Entry)] = entries.withLock { e in
            let idle = e.filter { $0.value.leases == 0 && t.timeIntervalSince($0.value.lastUsed) >= $0.value.keepAlive }
            for key in idle.keys { e.removeValue(forKey: key) }
            return idle.map { ($0.key, $0.value) }.sorted { $0.key < $1.key }
        }
        for item in evicted { item.entry.pin.release() }
        return evicted.map(\.key)
    }

    /// Drops `key` now if nothing leases it; false if it is in use or not cached.
    @discardableResult
    public func unload(_ key: String) -> Bool {
        let entry: Entry? = entries.withLock { e in
            guard let entry = e[key], entry.leases == 0 else { return nil }
            return e.removeValue(forKey: key)
        }
        entry?.pin.release()
        return entry != nil
    }

    /// Cached keys, sorted.
    public var keys: [String] { entries.withLock { $0.keys.sorted() } }

    /// Seconds until `key` is evicted if it stays idle (nil: not cached or leased).
    public func secondsUntilEviction(_ key: String) -> TimeInterval? {
        let t = now()
        return entries.withLock { e in
            guard let entry = e[key], entry.leases == 0 else { return nil }
            return max(0, entry.keepAlive - t.timeIntervalSince(entry.lastUsed))
        }
    }

    /// What is cached, as `ps` shows it (`pid`: the process to name as its holder).
    public func report(pid: Int32? = nil) -> [CacheReport] {
        entries.withLock { e in
            e.sorted { $0.key < $1.key }.map { key, entry in
                CacheReport(
                    key: key, references: entry.references, leases: entry.leases, lastUsed: entry.lastUsed,
                    expiresAt: entry.leases == 0 ? entry.lastUsed.addingTimeInterval(entry.keepAlive) : nil,
                    blobs: entry.blobs, pid: pid)
            }
        }
    }
}

/// A use of a cached value; release it (or drop it) when done.
public final class CacheLease<Value: Sendable>: Sendable {
    public let key: String
    public let value: Value
    private let pin: MappingPin

    init(key: String, value: Value, onRelease: @escaping @Sendable () -> Void) {
        self.key = key
        self.value = value
        self.pin = MappingPin(onRelease)
    }

    /// Idempotent.
    public func release() { pin.release() }
}
