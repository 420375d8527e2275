// Request bodies of the model endpoints (`/v1/models...`), which forward to the model store's
// library calls. Their results are the store's own Codable result types; the daemon answers with
// `{"result": <that type as JSON>, "text": "<the same rendering `griditd models` prints>"}`, so
// griditctl prints exactly what the offline command prints and needs no change when a result
// type grows a field.

import Foundation
import GriditJobSpec

/// `POST /v1/models/import`.
public struct ImportModelRequest: Codable, Hashable, Sendable {
    /// A pipeline JSON or an exported bundle, as an absolute path the daemon can read.
    public var path: String
    /// `NAME:TAG` to point at the imported version.
    public var name: String
    /// `auto`, `hardlink` or `copy`.
    public var link: String?

    public init(path: String, name: String, link: String? = nil) {
        self.path = path
        self.name = name
        self.link = link
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case path, name, link }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue), in: "the request")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.decode(String.self, forKey: .path)
        name = try c.decode(String.self, forKey: .name)
        link = try c.decodeIfPresent(String.self, forKey: .link)
    }
}

/// `POST /v1/models/tag`: point `target` (`NAME:TAG`) at what `source` resolves to.
public struct TagModelRequest: Codable, Hashable, Sendable {
    public var source: String
    public var target: String

    public init(source: String, target: String) {
        self.source = source
        self.target = target
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case source, target }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue), in: "the request")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        source = try c.decode(String.self, forKey: .source)
        target = try c.decode(String.self, forKey: .target)
    }
}

/// `POST /v1/models/convert`: a new version of what `ref` names with its weights stored in
/// `precision` (only `bf16`), tagged `tag` (default `NAME:TAG-bf16`).
public struct ConvertModelRequest: Codable, Hashable, Sendable {
    public var ref: String
    public var precision: String
    public var tag: String?

    public init(ref: String, precision: String, tag: String? = nil) {
        self.ref = ref
        self.precision = precision
        self.tag = tag
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case ref, precision, tag }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue), in: "the request")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ref = try c.decode(String.self, forKey: .ref)
        precision = try c.decode(String.self, forKey: .precision)
        tag = try c.decodeIfPresent(String.self, forKey: .tag)
    }
}

/// `POST /v1/models/verify`: re-hash one version, or every blob with `all`.
public struct VerifyModelsRequest: Codable, Hashable, Sendable {
    public var reference: String?
    public var all: Bool?

    public init(reference: String? = nil, all: Bool? = nil) {
        self.reference = reference
        self.all = all
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case reference, all }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue), in: "the request")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        reference = try c.decodeIfPresent(String.self, forKey: .reference)
        all = try c.decodeIfPresent(Bool.self, forKey: .all)
    }
}

/// `POST /v1/models/gc`.
public struct GCModelsRequest: Codable, Hashable, Sendable {
    /// Report what would be deleted without deleting it.
    public var dryRun: Bool?

    public init(dryRun: Bool? = nil) { self.dryRun = dryRun }

    enum CodingKeys: String, CodingKey, CaseIterable { case dryRun = "dry_run" }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue), in: "the request")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dryRun = try c.decodeIfPresent(Bool.self, forKey: .dryRun)
    }
}

/// The model operations the daemon forwards to its model store, one per endpoint.
public enum ModelCommand: Hashable, Sendable {
    case list
    case show(reference: String)
    case importPipeline(ImportModelRequest)
    /// Import a body griditctl streamed (`POST /v1/models/upload`), staged by griditd in `file`.
    case importUpload(ModelUpload)
    case tag(TagModelRequest)
    case convert(ConvertModelRequest)
    case remove(reference: String)
    case verify(VerifyModelsRequest)
    case gc(GCModelsRequest)
    case ps
    /// Permission and filesystem checks of the store, as griditd's user sees them (`doctor`).
    case check

    /// Changes the store (or reads every byte of it): root or the admin group only.
    public var requiresAdmin: Bool {
        switch self {
        case .list, .show, .ps, .check: false
        case .importPipeline, .importUpload, .tag, .convert, .remove, .verify, .gc: true
        }
    }

    public var name: String {
        switch self {
        case .list: "list"
        case .show: "show"
        case .importPipeline, .importUpload: "import"
        case .tag: "tag"
        case .convert: "convert"
        case .remove: "rm"
        case .verify: "verify"
        case .gc: "gc"
        case .ps: "ps"
        case .check: "check"
        }
    }
}

/// `POST /v1/models/upload`: a bundle or a pipeline folder's tar streamed as the body, for a
/// path griditd cannot read itself (its unit hides /home and /tmp).
public struct ModelUpload: Hashable, Sendable {
    /// The body, staged in griditd's own folder (removed once answered).
    public var file: String
    /// `bundle` or `pipeline`.
    public var kind: String
    /// The body's SHA-256 as griditctl computed it (`sha256:<hex>`), checked before the import.
    public var sha256: String
    public var name: String?

    public init(file: String, kind: String, sha256: String, name: String?) {
        self.file = file
        self.kind = kind
        self.sha256 = sha256
        self.name = name
    }
}

/// A model command's answer. `result` is the raw JSON of the store's result type.
public struct ModelCommandOutput: Sendable {
    public var result: Data
    /// Human rendering (tables via `renderTable`), ending in a newline.
    public var text: String

    public init(result: Data, text: String) {
        self.result = result
        self.text = text
    }

    /// Encodes `result` with the API's conventions.
    public init<R: Encodable>(encoding result: R, text: String) {
        self.result = APICoding.encode(result)
        self.text = text
    }

    /// The response body: `{"result": ..., "text": "..."}`.
    public var responseBody: Data {
        var body = Data(#"{"result":"#.utf8)
        body.append(result)
        body.append(Data(#","text":"#.utf8))
        body.append(APICoding.encode(text))
        body.append(Data("}".utf8))
        return body
    }
}
