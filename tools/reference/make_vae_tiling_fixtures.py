"""Tiled VAE fixtures for GriditModelsTests/VAETests.swift, computed by diffusers itself.

    <venv>/bin/python tools/reference/make_vae_tiling_fixtures.py [--out DIR]

Loads the fixture VAE (vae.safetensors, vae.config.json from make_vae_fixtures.py) into diffusers'
AutoencoderKL with sample_size 32 (tiles of 32 pixels = 8 latent values, overlap factor 0.25),
turns tiling on and evaluates in float64:
    vae.tiled_latent.npy    float32 (1, 4, 24, 20) latent (tiled_decode: 4 x 4 tiles)
    vae.tiled_decoded.npy   float32 (1, 3, 96, 80) diffusers' tiled decode of it
    vae.tiled_image.npy     float32 (1, 3, 72, 56) image (tiled encode: 3 x 3 tiles)
    vae.tiled_mean.npy      float32 (1, 4, 18, 14) posterior mean of diffusers' tiled encode
    vae.tiled_logvar.npy    float32 (1, 4, 18, 14) its log-variance (clamped to [-30, 20])
It also checks that diffusers' untiled decode equals the independent reference's fixture output,
i.e. that the weights mean the same thing to both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(root / "Tests/GriditModelsTests/Fixtures"))
    out = Path(ap.parse_args().out)
    torch.set_num_threads(1)
    cfg = json.loads((out / "vae.config.json").read_text())
    blocks = len(cfg["block_out_channels"])
    model = AutoencoderKL(
        in_channels=cfg["in_channels"], out_channels=cfg["out_channels"], latent_channels=cfg["latent_channels"],
        block_out_channels=tuple(cfg["block_out_channels"]), layers_per_block=cfg["layers_per_block"],
        norm_num_groups=cfg["norm_num_groups"], down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks, sample_size=32,
    )
    model.load_state_dict(load_file(str(out / "vae.safetensors")), strict=True)
    model = model.double().eval()

    with torch.no_grad():
        latent = torch.from_numpy(np.load(out / "vae.latent.npy")).double()
        untiled = model.decode(latent).sample
        want = torch.from_numpy(np.load(out / "vae.decoded.npy")).double()
        diff = float((untiled - want).abs().max())
        print(f"diffusers untiled decode vs reference fixture: max |diff| {diff:.2e}")
        assert diff < 1e-4, "diffusers and the reference disagree on the fixture weights"

        g = torch.Generator().manual_seed(20261202)
        model.enable_tiling()
        tiled_latent = torch.randn((1, 4, 24, 20), generator=g, dtype=torch.float64).float()
        decoded = model.decode(tiled_latent.double()).sample
        image = (torch.rand((1, 3, 72, 56), generator=g, dtype=torch.float64) * 2 - 1).float()
        posterior = model.encode(image.double()).latent_dist

    files = {"tiled_latent": tiled_latent, "tiled_decoded": decoded, "tiled_image": image,
             "tiled_mean": posterior.mean, "tiled_logvar": posterior.logvar}
    for name, t in files.items():
        np.save(out / f"vae.{name}.npy", t.to(torch.float32).numpy())
        print(name, tuple(t.shape))


if __name__ == "__main__":
    main()
