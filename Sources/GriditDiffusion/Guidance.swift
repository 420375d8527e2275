// Guidance of stage 1: its prediction is pushed away from a weaker one. The weaker one is the null
// class's (classifier-free guidance, Ho & Salimans 2022, for class-conditional models) or a guide
// model's on the same input (autoguidance, Karras et al. 2024). Only used when the scale is not 1
// (the official GriDiT scripts double an unconditional batch instead, which changes nothing but
// the cost).

import GriditTensor

/// ε̂ = ε_u + s·(ε_c − ε_u) on the first `epsChannels` channels of each item; the remaining
/// (learned-variance) channels are taken from the conditional output, into `into`.
///
/// conditional, unconditional, into: (N, Cout, H, W); `into` may be `conditional`.
public func classifierFreeGuidance(
    conditional: Tensor, unconditional: Tensor, scale: Float, epsChannels: Int,
    into out: Tensor
) throws {
    guard conditional.shape == unconditional.shape, out.shape == conditional.shape, conditional.rank == 4,
        (1...conditional.shape[1]).contains(epsChannels)
    else {
        throw DiffusionError.shapeMismatch(
            "guidance: conditional \(conditional.shape), unconditional \(unconditional.shape), out \(out.shape), "
                + "eps channels \(epsChannels)")
    }
    let n = conditional.shape[0], perItem = conditional.count / max(n, 1)
    let plane = conditional.shape[2] * conditional.shape[3], eps = epsChannels * plane
    let c = conditional.pointer, u = unconditional.pointer, o = out.mutablePointer
    for b in 0..<n {
        let base = b * perItem
        for i in 0..<eps { o[base + i] = u[base + i] + scale * (c[base + i] - u[base + i]) }
        if o != UnsafeMutablePointer(mutating: c) {
            (o + base + eps).update(from: c + base + eps, count: perItem - eps)
        }
    }
}
