"""Tiny checkpoints in the official layouts, for tools/tests/test_convert_checkpoint.py.

    <venv>/bin/python tools/reference/make_convert_fixtures.py [--out DIR]

Default output: tools/tests/fixtures/ (committed, about 0.3 MB; the tests need no torch). Models are
built by dit_reference.py / vae_reference.py with seeded random weights and saved the way the
official code saves them:

    gridit_stage1.pt   GriDiT training checkpoint {"model", "ema", "opt", "args"}: stage-1 DiT
                       (depth 1, hidden 12, 2 heads, patch 2, 16x16x4 latent, learn_sigma), pos_embed
                       = GriDiT's 3-D sin-cos init (depth 16), ema != model, Adam state, argparse args
                       whose model name (DiT-XL/2) does not fit the tiny model
    gridit_stage2.pt   the same for a stage-2 super-resolution DiT (4 + 4 channels, 8x8), 2-D sin-cos
    dit_classcond.pt   facebookresearch/DiT release style: a raw state dict (EMA weights), 10 classes,
                       2-D sin-cos pos_embed
    learned_bf16.pt    a raw bfloat16 state dict whose pos_embed is random (learned)
    vae/               diffusers AutoencoderKL folder: config.json + diffusion_pytorch_model.safetensors
    vae_legacy.bin     the same VAE weights with the deprecated attention names (query, key, value,
                       proj_attn), torch.save'd like an old diffusion_pytorch_model.bin
    expected.json      per fixture: the config the converter must infer, and the SHA-256 of every
                       tensor it must write (float32 little-endian bytes, computed here by torch)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dit_reference import DiT, DiTConfig, init_random_, sincos_1d, sincos_2d  # noqa: E402
from vae_reference import VAEConfig, param_shapes  # noqa: E402


def gridit_3d(dim: int, grid_size: int, depth: int) -> np.ndarray:
    """GriDiT's get_3d_sincos_pos_embed as gridit-method.md 1.4 describes it: coordinates from
    meshgrid(d, w, h, indexing='ij') flattened, three dim/3-wide 1-D embeddings concatenated."""
    d, w, h = np.meshgrid(np.arange(depth), np.arange(grid_size), np.arange(grid_size), indexing="ij")
    return np.concatenate([sincos_1d(dim // 3, c.reshape(-1)) for c in (d, w, h)], axis=1)


def state(model: DiT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def adam_state(sd: dict[str, torch.Tensor], gen: torch.Generator, moments: bool) -> dict:
    params = list(sd.values())
    state = {i: {"step": torch.tensor(10.0), "exp_avg": torch.randn(p.shape, generator=gen) * 1e-3,
                 "exp_avg_sq": torch.rand(p.shape, generator=gen) * 1e-6} for i, p in enumerate(params)} if moments else {}
    return {"state": state,
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
                              "params": list(range(len(params)))}]}


def make_dit(cfg: DiTConfig, gen: torch.Generator, pos: np.ndarray | None) -> dict[str, torch.Tensor]:
    model = DiT(cfg)
    init_random_(model, gen)
    sd = state(model)
    if pos is not None:
        sd["pos_embed"] = torch.from_numpy(pos).float()[None]
    return sd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(20260101)
    expected: dict[str, dict] = {}

    def record(name: str, config: dict, tensors: dict[str, torch.Tensor]) -> None:
        digests = {k: hashlib.sha256(v.float().numpy().astype("<f4").tobytes()).hexdigest() for k, v in tensors.items()}
        expected[name] = {"config": config, "sha256": digests}

    def training_checkpoint(name: str, cfg: DiTConfig, pos: np.ndarray, args: Namespace, moments: bool) -> None:
        model = make_dit(cfg, gen, pos)
        ema = {k: (v + 0.01 * torch.randn(v.shape, generator=gen)) if k != "pos_embed" else v.clone() for k, v in model.items()}
        torch.save({"model": model, "ema": ema, "opt": adam_state(model, gen, moments), "args": args}, out / f"{name}.pt")
        record(name, cfg.to_dict(), ema)

    s1 = DiTConfig(depth=1, hidden_size=12, num_heads=2, patch_size=2, input_size=16, in_channels=4)
    training_checkpoint("gridit_stage1", s1, gridit_3d(12, 2, 16),
                        Namespace(model="DiT-XL/2", image_size=128, num_classes=1, global_batch_size=8, epochs=1), True)
    s2 = DiTConfig(depth=1, hidden_size=12, num_heads=2, patch_size=2, input_size=8, in_channels=4, condition_channels=4)
    training_checkpoint("gridit_stage2", s2, sincos_2d(12, 4),
                        Namespace(model="DiT-XL/2", image_size=64, num_classes=1), False)

    cc = DiTConfig(depth=2, hidden_size=16, num_heads=4, patch_size=2, input_size=8, in_channels=4, num_classes=10)
    sd = make_dit(cc, gen, sincos_2d(16, 4))
    torch.save(sd, out / "dit_classcond.pt")
    record("dit_classcond", cc.to_dict(), sd)

    lb = DiTConfig(depth=1, hidden_size=8, num_heads=2, patch_size=2, input_size=8, in_channels=4, learn_sigma=False)
    sd = make_dit(lb, gen, None)
    sd["pos_embed"] = torch.randn(sd["pos_embed"].shape, generator=gen) * 0.1
    sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    torch.save(sd, out / "learned_bf16.pt")
    record("learned_bf16", lb.to_dict(), sd)

    vc = VAEConfig(block_out_channels=(4, 8), layers_per_block=1, norm_num_groups=2)
    vae = {k: torch.randn(s, generator=gen) * 0.1 for k, s in param_shapes(vc).items()}
    (out / "vae").mkdir(exist_ok=True)
    save_file(vae, str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    diffusers_config = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0", "act_fn": "silu",
                        "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
                        "sample_size": 16, "scaling_factor": 0.18215, **vc.to_json()}
    (out / "vae" / "config.json").write_text(json.dumps(diffusers_config, indent=2) + "\n")
    legacy_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for k, v in vae.items():
        for new, old in legacy_names.items():
            k = k.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        legacy[k] = v
    torch.save(legacy, out / "vae_legacy.bin")
    record("vae", {**vc.to_json(), "scaling_factor": 0.18215}, vae)

    (out / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
