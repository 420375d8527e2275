"""PyTorch sampler for an exported moving-digits pipeline (judging quality without the Swift engine).

Reads pipeline.json + stage{1,2} safetensors/configs, generates sequences and writes one folder per
sequence in the layout of `griditd run` (frames/frame_00000.png ..., sequence.json), so the
evaluation tools read both the same way.

Modes (gridit-method.md §2; same schedule as training, respaced):
* gridit: exact length; each new grid keeps the last `context_rows` rows of the previous grid as
  known frames in its first rows (`context` "renoised": RePaint replacement after every step except
  the last, at the level of x_{k-1}, each frame with its own noise; "clean": the known frames as
  they are at every step, for a stage 1 trained with clean context); the generated rows are appended.
* official: the published algorithm in pixel space: 3 context rows re-noised at the level of x_k
  with the source frames' noise, the in-betweening pass (row 3 of G_k -> row 0, row 3 of G_{k+1}
  -> row 3, rows 1-2 generated), frames = G_0 ++ sum_k (I_k row 2 ++ G_{k+1} row 3), every grid
  rounded to 8 bits before it is reused (the PNG round trip); N = ceil((L - 16) / 8) extensions and
  the result truncated to L.
Stage 2 super-resolves every frame independently from the bicubic upsampling of its 8-bit frame,
its noise scaled by `sr_temperature` and, with `sr_noise` "shared", the same for every frame of a
sequence.
With a `guide` in the pipeline (a weaker stage 1) and a guidance scale s != 1 (`--cfg-scale`, default
the pipeline's defaults.cfg_scale, else 1), stage 1 is autoguided (Karras et al. 2024): its
prediction channels become guide + s * (stage1 - guide), its variance channels stay stage 1's
(`Guided`, built by `Pipeline.stage1_model`, which proxy.py samples with too). With a guidance
interval (`--cfg-interval LO:HI`, default the pipeline's defaults.cfg_interval, else every step)
only the steps whose timestep t has LO <= t <= HI are guided.

Noise comes from torch.Generator(seed) (not the engine's Philox streams): distributions match the
Swift engine, bytes do not.

    python tools/train/sample.py --pipeline DIR --out OUT --count 8 --length 128 --seed 1 [--cfg-scale 2]
        [--cfg-interval 700:999]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


SAMPLERS = ["ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde"]
MAX_CFG_SCALE = 100.0  # the engine's JobSpec.Parameters.maxCFGScale
MAX_TIMESTEP = 999  # the engine's GuidanceInterval.maxTimestep


def check_interval(interval) -> tuple[int, int]:
    """(lower, upper) from a pair or "LO:HI", checked as the engine checks cfg_interval."""
    try:
        lo, hi = (int(v) for v in (interval.split(":") if isinstance(interval, str) else interval))
    except (TypeError, ValueError):
        raise ValueError(f"cfg_interval {interval!r}: give two timesteps, LO:HI (such as 700:999)") from None
    if not 0 <= lo <= hi <= MAX_TIMESTEP:
        raise ValueError(f"cfg_interval [{lo}, {hi}]: use timesteps 0 <= lower <= upper <= {MAX_TIMESTEP} "
                         "(700:999 guides only the noisiest steps)")
    return lo, hi


def interval_arg(text: str) -> tuple[int, int]:
    """argparse type of --cfg-interval."""
    try:
        return check_interval(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


GUIDE_MATCH = ("input_size", "in_channels", "condition_channels", "num_classes", "learn_sigma", "prediction")
GUIDE_AT_MOST = ("depth", "hidden_size", "num_heads", "mlp_ratio")  # and patch_size at least stage 1's


def check_guide(stage1: C.ref.DiTConfig, guide: C.ref.DiTConfig) -> None:
    """A ValueError naming the fields where a guide's config breaks the engine's rules
    (PipelineSpec.validate): what it takes and predicts is stage 1's, and it is no larger."""
    differ = [f for f in GUIDE_MATCH if getattr(guide, f) != getattr(stage1, f)]
    if differ:
        raise ValueError(f"the guide does not match stage 1 in {', '.join(differ)} "
                         f"({', '.join(f'{f} {getattr(guide, f)} vs {getattr(stage1, f)}' for f in differ)}); "
                         "a guide is a weaker model of the same task (an earlier or smaller stage 1)")
    larger = [f for f in GUIDE_AT_MOST if getattr(guide, f) > getattr(stage1, f)]
    larger += ["patch_size"] if guide.patch_size < stage1.patch_size else []
    if larger:
        raise ValueError(f"the guide is larger than stage 1 in {', '.join(larger)} (a smaller patch_size is "
                         "larger); use a guide no larger than stage 1")


class Guided(torch.nn.Module):
    """Autoguidance (Karras et al. 2024, guiding a diffusion model with a bad version of itself):
    the first C = in_channels output channels (the prediction, epsilon or v) are
    guide + scale * (good - guide), the learned-variance channels are good's; with an `interval`
    (lower, upper), only for the rows whose timestep t has lower <= t <= upper (the guide runs on
    those rows alone). `cfg` is good's, so the samplers take it for the model."""

    def __init__(self, good: torch.nn.Module, guide: torch.nn.Module, scale: float,
                 interval: tuple[int, int] | None = None):
        super().__init__()  # scale and interval are checked by Pipeline, which builds this
        self.good, self.guide, self.scale, self.interval = good, guide, float(scale), interval
        self.cfg = good.cfg

    def forward(self, x, t, y=None, cond=None):
        out = self.good(x, t, y, cond).float()
        rows = torch.ones(len(x), dtype=torch.bool) if self.interval is None else \
            (t >= self.interval[0]) & (t <= self.interval[1])
        if not rows.any():
            return out
        pick = lambda v: None if v is None else v[rows]  # noqa: E731
        g = self.guide(x[rows], t[rows], pick(y), pick(cond)).float()
        c = self.cfg.in_channels
        out[rows, :c] = g[:, :c] + self.scale * (out[rows, :c] - g[:, :c])
        return out


class Pipeline:
    """The models of a pipeline folder: stage1, guide (None without one), stage2 (None without),
    grid k, frame side s, stage-2 scale and the defaults."""

    def __init__(self, folder: str):
        with open(os.path.join(folder, "pipeline.json")) as f:
            self.spec = json.load(f)
        p = lambda name: os.path.join(folder, name)  # noqa: E731
        s1, g, s2 = self.spec["stage1"], self.spec.get("guide"), self.spec.get("stage2")
        self.stage1 = C.load_safetensors(p(s1["config"]), p(s1["weights"]))
        self.guide = C.load_safetensors(p(g["config"]), p(g["weights"])) if g else None
        if self.guide is not None:
            try:
                check_guide(self.stage1.cfg, self.guide.cfg)
            except ValueError as e:
                raise ValueError(f"{p('pipeline.json')}: {e}") from None
        self.stage2 = C.load_safetensors(p(s2["config"]), p(s2["weights"])) if s2 else None
        self.k = self.spec["grid"]["k"]
        self.s = self.spec["grid"]["frame_size"]
        self.scale = s2["scale"] if s2 else 1
        self.defaults = self.spec["defaults"]

    @classmethod
    def of(cls, stage1=None, stage2=None, guide=None, k: int = C.K, s: int = C.LR, scale: int = 1,
           defaults: dict | None = None) -> "Pipeline":
        """A pipeline of models in memory (checkpoints, tests); `defaults` over export's (common.Defaults)."""
        pl = cls.__new__(cls)
        pl.spec, pl.stage1, pl.guide, pl.stage2 = None, stage1, guide, stage2
        pl.k, pl.s, pl.scale = k, s, scale
        pl.defaults = {**C.pipeline_json(C.Defaults(), "")["defaults"], **(defaults or {})}
        if guide is not None:
            check_guide(stage1.cfg, guide.cfg)
        return pl

    def cfg_scale(self, scale: float | None = None) -> float:
        """Stage 1's guidance scale: `scale`, else defaults.cfg_scale (1 when absent), checked as the
        engine checks it: 0 to MAX_CFG_SCALE; a scale != 1 given for an unconditional stage 1 without a
        guide is an error, a default != 1 there runs unguided (1)."""
        s = float(self.defaults.get("cfg_scale", 1.0) if scale is None else scale)
        if not 0 <= s <= MAX_CFG_SCALE:
            raise ValueError(f"cfg_scale {s}: use a scale from 0 to {MAX_CFG_SCALE:g} (1 = no guidance)")
        if s != 1 and self.guide is None and self.stage1.cfg.num_classes == 0:
            if scale is not None:
                raise ValueError(f"cfg_scale {s:g} given, but stage 1 is unconditional and the pipeline has no guide; "
                                 "drop --cfg-scale, or export the pipeline with a guide (export.py --guide)")
            return 1.0
        return s

    def cfg_interval(self, interval=None) -> tuple[int, int] | None:
        """The guidance interval: `interval` (a pair or "LO:HI"), else defaults.cfg_interval,
        checked; None for every step (also for an interval that covers 0...999, as the engine)."""
        i = self.defaults.get("cfg_interval") if interval is None else interval
        if i is None:
            return None
        lo, hi = check_interval(i)
        return None if (lo, hi) == (0, MAX_TIMESTEP) else (lo, hi)

    def stage1_model(self, scale: float | None = None, interval=None) -> torch.nn.Module:
        """The stage-1 model to sample with at cfg_scale(scale) in cfg_interval(interval): Guided
        by the guide when the pipeline has one and the scale is not 1, else stage 1 itself (the
        guide is not run). (A class-conditional stage 1 without a guide: classifier-free guidance
        is the Swift engine's; this sampler passes no labels.)"""
        s, i = self.cfg_scale(scale), self.cfg_interval(interval)
        return Guided(self.stage1, self.guide, s, i) if self.guide is not None and s != 1 else self.stage1

    def guidance(self, scale: float | None = None, interval=None) -> str:
        """What stage1_model(scale, interval) does, in words (logs and summaries)."""
        s, i = self.cfg_scale(scale), self.cfg_interval(interval)
        if self.guide is not None and s != 1:
            g = self.guide.cfg
            return (f"autoguidance cfg_scale {s:g}" + (f" at t in [{i[0]}, {i[1]}]" if i else "")
                    + f" (guide depth {g.depth}, width {g.hidden_size})")
        return "no guidance" + (" (the guide is not run at cfg_scale 1)" if self.guide is not None else "")


@torch.no_grad()
def denoise(model, diff, x, gen, sampler: str, eta: float, cond=None, known=None, mask=None,
            level: str = "previous", noise_map=None, bf16: bool = False, ctx_t: int = 0, draw=None):
    """x: (N, C, H, W) x_T, denoised in place of a copy; known/mask (N, C, H, W): clean known pixels
    and where they are, replaced after each step at the level of x_k ("official"), of x_{k-1}
    ("previous", RePaint), or given clean at every step ("clean", for a model trained with clean
    context); noise_map(z) gives the z each known pixel is re-noised with; draw(shape) the steps'
    noise (default: standard normals from gen)."""
    draw = draw or (lambda shape: torch.randn(shape, generator=gen))
    n = x.shape[0]
    prediction = model.cfg.prediction
    prev_x0 = None
    train_diff = C.TrainDiffusion() if ctx_t > 0 else None

    def given():  # clean known frames, or noised to training's level ctx_t with fresh noise each step
        if ctx_t == 0:
            return known
        t = torch.full((known.shape[0],), ctx_t)
        return train_diff.q_sample(known, t, torch.randn(known.shape, generator=gen))

    if known is not None and level == "clean":
        x = torch.where(mask, given(), x)
    for k in reversed(range(diff.count)):
        t = torch.full((n,), float(diff.timestep_map[k]))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x, t, None, cond)
        out = out.float()
        z = draw(x.shape)
        if sampler == "ddpm":
            x = diff.p_sample(x, out, k, z, prediction=prediction)
        elif sampler in ("dpmpp-2m", "dpmpp-2m-sde"):  # known frames go to the new level: "official" acts as "previous"
            x, prev_x0 = diff.dpm_solver_step(x, out, k, prev_x0, prediction, z if sampler == "dpmpp-2m-sde" else None)
            x = x.float()
            level = "previous" if level == "official" else level
        else:
            x = diff.ddim_sample(x, out, k, z, eta, prediction=prediction)
        if known is not None and level == "clean":
            x = torch.where(mask, given(), x)
        elif k != 0 and known is not None:
            a = diff.ab[k] if level == "official" else diff.ab_prev[k]
            zk = noise_map(z) if noise_map else z
            x = torch.where(mask, math.sqrt(a) * known + math.sqrt(1 - a) * zk, x)
    return x


def _quant(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit round trip of a grid (model space -> u8 -> model space)."""
    return C.to_model(C.to_u8(x))


def grid_frames(grid: torch.Tensor, k: int, s: int, rows) -> torch.Tensor:
    """(N, 1, kS, kS) -> (N, len(rows)*k, S, S) frames of the given grid rows, row-major."""
    n = grid.shape[0]
    g = grid[:, 0].reshape(n, k, s, k, s).permute(0, 1, 3, 2, 4)  # (N, row, col, S, S)
    return g[:, list(rows)].reshape(n, len(rows) * k, s, s)


def context_level(context: str) -> int:
    """0 for "clean" or "renoised", T for "noisedT" (1 <= T <= 999); else a ValueError naming the choices."""
    if context in ("clean", "renoised"):
        return 0
    level = context[len("noised"):] if context.startswith("noised") else ""
    if not (level.isdigit() and 1 <= int(level) <= 999):
        raise ValueError(f"context {context!r}: use renoised, clean or noisedT with T in 1...999 (e.g. noised50)")
    return int(level)


def context_arg(context: str) -> str:
    """argparse type of --context."""
    try:
        context_level(context)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return context


SR_NOISES = ["per-frame", "shared"]


def sr_noise_defaults(d: dict) -> tuple[float, str]:
    """A pipeline's stage-2 (sr_temperature, sr_noise); files from before them: 1, per frame."""
    return d.get("sr_temperature", 1.0), d.get("sr_noise", "per-frame")


def check_temperature(t: float) -> float:
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"sr temperature {t}: use 0...1 (1 = as trained)")
    return t


def temperature_arg(text: str) -> float:
    """argparse type of --sr-temperature."""
    try:
        return check_temperature(float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def stage1_sequences(pl: Pipeline, n: int, length: int, gen, mode: str, sampler: str, steps, eta: float,
                     context_rows: int, bf16: bool = False, log=None, context: str = "renoised",
                     cfg_scale: float | None = None, cfg_interval=None) -> torch.Tensor:
    """(N, L, S, S) float frames in [-1, 1]; stage 1 is pl.stage1_model(cfg_scale, cfg_interval)
    (autoguided when the pipeline has a guide and the scale is not 1; None: the pipeline's default)."""
    k, s = pl.k, pl.s
    diff = C.dref.Diffusion(str(steps))
    model = pl.stage1_model(cfg_scale, cfg_interval)
    shape = (n, 1, k * s, k * s)
    tick = time.time()
    g0 = denoise(model, diff, torch.randn(shape, generator=gen), gen, sampler, eta, bf16=bf16)
    if mode == "gridit":
        c = context_rows
        # "noisedT": the known frames are given at every step noised to the fixed level T (fresh noise)
        ctx_t = context_level(context)
        frames = [grid_frames(g0, k, s, range(k))]
        have, prev, gi = k * k, g0, 1
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[:, :, : c * s] = True
        while have < length:
            known = torch.zeros(shape)
            known[:, :, : c * s] = prev[:, :, (k - c) * s:]
            g = denoise(model, diff, torch.randn(shape, generator=gen), gen, sampler, eta, known=known, mask=mask,
                        level="previous" if context == "renoised" else "clean", bf16=bf16, ctx_t=ctx_t)
            g[:, :, : c * s] = known[:, :, : c * s]  # the carried frames are the previous grid's exact ones
            frames.append(grid_frames(g, k, s, range(c, k)))
            have += (k - c) * k
            prev, gi = g, gi + 1
            if log:
                log(f"  stage1 grid {gi}: {have}/{length} frames, {time.time() - tick:.0f} s")
        return torch.cat(frames, dim=1)[:, :length]
    if mode != "official":
        raise ValueError(f"mode {mode!r}: use gridit or official")
    if k != 4:
        raise ValueError("official mode needs k = 4")
    ext = max(0, math.ceil((length - k * k) / 8))
    g0 = _quant(g0)
    grids = [g0]
    mask3 = torch.zeros(shape, dtype=torch.bool)
    mask3[:, :, : 3 * s] = True
    shift = lambda z: torch.cat([z[:, :, s:], z[:, :, s:2 * s]], dim=2)  # noqa: E731  rows 1,2,3 -> 0,1,2
    for e in range(ext):
        known = torch.zeros(shape)
        known[:, :, : 3 * s] = grids[-1][:, :, s:]
        g = denoise(model, diff, torch.randn(shape, generator=gen), gen, sampler, eta, known=known, mask=mask3,
                    level="official", noise_map=shift, bf16=bf16)
        grids.append(_quant(g))
        if log:
            log(f"  stage1 extension {e + 1}/{ext}, {time.time() - tick:.0f} s")
    frames = [grid_frames(g0, k, s, range(4))]
    mask03 = torch.zeros(shape, dtype=torch.bool)
    mask03[:, :, :s] = True
    mask03[:, :, 3 * s:] = True
    row3 = lambda z: torch.cat([z[:, :, 3 * s:], z[:, :, s:3 * s], z[:, :, 3 * s:]], dim=2)  # noqa: E731
    for e in range(ext):
        known = torch.zeros(shape)
        known[:, :, :s] = grids[e][:, :, 3 * s:]
        known[:, :, 3 * s:] = grids[e + 1][:, :, 3 * s:]
        it = denoise(model, diff, torch.randn(shape, generator=gen), gen, sampler, eta, known=known, mask=mask03,
                     level="official", noise_map=row3, bf16=bf16)
        it = _quant(it)
        frames += [grid_frames(it, k, s, [2]), grid_frames(grids[e + 1], k, s, [3])]
        if log:
            log(f"  stage1 in-betweening {e + 1}/{ext}, {time.time() - tick:.0f} s")
    return torch.cat(frames, dim=1)[:, :length]


def super_resolve(pl: Pipeline, lr_u8: np.ndarray, gen, sampler: str, steps, eta: float, batch: int = 256,
                  bf16: bool = False, log=None, temperature: float = 1.0, length: int | None = None) -> np.ndarray:
    """lr_u8 (M, S, S) uint8 -> (M, rS, rS) uint8. All of the noise is scaled by `temperature`; with
    `length`, the M frames are sequences of that many frames and each sequence's frames share their
    noise (sr_noise "shared"; batches then hold whole sequences)."""
    diff = C.dref.Diffusion(str(steps))
    out = []
    hr = pl.s * pl.scale
    check_temperature(temperature)
    if length:
        if len(lr_u8) % length:
            raise ValueError(f"{len(lr_u8)} frames are not whole sequences of {length} (shared noise)")
        batch = length * max(1, batch // length)

    def draw(shape):
        if not length:
            return temperature * torch.randn(shape, generator=gen)
        z = torch.randn((shape[0] // length, 1) + tuple(shape[1:]), generator=gen)
        return temperature * z.expand((shape[0] // length, length) + tuple(shape[1:])).reshape(shape)

    for i in range(0, len(lr_u8), batch):
        low = C.to_model(lr_u8[i:i + batch])[:, None]
        cond = C.upsample(low, pl.scale)
        x = draw((len(low), 1, hr, hr))
        out.append(C.to_u8(denoise(pl.stage2, diff, x, gen, sampler, eta, cond=cond, bf16=bf16, draw=draw))[:, 0])
        if log:
            log(f"  stage2 {min(i + batch, len(lr_u8))}/{len(lr_u8)} frames")
    return np.concatenate(out)


def write_sequence(folder: str, frames: np.ndarray, meta: dict) -> None:
    from PIL import Image
    os.makedirs(os.path.join(folder, "frames"), exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(folder, "frames", f"frame_{i:05d}.png"))
    with open(os.path.join(folder, "sequence.json"), "w") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")


def generate(pl: Pipeline, count: int, length: int, seed: int, mode=None, sampler=None, steps=None,
             eta=None, sr_sampler=None, sr_steps=None, context_rows=None, no_sr=False, batch=None,
             bf16=False, log=None, context=None, sr_temperature=None,
             sr_noise=None, cfg_scale=None, cfg_interval=None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Returns (lr u8 (count, L, S, S), hr u8 (count, L, rS, rS) or None, the settings used).
    cfg_scale: stage 1's guidance scale (None: the pipeline's defaults.cfg_scale, else 1);
    cfg_interval: its timesteps (None: defaults.cfg_interval, else every step)."""
    d = pl.defaults
    temperature, noise = sr_noise_defaults(d)
    st = dict(mode=mode or d["mode"], sampler=sampler or d["sampler"], steps=steps or d["steps"],
              eta=d["eta"] if eta is None else eta, sr_sampler=sr_sampler or d["sr_sampler"],
              sr_steps=sr_steps or d["sr_steps"], sr_temperature=temperature if sr_temperature is None else sr_temperature,
              sr_noise=sr_noise or noise, context_rows=context_rows or d["context_rows"],
              context=context or d.get("context", "renoised"), cfg_scale=pl.cfg_scale(cfg_scale),
              cfg_interval=pl.cfg_interval(cfg_interval))
    gen = torch.Generator().manual_seed(seed)
    batch = batch or count
    lrs, hrs = [], []
    for i in range(0, count, batch):
        m = min(batch, count - i)
        lr = C.to_u8(stage1_sequences(pl, m, length, gen, st["mode"], st["sampler"], st["steps"], st["eta"],
                                      st["context_rows"], bf16=bf16, log=log, context=st["context"],
                                      cfg_scale=st["cfg_scale"], cfg_interval=st["cfg_interval"] or (0, MAX_TIMESTEP)))
        lrs.append(lr)
        if not no_sr and pl.stage2 is not None:
            hr = super_resolve(pl, lr.reshape(-1, pl.s, pl.s), gen, st["sr_sampler"], st["sr_steps"], st["eta"],
                               bf16=bf16, log=log, temperature=st["sr_temperature"],
                               length=length if st["sr_noise"] == "shared" else None)
            hrs.append(hr.reshape(m, length, pl.s * pl.scale, pl.s * pl.scale))
    return np.concatenate(lrs), (np.concatenate(hrs) if hrs else None), st


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", required=True, help="folder with pipeline.json")
    ap.add_argument("--out", required=True, help="output folder; sequence i goes to OUT/seq_IIII")
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mode", choices=["gridit", "official"])
    ap.add_argument("--sampler", choices=SAMPLERS)
    ap.add_argument("--steps")
    ap.add_argument("--eta", type=float)
    ap.add_argument("--sr-sampler", choices=SAMPLERS)
    ap.add_argument("--sr-steps")
    ap.add_argument("--sr-temperature", type=temperature_arg, help="scale of stage 2's noise, 0...1")
    ap.add_argument("--sr-noise", choices=SR_NOISES)
    ap.add_argument("--context-rows", type=int)
    ap.add_argument("--context", type=context_arg, help="gridit mode's known frames: renoised, clean, or noisedT (clean ones "
                    "noised to the fixed level T at every step)")
    ap.add_argument("--cfg-scale", type=float, help="stage 1's guidance scale: autoguidance by the pipeline's guide "
                    "(1 = none; default: the pipeline's defaults.cfg_scale)")
    ap.add_argument("--cfg-interval", type=interval_arg, metavar="LO:HI", help="timesteps where that guidance "
                    "applies, 0 <= LO <= HI <= 999 (default: the pipeline's defaults.cfg_interval, else every step)")
    ap.add_argument("--no-sr", action="store_true", help="write the 16x16 stage-1 frames")
    ap.add_argument("--batch", type=int, help="sequences per stage-1 batch (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    log = None if a.quiet else (lambda m: print(m, flush=True))
    pl = Pipeline(a.pipeline)
    try:
        pl.cfg_scale(a.cfg_scale)
        pl.cfg_interval(a.cfg_interval)
    except ValueError as e:
        ap.error(str(e))
    if log:
        log(f"stage 1: {pl.guidance(a.cfg_scale, a.cfg_interval)}")
    t0 = time.time()
    lr, hr, st = generate(pl, a.count, a.length, a.seed, a.mode, a.sampler, a.steps, a.eta, a.sr_sampler,
                          a.sr_steps, a.context_rows, a.no_sr, a.batch, a.bf16, log, a.context, a.sr_temperature,
                          a.sr_noise, a.cfg_scale, a.cfg_interval)
    seconds = time.time() - t0
    frames = lr if hr is None else hr
    for i in range(a.count):
        write_sequence(os.path.join(a.out, f"seq_{i:04d}"), frames[i],
                       {"generator": "tools/train/sample.py (PyTorch)", "pipeline": os.path.abspath(a.pipeline),
                        "seed": a.seed, "index": i, "length": a.length, "no_sr": a.no_sr or hr is None,
                        **st, "seconds_total": round(seconds, 2)})
    print(f"wrote {a.count} sequences of {a.length} frames to {a.out} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
