// What the daemon needs from the model store (GriditModelStore), as a protocol so that the
// daemon builds and is tested without it (docs/MODEL_STORE.md). The store adapter
// maps its errors to `APIError` (`not_found`, `bad_request`, `conflict`, `digest_mismatch`, ...).

import GriditAPI

public protocol ModelCatalog: Sendable {
    /// `NAME:TAG`, `NAME@sha256:<hex>` or `sha256:<hex>` → the manifest digest (`sha256:<hex>`)
    /// the job will record; nil → the store's only model (an empty store or several names is a
    /// `not_found` / `bad_request` naming `griditctl models import` or `--model`). Throws
    /// `not_found` (naming the reference and `griditctl models list`) or `bad_request` for a
    /// malformed reference.
    func resolve(_ reference: String?) async throws(APIError) -> String

    /// Runs one model command (the same library call `griditd models ...` makes) for `caller`
    /// and returns its Codable result plus the human rendering. Files the command reads on the
    /// caller's behalf (an import's) must be ones the caller could read.
    func perform(_ command: ModelCommand, for caller: Caller) async throws(APIError) -> ModelCommandOutput

    /// What is mapped now (the keep-alive cache), for `status`.
    func loadedModels() async -> [LoadedModel]

    /// A version's single-file bundle (`griditctl models export`), made piece by piece as the
    /// answer is sent: nothing is staged on disk. Errors as `resolve`'s.
    func exportBundle(_ reference: String) async throws(APIError) -> any BundlePieces
}

/// A bundle's bytes in order; nil after the last. A failure midway (a blob whose bytes no longer
/// match its digest, quarantined by then) ends the answer early, and the client sees it cut.
public protocol BundlePieces: Sendable {
    func next() async throws(APIError) -> [UInt8]?
}
