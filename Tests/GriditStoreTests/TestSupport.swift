import Foundation
import GriditStore

/// A fixed instant plus `seconds`: every test passes its clock explicitly.
func at(_ seconds: Double) -> Date {
    Date(timeIntervalSince1970: 1_700_000_000 + seconds)
}

/// A fresh directory under the system temporary directory, removed by `remove()`.
struct TemporaryDirectory: Sendable {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("gridit-store-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The repository root, found from this file's path (Tests/GriditStoreTests/TestSupport.swift).
func repositoryRoot(_ filePath: String = #filePath) -> URL {
    URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// Runs `body` and returns the `StoreError` it throws (nil if it does not throw one).
func storeError<T>(_ body: () async throws -> T) async -> StoreError? {
    do {
        _ = try await body()
        return nil
    } catch let error as StoreError {
        return error
    } catch {
        return StoreError(.database, "unexpected non-StoreError: \(error)")
    }
}

let sampleParams = #"{"model":"gridit-b","seed":1}"#

func submission(priority: Int = 0, key: String? = nil, maxAttempts: Int = 3, length: Int = 16, notBefore: Date? = nil) -> JobSubmission {
    JobSubmission(
        params: sampleParams, length: length, priority: priority, idempotencyKey: key,
        maxAttempts: maxAttempts, notBefore: notBefore)
}
