"""Quick quality check of training checkpoints with the PyTorch sampler (minutes, not the full report).

    python tools/train/proxy.py --ckpt-dir CKPT [--ema1 0.9999] [--stages 1,2] [--json out.json]
    python tools/train/proxy.py --stage1 CKPT/snap/stage1-012000.pt --stages 1
    python tools/train/proxy.py --pipeline models/moving-digits --stages 1 --nlong 0    # a landed bundle
    python tools/train/proxy.py --pipeline OUT --stages 1 --cfg-scale 1                 # its guide off

With `--pipeline`, stage 1 is sampled (and its x0 errors taken) as sample.py samples it: autoguided
by the pipeline's guide at its defaults.cfg_scale, or at `--cfg-scale` (1: stage 1 alone); the
summary line names the guidance used.

Stage 1 (16 px): `--n16` one-grid clips and `--nlong` gridit roll-outs of `--long` frames (DDPM
`--steps`, `--context-rows`, `--context`); their frames are upsampled ×4 by the bicubic stage-2
condition and scored with the 64 px digit tracking of tools/eval (real held-out frames treated the
same way pass about 96% at 16 frames and 88% at 128) and digit identity, beside the 16 px
sharpness ratio, warp/flow ratios and PCA-FD against real held-out clips; the real row is computed
the same way. The roll-outs' fade: their last 16 frames' sharpness and mean brightness over their
first 16's. With `--sr-from PIPELINE` the frames are super-resolved by that pipeline's stage 2
instead (and the real rows are real 64 px frames): digit identity needs it, as 7 px digits seen
through a bicubic x4 read as too many classes even in real data. Stage 2: PSNR, SSIM and sharpness
on exact held-out pairs, beside the bicubic condition (sr_check.py's numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "eval"))
import common as C  # noqa: E402
import export as E  # noqa: E402
import identity as ID  # noqa: E402
import metrics as M  # noqa: E402
import sample as S  # noqa: E402
import sr_check as SR  # noqa: E402


def up64(frames16: np.ndarray) -> np.ndarray:
    """(N, L, 16, 16) uint8 -> (N, L, 64, 64): the stage-2 condition (bicubic ×4), 8-bit."""
    n, length = frames16.shape[:2]
    x = C.upsample(C.to_model(frames16.reshape(-1, C.LR, C.LR))[:, None])
    return C.to_u8(x)[:, 0].reshape(n, length, C.HR, C.HR)


def clip_scores(gen16: np.ndarray, real16: np.ndarray, gen64: np.ndarray) -> dict:
    """Tracking and identity on the 64 px frames, the rest on the 16 px ones."""
    speed = C.md.max_speed(C.HR)
    tracks = [M.track_sequence(f, speed) for f in gen64]
    tr = M.tracking(gen64, speed, tracks)
    w, f = M.warp_flow(gen16)
    wr, fr = M.warp_flow(real16)
    return {"track_pass": tr["track_pass"], "count_ok": tr["count_ok"], "jump_ok": tr["jump_ok"],
            "bad_frame_rate": tr["bad_frame_rate"], **ID.identity(gen64, speed, tracks),
            "sharp_ratio": M.sharpness(gen16) / M.sharpness(real16),
            "warp_ratio": w / wr, "flow_ratio": f / fr, "pca_fd": M.FramePCA(real16).fd(gen16, real16)}


X0_TS = (100, 200, 400, 600, 700, 850)


@torch.no_grad()
def x0_errors(model, n: int = 64, seed: int = 9001) -> dict:
    """Mean squared error of the model's clean-grid estimate on held-out grids at X0_TS (the
    data-mean predictor scores about 0.066), and at t = 200 the error with the grids' frames
    shuffled across sequences over the real one: how much the model uses the other frames
    (training-study.md)."""
    grids = C.to_model(C.md.to_grids(real16(n, C.K * C.K, seed), C.K))[:, None]
    diff = C.TrainDiffusion()
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(grids.shape, generator=g)

    def err(x0, t):
        tt = torch.full((len(x0),), t)
        xt = diff.q_sample(x0, tt, noise)
        out = model(xt, tt.float()).float()
        c = x0.shape[1]
        ab = float(diff.sqrt_ab[t]) ** 2
        eps = out[:, :c] if model.cfg.prediction == "epsilon" else ab ** 0.5 * out[:, :c] + (1 - ab) ** 0.5 * xt
        pred = (xt - (1 - ab) ** 0.5 * eps) / ab ** 0.5
        return float(((pred - x0) ** 2).mean())

    out = {f"t{t}": err(grids, t) for t in X0_TS}
    frames = C.md.from_grids(C.to_u8(grids[:, 0]), C.K)  # (n, 16, S, S)
    perm = np.random.default_rng(seed).permutation(frames.size // (C.LR * C.LR))
    shuffled = frames.reshape(-1, C.LR, C.LR)[perm].reshape(frames.shape)
    out["shuffled_over_real_t200"] = err(C.to_model(C.md.to_grids(shuffled, C.K))[:, None], 200) / out["t200"]
    return out


def real16(n: int, length: int, seed: int) -> np.ndarray:
    return C.md.sequences(n, length, C.LR, seed, "heldout", render_factor=C.SCALE, **C.DATA_KW).frames


def real64(n: int, length: int, seed: int) -> np.ndarray:
    return C.md.sequences(n, length, C.HR, seed, "heldout", **C.DATA_KW).frames


def fmt(name: str, r: dict) -> str:
    return (f"| {name} | {100 * r['track_pass']:.0f}% | {100 * r['identity_kept']:.0f}% | {100 * r['count_ok']:.0f}% | "
            f"{100 * r['jump_ok']:.0f}% | {r['bad_frame_rate']:.3f} | {r['sharp_ratio']:.2f} | {r['warp_ratio']:.2f} | "
            f"{r['flow_ratio']:.2f} | {r['pca_fd']:.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt-dir")
    ap.add_argument("--pipeline", help="stage 1 (and its context setting) from this pipeline folder instead")
    ap.add_argument("--stage1")
    ap.add_argument("--stage2")
    ap.add_argument("--ema1", type=float)
    ap.add_argument("--ema2", type=float)
    ap.add_argument("--stages", default="1,2")
    ap.add_argument("--n16", type=int, default=32)
    ap.add_argument("--nlong", type=int, default=8)
    ap.add_argument("--long", type=int, default=64)
    ap.add_argument("--steps", help="default: the pipeline's, else 100")
    ap.add_argument("--sampler", help="default: the pipeline's, else ddpm")
    ap.add_argument("--cfg-scale", type=float, help="stage 1's autoguidance scale with the --pipeline's guide (1 = none; "
                    "default: the pipeline's defaults.cfg_scale, else 1)")
    ap.add_argument("--cfg-interval", type=S.interval_arg, metavar="LO:HI", help="timesteps of that guidance "
                    "(default: the pipeline's defaults.cfg_interval, else every step)")
    ap.add_argument("--context-rows", type=int, default=2)
    ap.add_argument("--context", type=S.context_arg, help="renoised, clean or noisedT (sample.py); default: the pipeline's, else renoised")
    ap.add_argument("--sr", action="append", help="sampler:steps of stage 2 (default ddpm:50)")
    ap.add_argument("--nsr", type=int, default=32)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast while sampling (faster, less exact)")
    ap.add_argument("--sheet", help="PNG of the first stage-1 roll-outs (16 px frames)")
    ap.add_argument("--sr-from", metavar="PIPELINE", help="super-resolve stage 1's frames with this pipeline's stage 2")
    ap.add_argument("--sr-steps", default="ddim25", help="its steps (DDIM eta 0 for ddimN, else DDPM)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    stages = [int(s) for s in a.stages.split(",")]
    path = lambda i, p: p or os.path.join(a.ckpt_dir or "", f"stage{i}.pt")  # noqa: E731
    out = {"args": vars(a)}
    t0 = time.time()
    head = ("| set | track pass | identity kept | count ok | jumps ok | bad frames | sharpness | warp | flow | PCA-FD |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    if 1 in stages:
        if a.pipeline:
            pl = S.Pipeline(a.pipeline)
            a.context = a.context or pl.defaults.get("context", "renoised")
            a.sampler, a.steps = a.sampler or pl.defaults["sampler"], a.steps or str(pl.defaults["steps"])
            with open(os.path.join(a.pipeline, "training.json")) as f:
                info = {"ema": None, **json.load(f)["stage1"]}
        else:
            model, info = E.load_ema(path(1, a.stage1), a.ema1)
            pl = S.Pipeline.of(model)
            a.context, a.sampler, a.steps = a.context or "renoised", a.sampler or "ddpm", a.steps or "100"
        try:  # stage 1 as the pipeline samples it: autoguided by its guide at cfg_scale != 1
            model, guidance = pl.stage1_model(a.cfg_scale, a.cfg_interval), pl.guidance(a.cfg_scale, a.cfg_interval)
        except ValueError as e:
            ap.error(str(e))
        out["stage1"] = info
        out["guidance"] = {"cfg_scale": pl.cfg_scale(a.cfg_scale), "cfg_interval": pl.cfg_interval(a.cfg_interval),
                           "guided": model is not pl.stage1, "text": guidance}
        g = torch.Generator().manual_seed(a.seed)
        gen = lambda n, length: C.to_u8(S.stage1_sequences(  # noqa: E731
            pl, n, length, g, "gridit", a.sampler, a.steps, 0.0, a.context_rows, bf16=a.bf16, context=a.context,
            cfg_scale=a.cfg_scale, cfg_interval=a.cfg_interval))
        sr = S.Pipeline(a.sr_from) if a.sr_from else None

        def to64(frames16: np.ndarray) -> np.ndarray:
            if sr is None:
                return up64(frames16)
            n, length = frames16.shape[:2]
            sampler = "ddim" if a.sr_steps.startswith("ddim") else "ddpm"
            hr = S.super_resolve(sr, frames16.reshape(-1, C.LR, C.LR), torch.Generator().manual_seed(a.seed), sampler,
                                 a.sr_steps, 0.0, bf16=a.bf16)
            return hr.reshape(n, length, C.HR, C.HR)

        def real_b(n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
            b16 = real16(n, length, 9002)
            return b16, (real64(n, length, 9002) if sr is not None else up64(b16))

        out["x0_errors"] = x0e = x0_errors(model)
        print("x0-MSE on held-out grids by t: " + ", ".join(f"{k} {v:.3f}" for k, v in x0e.items()))
        rows = {}
        r16 = real16(max(a.n16, 32), 16, 9001)
        b16, b64 = real_b(max(a.n16, 32), 16)
        rows["real B, 16 frames"] = clip_scores(b16, r16, b64)
        g16 = gen(a.n16, 16)
        rows["stage 1, 16 frames"] = clip_scores(g16, r16, to64(g16))
        if a.nlong:
            rl = real16(max(a.nlong, 16), a.long, 9001)
            b16, b64 = real_b(max(a.nlong, 16), a.long)
            rows[f"real B, {a.long} frames"] = clip_scores(b16, rl, b64)
            longs = gen(a.nlong, a.long)
            rows[f"stage 1, {a.long} frames"] = clip_scores(longs, rl, to64(longs))
            # the fade of long roll-outs: their last 16 frames against their first 16
            first, last = longs[:, :16], longs[:, -16:]
            out["fade"] = fade = {"sharpness_last_over_first": M.sharpness(last) / M.sharpness(first),
                                  "brightness_last_over_first": float(last.mean() / max(first.mean(), 1e-6))}
            print(f"last 16 frames / first 16: sharpness {fade['sharpness_last_over_first']:.2f}, "
                  f"brightness {fade['brightness_last_over_first']:.2f}")
            if a.sheet:
                C.md.write_png(a.sheet, C.md.contact_sheet(
                    longs[:4, ::max(1, a.long // 32)].reshape(-1, C.LR, C.LR), cols=min(32, a.long), scale=2, gap=1))
        print(f"stage 1 step {info['step']} EMA {info['ema']} ({info['hours']} h), {guidance}, {a.sampler} {a.steps}, "
              f"{a.context_rows} {a.context} context rows; frames "
              + (f"super-resolved by {a.sr_from} ({a.sr_steps})" if sr else "bicubic ×4") + " for tracking")
        print(head)
        for k, v in rows.items():
            print(fmt(k, v))
        out["stage1_rows"] = rows
    if 2 in stages:
        model, info = E.load_ema(path(2, a.stage2), a.ema2)
        out["stage2"] = info
        pl = S.Pipeline.of(stage2=model, scale=C.SCALE)
        low, high = C.md.sr_pairs(a.nsr, C.LR, C.SCALE, 9101, "heldout", **C.DATA_KW)
        sets = {"bicubic": C.to_u8(C.upsample(C.to_model(low)[:, None]))[:, 0]}
        for s in a.sr or ["ddpm:50"]:
            sampler, steps = s.split(":")
            g = torch.Generator().manual_seed(a.seed)
            sets[s] = S.super_resolve(pl, low, g, sampler, steps, 0.0, bf16=a.bf16)
        sharp = M.sharpness(high[None])
        rows = {k: {"psnr": SR.psnr(v, high), "ssim": SR.ssim(v, high), "sharp_ratio": M.sharpness(v[None]) / sharp}
                for k, v in sets.items()}
        print(f"stage 2 step {info['step']} EMA {info['ema']} ({info['hours']} h), {a.nsr} held-out pairs")
        print("| frames | PSNR dB | SSIM | sharpness |\n|---|---:|---:|---:|")
        for k, v in rows.items():
            print(f"| {k} | {v['psnr']:.2f} | {v['ssim']:.3f} | {v['sharp_ratio']:.2f} |")
        out["stage2_rows"] = rows
    print(f"({time.time() - t0:.0f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
