"""Time the SD VAE (AutoencoderKL) decoder or encoder on the CPU with PyTorch (baseline for gridit).

    <venv>/bin/python tools/bench/pytorch_vae.py --impl diffusers --size 256 --threads 2 --repeat 5 --json

--impl diffusers: diffusers' AutoencoderKL with the Stable Diffusion configuration (block_out_channels
    128/256/512/512, 2 layers per block, 32 groups), default random initialisation.
--impl reference: tools/reference/vae_reference.py (functional F.conv2d / F.group_norm / softmax
    attention), random weights of the same shapes.
Both under torch.inference_mode(); --bf16 wraps the call in torch.autocast("cpu", bfloat16).
With --json a single line is printed:
    {"impl": ..., "model": "vae-decode"|"vae-encode", "input_size": S, "batch": N, "threads": T,
     "precision": "fp32"|"bf16", "times_ms": [...], "median_ms": ...}
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
from vae_reference import VAE, VAEConfig, param_shapes  # noqa: E402


def build(impl: str, gen: torch.Generator):
    if impl == "diffusers":
        from diffusers import AutoencoderKL

        model = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
            layers_per_block=2, norm_num_groups=32, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
        ).eval()
        return (lambda z: model.decode(z).sample), (lambda x: model.encode(x).latent_dist.mean)
    cfg = VAEConfig()
    params = {}
    for name, shape in param_shapes(cfg).items():
        if "norm" in name and name.endswith(".weight"):
            params[name] = torch.ones(shape)
        elif name.endswith(".bias"):
            params[name] = 0.02 * torch.randn(shape, generator=gen)
        else:
            params[name] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
    model = VAE(cfg, params)
    return model.decode, (lambda x: model.encode(x)[0])


def main() -> int:
    ap = argparse.ArgumentParser(description="PyTorch SD VAE benchmark (CPU)")
    ap.add_argument("--impl", choices=["diffusers", "reference"], default="diffusers")
    ap.add_argument("--size", type=int, default=256, help="image size in pixels (latent = size / 8)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--encode", action="store_true", help="time the encoder instead of the decoder")
    ap.add_argument("--bf16", action="store_true", help="torch.autocast(cpu, bfloat16)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    decode, encode = build(args.impl, gen)
    n, s = args.batch, args.size
    if args.encode:
        x = torch.rand((n, 3, s, s), generator=gen) * 2 - 1
    else:
        x = torch.randn((n, 4, s // 8, s // 8), generator=gen)
    run = encode if args.encode else decode

    def once():
        if args.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return run(x)
        return run(x)

    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            once()
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            once()
            times.append((time.perf_counter() - t0) * 1e3)
    result = {
        "impl": f"pytorch-{args.impl}", "model": "vae-encode" if args.encode else "vae-decode", "input_size": s,
        "batch": n, "threads": args.threads, "precision": "bf16" if args.bf16 else "fp32",
        "times_ms": [round(v, 3) for v in times], "median_ms": round(statistics.median(times), 3),
    }
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(f"{result['impl']} {result['model']} {s}x{s} batch {n} threads {args.threads} {result['precision']}: "
              f"median {result['median_ms']:.1f} ms ({', '.join(f'{v:.1f}' for v in times)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
