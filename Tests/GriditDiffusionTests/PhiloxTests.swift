import GriditDiffusion
import Testing

// Known-answer vectors of Philox4x32-10 (Random123 kat_vectors).
@Test func philoxKnownAnswers() {
    let cases: [((UInt32, UInt32, UInt32, UInt32), (UInt32, UInt32), [UInt32])] = [
        ((0, 0, 0, 0), (0, 0), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]),
        (
            (0xffff_ffff, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff), (0xffff_ffff, 0xffff_ffff),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        ),
        (
            (0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344), (0xa409_3822, 0x299f_31d0),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        ),
    ]
    for (counter, key, want) in cases {
        let r = Philox4x32.block(counter: counter, key: key)
        #expect([r.0, r.1, r.2, r.3] == want)
    }
}

@Test func normalsHaveStandardStatistics() {
    let n = 100_000
    var buffer = [Float](repeating: 0, count: n)
    let key = NoiseKey(seed: 45, purpose: .step, grid: 3, step: 17, frame: 5)
    buffer.withUnsafeMutableBufferPointer { key.fillNormal(into: $0.baseAddress!, count: n) }
    let mean = buffer.reduce(0.0) { $0 + Double($1) } / Double(n)
    let variance = buffer.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(n - 1)
    let fourth = buffer.reduce(0.0) { $0 + pow4(Double($1) - mean) } / Double(n) / (variance * variance)
    let within1 = Double(buffer.filter { abs($0) < 1 }.count) / Double(n)
    print("normals: mean \(mean) variance \(variance) kurtosis \(fourth) P(|z|<1) \(within1)")
    #expect(abs(mean) < 0.01)  // 3.2 standard errors
    #expect(abs(variance - 1) < 0.015)  // ~3.4 standard errors
    #expect(abs(fourth - 3) < 0.1)
    #expect(abs(within1 - 0.682_689) < 0.006)
    #expect(buffer.allSatisfy { $0.isFinite })
}

private func pow4(_ x: Double) -> Double { x * x * x * x }

@Test func streamsArePureFunctionsOfTheirKey() {
    let key = NoiseKey(seed: 7, purpose: .initial, grid: 1, step: 0, frame: 2)
    var whole = [Float](repeating: 0, count: 37)
    whole.withUnsafeMutableBufferPointer { key.fillNormal(into: $0.baseAddress!, count: 37) }
    // Any sub-range, odd or even start, gives the same values.
    for start in [0, 1, 5, 10] {
        var part = [Float](repeating: 0, count: 37 - start)
        part.withUnsafeMutableBufferPointer { key.fillNormal(into: $0.baseAddress!, count: 37 - start, start: start) }
        #expect(part == Array(whole[start...]))
    }
    #expect((0..<37).map { key.normal(at: $0) } == whole)
    // Every position id changes the stream.
    let others = [
        NoiseKey(seed: 8, purpose: .initial, grid: 1, step: 0, frame: 2),
        NoiseKey(seed: 7, purpose: .step, grid: 1, step: 0, frame: 2),
        NoiseKey(seed: 7, purpose: .initial, grid: 2, step: 0, frame: 2),
        NoiseKey(seed: 7, purpose: .initial, grid: 1, step: 1, frame: 2),
        NoiseKey(seed: 7, purpose: .initial, grid: 1, step: 0, frame: 3),
        NoiseKey(seed: 1 << 32 | 7, purpose: .initial, grid: 1, step: 0, frame: 2),
    ]
    for other in others {
        #expect((0..<8).map { other.normal(at: $0) } != Array(whole.prefix(8)))
    }
}
