import GriditAPI
import GriditJobSpec
import Testing

@Test func tableAlignsColumnsAndKeepsTheLastUnpadded() {
    let t = renderTable(
        headers: ["name", "size", "created"],
        rows: [["moving-digits:v1", "12 MB", "2 hours ago"], ["x:latest", "1.5 KB", "now"]])
    #expect(
        t == """
            NAME               SIZE     CREATED
            moving-digits:v1   12 MB    2 hours ago
            x:latest           1.5 KB   now

            """)
}

@Test func bytesUseDecimalUnits() {
    #expect(formatBytes(0) == "0 B")
    #expect(formatBytes(999) == "999 B")
    #expect(formatBytes(1500) == "1.5 KB")
    #expect(formatBytes(12_345_678) == "12 MB")
    #expect(formatBytes(2_690_000_000) == "2.7 GB")
}
