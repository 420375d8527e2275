"""Independent PyTorch reference of the GriDiT sequence engine (gridit and official modes).

Written from the method specification (shared reference gridit-method.md section 2: the grid
layout, the three-row extension, the in-between pass, the frame assembly; section 4: the
diffusion) and the engine's documented conventions (docs/ENGINE.md: noise keys, the RePaint level,
the 8-bit mapping, the bicubic condition). Nothing is shared with the Swift code but those rules.
Official-mode replacement is written the way the released scripts slice latent rows; gridit mode
in terms of grid cells. Everything is evaluated in float64.

    frames = run(pipeline_dir, mode="gridit", length=21, seed=5)   # uint8 (F, C, H, W)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusion_reference import Diffusion, grid_noise, keyed_normals, resample_schedule  # noqa: E402
from dit_reference import DiT, DiTConfig, load_weights  # noqa: E402
from vae_reference import VAE, VAEConfig  # noqa: E402


def quantize(x: np.ndarray) -> np.ndarray:
    """Model space [-1, 1] -> uint8: round half up of (x + 1) / 2 * 255, clamped."""
    return np.clip(np.floor((np.asarray(x, np.float64) + 1.0) / 2.0 * 255.0 + 0.5), 0, 255).astype(np.uint8)


def dequantize(u: np.ndarray) -> np.ndarray:
    return u.astype(np.float64) / 255.0 * 2.0 - 1.0


class Pipeline:
    def __init__(self, directory: Path):
        spec = json.loads((directory / "pipeline.json").read_text())
        self.spec = spec
        self.k = spec["grid"]["k"]
        self.frame = spec["grid"]["frame_size"]
        self.channels = spec["grid"]["channels"]

        def dit(entry):
            cfg = DiTConfig.from_json((directory / entry["config"]).read_text())
            model = DiT(cfg, attn_impl="math").double()
            load_weights(model, load_file(str(directory / entry["weights"])))
            return model.eval()

        self.stage1 = dit(spec["stage1"])
        self.guide = dit(spec["guide"]) if spec.get("guide") else None
        self.stage2 = dit(spec["stage2"]) if spec.get("stage2") else None
        self.scale = spec["stage2"]["scale"] if spec.get("stage2") else None
        self.vae = None
        if spec.get("vae"):
            v = spec["vae"]
            cfg = json.loads((directory / v["config"]).read_text())
            vcfg = VAEConfig(**{**cfg, "block_out_channels": tuple(cfg["block_out_channels"])})
            params = {k: t.double() for k, t in load_file(str(directory / v["weights"])).items()}
            self.vae = VAE(vcfg, params)
            self.factor = 2 ** (len(vcfg.block_out_channels) - 1)
            self.sf = v.get("scaling_factor", 0.18215)
            self.latent_channels = vcfg.latent_channels
        # Model-space geometry of a stage-1 frame.
        self.s = self.frame // self.factor if self.vae else self.frame
        self.c = self.latent_channels if self.vae else self.channels


def frame_slices(k: int, s: int, f: int):
    return slice((f // k) * s, (f // k) * s + s), slice((f % k) * s, (f % k) * s + s)


def model_out(model, x, t, label=None, cfg_scale=1.0, cond=None, guide=None, cfg_interval=None):
    """The model's output; with cfg_scale != 1 (and t in cfg_interval = (lower, upper), if given)
    pushed away from the guide model's output on the same input (autoguidance) or, without a guide,
    from the null class's (classifier-free)."""
    tt = torch.full((x.shape[0],), float(t), dtype=torch.float64)
    with torch.no_grad():
        if label is None and guide is None:
            return model(x, tt, cond=cond) if cond is not None else model(x, tt)
        y = None if label is None else torch.full((x.shape[0],), label, dtype=torch.long)
        out = model(x, tt, y=y)
        if cfg_scale == 1.0 or (cfg_interval is not None and not cfg_interval[0] <= t <= cfg_interval[1]):
            return out
        u = guide(x, tt, y=y) if guide is not None else model(x, tt, y=torch.full_like(y, model.cfg.num_classes))
        c = x.shape[1]
        guided = out.clone()
        guided[:, :c] = u[:, :c] + cfg_scale * (out[:, :c] - u[:, :c])
        return guided


def reverse_step(d: Diffusion, x, out, k, z, sampler: str, eta: float, prediction: str = "epsilon"):
    if sampler == "ddpm":
        return d.p_sample(x, out, k, z, prediction=prediction)
    return d.ddim_sample(x, out, k, z, eta, prediction=prediction)


def sample_grid(p: Pipeline, d: Diffusion, seed: int, gid: int, sampler: str, eta: float, replace=None,
                label=None, cfg_scale=1.0, jumps=(1, 1), clean=None, cfg_interval=None):
    """One stage-1 grid. `replace(x, z, k)` edits x after each step (it decides the levels);
    `clean(x)` sets clean known frames into x_T and after every step and jump (gridit's clean context).
    `jumps` = (length, count) of RePaint resampling; the noise of a transition that revisits k is
    keyed by step k + visit * count."""
    k_side, s, c = p.k, p.s, p.c
    x = torch.from_numpy(grid_noise(k_side, s, c, seed, "initial", gid, 0)).double()[None]
    if clean is not None:
        clean(x)
    for kind, k, visit in resample_schedule(d.count, *jumps):
        step_id = k + visit * d.count
        if kind == "renoise":
            z = torch.from_numpy(grid_noise(k_side, s, c, seed, "jump", gid, step_id)).double()[None]
            x = d.renoise(x, k, z)
        else:
            out = model_out(p.stage1, x, d.timestep_map[k], label, cfg_scale, guide=p.guide, cfg_interval=cfg_interval)
            z = torch.from_numpy(grid_noise(k_side, s, c, seed, "step", gid, step_id)).double()[None]
            x = reverse_step(d, x, out, k, z, sampler, eta, p.stage1.cfg.prediction)
            if replace is not None:
                replace(x, z[0], k)
        if clean is not None:
            clean(x)
    return x[0]


def decode_grid(p: Pipeline, x):
    if p.vae is None:
        return x
    return p.vae.decode(x[None] / p.sf)[0]


def official_context(p: Pipeline, image, seed: int, consumer: int, role: int):
    """The released code's context: the saved 8-bit PNG, read back (and VAE-encoded with a
    posterior sample whose eps is keyed by (consumer grid, role, cell))."""
    ctx = torch.from_numpy(dequantize(quantize(image.numpy())))
    if p.vae is None:
        return ctx
    mean, logvar = p.vae.encode(ctx[None])
    eps = torch.from_numpy(grid_noise(p.k, p.s, p.c, seed, "posterior", consumer, role)).double()
    return p.sf * (mean[0] + torch.exp(0.5 * logvar[0]) * eps)


def super_resolve(p: Pipeline, lr, index: int, seed: int, sampler: str, steps: str, eta: float):
    """Stage 2 of one frame: bicubic condition (+ VAE mean), keyed noise, the loop, decode."""
    d = Diffusion(steps)
    up = F.interpolate(lr[None], scale_factor=p.scale, mode="bicubic", align_corners=False)
    cond = p.sf * p.vae.encode(up)[0] if p.vae is not None else up
    shape = (1, p.stage2.cfg.in_channels, cond.shape[2], cond.shape[3])
    n = int(np.prod(shape))

    def noise(purpose, step):
        return torch.from_numpy(keyed_normals(n, seed, purpose, index, step, 0).reshape(shape)).double()

    x = noise("sr_initial", 0)
    for k in reversed(range(d.count)):
        out = model_out(p.stage2, x, d.timestep_map[k], cond=cond)
        x = reverse_step(d, x, out, k, noise("sr_step", k), sampler, eta, p.stage2.cfg.prediction)
    return p.vae.decode(x / p.sf)[0] if p.vae is not None else x[0]


def run(directory: Path, mode: str, length: int, seed: int, sampler: str, steps: str, eta: float = 0.0,
        context_rows: int = 1, sr: bool = True, sr_sampler: str = "ddim", sr_steps: str = "3",
        label=None, cfg_scale: float = 1.0, jumps=(1, 1), context: str = "renoised", cfg_interval=None):
    """The frames (uint8, (F, C, H, W)) and the stage-1 grids (model space) of one sequence."""
    p = Pipeline(directory)
    d = Diffusion(steps)
    K, s = p.k, p.s
    grids: dict[int, torch.Tensor] = {}
    images: dict[int, torch.Tensor] = {}

    def finish(gid, x):
        grids[gid] = x
        images[gid] = decode_grid(p, x)

    if mode == "gridit":
        kk, per = K * K, (K - context_rows) * K
        frames_src = []  # (grid, cell) of each output frame
        finish(0, sample_grid(p, d, seed, 0, sampler, eta, label=label, cfg_scale=cfg_scale, jumps=jumps,
                              cfg_interval=cfg_interval))
        frames_src += [(0, f) for f in range(min(length, kk))]
        g = 1
        while len(frames_src) < length:
            new = min(per, length - len(frames_src))
            known = kk - new
            x0 = torch.zeros_like(grids[0])
            for cell in range(known):
                sg, sc = frames_src[len(frames_src) - known + cell]
                r, c = frame_slices(K, s, cell)
                rs, cs = frame_slices(K, s, sc)
                x0[:, r, c] = grids[sg][:, rs, cs]

            def replace(x, z, k, x0=x0, known=known):
                a = Diffusion(steps).ab_prev[k]  # the level of x_{k-1} (1 after the last step)
                for cell in range(known):
                    r, c = frame_slices(K, s, cell)
                    x[0, :, r, c] = math.sqrt(a) * x0[:, r, c] + math.sqrt(1 - a) * z[:, r, c]

            def clean(x, x0=x0, known=known):
                for cell in range(known):
                    r, c = frame_slices(K, s, cell)
                    x[0, :, r, c] = x0[:, r, c]

            if context == "clean":
                finish(g, sample_grid(p, d, seed, g, sampler, eta, None, label, cfg_scale, jumps, clean, cfg_interval))
            else:
                finish(g, sample_grid(p, d, seed, g, sampler, eta, replace, label, cfg_scale, jumps,
                                      cfg_interval=cfg_interval))
            frames_src += [(g, known + j) for j in range(new)]
            g += 1
    else:
        n = max(0, (length - 2 * K) // (K * (K - 1)) + 1)
        S = s
        finish(0, sample_grid(p, d, seed, 0, sampler, eta))
        for e in range(n):  # G_{e+1}: rows 0..K-2 <- rows 1..K-1 of G_e, noise shifted with them
            gt = official_context(p, images[e], seed, e + 1, 0)

            def replace(x, z, k, gt=gt):
                if k != 0:
                    a = d.ab[k]
                    noised = math.sqrt(a) * gt + math.sqrt(1 - a) * z
                    x[0, :, 0:(K - 1) * S, :] = noised[:, S:K * S, :]

            finish(e + 1, sample_grid(p, d, seed, e + 1, sampler, eta, replace))
        for e in range(n):  # I_e: row 0 <- G_e row K-1, row K-1 <- G_{e+1} row K-1
            gid = n + 1 + e
            src = official_context(p, images[e], seed, gid, 1)
            tgt = official_context(p, images[e + 1], seed, gid, 2)

            def replace(x, z, k, src=src, tgt=tgt):
                if k != 0:
                    a = d.ab[k]
                    gs = math.sqrt(a) * src + math.sqrt(1 - a) * z
                    gg = math.sqrt(a) * tgt + math.sqrt(1 - a) * z
                    x[0, :, 0:S, :] = gs[:, (K - 1) * S:K * S, :]
                    x[0, :, (K - 1) * S:K * S, :] = gg[:, (K - 1) * S:K * S, :]

            finish(gid, sample_grid(p, d, seed, gid, sampler, eta, replace))
        frames_src = [(0, f) for f in range(K * K)]
        for e in range(n):
            frames_src += [(n + 1 + e, (K - 2) * K + j) for j in range(K)]
            frames_src += [(e + 1, (K - 1) * K + j) for j in range(K)]

    out = []
    fs = p.frame
    for i, (g, cell) in enumerate(frames_src):
        r, c = frame_slices(K, fs, cell)
        lr = images[g][:, r, c]
        if mode == "official":
            lr = torch.from_numpy(dequantize(quantize(lr.numpy())))
        img = super_resolve(p, lr, i, seed, sr_sampler, sr_steps, eta) if (sr and p.stage2 is not None) else lr
        out.append(quantize(img.numpy()))
    return np.stack(out), {g: t.numpy().astype(np.float32) for g, t in grids.items()}
