"""Time the PyTorch reference DiT forward pass on the CPU (baseline for gridit).

Example (from the repository root, with a virtualenv that has tools/requirements.txt):

    <venv>/bin/python tools/bench/pytorch_dit.py --model DiT-XL/2 --input-size 64 \
        --batch 1 --threads 2 --repeat 5 --warmup 1 --json

Random weights, torch.inference_mode(), fp32 (or --bf16: CPU autocast to bfloat16).
Attention uses torch's scaled_dot_product_attention (the fastest stock path).
With --json a single line is printed:
    {"impl": "pytorch", "model": ..., "input_size": ..., "batch": ..., "threads": ...,
     "precision": "fp32"|"bf16", "times_ms": [...], "median_ms": ..., "gflops": ...}
where gflops = flops_per_forward / median time (GFLOP/s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
import torch  # noqa: E402
from dit_reference import (PRESET_NAMES, DiT, DiTConfig, flops_per_forward, init_random_,  # noqa: E402
                           preset, sincos_2d)


def main() -> int:
    ap = argparse.ArgumentParser(description="PyTorch DiT forward benchmark (CPU)")
    ap.add_argument("--model", default="DiT-XL/2", choices=PRESET_NAMES)
    ap.add_argument("--arch", help="DEPTH,HIDDEN,HEADS,PATCH instead of a preset (e.g. 6,192,3,4)")
    ap.add_argument("--input-size", type=int, default=64, help="latent size (image / 8)")
    ap.add_argument("--in-channels", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="timed forwards")
    ap.add_argument("--warmup", type=int, default=1, help="untimed forwards first")
    ap.add_argument("--bf16", action="store_true", help="torch.autocast(cpu, bfloat16)")
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "math"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.arch:
        depth, hidden, heads, patch = (int(v) for v in args.arch.split(","))
        cfg = DiTConfig(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch,
                        input_size=args.input_size, in_channels=args.in_channels)
        cfg.validate()
        name = f"DiT({args.arch})"
    else:
        cfg = preset(args.model, input_size=args.input_size, in_channels=args.in_channels)
        name = args.model
    gen = torch.Generator().manual_seed(args.seed)
    with torch.device("meta"):  # skip nn.Linear's default init (slow for XL); filled below
        model = DiT(cfg, attn_impl=args.attention)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        pos = torch.from_numpy(sincos_2d(cfg.hidden_size, cfg.grid_size)).float()[None]
        model.pos_embed.copy_(pos)
    init_random_(model, gen, weight_std=0.02)
    model.eval()

    n, s = args.batch, cfg.input_size
    x = torch.randn((n, cfg.in_channels, s, s), generator=gen)
    t = torch.full((n,), 500.0)

    def forward():
        if args.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x, t)
        return model(x, t)

    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            forward()
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = forward()
            times.append((time.perf_counter() - t0) * 1e3)
    assert out.shape == (n, cfg.out_channels, s, s)

    med = statistics.median(times)
    flops = flops_per_forward(cfg, n)
    result = {
        "impl": "pytorch",
        "model": name,
        "input_size": args.input_size,
        "batch": n,
        "threads": args.threads,
        "precision": "bf16" if args.bf16 else "fp32",
        "times_ms": [round(v, 3) for v in times],
        "median_ms": round(med, 3),
        "gflops": round(flops / (med * 1e-3) / 1e9, 3),
    }
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(f"{name} input {s} batch {n} threads {args.threads} {result['precision']}: "
              f"median {med:.1f} ms over {args.repeat} "
              f"({', '.join(f'{v:.1f}' for v in times)}), "
              f"{flops / 1e9:.2f} GFLOP/forward -> {result['gflops']:.2f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
