import Foundation
import HTTPTypes
import Testing

@testable import GriditDaemon

/// docs/openapi.yaml describes exactly the server's routes: same paths, same methods.
@Suite("OpenAPI document")
struct OpenAPITests {
    static var documentPath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/openapi.yaml").path
    }

    /// `(METHOD, /path)` pairs under `paths:` (two-space path keys, four-space method keys).
    static func documentedOperations() throws -> Set<String> {
        let text = try String(contentsOfFile: documentPath, encoding: .utf8)
        var operations: Set<String> = []
        var inPaths = false
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "paths:" {
                inPaths = true
                continue
            }
            if inPaths, let first = line.first, first != " " { break }  // the next top-level key
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                current = String(line.dropFirst(2).dropLast())
            } else if let path = current, line.hasPrefix("    "), !line.hasPrefix("     ") {
                let key = line.dropFirst(4).prefix(while: { $0 != ":" })
                if ["get", "post", "put", "delete", "patch", "head"].contains(String(key)) {
                    operations.insert("\(key.uppercased()) \(path)")
                }
            }
        }
        return operations
    }

    @Test("every route is documented and every documented operation is served")
    func documentMatchesRoutes() throws {
        let served = Set(
            ControlAPI.routes.map { route in
                "\(route.method.rawValue) " + route.template.replacingOccurrences(of: "...}", with: "}")
            })
        let documented = try Self.documentedOperations()
        #expect(documented.count > 10, "the parser found no operations in \(Self.documentPath)")
        #expect(served.subtracting(documented).isEmpty, "undocumented: \(served.subtracting(documented).sorted())")
        #expect(
            documented.subtracting(served).isEmpty,
            "documented but not served: \(documented.subtracting(served).sorted())")
    }

    @Test("every error code the API uses is in the document's enum")
    func errorCodesDocumented() throws {
        let text = try String(contentsOfFile: Self.documentPath, encoding: .utf8)
        for code in [
            "bad_request", "not_found", "forbidden", "conflict", "invalid_transition", "payload_too_large",
            "method_not_allowed", "queue_full", "user_limit", "request_timeout", "not_implemented", "unavailable",
            "digest_mismatch", "internal",
        ] {
            #expect(text.contains(code), "\(code) missing from docs/openapi.yaml")
        }
    }
}
