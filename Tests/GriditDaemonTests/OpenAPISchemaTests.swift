// The model endpoints' answers from a real griditd, checked against docs/openapi.yaml's schemas
// (issue 17): a field the server sends that the document lacks, a missing required field or a
// wrong type fails the test.

import Foundation
import GriditAPI
import GriditCLI
import GriditJobSpec
import GriditTestSupport
import Testing
import Yams

/// A JSON Schema check of the subset docs/openapi.yaml uses: `$ref`, `type`, `required`,
/// `properties`, `additionalProperties`, `items`, `enum`, `pattern`, `minimum`, `oneOf`.
struct SchemaChecker {
    let document: [String: Any]

    /// The schema of a route's 200 answer (through `components/responses`).
    func answerSchema(_ method: String, _ path: String) throws -> [String: Any] {
        let paths = try #require(document["paths"] as? [String: Any])
        let operation = try #require((paths[path] as? [String: Any])?[method.lowercased()] as? [String: Any])
        let answer = try #require((operation["responses"] as? [String: Any])?["200"] as? [String: Any])
        let response = try resolve(answer)
        let content = try #require((response["content"] as? [String: Any])?["application/json"] as? [String: Any])
        return try #require(content["schema"] as? [String: Any])
    }

    func resolve(_ node: [String: Any]) throws -> [String: Any] {
        guard let ref = node["$ref"] as? String else { return node }
        var target: Any = document
        for key in ref.dropFirst(2).split(separator: "/") {
            target = try #require((target as? [String: Any])?[String(key)], "unresolved \(ref)")
        }
        return try resolve(try #require(target as? [String: Any]))
    }

    /// Every way `value` breaks `schema`, as "at.path: problem".
    func problems(_ value: JSONValue, _ schemaNode: [String: Any], at path: String = "$") throws -> [String] {
        let schema = try resolve(schemaNode)
        if let options = schema["oneOf"] as? [[String: Any]] {
            let matching = try options.filter { try problems(value, $0, at: path).isEmpty }
            return matching.count == 1 ? [] : ["\(path): matches \(matching.count) of oneOf"]
        }
        var found: [String] = []
        if let allowed = schema["enum"] as? [Any] {
            let text: String? =
                switch value {
                case .string(let s): s
                case .integer(let i): String(i)
                default: nil
                }
            if !allowed.contains(where: { "\($0)" == text }) { found.append("\(path): \(value) not in \(allowed)") }
        }
        switch (schema["type"] as? String, value) {
        case (nil, _): break
        case ("object", .object(let members)):
            for key in schema["required"] as? [String] ?? [] where members[key] == nil {
                found.append("\(path): missing required '\(key)'")
            }
            let properties = schema["properties"] as? [String: Any] ?? [:]
            for (key, member) in members.sorted(by: { $0.key < $1.key }) {
                if let property = properties[key] as? [String: Any] {
                    found += try problems(member, property, at: "\(path).\(key)")
                } else if let extra = schema["additionalProperties"] as? [String: Any] {
                    found += try problems(member, extra, at: "\(path).\(key)")
                } else if schema["additionalProperties"] as? Bool == false {
                    found.append("\(path): '\(key)' is not in the document")
                }
            }
        case ("array", .array(let items)):
            if let item = schema["items"] as? [String: Any] {
                for (i, element) in items.enumerated() { found += try problems(element, item, at: "\(path)[\(i)]") }
            }
        case ("string", .string(let s)):
            if let pattern = schema["pattern"] as? String, s.range(of: pattern, options: .regularExpression) == nil {
                found.append("\(path): '\(s)' does not match \(pattern)")
            }
            if schema["format"] as? String == "date-time", (try? Timestamp(from: s)) == nil {
                found.append("\(path): '\(s)' is not a date-time")
            }
        case ("integer", .integer(let i)):
            if let minimum = schema["minimum"] as? Int, i < minimum { found.append("\(path): \(i) < \(minimum)") }
        case ("number", .integer), ("number", .number), ("boolean", .bool): break
        case (let type?, _):
            if !(schema["nullable"] as? Bool == true && value == .null) {
                found.append("\(path): \(value) is not of type \(type)")
            }
        }
        return found
    }
}

extension Timestamp {
    fileprivate init(from text: String) throws {
        self = try JSONDecoder().decode(Timestamp.self, from: Data("\"\(text)\"".utf8))
    }
}

@Suite("OpenAPI schemas against real answers", .serialized, .offPool)
struct OpenAPISchemaTests {
    @Test("every /v1/models route answers what docs/openapi.yaml describes")
    func modelAnswersMatchSchemas() throws {
        let yaml = try String(contentsOfFile: OpenAPITests.documentPath, encoding: .utf8)
        let checker = SchemaChecker(document: try #require(try Yams.load(yaml: yaml) as? [String: Any]))
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(directory: dir, model: tinyPipeline())
        defer { daemon.stop() }
        // A job first, so that `ps` has a loaded model and `show` a pinned job's history.
        let job = try daemon.client.post(
            "/v1/jobs", SubmitJobRequest(spec: JobSpec(length: 4, parameters: .init(seed: 1))),
            as: SubmitJobResponse.self
        ).job.id
        #expect(try waitForJob(daemon, job).state == .succeeded)

        func check(_ method: String, _ template: String, _ path: String, body: (any Encodable)? = nil) throws {
            let reply = try daemon.client.call(method, path, body: body.map { APICoding.encode($0) })
            let answer = try #require(JSONValue(json: reply.body), "\(method) \(path): not JSON")
            let problems = try checker.problems(answer, try checker.answerSchema(method, template))
            #expect(problems.isEmpty, "\(method) \(path):\n\(problems.joined(separator: "\n"))\n\(answer.prettyText)")
        }
        let pipeline = tinyPipeline()
        try check(
            "POST", "/v1/models/import", "/v1/models/import", body: ImportModelRequest(path: pipeline, name: "tiny:b"))
        // Again: `previous` and an `existing` blob.
        try check(
            "POST", "/v1/models/import", "/v1/models/import",
            body: ImportModelRequest(path: pipeline, name: "tiny:b", link: "copy"))
        try check(
            "POST", "/v1/models/tag", "/v1/models/tag", body: TagModelRequest(source: "tiny:latest", target: "t:c"))
        try check(
            "POST", "/v1/models/convert", "/v1/models/convert",
            body: ConvertModelRequest(ref: "tiny:latest", precision: "bf16"))
        try check("GET", "/v1/models", "/v1/models")
        try check("GET", "/v1/models/ps", "/v1/models/ps")
        try check("GET", "/v1/models/check", "/v1/models/check")
        try check("GET", "/v1/models/{ref}", "/v1/models/tiny:latest")
        try check("POST", "/v1/models/verify", "/v1/models/verify", body: VerifyModelsRequest(all: true))
        try check("DELETE", "/v1/models/{ref}", "/v1/models/t:c")
        try check("POST", "/v1/models/gc", "/v1/models/gc", body: GCModelsRequest(dryRun: true))
        #expect(daemon.stop() == 0)
    }

    @Test("the checker finds what a document lacks")
    func checkerCatchesDrift() throws {
        let checker = SchemaChecker(document: [
            "components": [
                "schemas": [
                    "T": [
                        "type": "object", "additionalProperties": false, "required": ["a"],
                        "properties": ["a": ["type": "integer"], "d": ["type": "string", "pattern": "^x$"]],
                    ]
                ]
            ]
        ])
        let schema: [String: Any] = ["$ref": "#/components/schemas/T"]
        #expect(try checker.problems(.object(["a": .integer(1), "d": .string("x")]), schema).isEmpty)
        #expect(try checker.problems(.object(["a": .integer(1), "b": .bool(true)]), schema).count == 1)
        #expect(try checker.problems(.object(["d": .string("y")]), schema).count == 2)
        #expect(try checker.problems(.object(["a": .string("1")]), schema).count == 1)
    }
}
