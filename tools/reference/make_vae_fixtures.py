"""Generate the VAE fixtures for GriditModelsTests/VAETests.swift from vae_reference.py.

    <venv>/bin/python tools/reference/make_vae_fixtures.py [--out DIR]

Deterministic (seeded torch.Generator, float64 evaluation). Files in Tests/GriditModelsTests/Fixtures/:
    vae.safetensors        F32 weights, diffusers keys verbatim; norm weights 1 + noise
    vae.config.json        in/out/latent channels, block_out_channels, layers_per_block, norm_num_groups
    vae.image.npy          float32 (2, 3, 16, 12) input image in [-1, 1]
    vae.mean.npy           float32 (2, 4, 4, 3) posterior mean of the image (factor 4: 3 blocks)
    vae.logvar.npy         float32 (2, 4, 4, 3) posterior log-variance, clamped to [-30, 20]
    vae.latent.npy         float32 (2, 4, 6, 5) latent to decode (random normal, non-square)
    vae.decoded.npy        float32 (2, 3, 24, 20) decoder output of vae.latent

Model: block_out_channels [8, 16, 16], layers_per_block 2, 4 groups (so the encoder has two
stride-2 downsamples, the decoder two upsamples, and resnets with and without conv_shortcut).
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
from vae_reference import VAE, VAEConfig, param_shapes  # noqa: E402


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(root / "Tests/GriditModelsTests/Fixtures"))
    out = Path(ap.parse_args().out)
    torch.set_num_threads(1)
    cfg = VAEConfig(block_out_channels=(8, 16, 16), layers_per_block=2, norm_num_groups=4)
    g = torch.Generator().manual_seed(20261125)
    params32: dict[str, torch.Tensor] = {}
    for name, shape in param_shapes(cfg).items():
        if ("norm" in name) and name.endswith(".weight"):
            t = 1 + 0.2 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        params32[name] = t.to(torch.float32).contiguous()
    params64 = {k: v.to(torch.float64) for k, v in params32.items()}
    model = VAE(cfg, params64)

    image = (torch.rand((2, 3, 16, 12), generator=g) * 2 - 1).to(torch.float32)
    latent = torch.randn((2, 4, 6, 5), generator=g)  # non-square.to(torch.float32)
    with torch.no_grad():
        mean, logvar = model.encode(image.to(torch.float64))
        decoded = model.decode(latent.to(torch.float64))

    out.mkdir(parents=True, exist_ok=True)
    save_file(params32, str(out / "vae.safetensors"))
    (out / "vae.config.json").write_text(json.dumps(cfg.to_json(), indent=2, sort_keys=True) + "\n")
    for name, t in [("image", image), ("mean", mean), ("logvar", logvar), ("latent", latent), ("decoded", decoded)]:
        np.save(out / f"vae.{name}.npy", t.to(torch.float32).numpy())
    print("decoded range", float(decoded.min()), float(decoded.max()), "mean std", float(mean.std()))


if __name__ == "__main__":
    main()
