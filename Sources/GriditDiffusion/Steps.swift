// One reverse-diffusion step on float32 tensors (method spec §4): p_mean_variance for an
// epsilon-predicting model (a v-predicting one's output converted to ε first), the ancestral DDPM
// step and the DDIM step.
//
// Coefficients are taken from the Double arrays of `GaussianDiffusion` and cast to Float, then all
// arithmetic is float32, element by element, in the reference's order of operations.
// Every function writes into caller-owned tensors and allocates nothing; `into` may be `x` itself.

import Glibc
import GriditModels
import GriditTensor

/// Float32 coefficients of one spaced step k.
struct StepCoefficients {
    let sqrtRecip, sqrtRecipm1, coef1, coef2: Float
    let minLog, maxLog, fixedLog: Float
    let alphaBar, alphaBarPrev: Float
    let sqrtAlphaBar, sqrtOneMinusAlphaBar: Float
    let learned: Bool
    let prediction: Prediction

    /// ε from the model's first output channel: as it is, or from v as sqrt(ᾱ')·v + sqrt(1−ᾱ')·x.
    @inline(__always) func epsilon(x: Float, out: Float) -> Float {
        prediction == .v ? sqrtAlphaBar * out + sqrtOneMinusAlphaBar * x : out
    }

    /// x0 = sqrt(1/ᾱ')·x − sqrt(1/ᾱ'−1)·ε, optionally clipped to [-1, 1].
    @inline(__always) func predictX0(x: Float, eps: Float, clip: Bool) -> Float {
        let x0 = sqrtRecip * x - sqrtRecipm1 * eps
        return clip ? min(max(x0, -1), 1) : x0
    }

    /// Learned range: interpolate between the clipped posterior and β' log variances by (v+1)/2;
    /// otherwise the fixed log variance.
    @inline(__always) func logVariance(v: Float) -> Float {
        guard learned else { return fixedLog }
        let frac = (v + 1) / 2
        return frac * maxLog + (1 - frac) * minLog
    }

    /// Walks x (n rows of `inner` values) with the model's output (n rows of 2·`inner` values,
    /// ε or v then the variance channels, under the learned range; else n rows of `inner`):
    /// `body(j, x, x0, v)` for each flat index j, with x0 predicted from that element's output
    /// (`predictX0`) and v its variance-channel value (0 unless learned). `body` may write index
    /// j of a tensor that is x itself: x[j] is read before.
    @inline(__always) func forEachElement(
        n: Int, inner: Int, x: UnsafePointer<Float>, modelOutput: UnsafePointer<Float>, clip: Bool,
        _ body: (_ j: Int, _ x: Float, _ x0: Float, _ v: Float) -> Void
    ) {
        for b in 0..<n {
            let out = modelOutput + b * (learned ? 2 : 1) * inner
            let base = b * inner
            for i in 0..<inner {
                let xi = x[base + i]
                let x0 = predictX0(x: xi, eps: epsilon(x: xi, out: out[i]), clip: clip)
                body(base + i, xi, x0, learned ? out[inner + i] : 0)
            }
        }
    }
}

extension GaussianDiffusion {
    func coefficients(_ k: Int, variance: VarianceType, prediction: Prediction) -> StepCoefficients {
        let fixed: Double =
            switch variance {
            case .learnedRange, .fixedSmall: posteriorLogVarianceClipped[k]
            case .fixedLarge: fixedLargeLogVariance[k]
            }
        return StepCoefficients(
            sqrtRecip: Float(sqrtRecipAlphasCumprod[k]), sqrtRecipm1: Float(sqrtRecipm1AlphasCumprod[k]),
            coef1: Float(posteriorMeanCoef1[k]), coef2: Float(posteriorMeanCoef2[k]),
            minLog: Float(posteriorLogVarianceClipped[k]), maxLog: Float(logBetas[k]),
            fixedLog: Float(fixed),
            alphaBar: Float(alphasCumprod[k]), alphaBarPrev: Float(alphasCumprodPrev[k]),
            sqrtAlphaBar: Float(sqrtAlphasCumprod[k]), sqrtOneMinusAlphaBar: Float(sqrtOneMinusAlphasCumprod[k]),
            learned: variance == .learnedRange, prediction: prediction)
    }

    /// Checks x (N, C, H, W) against the model output (N, C or 2C, H, W) and returns (N, C·H·W); the optional tensors must be shaped like x.
    func checkShapes(
        x: Tensor, modelOutput: Tensor, k: Int, variance: VarianceType,
        _ a: Tensor?, _ b: Tensor?, _ third: Tensor? = nil
    ) throws -> (n: Int, inner: Int) {
        guard (0..<count).contains(k) else { throw DiffusionError.invalidStep(k, count: count) }
        guard x.rank >= 2 else { throw DiffusionError.shapeMismatch("x must be (N, C, …), got \(x.shape)") }
        let n = x.shape[0], c = x.shape[1]
        let channels = variance == .learnedRange ? 2 * c : c
        var expected = x.shape
        expected[1] = channels
        guard modelOutput.shape == expected else {
            throw DiffusionError.shapeMismatch(
                "model output \(modelOutput.shape), expected \(expected) for \(variance)")
        }
        func same(_ t: Tensor?) throws {
            if let t, t.shape != x.shape { throw DiffusionError.shapeMismatch("\(t.shape) vs x \(x.shape)") }
        }
        try same(a)
        try same(b)
        try same(third)
        return (n, x.count / max(n, 1))
    }

    /// p(x_{k−1} | x_k): the predicted x0, the posterior mean and its log variance, written into
    /// `predX0`, `mean`, `logVariance` (each shaped like x).
    ///
    /// x: (N, C, H, W); modelOutput: (N, 2C, H, W) for `.learnedRange` (ε then v), (N, C, H, W)
    /// otherwise, its first C channels what `prediction` says. `clipDenoised` clamps x0 to [-1, 1]
    /// (off in every official script).
    public func pMeanVariance(
        x: Tensor, modelOutput: Tensor, k: Int, variance: VarianceType = .learnedRange,
        prediction: Prediction = .epsilon, clipDenoised: Bool = false,
        predX0: Tensor, mean: Tensor, logVariance: Tensor
    ) throws {
        let (n, inner) = try checkShapes(
            x: x, modelOutput: modelOutput, k: k, variance: variance,
            predX0, mean, logVariance)
        let cf = coefficients(k, variance: variance, prediction: prediction)
        let x0p = predX0.mutablePointer, mp = mean.mutablePointer, lp = logVariance.mutablePointer
        cf.forEachElement(n: n, inner: inner, x: x.pointer, modelOutput: modelOutput.pointer, clip: clipDenoised) {
            j, xi, x0, v in
            x0p[j] = x0
            mp[j] = cf.coef1 * x0 + cf.coef2 * xi
            lp[j] = cf.logVariance(v: v)
        }
    }

    /// Ancestral DDPM step: x_{k−1} = mean + [k ≠ 0]·exp(½·logvar)·z, into `into` (may be x).
    /// `noise` z is shaped like x; it is not read at k = 0 and may then be nil.
    public func pSample(
        x: Tensor, modelOutput: Tensor, k: Int, noise: Tensor?, into: Tensor,
        variance: VarianceType = .learnedRange, prediction: Prediction = .epsilon,
        clipDenoised: Bool = false
    ) throws {
        let (n, inner) = try checkShapes(
            x: x, modelOutput: modelOutput, k: k, variance: variance,
            noise, into)
        if k != 0 && noise == nil { throw DiffusionError.shapeMismatch("noise is required at k = \(k)") }
        let cf = coefficients(k, variance: variance, prediction: prediction)
        let dst = into.mutablePointer
        let z = k != 0 ? noise!.pointer : nil
        cf.forEachElement(n: n, inner: inner, x: x.pointer, modelOutput: modelOutput.pointer, clip: clipDenoised) {
            j, xi, x0, v in
            let mean = cf.coef1 * x0 + cf.coef2 * xi
            if let z {
                dst[j] = mean + expf(0.5 * cf.logVariance(v: v)) * z[j]
            } else {
                dst[j] = mean
            }
        }
    }

    /// DDIM step with `eta` (0: deterministic, 1: DDPM-like variance), into `into` (may be x):
    /// ε is re-derived from x0, σ = η·sqrt((1−ᾱ_prev)/(1−ᾱ))·sqrt(1−ᾱ/ᾱ_prev),
    /// x_{k−1} = x0·sqrt(ᾱ_prev) + sqrt(1−ᾱ_prev−σ²)·ε + [k ≠ 0]·σ·z.
    /// The variance channels of a learned-sigma model are ignored (pass `.learnedRange` so the
    /// output's channel count is checked; the fixed variances behave the same here).
    public func ddimSample(
        x: Tensor, modelOutput: Tensor, k: Int, eta: Float, noise: Tensor?, into: Tensor,
        variance: VarianceType = .learnedRange, prediction: Prediction = .epsilon,
        clipDenoised: Bool = false
    ) throws {
        let (n, inner) = try checkShapes(
            x: x, modelOutput: modelOutput, k: k, variance: variance,
            noise, into)
        let useNoise = k != 0 && eta != 0
        if useNoise && noise == nil {
            throw DiffusionError.shapeMismatch("noise is required at k = \(k) with eta \(eta)")
        }
        let cf = coefficients(k, variance: variance, prediction: prediction)
        let ab = cf.alphaBar, abPrev = cf.alphaBarPrev
        let sigma = eta * ((1 - abPrev) / (1 - ab)).squareRoot() * (1 - ab / abPrev).squareRoot()
        let sqrtAbPrev = abPrev.squareRoot()
        let dirCoef = (1 - abPrev - sigma * sigma).squareRoot()
        let dst = into.mutablePointer
        let z = useNoise ? noise!.pointer : nil
        cf.forEachElement(n: n, inner: inner, x: x.pointer, modelOutput: modelOutput.pointer, clip: clipDenoised) {
            j, xi, x0, _ in
            let eps = (cf.sqrtRecip * xi - x0) / cf.sqrtRecipm1
            let meanPred = x0 * sqrtAbPrev + dirCoef * eps
            dst[j] = z.map { meanPred + sigma * $0[j] } ?? meanPred
        }
    }
}

// MARK: - DPM-Solver++(2M), ODE and SDE

extension GaussianDiffusion {
    /// One step of the multistep DPM-Solver++ of order 2 (Lu et al. 2022, "DPM-Solver++", algorithm 2,
    /// midpoint form) in data prediction: from level k (x_k, α_s = sqrt(ᾱ'_k), σ_s = sqrt(1−ᾱ'_k),
    /// λ = log(α/σ)) to level k−1, or to the clean sample at k = 0, with h = λ_t − λ_s,
    /// D0 = x0_k, D1 = (x0_k − x0_(k+1))/r, r = (λ_s − λ_(k+1))/h. Without `noise`, the deterministic
    /// solver of the diffusion ODE:
    ///
    ///     x_t = (σ_t/σ_s)·x − α_t·(e^(−h) − 1)·(D0 + D1/2)
    ///
    /// with `noise` z, the SDE solver (diffusers' "sde-dpmsolver++", Lu et al. 2022 §5 / appendix):
    ///
    ///     x_t = (σ_t/σ_s)·e^(−h)·x + α_t·(1 − e^(−2h))·(D0 + D1/2) + σ_t·sqrt(1 − e^(−2h))·z
    ///
    /// (first order, D1 = 0, without a previous x0 — the first step, or after a resampling jump —
    /// and at k = 0, where σ_t = 0 and x_t = x0_k; z is then not read). x0_k comes from the model's
    /// ε (or v) output. Writes x_t into `into` (may be x) and x0_k into `predX0`, the history of the
    /// next step.
    public func dpmSolverStep(
        x: Tensor, modelOutput: Tensor, k: Int, previousX0: Tensor?, noise: Tensor? = nil, into: Tensor,
        predX0: Tensor, variance: VarianceType = .learnedRange, prediction: Prediction = .epsilon
    ) throws {
        let (n, inner) = try checkShapes(
            x: x, modelOutput: modelOutput, k: k, variance: variance,
            into, predX0, previousX0)
        if let noise, noise.shape != x.shape { throw DiffusionError.shapeMismatch("\(noise.shape) vs x \(x.shape)") }
        let cf = coefficients(k, variance: variance, prediction: prediction)
        func lambda(_ ab: Double) -> Double { 0.5 * (Glibc.log(ab) - Glibc.log(1 - ab)) }
        // x_t = cx·x + c0·x0_k − c1·x0_(k+1) + cz·z (Double coefficients, Float arithmetic)
        var cx = 0.0, c0 = 1.0, c1 = 0.0, cz = 0.0
        if k > 0 {
            let ab = alphasCumprod[k], abT = alphasCumprod[k - 1]
            let h = lambda(abT) - lambda(ab)
            let sigmaRatio = ((1 - abT) / (1 - ab)).squareRoot()
            let e: Double  // the x0 coefficient of the first-order step
            if noise != nil {
                e = abT.squareRoot() * (1 - Glibc.exp(-2 * h))  // α_t·(1 − e^(−2h))
                cx = sigmaRatio * Glibc.exp(-h)
                cz = (1 - abT).squareRoot() * (1 - Glibc.exp(-2 * h)).squareRoot()
            } else {
                e = abT.squareRoot() * (1 - Glibc.exp(-h))  // −α_t·(e^(−h) − 1)
                cx = sigmaRatio
            }
            c0 = e
            if previousX0 != nil && k + 1 < count {
                let r = (lambda(ab) - lambda(alphasCumprod[k + 1])) / h
                c0 = e * (1 + 0.5 / r)
                c1 = e * 0.5 / r
            }
        }
        let fx = Float(cx), f0 = Float(c0), f1 = Float(c1), fz = Float(cz)
        let dst = into.mutablePointer, x0p = predX0.mutablePointer
        let prev = c1 != 0 ? previousX0?.pointer : nil
        let z = cz != 0 ? noise?.pointer : nil
        cf.forEachElement(n: n, inner: inner, x: x.pointer, modelOutput: modelOutput.pointer, clip: false) {
            j, xi, x0, _ in
            let older = prev.map { $0[j] } ?? 0
            x0p[j] = x0
            let ode = fx * xi + f0 * x0 - f1 * older
            dst[j] = z.map { ode + fz * $0[j] } ?? ode
        }
    }
}
