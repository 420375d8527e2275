"""Stage 2 alone on exact held-out pairs (low = mean_pool(high, 4)): PSNR / SSIM / sharpness of the
super-resolved frames against the high-resolution truth, beside the bicubic condition itself.

    python tools/eval/sr_check.py --pipeline DIR [--count 64] [--setting ddpm:50 --setting dpmpp-2m:trailing18:0.5:shared] [--bf16]

A setting is sampler:steps[:sr_temperature[:sr_noise]], the pipeline's defaults where left out. The
pairs are single frames: their noise is per frame whatever sr_noise says.

--sequences N adds the temporal view: N real held-out sequences of --length frames (default 128),
mean-pooled to the low resolution and super-resolved frame by frame, scored with evaluate.py's
sequence metrics against real set A (tracking, identity, sharpness, warp error, flow, PCA-FD) beside
the real frames and their bicubic upsampling: what stage 2 alone does to motion and digit identity,
whatever stage 1 draws.

--bf16 adds a row per setting with the model's forward under PyTorch's CPU autocast to bfloat16 (as
`sample.py --bf16`): a proxy for gridit's bf16 products (bf16 inputs, fp32 accumulation), coarser
than them, since autocast also keeps the products' outputs in bfloat16.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "train"))
import metrics as M  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of uint8 image stacks (Gaussian window 11, sigma 1.5; Wang et al. 2004 constants)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
        blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
        vals.append((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))).mean())
    return float(np.mean(vals))


def main(argv=None) -> int:
    import torch
    import common as C
    import sample as S
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--seed", type=int, default=9101)
    ap.add_argument("--setting", action="append", type=parse_setting,
                    help="sampler:steps[:temperature[:per-frame|shared]] (default: the pipeline's sr defaults)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="also each setting under CPU autocast to bfloat16")
    ap.add_argument("--sequences", type=int, default=0, help="also N real sequences super-resolved (see above)")
    ap.add_argument("--length", type=int, default=128, help="their frames")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    pl = S.Pipeline(a.pipeline)
    low, high = C.md.sr_pairs(a.count, C.LR, C.SCALE, a.seed, "heldout", **C.DATA_KW)
    rows = {}
    rows["bicubic condition"] = bicubic(low)
    d = pl.defaults
    settings = [complete(s, d) for s in a.setting or [()]]
    for s in settings:
        sampler, steps, temperature, _ = s
        g = torch.Generator().manual_seed(a.seed)
        rows[f"stage 2, {label(s)}"] = S.super_resolve(pl, low, g, sampler, steps, d["eta"], temperature=temperature)
        if a.bf16:
            g = torch.Generator().manual_seed(a.seed)
            rows[f"stage 2, {label(s)}, bf16 autocast"] = S.super_resolve(
                pl, low, g, sampler, steps, d["eta"], bf16=True, temperature=temperature)
    sharp_real = M.sharpness(high[None])
    out = {}
    print("| frames | PSNR dB | SSIM | sharpness ratio | mean-pool consistency (MAE, grey levels) |\n|---|---:|---:|---:|---:|")
    for name, img in rows.items():
        cons = np.abs(C.md.mean_pool(img, C.SCALE).astype(np.float64) - low).mean()
        out[name] = {"psnr": psnr(img, high), "ssim": ssim(img, high),
                     "sharp_ratio": M.sharpness(img[None]) / sharp_real, "pool_mae": float(cons)}
        r = out[name]
        print(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['sharp_ratio']:.2f} | {r['pool_mae']:.2f} |")
    print(f"({a.count} held-out pairs, seed {a.seed})")
    result = {"count": a.count, "seed": a.seed, "results": out}
    if a.sequences:
        result["sequences"] = sequence_rows(pl, a.sequences, a.length, settings, d["eta"], a.seed)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2, default=float)
    return 0


def parse_setting(text: str) -> tuple:
    import sample as S
    parts = text.split(":")
    if not 2 <= len(parts) <= 4 or (len(parts) == 4 and parts[3] not in S.SR_NOISES):
        raise argparse.ArgumentTypeError(f"{text!r}: use sampler:steps[:temperature[:per-frame|shared]]")
    if len(parts) >= 3:
        parts[2] = S.temperature_arg(parts[2])
    return tuple(parts)


def complete(setting: tuple, d: dict) -> tuple:
    """(sampler, steps, temperature, noise), the pipeline's defaults `d` where the setting is short."""
    import sample as S
    full = (d["sr_sampler"], d["sr_steps"]) + S.sr_noise_defaults(d)
    return tuple(setting) + full[len(setting):]


def label(s: tuple) -> str:
    sampler, steps, temperature, noise = s
    return f"{sampler} {steps}" + ("" if (temperature, noise) == (1.0, "per-frame") else f", T {temperature:g} {noise}")


def bicubic(low: np.ndarray) -> np.ndarray:
    """(M, S, S) uint8 -> (M, rS, rS) uint8: stage 2's condition as an image."""
    import common as C
    return C.to_u8(C.upsample(C.to_model(low)[:, None]))[:, 0]


def sequence_rows(pl, n: int, length: int, settings: list[tuple], eta: float, seed: int) -> dict:
    """Real held-out sequences (set B) at 64 px, bicubic from 16 px, and stage 2 from 16 px, each
    scored against real set A (evaluate.Reference)."""
    import torch
    import common as C
    import evaluate as E
    import sample as S
    ref = E.Reference(n, length, C.HR, 9001, False)
    low = E.real_set(n, length, C.LR, 9002)
    rows = {"real B": E.real_set(n, length, C.HR, 9002),
            "bicubic of real B at 16 px": bicubic(low.reshape(-1, C.LR, C.LR))}
    for s in settings:
        sampler, steps, temperature, noise = s
        g = torch.Generator().manual_seed(seed)
        rows[f"stage 2 of real B at 16 px, {label(s)}"] = S.super_resolve(
            pl, low.reshape(-1, C.LR, C.LR), g, sampler, steps, eta, temperature=temperature,
            length=length if noise == "shared" else None)
    print("\n| sequences | track pass | identity kept | sharpness | warp | flow | PCA-FD |\n|---|---:|---:|---:|---:|---:|---:|")
    out = {}
    for name, frames in rows.items():
        r = out[name] = ref.evaluate(frames.reshape(n, length, C.HR, C.HR))
        print(f"| {name} | {100 * r['track_pass']:.0f}% | {100 * r['identity_kept']:.0f}% | {r['sharp_ratio']:.2f} | "
              f"{r['warp_ratio']:.2f} | {r['flow_ratio']:.2f} | {r['pca_fd']:.2f} |")
    print(f"({n} real sequences of {length} frames, set B against A; ratios to A)")
    return out


if __name__ == "__main__":
    sys.exit(main())
