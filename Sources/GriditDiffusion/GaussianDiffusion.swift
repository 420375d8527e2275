// Diffusion schedule and respacing (method spec §4): linear betas over 1000 steps, respaced to a
// subset of timesteps, with every derived array recomputed in Double from the spaced betas.

import Glibc

/// A bad respacing spec or schedule argument.
public enum DiffusionError: Error, CustomStringConvertible, Equatable {
    case invalidRespacing(String, reason: String)
    case invalidStep(Int, count: Int)
    case shapeMismatch(String)

    public var description: String {
        switch self {
        case .invalidRespacing(let spec, let reason): return "respacing '\(spec)': \(reason)"
        case .invalidStep(let k, let count): return "step index \(k) outside 0..<\(count)"
        case .shapeMismatch(let message): return "shape mismatch: \(message)"
        }
    }
}

/// How the variance of p(x_{k-1} | x_k) is obtained.
public enum VarianceType: Sendable, Equatable {
    /// The model's second C channels v interpolate, in log space, between the clipped posterior
    /// log variance (v = -1) and log β'_k (v = +1). Official GriDiT / DiT with learn_sigma.
    case learnedRange
    /// Fixed variance append(posterior_variance[1], β'[1:]). What DiT uses with learn_sigma = false
    /// (`sigma_small` = false).
    case fixedLarge
    /// Fixed variance = posterior variance, log = the clipped posterior log variance.
    case fixedSmall
}

/// A (possibly respaced) Gaussian diffusion: β', ᾱ' and the coefficients of the sampling steps.
///
/// Index `k` always means the *spaced* step 0..<`count`; the model is called with
/// `timestepMap[k]`, the original timestep on the 0..999 scale.
public struct GaussianDiffusion: Sendable {
    /// Original timestep t_k of each spaced step (what the model sees).
    public let timestepMap: [Int]
    /// Spaced betas β'_k = 1 − ᾱ[t_k]/ᾱ[t_{k−1}] (ᾱ[t_{−1}] = 1).
    public let betas: [Double]
    public let alphasCumprod: [Double]
    /// ᾱ'_{k−1}, with 1 at k = 0.
    public let alphasCumprodPrev: [Double]
    public let sqrtAlphasCumprod: [Double]
    public let sqrtOneMinusAlphasCumprod: [Double]
    public let sqrtRecipAlphasCumprod: [Double]
    public let sqrtRecipm1AlphasCumprod: [Double]
    public let posteriorVariance: [Double]
    /// log(append(pv[1], pv[1:])): the posterior variance is 0 at k = 0, so its log is clipped.
    public let posteriorLogVarianceClipped: [Double]
    public let posteriorMeanCoef1: [Double]
    public let posteriorMeanCoef2: [Double]
    /// log β'_k (the upper end of the learned range).
    public let logBetas: [Double]
    /// log of append(pv[1], β'[1:]) (fixed-large variance).
    public let fixedLargeLogVariance: [Double]

    /// Number of (spaced) steps.
    public var count: Int { betas.count }

    /// The linear schedule: `steps` betas from 1e-4 to 0.02 (scaled by 1000/steps), as
    /// `np.linspace` computes them (i·step + start, last value set to the end point exactly).
    public static func linearBetas(steps: Int = 1000) -> [Double] {
        precondition(steps >= 1, "linearBetas: steps must be >= 1")
        let scale = 1000.0 / Double(steps)
        let start = scale * 0.0001, end = scale * 0.02
        if steps == 1 { return [start] }
        let step = (end - start) / Double(steps - 1)
        var out = (0..<steps).map { Double($0) * step + start }
        out[steps - 1] = end
        return out
    }

    /// Kept original timesteps for a respacing spec over `originalSteps`:
    /// - "N" or "N1,N2,…": the sections algorithm: the original steps are cut into equal
    ///   sections and N_i steps are taken from section i at a float stride
    ///   (size−1)/(N_i−1), each rounded half-to-even (Python's `round`); "250" gives round(k·999/249).
    /// - "ddimN": range(0, originalSteps, s) for the smallest stride s giving exactly N steps.
    /// - "linspaceN", "leadingN", "trailingN": the timestep spacings of diffusers' schedulers
    ///   (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", table 2):
    ///   round(i·(T−1)/N) for i = 1…N; i·(T div (N+1)) for i = 1…N; round(T − i·T/N) − 1 for
    ///   i = 0…N−1 (none of them ends at 0: the last step goes from its timestep to the clean sample).
    /// Returns the sorted timesteps. Throws `DiffusionError.invalidRespacing`.
    public static func spacedTimesteps(_ spec: String, originalSteps T: Int = 1000) throws -> [Int] {
        func fail(_ reason: String) -> DiffusionError { .invalidRespacing(spec, reason: reason) }
        let trimmed = spec.trimmingSpaces()
        if trimmed.isEmpty { throw fail("empty spec") }
        for spacing in ["linspace", "leading", "trailing"] where trimmed.hasPrefix(spacing) {
            guard let n = Int(trimmed.dropFirst(spacing.count)), n >= 1 else {
                throw fail("expected \(spacing)N with an integer N >= 1")
            }
            let t: [Int] =
                switch spacing {
                case "linspace": (1...n).map { Int((Double($0) * Double(T - 1) / Double(n)).rounded(.toNearestOrEven)) }
                case "leading": (1...n).map { $0 * (T / (n + 1)) }
                default:
                    (0..<n).map {
                        Int((Double(T) - Double($0) * (Double(T) / Double(n))).rounded(.toNearestOrEven)) - 1
                    }
                }
            let sorted = t.sorted()
            guard n <= T, sorted.first! >= 0, Set(sorted).count == n else {
                throw fail("\(n) \(spacing) steps do not give \(n) distinct timesteps of \(T)")
            }
            return sorted
        }
        if trimmed.hasPrefix("ddim") {
            guard let n = Int(trimmed.dropFirst(4)) else { throw fail("expected ddimN with an integer N") }
            guard n >= 1, n <= T else { throw fail("ddim step count must be in 1...\(T)") }
            for stride in 1..<max(T, 2) where (T + stride - 1) / stride == n {
                return Array(Swift.stride(from: 0, to: T, by: stride))
            }
            throw fail("no integer stride gives exactly \(n) of \(T) steps")
        }
        var counts: [Int] = []
        for part in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            guard let n = Int(String(part).trimmingSpaces()) else {
                throw fail("expected an integer step count, 'N1,N2,…' or 'ddimN'")
            }
            guard n >= 1 else { throw fail("step counts must be >= 1") }
            counts.append(n)
        }
        guard counts.count <= T else { throw fail("more sections than steps") }
        let sizePer = T / counts.count, extra = T % counts.count
        var start = 0
        var all = Set<Int>()
        for (i, n) in counts.enumerated() {
            let size = sizePer + (i < extra ? 1 : 0)
            guard n <= size else { throw fail("cannot take \(n) steps from a section of \(size)") }
            let frac = n <= 1 ? 1.0 : Double(size - 1) / Double(n - 1)
            var cur = 0.0
            for _ in 0..<n {
                all.insert(start + Int(cur.rounded(.toNearestOrEven)))
                cur += frac
            }
            start += size
        }
        return all.sorted()
    }

    /// The diffusion over `originalSteps` linear betas, respaced by `spec` ("250", "ddim50", …).
    public init(respacing spec: String, originalSteps: Int = 1000) throws {
        let kept = try Self.spacedTimesteps(spec, originalSteps: originalSteps)
        let base = Self.linearBetas(steps: originalSteps)
        var cumprod = 1.0, last = 1.0
        var kept_ = kept[...]
        var newBetas: [Double] = []
        for (t, beta) in base.enumerated() {
            cumprod *= 1 - beta
            if kept_.first == t {
                newBetas.append(1 - cumprod / last)
                last = cumprod
                kept_ = kept_.dropFirst()
            }
        }
        self.init(betas: newBetas, timestepMap: kept)
    }

    /// A diffusion from explicit betas; `timestepMap` defaults to 0..<betas.count.
    public init(betas: [Double], timestepMap: [Int]? = nil) {
        precondition(!betas.isEmpty && betas.allSatisfy { $0 > 0 && $0 <= 1 }, "betas must be in (0, 1]")
        let n = betas.count
        self.timestepMap = timestepMap ?? Array(0..<n)
        precondition(self.timestepMap.count == n, "timestepMap has \(self.timestepMap.count) entries for \(n) betas")
        self.betas = betas
        var ac = [Double](repeating: 0, count: n)
        var p = 1.0
        for i in 0..<n {
            p *= 1 - betas[i]
            ac[i] = p
        }
        let acp = [1.0] + ac.dropLast()
        alphasCumprod = ac
        alphasCumprodPrev = acp
        sqrtAlphasCumprod = ac.map { $0.squareRoot() }
        sqrtOneMinusAlphasCumprod = ac.map { (1 - $0).squareRoot() }
        sqrtRecipAlphasCumprod = ac.map { (1 / $0).squareRoot() }
        sqrtRecipm1AlphasCumprod = ac.map { (1 / $0 - 1).squareRoot() }
        var pv = [Double](repeating: 0, count: n)
        var coef1 = pv, coef2 = pv
        for i in 0..<n {
            let b: Double = betas[i], a: Double = ac[i], ap: Double = acp[i]
            pv[i] = b * (1 - ap) / (1 - a)
            coef1[i] = b * ap.squareRoot() / (1 - a)
            coef2[i] = (1 - ap) * (1 - b).squareRoot() / (1 - a)
        }
        posteriorVariance = pv
        posteriorMeanCoef1 = coef1
        posteriorMeanCoef2 = coef2
        // Index 0 takes pv[1]: the posterior variance at k = 0 is 0 and has no log.
        let first: Double = n > 1 ? pv[1] : pv[0]
        var clipped: [Double] = [Glibc.log(first)]
        var large: [Double] = [Glibc.log(first)]
        for i in 1..<max(n, 1) {
            clipped.append(Glibc.log(pv[i]))
            large.append(Glibc.log(betas[i]))
        }
        posteriorLogVarianceClipped = clipped
        fixedLargeLogVariance = large
        logBetas = betas.map { (b: Double) -> Double in Glibc.log(b) }
    }

    /// The model's timestep input for spaced step k (original scale, as Float).
    public func modelTimestep(_ k: Int) -> Float { Float(timestepMap[k]) }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
