import GriditDiffusion
import GriditTensor
import Testing

@Test func framesLandRowMajorInTheGrid() throws {
    let layout = GridLayout(k: 3, frameSize: 2, channels: 2)
    #expect(layout.gridShape == [2, 6, 6] && layout.framesPerGrid == 9)
    // Frame f is filled with 100·f + channel.
    let frames = Tensor(zeros: [9, 2, 2, 2])
    for f in 0..<9 {
        for c in 0..<2 { for i in 0..<4 { frames.mutablePointer[((f * 2 + c) * 4) + i] = Float(100 * f + c) } }
    }
    let grid = try layout.grid(fromFrames: frames)
    let g = grid.toArray()
    for c in 0..<2 {
        for row in 0..<6 {
            for col in 0..<6 {
                let f = (row / 2) * 3 + col / 2
                #expect(g[(c * 6 + row) * 6 + col] == Float(100 * f + c))
            }
        }
    }
    #expect(layout.origin(ofFrame: 5) == (2, 4))
    #expect(layout.latentRows(ofGridRow: 2) == 4..<6)
    #expect(layout.frames(inGridRow: 1) == 3..<6)

    // Round trip of a range, and a partial placement that leaves other cells alone.
    let back = Tensor(zeros: [3, 2, 2, 2])
    try layout.extract(from: grid, positions: 3..<6, into: back)
    #expect(back.toArray() == Array(frames.toArray()[(3 * 8)..<(6 * 8)]))
    let partial = Tensor(zeros: layout.gridShape)
    try layout.place(frames: back, into: partial, firstPosition: 6)
    let out = Tensor(zeros: [9, 2, 2, 2])
    try layout.extract(from: partial, positions: 0..<9, into: out)
    #expect(Array(out.toArray()[0..<48]).allSatisfy { $0 == 0 })
    #expect(Array(out.toArray()[48...]) == back.toArray())
    #expect(throws: DiffusionError.self) { try layout.place(frames: back, into: partial, firstPosition: 7) }
}

@Test func gridNoiseIsTheFramesOwnStream() throws {
    let layout = GridLayout(k: 2, frameSize: 3, channels: 2)
    let grid = Tensor(zeros: layout.gridShape)
    let keys = (0..<4).map { NoiseKey(seed: 99, purpose: .step, grid: 0, step: 4, frame: $0) }
    for f in 0..<4 { layout.fillNoise(frame: f, of: grid, key: keys[f]) }
    let frames = Tensor(zeros: [4] + layout.frameShape)
    try layout.extract(from: grid, positions: 0..<4, into: frames)
    for f in 0..<4 {
        let want = (0..<layout.frameCount).map { keys[f].normal(at: $0) }
        #expect(Array(frames.toArray()[(f * layout.frameCount)..<((f + 1) * layout.frameCount)]) == want)
    }
}

@Test func replacementLevels() throws {
    let d = try GaussianDiffusion(respacing: "250")
    #expect(d.replacementAlphaBar(k: 10, level: .officialCurrentStep) == d.alphasCumprod[10])
    #expect(d.replacementAlphaBar(k: 10, level: .previousStep) == d.alphasCumprod[9])
    #expect(d.replacementAlphaBar(k: 0, level: .previousStep) == 1)
    // Only the chosen positions change; batch items are handled independently.
    let layout = GridLayout(k: 2, frameSize: 2, channels: 1)
    let x = Tensor([Float](repeating: 7, count: 32), shape: [2, 1, 4, 4])
    let x0 = Tensor([Float](repeating: 1, count: 32), shape: [2, 1, 4, 4])
    let z = Tensor(zeros: [2, 1, 4, 4])
    try d.replaceKnown(x: x, knownX0: x0, noise: z, positions: [3], layout: layout, k: 0, level: .previousStep)
    let v = x.toArray()
    for item in 0..<2 {
        for row in 0..<4 {
            for col in 0..<4 {
                let want: Float = row >= 2 && col >= 2 ? 1 : 7
                #expect(v[item * 16 + row * 4 + col] == want)
            }
        }
    }
    #expect(throws: DiffusionError.self) {
        try d.replaceKnown(x: x, knownX0: x0, noise: z, positions: [4], layout: layout, k: 0, level: .previousStep)
    }
}
