"""Independent PyTorch reference of the GriDiT diffusion process (method spec §4, §2.3).

Written from the specification (linear betas, respacing, epsilon prediction with learned-range
variance, ancestral DDPM step, DDIM step, RePaint replacement); nothing is copied from upstream
code. Every array is float64; tensors are whatever dtype the caller passes (the fixture generator
uses float64 throughout).

Conventions match the Swift `GriditDiffusion`: spaced step index k in 0..count-1, the model is called
with ``timestep_map[k]``; model output (N, 2C, H, W) = (epsilon, v) for learned range, where the
first C channels may instead be the v-prediction (``prediction="v"``, converted to epsilon first).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def linear_betas(steps: int = 1000) -> np.ndarray:
    scale = 1000.0 / steps
    return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)


def spaced_timesteps(spec: str, original_steps: int = 1000) -> list[int]:
    """Kept timesteps for a respacing spec ("250", "10,20", "ddim50", or diffusers' spacings
    "linspace20", "leading20", "trailing20")."""
    spec = spec.strip()
    T = original_steps
    for spacing in ("linspace", "leading", "trailing"):
        if spec.startswith(spacing):
            n = int(spec[len(spacing):])
            if spacing == "linspace":
                t = [round(i * (T - 1) / n) for i in range(1, n + 1)]
            elif spacing == "leading":
                t = [i * (T // (n + 1)) for i in range(1, n + 1)]
            else:
                t = [round(T - i * (T / n)) - 1 for i in range(n)]
            if n < 1 or min(t) < 0 or len(set(t)) != n:
                raise ValueError(f"{spec}: not {n} distinct timesteps")
            return sorted(t)
    if spec.startswith("ddim"):
        n = int(spec[4:])
        for stride in range(1, max(original_steps, 2)):
            if len(range(0, original_steps, stride)) == n:
                return list(range(0, original_steps, stride))
        raise ValueError(f"no stride gives {n} steps")
    counts = [int(p) for p in spec.split(",")]
    if any(c < 1 for c in counts):
        raise ValueError("counts must be >= 1")
    size_per, extra = divmod(original_steps, len(counts))
    start, kept = 0, set()
    for i, n in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if n > size:
            raise ValueError(f"cannot take {n} of {size}")
        stride = 1.0 if n <= 1 else (size - 1) / (n - 1)
        pos = 0.0
        for _ in range(n):
            kept.add(start + round(pos))
            pos += stride
        start += size
    return sorted(kept)


class Diffusion:
    """Spaced diffusion: all arrays float64 numpy, indexed by the spaced step k."""

    def __init__(self, spec: str, original_steps: int = 1000):
        base = linear_betas(original_steps)
        base_ab = np.cumprod(1.0 - base)
        self.timestep_map = np.array(spaced_timesteps(spec, original_steps), dtype=np.int64)
        prev = 1.0
        betas = []
        for t in self.timestep_map:
            betas.append(1.0 - base_ab[t] / prev)
            prev = base_ab[t]
        b = np.array(betas, dtype=np.float64)
        self.betas = b
        ab = np.cumprod(1.0 - b)
        ab_prev = np.concatenate([[1.0], ab[:-1]])
        self.ab, self.ab_prev = ab, ab_prev
        self.sqrt_recip = np.sqrt(1.0 / ab)
        self.sqrt_recipm1 = np.sqrt(1.0 / ab - 1.0)
        pv = b * (1.0 - ab_prev) / (1.0 - ab)
        self.post_var = pv
        self.post_logvar_clipped = np.log(np.concatenate([[pv[1]], pv[1:]]))
        self.coef1 = b * np.sqrt(ab_prev) / (1.0 - ab)
        self.coef2 = (1.0 - ab_prev) * np.sqrt(1.0 - b) / (1.0 - ab)
        self.fixed_large_logvar = np.log(np.concatenate([[pv[1]], b[1:]]))

    @property
    def count(self) -> int:
        return len(self.betas)

    def epsilon(self, x: torch.Tensor, out: torch.Tensor, k: int, prediction: str = "epsilon") -> torch.Tensor:
        """The epsilon of the model output's first C channels: as it is, or from v = sqrt(ab) eps -
        sqrt(1 - ab) x0 (Salimans & Ho 2022) as eps = sqrt(ab) v + sqrt(1 - ab) x_k."""
        c = x.shape[1]
        if prediction == "epsilon":
            return out[:, :c]
        if prediction == "v":
            return math.sqrt(self.ab[k]) * out[:, :c] + math.sqrt(1.0 - self.ab[k]) * x
        raise ValueError(f"prediction {prediction!r}")

    def p_mean_variance(self, x: torch.Tensor, out: torch.Tensor, k: int, variance: str = "learned_range",
                        clip: bool = False, prediction: str = "epsilon"):
        c = x.shape[1]
        eps = self.epsilon(x, out, k, prediction)
        x0 = self.sqrt_recip[k] * x - self.sqrt_recipm1[k] * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        mean = self.coef1[k] * x0 + self.coef2[k] * x
        if variance == "learned_range":
            frac = (out[:, c:] + 1) / 2
            logvar = frac * math.log(self.betas[k]) + (1 - frac) * self.post_logvar_clipped[k]
        elif variance == "fixed_large":
            logvar = torch.full_like(x, self.fixed_large_logvar[k])
        elif variance == "fixed_small":
            logvar = torch.full_like(x, self.post_logvar_clipped[k])
        else:
            raise ValueError(variance)
        return x0, mean, logvar

    def p_sample(self, x, out, k, z, variance="learned_range", clip=False, prediction="epsilon"):
        _, mean, logvar = self.p_mean_variance(x, out, k, variance, clip, prediction)
        if k == 0:
            return mean
        return mean + torch.exp(0.5 * logvar) * z

    def ddim_sample(self, x, out, k, z, eta, clip=False, prediction="epsilon"):
        x0 = self.sqrt_recip[k] * x - self.sqrt_recipm1[k] * self.epsilon(x, out, k, prediction)
        if clip:
            x0 = x0.clamp(-1, 1)
        eps = (self.sqrt_recip[k] * x - x0) / self.sqrt_recipm1[k]
        a, ap = self.ab[k], self.ab_prev[k]
        sigma = eta * math.sqrt((1 - ap) / (1 - a)) * math.sqrt(1 - a / ap)
        mean = x0 * math.sqrt(ap) + math.sqrt(1 - ap - sigma ** 2) * eps
        if k == 0 or eta == 0:
            return mean
        return mean + sigma * z

    def dpm_solver_step(self, x, out, k: int, prev_x0=None, prediction: str = "epsilon", z=None):
        """DPM-Solver++(2M) (Lu et al. 2022, midpoint form) from level k to k-1, or to x0 at k = 0;
        first order without prev_x0 (the x0 of step k+1). With noise z, the SDE form (diffusers'
        "sde-dpmsolver++"): x_t = (s_t/s_s) e^-h x + a_t (1 - e^-2h)(D0 + D1/2) + s_t sqrt(1 - e^-2h) z.
        Returns (x_{k-1}, x0_k)."""
        eps = self.epsilon(x, out, k, prediction)
        x0 = self.sqrt_recip[k] * x - self.sqrt_recipm1[k] * eps
        if k == 0:
            return x0, x0
        lam = lambda ab: 0.5 * (math.log(ab) - math.log(1.0 - ab))  # noqa: E731
        a, at = self.ab[k], self.ab[k - 1]
        h = lam(at) - lam(a)
        ratio = math.sqrt((1.0 - at) / (1.0 - a))
        if z is None:
            e = math.sqrt(at) * (1.0 - math.exp(-h))
            xt = ratio * x + e * x0
        else:
            e = math.sqrt(at) * (1.0 - math.exp(-2.0 * h))
            xt = ratio * math.exp(-h) * x + e * x0 + math.sqrt(1.0 - at) * math.sqrt(1.0 - math.exp(-2.0 * h)) * z
        if prev_x0 is not None and k + 1 < self.count:
            r = (lam(a) - lam(self.ab[k + 1])) / h
            xt = xt + 0.5 * e / r * (x0 - prev_x0)
        return xt, x0

    def renoise(self, x, k: int, z):
        """One forward step from level k-1 up to level k: sqrt(1 - beta'_k) x + sqrt(beta'_k) z."""
        return math.sqrt(1.0 - self.betas[k]) * x + math.sqrt(self.betas[k]) * z

    def replace(self, x, known_x0, z, rows: slice, cols: slice, k: int, level: str):
        """Set x[..., rows, cols] = sqrt(a)*known_x0 + sqrt(1-a)*z on that region (a new tensor).

        level "official": a = ab[k] (the level of x_k); "previous": a = ab_prev[k] (RePaint).
        """
        a = self.ab[k] if level == "official" else self.ab_prev[k]
        y = x.clone()
        y[..., rows, cols] = math.sqrt(a) * known_x0[..., rows, cols] + math.sqrt(1 - a) * z[..., rows, cols]
        return y


def resample_schedule(count: int, jump_length: int = 1, jump_count: int = 1) -> list[tuple[str, int, int]]:
    """RePaint resampling (Lugmayr et al. 2022, Sec. 4.2) as a list of (kind, k, visit).

    Levels run from count-1 (x_T) down to -1 (clean). Each time a denoising step lands on a level
    that is a multiple of jump_length and at least jump_length below the top, the sample is
    re-noised jump_length levels back up, jump_count - 1 times per such level; ("denoise", k, v)
    goes from level k to k-1, ("renoise", k, v) from level k-1 to k; v counts earlier visits of
    (kind, k).
    """
    left = {}
    if jump_count > 1:
        left = {lvl: jump_count - 1 for lvl in range(0, count - jump_length, jump_length)}
    seen: dict[tuple[str, int], int] = {}
    out = []

    def emit(kind, k):
        v = seen.get((kind, k), 0)
        seen[(kind, k)] = v + 1
        out.append((kind, k, v))

    level = count - 1
    while level >= 0:
        emit("denoise", level)
        level -= 1
        if left.get(level, 0) > 0:
            left[level] -= 1
            for _ in range(jump_length):
                level += 1
                emit("renoise", level)
    return out


# --------------------------------------------------------------------------------------------
# Counter-based noise: Philox4x32-10 and Box-Muller normals keyed by (seed, purpose, grid, step, frame)
# --------------------------------------------------------------------------------------------

_MASK = 0xFFFFFFFF
PURPOSES = {"initial": 0, "step": 1, "replacement": 2, "other": 3, "jump": 4, "posterior": 5,
            "sr_initial": 6, "sr_step": 7, "sr_jump": 8, "sr_posterior": 9}


def philox4x32_10(counter, key):
    """Philox4x32 with 10 rounds (Salmon et al. 2011) on Python ints."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & _MASK, (k1 + 0xBB67AE85) & _MASK
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & _MASK, p1 & _MASK, ((p0 >> 32) ^ c3 ^ k1) & _MASK, p0 & _MASK
    return c0, c1, c2, c3


def keyed_normals(count: int, seed: int, purpose: str, grid: int, step: int, frame: int) -> np.ndarray:
    """Normals 0..count-1 of one stream: block i -> two normals by Box-Muller in float64,
    u1 = (top 53 bits of words 0-1 + 1) * 2^-53, u2 = (top 53 bits of words 2-3) * 2^-53."""
    key = (seed & _MASK, (seed >> 32) & _MASK)
    out = np.empty(count + 1, dtype=np.float64)
    for i in range((count + 1) // 2):
        b = philox4x32_10((i, frame, step, (PURPOSES[purpose] << 24) | grid), key)
        a = ((b[0] << 32) | b[1]) >> 11
        c = ((b[2] << 32) | b[3]) >> 11
        u1, u2 = (a + 1) * 2.0 ** -53, c * 2.0 ** -53
        r = math.sqrt(-2.0 * math.log(u1))
        out[2 * i], out[2 * i + 1] = r * math.cos(2 * math.pi * u2), r * math.sin(2 * math.pi * u2)
    return out[:count].astype(np.float32)


def grid_noise(k: int, s: int, c: int, seed: int, purpose: str, grid: int, step: int) -> np.ndarray:
    """(C, K*S, K*S) noise: frame f (row-major) filled in its own (C, S, S) order."""
    g = np.zeros((c, k * s, k * s), dtype=np.float32)
    for f in range(k * k):
        r0, c0 = (f // k) * s, (f % k) * s
        g[:, r0:r0 + s, c0:c0 + s] = keyed_normals(c * s * s, seed, purpose, grid, step, f).reshape(c, s, s)
    return g


def _self_check() -> None:
    assert philox4x32_10((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert philox4x32_10((_MASK,) * 4, (_MASK, _MASK)) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    t = spaced_timesteps("250")
    assert t == [round(k * 999 / 249) for k in range(250)], "250 respacing"
    assert spaced_timesteps("ddim50") == list(range(0, 1000, 20))
    d = Diffusion("250")
    assert abs(d.betas[0] - 1e-4) < 1e-15
    assert abs(d.ab[-1] - np.cumprod(1 - linear_betas())[999]) < 1e-15
    print("diffusion_reference self-check ok; beta'_249 =", d.betas[-1])


if __name__ == "__main__":
    _self_check()
