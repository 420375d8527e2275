// Grid layout (method spec §2.1) and RePaint-style replacement of known frames (§2.3).
//
// A grid image (C, K·S, K·S) holds K×K frames (C, S, S) in row-major time order: frame f sits at
// grid row f / K, column f % K, i.e. latent rows [S·(f/K), S·(f/K)+S) and columns [S·(f%K), …).

import Glibc
import GriditTensor

public struct GridLayout: Sendable, Equatable {
    /// Frames per grid side (K); a grid holds K·K frames.
    public let k: Int
    /// Side of one frame (S), in latent pixels.
    public let frameSize: Int
    /// Channels (C).
    public let channels: Int

    public init(k: Int, frameSize: Int, channels: Int) {
        precondition(k >= 1 && frameSize >= 1 && channels >= 1, "GridLayout: k, frameSize, channels must be >= 1")
        self.k = k
        self.frameSize = frameSize
        self.channels = channels
    }

    /// Frames per grid (K·K).
    public var framesPerGrid: Int { k * k }
    /// Side of the grid image (K·S).
    public var gridSize: Int { k * frameSize }
    /// Shape of one grid (C, K·S, K·S).
    public var gridShape: [Int] { [channels, gridSize, gridSize] }
    /// Shape of one frame (C, S, S).
    public var frameShape: [Int] { [channels, frameSize, frameSize] }
    /// Floats in one grid.
    public var gridCount: Int { channels * gridSize * gridSize }
    /// Floats in one frame.
    public var frameCount: Int { channels * frameSize * frameSize }

    /// Top-left corner (row, column) of grid position `f` in latent pixels.
    public func origin(ofFrame f: Int) -> (row: Int, column: Int) {
        precondition((0..<framesPerGrid).contains(f), "GridLayout: frame \(f) out of 0..<\(framesPerGrid)")
        return ((f / k) * frameSize, (f % k) * frameSize)
    }

    /// Float offset of frame `f`'s first element (channel 0, top-left) within a grid.
    public func offset(ofFrame f: Int) -> Int {
        let (r, c) = origin(ofFrame: f)
        return r * gridSize + c
    }

    /// Latent rows covered by grid row `r`.
    public func latentRows(ofGridRow r: Int) -> Range<Int> {
        precondition((0..<k).contains(r), "GridLayout: grid row \(r) out of 0..<\(k)")
        return r * frameSize..<(r + 1) * frameSize
    }

    /// Grid positions of the frames in grid row `r` (left to right = time order).
    public func frames(inGridRow r: Int) -> Range<Int> {
        precondition((0..<k).contains(r), "GridLayout: grid row \(r) out of 0..<\(k)")
        return r * k..<(r + 1) * k
    }

    /// Calls `body(channel, rowInFrame, gridOffset)` for every row of S contiguous floats of frame
    /// `f` inside one grid; `gridOffset` is the float offset of that row within the grid.
    @inline(__always)
    public func forEachRow(ofFrame f: Int, _ body: (_ channel: Int, _ row: Int, _ gridOffset: Int) -> Void) {
        let (r0, c0) = origin(ofFrame: f)
        let g = gridSize
        for c in 0..<channels {
            for y in 0..<frameSize { body(c, y, (c * g + r0 + y) * g + c0) }
        }
    }

    /// Copies frames (F, C, S, S) into `grid` (C, K·S, K·S) at grid positions
    /// `firstPosition ..< firstPosition + F` (a partial grid is fine; other cells are untouched).
    public func place(frames: Tensor, into grid: Tensor, firstPosition: Int = 0) throws {
        guard frames.rank == 4, Array(frames.shape.dropFirst()) == frameShape else {
            throw DiffusionError.shapeMismatch(
                "frames \(frames.shape), expected (F, \(channels), \(frameSize), \(frameSize))")
        }
        guard grid.shape == gridShape else {
            throw DiffusionError.shapeMismatch("grid \(grid.shape), expected \(gridShape)")
        }
        let n = frames.shape[0]
        guard firstPosition >= 0, firstPosition + n <= framesPerGrid else {
            throw DiffusionError.shapeMismatch(
                "positions \(firstPosition)..<\(firstPosition + n) exceed \(framesPerGrid)")
        }
        let src = frames.pointer, dst = grid.mutablePointer, s = frameSize
        for i in 0..<n {
            forEachRow(ofFrame: firstPosition + i) { c, y, off in
                (dst + off).update(from: src + i * frameCount + (c * s + y) * s, count: s)
            }
        }
    }

    /// Copies the frames at grid positions `positions` out of `grid` into `frames` (F, C, S, S).
    public func extract(from grid: Tensor, positions: Range<Int>, into frames: Tensor) throws {
        guard grid.shape == gridShape else {
            throw DiffusionError.shapeMismatch("grid \(grid.shape), expected \(gridShape)")
        }
        guard frames.shape == [positions.count] + frameShape else {
            throw DiffusionError.shapeMismatch("frames \(frames.shape), expected \([positions.count] + frameShape)")
        }
        guard positions.lowerBound >= 0, positions.upperBound <= framesPerGrid else {
            throw DiffusionError.shapeMismatch("positions \(positions) exceed \(framesPerGrid)")
        }
        let src = grid.pointer, dst = frames.mutablePointer, s = frameSize
        for (i, f) in positions.enumerated() {
            forEachRow(ofFrame: f) { c, y, off in
                (dst + i * frameCount + (c * s + y) * s).update(from: src + off, count: s)
            }
        }
    }

    /// A new grid (C, K·S, K·S) from frames (F ≤ K·K, C, S, S) placed from position 0; the
    /// remaining cells are zero.
    public func grid(fromFrames frames: Tensor) throws -> Tensor {
        let grid = Tensor(zeros: gridShape)
        try place(frames: frames, into: grid)
        return grid
    }

    /// Fills frame `f`'s region of `grid` (C, K·S, K·S) with the standard normals of stream `key`,
    /// in the frame's own (C, S, S) order: the bytes depend only on the key, not on where the
    /// grid sits in a batch.
    public func fillNoise(frame f: Int, of grid: Tensor, key: NoiseKey) {
        precondition(grid.shape == gridShape, "fillNoise: grid \(grid.shape), expected \(gridShape)")
        let dst = grid.mutablePointer, s = frameSize
        forEachRow(ofFrame: f) { c, y, off in
            key.fillNormal(into: dst + off, count: s, start: (c * s + y) * s)
        }
    }
}

/// Which ᾱ' re-noises the known frames after step k has produced x_{k−1}.
public enum ReplacementLevel: Sendable, Equatable {
    /// ᾱ'[k], the level of x_k: what the official GriDiT samplers do (one step too noisy; keep it
    /// for parity with the released code).
    case officialCurrentStep
    /// ᾱ'[k−1] (1 at k = 0), the level of x_{k−1}: correct RePaint.
    case previousStep
    /// ᾱ = 1 at every step: the known frames as they are, never re-noised, for a model trained with
    /// clean context frames (gridit's continuation training). Re-noised known frames are a known
    /// cause of incoherent continuations (Ho et al. 2022, Video Diffusion Models §3.1).
    case clean
}

extension GaussianDiffusion {
    /// ᾱ' used to re-noise the known frames after step k.
    public func replacementAlphaBar(k: Int, level: ReplacementLevel) -> Double {
        switch level {
        case .officialCurrentStep: alphasCumprod[k]
        case .previousStep: alphasCumprodPrev[k]
        case .clean: 1
        }
    }

    /// RePaint replacement: for every batch item and every grid position in `positions`, sets
    /// x's region to sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·z, with ᾱ = `replacementAlphaBar(k:level:)`
    /// (square roots in Double, cast to Float).
    ///
    /// x, knownX0 and noise are grids (N, C, K·S, K·S) (or one grid (C, K·S, K·S)); knownX0 holds
    /// the clean known frames at the positions where they must land (build it with
    /// `GridLayout.place`), noise the z for those regions. The official samplers do this after
    /// every step except k = 0, with the step's own z.
    ///
    /// `noisePositions` (parallel to `positions`) reads the noise of each known position from
    /// another grid position of `noise`; nil reads it from the same position. The official
    /// samplers noise the *previous* grid and then shift it, so known frame p takes the z of the
    /// frame it was copied from (p + K for the three-row extension).
    public func replaceKnown(
        x: Tensor, knownX0: Tensor, noise: Tensor, positions: [Int], noisePositions: [Int]? = nil,
        layout: GridLayout, k: Int, level: ReplacementLevel
    ) throws {
        guard (0..<count).contains(k) else { throw DiffusionError.invalidStep(k, count: count) }
        guard knownX0.shape == x.shape, noise.shape == x.shape else {
            throw DiffusionError.shapeMismatch("x \(x.shape), knownX0 \(knownX0.shape), noise \(noise.shape)")
        }
        guard x.shape == layout.gridShape || (x.rank == 4 && Array(x.shape.dropFirst()) == layout.gridShape) else {
            throw DiffusionError.shapeMismatch("x \(x.shape) is not a grid \(layout.gridShape)")
        }
        let sources = noisePositions ?? positions
        guard sources.count == positions.count,
            (positions + sources).allSatisfy({ (0..<layout.framesPerGrid).contains($0) })
        else {
            throw DiffusionError.shapeMismatch(
                "positions \(positions) / noise positions \(sources) invalid for \(layout.framesPerGrid) frames")
        }
        let ab = replacementAlphaBar(k: k, level: level)
        let a = Float(ab.squareRoot()), b = Float((1 - ab).squareRoot())
        let n = x.rank == 4 ? x.shape[0] : 1
        let dst = x.mutablePointer, x0 = knownX0.pointer, z = noise.pointer, s = layout.frameSize
        for item in 0..<n {
            let base = item * layout.gridCount
            for (f, source) in zip(positions, sources) {
                let shift = layout.offset(ofFrame: source) - layout.offset(ofFrame: f)
                layout.forEachRow(ofFrame: f) { _, _, off in
                    let o = base + off
                    if b == 0 {
                        // ᾱ = 1 (after the last step at the RePaint level): the clean frames, no noise read.
                        for j in 0..<s { dst[o + j] = a * x0[o + j] }
                    } else {
                        for j in 0..<s { dst[o + j] = a * x0[o + j] + b * z[o + shift + j] }
                    }
                }
            }
        }
    }
}
