"""Tiny random-weight pipelines and reference sequences for GriditEngineTests.

    <venv>/bin/python tools/reference/make_engine_fixtures.py [--out DIR]

Default output: Tests/GriditEngineTests/Fixtures/. Deterministic (seeded torch.Generator,
float64 evaluation of the references).

Pipelines (each a folder with pipeline.json, stage configs and safetensors, F32):
    pixel/      1 channel, K = 4, 4 px frames (stage-1 input 16), x2 super-resolution to 8 px
    latent/     3 channels, K = 3, 8 px frames, a tiny VAE (factor 2, 2 latent channels), so stage 1
                works on 12 x 12 latent grids; x2 super-resolution (16 px frames, 8 px latents)
    classcond/  1 channel, K = 2, 4 px frames, class-conditional stage 1 (3 classes), no stage 2
    pixel_v/    pixel's models read as v-predictions ("prediction": "v"), defaults context "clean"
    pixel_guide/  pixel_v's stage 1 with a smaller guide model and cfg_scale 2 (autoguidance), no stage 2
    pixel_k2/, pixel_k5/   1 channel, K = 2 (4 px frames) and K = 5 (2 px frames), no stage 2

Reference sequences (tools/reference/engine_reference.py), files <case>.frames.npy (uint8,
(F, C, H, W)) and <case>.grid<g>.npy (float32 model-space stage-1 grid g):
    pixel_gridit      pixel, gridit, L = 21, seed 5, ddpm 4 steps, 1 context row, SR ddim 3 (eta 0)
    pixel_official    pixel, official, L = 20 (N = 2, 32 frames), seed 3, ddpm 4 steps, no SR
    latent_gridit     latent, gridit, L = 12, seed 11, ddim 3 steps (eta 0), 1 context row, SR ddim 2
    latent_official   latent, official, L = 10 (N = 1, 15 frames), seed 2, ddpm 3 steps, no SR
    classcond_guided  classcond, gridit, L = 6, seed 9, class 1, cfg 3, ddpm 4 steps
    pixel_jumps       pixel, gridit, L = 20, seed 4, ddpm 6 steps, 2 context rows, RePaint jumps of 2, 2 passes
    pixel_v_clean     pixel_v, gridit, L = 20, seed 6, ddpm 4 steps, 2 clean context rows, SR ddim 3
    pixel_autoguided  pixel_guide, gridit, L = 20, seed 7, ddpm 4 steps, 2 clean context rows, cfg_scale 2
    pixel_autoguided_interval   pixel_autoguided at seed 8, guided only at t in [500, 999]
    classcond_guided_interval   classcond_guided at seed 10, guided only at t in [0, 400]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_reference as ref  # noqa: E402
from dit_reference import DiT, DiTConfig, init_random_  # noqa: E402
from vae_reference import VAEConfig, param_shapes  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "Tests" / "GriditEngineTests" / "Fixtures"
SIZE_LIMIT = 600_000


def save_dit(folder: Path, name: str, cfg: DiTConfig, seed: int) -> dict:
    model = DiT(cfg, attn_impl="math")
    init_random_(model, torch.Generator().manual_seed(seed))
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.config.json").write_text(cfg.to_json() + "\n")
    return {"config": f"{name}.config.json", "weights": f"{name}.safetensors"}


def save_vae(folder: Path, cfg: VAEConfig, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if "norm" in name and name.endswith(".weight"):
            t = 1 + 0.2 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        params[name] = t.float().contiguous()
    save_file(params, str(folder / "vae.safetensors"))
    (folder / "vae.config.json").write_text(json.dumps(cfg.to_json(), indent=2, sort_keys=True) + "\n")
    return {"config": "vae.config.json", "weights": "vae.safetensors", "scaling_factor": 0.5, "encode": "mean"}


def tiny(input_size: int, in_ch: int, cond: int = 0, classes: int = 0, prediction: str = "epsilon") -> DiTConfig:
    return DiTConfig(depth=1, hidden_size=16, num_heads=2, patch_size=2, input_size=input_size, in_channels=in_ch,
                     learn_sigma=True, num_classes=classes, condition_channels=cond, prediction=prediction)


def write_pipeline(folder: Path, name: str, grid: dict, stage1: dict, stage2: dict | None, vae: dict | None,
                   defaults: dict, guide: dict | None = None) -> None:
    spec = {"format": "gridit.pipeline.v1", "name": name, "grid": grid, "stage1": stage1, "stage2": stage2,
            "vae": vae, "defaults": defaults, "limits": {"max_length": 1000}}
    if guide is not None:
        spec["guide"] = guide
    (folder / "pipeline.json").write_text(json.dumps(spec, indent=2) + "\n")


def build(out: Path) -> None:
    pixel = out / "pixel"
    pixel.mkdir(parents=True, exist_ok=True)
    s1 = save_dit(pixel, "stage1", tiny(16, 1), 101)
    s2 = save_dit(pixel, "stage2", tiny(8, 1, cond=1), 102)
    write_pipeline(pixel, "tiny-pixel", {"k": 4, "frame_size": 4, "channels": 1}, s1, {**s2, "scale": 2}, None,
                   {"mode": "gridit", "sampler": "ddpm", "steps": 4, "sr_sampler": "ddim", "sr_steps": 3,
                    "context_rows": 1})

    pixel_v = out / "pixel_v"
    pixel_v.mkdir(parents=True, exist_ok=True)
    s1 = save_dit(pixel_v, "stage1", tiny(16, 1, prediction="v"), 101)
    s2 = save_dit(pixel_v, "stage2", tiny(8, 1, cond=1, prediction="v"), 102)
    write_pipeline(pixel_v, "tiny-pixel-v", {"k": 4, "frame_size": 4, "channels": 1}, s1, {**s2, "scale": 2}, None,
                   {"mode": "gridit", "sampler": "ddpm", "steps": 4, "sr_sampler": "ddim", "sr_steps": 3,
                    "context_rows": 2, "context": "clean"})

    guided = out / "pixel_guide"
    guided.mkdir(parents=True, exist_ok=True)
    s1 = save_dit(guided, "stage1", tiny(16, 1, prediction="v"), 101)
    small = DiTConfig(depth=1, hidden_size=8, num_heads=2, patch_size=2, input_size=16, in_channels=1,
                      learn_sigma=True, prediction="v")  # a smaller guide: its own workspace sizes
    g1 = save_dit(guided, "guide", small, 111)
    write_pipeline(guided, "tiny-pixel-guide", {"k": 4, "frame_size": 4, "channels": 1}, s1, None, None,
                   {"mode": "gridit", "sampler": "ddpm", "steps": 4, "context_rows": 2, "context": "clean",
                    "cfg_scale": 2}, guide=g1)

    latent = out / "latent"
    latent.mkdir(parents=True, exist_ok=True)
    v = save_vae(latent, VAEConfig(in_channels=3, out_channels=3, latent_channels=2, block_out_channels=(4, 8),
                                   layers_per_block=1, norm_num_groups=2), 201)
    s1 = save_dit(latent, "stage1", tiny(12, 2), 202)
    s2 = save_dit(latent, "stage2", tiny(8, 2, cond=2), 203)
    write_pipeline(latent, "tiny-latent", {"k": 3, "frame_size": 8, "channels": 3}, s1, {**s2, "scale": 2}, v,
                   {"mode": "gridit", "sampler": "ddim", "steps": 3, "sr_sampler": "ddim", "sr_steps": 2,
                    "context_rows": 1})

    for k, frame in ((2, 4), (5, 2)):
        folder = out / f"pixel_k{k}"
        folder.mkdir(parents=True, exist_ok=True)
        s1 = save_dit(folder, "stage1", tiny(k * frame, 1), 400 + k)
        write_pipeline(folder, f"tiny-pixel-k{k}", {"k": k, "frame_size": frame, "channels": 1}, s1, None, None,
                       {"mode": "gridit", "sampler": "ddim", "steps": 2, "context_rows": 1})

    classcond = out / "classcond"
    classcond.mkdir(parents=True, exist_ok=True)
    s1 = save_dit(classcond, "stage1", tiny(8, 1, classes=3), 301)
    write_pipeline(classcond, "tiny-classcond", {"k": 2, "frame_size": 4, "channels": 1}, s1, None, None,
                   {"mode": "gridit", "sampler": "ddpm", "steps": 4, "context_rows": 1, "cfg_scale": 3})


CASES = {
    "pixel_gridit": ("pixel", dict(mode="gridit", length=21, seed=5, sampler="ddpm", steps="4", context_rows=1,
                                   sr=True, sr_sampler="ddim", sr_steps="3")),
    "pixel_official": ("pixel", dict(mode="official", length=20, seed=3, sampler="ddpm", steps="4", sr=False)),
    "latent_gridit": ("latent", dict(mode="gridit", length=12, seed=11, sampler="ddim", steps="3", context_rows=1,
                                     sr=True, sr_sampler="ddim", sr_steps="2")),
    "latent_official": ("latent", dict(mode="official", length=10, seed=2, sampler="ddpm", steps="3", sr=False)),
    "classcond_guided": ("classcond", dict(mode="gridit", length=6, seed=9, sampler="ddpm", steps="4",
                                           context_rows=1, sr=False, label=1, cfg_scale=3.0)),
    "pixel_jumps": ("pixel", dict(mode="gridit", length=20, seed=4, sampler="ddpm", steps="6", context_rows=2,
                                  sr=False, jumps=(2, 2))),
    "pixel_v_clean": ("pixel_v", dict(mode="gridit", length=20, seed=6, sampler="ddpm", steps="4", context_rows=2,
                                      sr=True, sr_sampler="ddim", sr_steps="3", context="clean")),
    "pixel_autoguided": ("pixel_guide", dict(mode="gridit", length=20, seed=7, sampler="ddpm", steps="4",
                                             context_rows=2, sr=False, context="clean", cfg_scale=2.0)),
    # guidance at the steps t = 666, 999 of 0, 333, 666, 999 (the guide's), and at 0, 333 (the null class's)
    "pixel_autoguided_interval": ("pixel_guide", dict(mode="gridit", length=20, seed=8, sampler="ddpm", steps="4",
                                                      context_rows=2, sr=False, context="clean", cfg_scale=2.0,
                                                      cfg_interval=(500, 999))),
    "classcond_guided_interval": ("classcond", dict(mode="gridit", length=6, seed=10, sampler="ddpm", steps="4",
                                                    context_rows=1, sr=False, label=1, cfg_scale=3.0,
                                                    cfg_interval=(0, 400))),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    build(out)
    for name, (folder, kwargs) in CASES.items():
        frames, grids = ref.run(out / folder, **kwargs)
        np.save(out / f"{name}.frames.npy", frames)
        for g, x in grids.items():
            np.save(out / f"{name}.grid{g}.npy", x)
        mid = np.mean((frames > 0) & (frames < 255))
        print(f"{name:<18} frames {frames.shape} grids {len(grids)} |grid| max "
              f"{max(float(np.abs(x).max()) for x in grids.values()):.2f}, unsaturated pixels {mid:.0%}")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"fixtures: {total} bytes in {out}")
    if total > SIZE_LIMIT:
        print(f"error: fixtures exceed {SIZE_LIMIT} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
