import Foundation
import GriditAPI
import Testing

@Test func jsonValueKeepsIntegersBooleansAndNumbersApart() throws {
    let text = #"{"a":1,"b":true,"c":0.5,"d":null,"e":["x",2],"f":{"g":-3}}"#
    let value = try #require(JSONValue(json: Data(text.utf8)))
    #expect(value["a"] == .integer(1))
    #expect(value["b"] == .bool(true))
    #expect(value["c"] == .number(0.5))
    #expect(value["d"] == .null)
    #expect(value["e"] == .array([.string("x"), .integer(2)]))
    #expect(value["f"]?["g"] == .integer(-3))
    let again = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(value))
    #expect(again == value)
}

@Test func timestampsAreRFC3339WhateverTheEncoderStrategy() throws {
    let t = Timestamp(unixMillis: 1_700_000_000_123)
    let encoder = JSONEncoder()
    encoder.dateEncodingStrategy = .secondsSince1970
    let text = String(decoding: try encoder.encode([t]), as: UTF8.self)
    #expect(text == #"["2023-11-14T22:13:20.123Z"]"#)
    #expect(try JSONDecoder().decode([Timestamp].self, from: Data(text.utf8)) == [t])
    #expect(
        try JSONDecoder().decode([Timestamp].self, from: Data(#"["2023-11-14T22:13:20Z"]"#.utf8))[0].unixMillis
            == 1_700_000_000_000)
}

@Test func agesReadNaturally() {
    let now = Date(timeIntervalSince1970: 1_000_000)
    #expect(formatAge(now, now: now) == "just now")
    #expect(formatAge(now - 61, now: now) == "1 minute ago")
    #expect(formatAge(now - 7200, now: now) == "2 hours ago")
    #expect(formatAge(now - 86_400 * 3, now: now) == "3 days ago")
}

@Test func listTableShowsUntaggedVersionsAndSiteRoots() {
    let created = Timestamp(Date(timeIntervalSince1970: 1_000_000))
    let list = ModelListResult(models: [
        ModelListEntry(
            name: "md", tag: "v1", digest: "sha256:" + String(repeating: "ab", count: 32), size: 12_000_000,
            created: created, loaded: true, jobs: 2, root: nil),
        ModelListEntry(
            name: nil, tag: nil, digest: "sha256:" + String(repeating: "cd", count: 32), size: 1500,
            created: created, loaded: false, jobs: 0, root: "/srv/site"),
    ])
    #expect(
        list.render(now: created.date + 3600) == """
            NAME     TAG      DIGEST         SIZE     CREATED      LOADED   JOBS   ROOT
            md       v1       abababababab   12 MB    1 hour ago   yes      2      local
            <none>   <none>   cdcdcdcdcdcd   1.5 KB   1 hour ago   no       0      /srv/site

            """)
    #expect(ModelListResult(models: []).render().contains("models import"))
}

@Test func resultKeysAreSnakeCase() throws {
    let r = ModelGCResult(
        dryRun: true, removedBlobs: [], removedManifests: [], removedTemporary: ["/x"], freedBytes: 3,
        keptMapped: [])
    let text = String(decoding: try JSONEncoder().encode(r), as: UTF8.self)
    for key in ["dry_run", "removed_blobs", "removed_manifests", "removed_temporary", "freed_bytes", "kept_mapped"] {
        #expect(text.contains("\"\(key)\""))
    }
    #expect(r.render().hasPrefix("Would delete 0 blobs, 0 untagged versions and 1 temporary file: 3 B would be freed"))
}
