"""Generate the numerical test fixtures for GriditModelsTests from the PyTorch reference.

Regenerate (from the repository root, with a virtualenv that has tools/requirements.txt):

    <venv>/bin/python tools/reference/make_fixtures.py [--out DIR]

Default output: Tests/GriditModelsTests/Fixtures/. The script is deterministic: with the
pinned package versions, rerunning it rewrites byte-identical files (fixed torch.Generator
seeds, single-threaded float64 evaluation, no timestamps in any format).

Files per model case NAME
-------------------------
    NAME.safetensors    weights, F32, state-dict keys verbatim (see dit_reference.py)
    NAME.config.json    depth, hidden_size, num_heads, patch_size, input_size, in_channels,
                        learn_sigma, num_classes, condition_channels, mlp_ratio
    NAME.x.npy          float32 (N, Cin, H, W) noisy input
    NAME.t.npy          float32 (N,) integer-valued timesteps in [0, 999]
    NAME.y.npy          int64 (N,) labels                       (class-conditional cases only)
    NAME.cond.npy       float32 (N, Ccond, H, W) condition      (super-resolution case only)
    NAME.out.npy        float32 (N, Cout, H, W) model output, evaluated in float64 and rounded

All weights, including adaLN projections and the final layer (zero-initialised in DiT
training), are non-trivial normal noise so every path affects the output.

Cases
-----
    uncond     unconditional, learn_sigma; stores a RANDOM pos_embed (not the 2-D sin-cos),
               so a port that recomputes pos_embed instead of loading it fails.
               Also uncond.f16.safetensors / uncond.bf16.safetensors: the same weights stored
               as F16 / BF16, with uncond.f16.out.npy / uncond.bf16.out.npy = output of the
               weights rounded to that dtype (then evaluated in float64).
    classcond  class-conditional (10 classes), labels [0, 7, 10] (10 = CFG null row),
               learn_sigma false; the safetensors OMITS pos_embed: the expected output uses
               the 2-D sin-cos embedding (computed in float64, rounded to float32).
    sr         super-resolution variant: 4 noisy + 4 condition channels.
    p8         patch size 8.

Kernel fixtures
---------------
    tembed.t.npy        float32 (5,) timesteps [0, 1, 17, 999, 250.5]
    tembed.out.npy      float32 (5, 256) raw sinusoidal timestep embedding (cos first), float64
    pos2d.out.npy       float32 (16, 64) 2-D sin-cos embedding, D=64, grid 4, float64
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dit_reference import (  # noqa: E402
    DiT,
    DiTConfig,
    expected_shapes,
    init_random_,
    sincos_2d,
    timestep_sinusoid,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "Tests" / "GriditModelsTests" / "Fixtures"
SIZE_LIMIT = 2_000_000  # bytes, whole fixture folder


@dataclasses.dataclass
class Case:
    name: str
    seed: int
    cfg: DiTConfig
    t: list
    labels: list | None = None
    random_pos_embed: bool = False
    omit_pos_embed: bool = False
    reduced_precision: bool = False  # also write .f16 / .bf16 variants

    @property
    def batch(self) -> int:
        return len(self.t)


CASES = [
    Case("uncond", seed=101,
         cfg=DiTConfig(depth=2, hidden_size=32, num_heads=4, patch_size=2, input_size=8,
                       in_channels=4, learn_sigma=True, num_classes=0, condition_channels=0),
         t=[999, 3], random_pos_embed=True, reduced_precision=True),
    Case("classcond", seed=102,
         cfg=DiTConfig(depth=3, hidden_size=48, num_heads=3, patch_size=4, input_size=16,
                       in_channels=3, learn_sigma=False, num_classes=10, condition_channels=0),
         t=[0, 421, 999], labels=[0, 7, 10], omit_pos_embed=True),
    Case("sr", seed=103,
         cfg=DiTConfig(depth=2, hidden_size=32, num_heads=2, patch_size=2, input_size=8,
                       in_channels=4, learn_sigma=True, num_classes=0, condition_channels=4),
         t=[17, 640]),
    Case("p8", seed=104,
         cfg=DiTConfig(depth=1, hidden_size=32, num_heads=2, patch_size=8, input_size=16,
                       in_channels=4, learn_sigma=True, num_classes=0, condition_channels=0),
         t=[500]),
]

WEIGHT_BIAS_STD = 0.05  # biases; weights use 1/sqrt(fan_in) (0.06 .. 0.25 here)
POS_EMBED_STD = 0.5  # random pos_embed of the uncond case


def save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def save_tensors(tensors: dict, path: Path) -> None:
    save_file(tensors, str(path))
    os.chmod(path, 0o644)  # safetensors creates 0600 files


def evaluate(model: DiT, state: dict, inputs: dict) -> np.ndarray:
    """Load ``state`` (any float dtype) into a float64 copy of ``model`` and run it in float64."""
    m = DiT(model.cfg, attn_impl="math").double()
    full = {k: v.to(torch.float64) for k, v in state.items()}
    if "pos_embed" not in full:  # same rule as the Swift side: 2-D sin-cos, float64 -> float32
        pe = torch.from_numpy(sincos_2d(model.cfg.hidden_size, model.cfg.grid_size)).float()
        full["pos_embed"] = pe[None].to(torch.float64)
    m.load_state_dict(full, strict=True)
    m.eval()
    with torch.no_grad():
        out = m(inputs["x"].double(), inputs["t"].double(), inputs.get("y"),
                inputs["cond"].double() if "cond" in inputs else None)
    return out.numpy()


def make_case(case: Case, out_dir: Path) -> None:
    cfg = case.cfg
    gen = torch.Generator().manual_seed(case.seed)
    model = DiT(cfg)
    init_random_(model, gen, bias_std=WEIGHT_BIAS_STD)
    if case.random_pos_embed:
        model.pos_embed.copy_(
            torch.randn(model.pos_embed.shape, generator=gen, dtype=torch.float32) * POS_EMBED_STD)

    state = {k: v.detach().to(torch.float32).contiguous().clone()
             for k, v in model.state_dict().items()}
    assert set(state) == set(expected_shapes(cfg))
    if case.omit_pos_embed:
        del state["pos_embed"]

    n, s = case.batch, cfg.input_size
    inputs = {
        "x": torch.randn((n, cfg.in_channels, s, s), generator=gen, dtype=torch.float32),
        "t": torch.tensor(case.t, dtype=torch.float32),
    }
    if cfg.num_classes > 0:
        inputs["y"] = torch.tensor(case.labels, dtype=torch.int64)
    if cfg.condition_channels > 0:
        inputs["cond"] = torch.randn((n, cfg.condition_channels, s, s), generator=gen,
                                     dtype=torch.float32)

    save_tensors(state, out_dir / f"{case.name}.safetensors")
    (out_dir / f"{case.name}.config.json").write_text(cfg.to_json())
    for key, tensor in inputs.items():
        save_npy(out_dir / f"{case.name}.{key}.npy", tensor.numpy())

    out64 = evaluate(model, state, inputs)
    save_npy(out_dir / f"{case.name}.out.npy", out64.astype(np.float32))

    # Informational: how far plain float32 evaluation is from the float64 truth.
    m32 = DiT(cfg, attn_impl="math")
    full32 = dict(state)
    if case.omit_pos_embed:
        full32["pos_embed"] = model.pos_embed.detach().clone()
    m32.load_state_dict(full32, strict=True)
    with torch.no_grad():
        out32 = m32(inputs["x"], inputs["t"], inputs.get("y"), inputs.get("cond")).numpy()
    err32 = np.abs(out32.astype(np.float64) - out64).max()
    print(f"{case.name:<10} out {tuple(out64.shape)} std {out64.std():.4f} "
          f"max|out| {np.abs(out64).max():.4f}  fp32-vs-fp64 max err {err32:.2e}")

    if case.reduced_precision:
        for suffix, dtype in (("f16", torch.float16), ("bf16", torch.bfloat16)):
            low = {k: v.to(dtype).contiguous() for k, v in state.items()}
            save_tensors(low, out_dir / f"{case.name}.{suffix}.safetensors")
            out_low = evaluate(model, low, inputs)
            save_npy(out_dir / f"{case.name}.{suffix}.out.npy", out_low.astype(np.float32))
            print(f"{case.name + '.' + suffix:<10} max|out - out_f32w| "
                  f"{np.abs(out_low - out64).max():.2e}")


def make_kernels(out_dir: Path) -> None:
    t = np.array([0, 1, 17, 999, 250.5], dtype=np.float32)
    emb = timestep_sinusoid(torch.from_numpy(t).double()).numpy()
    save_npy(out_dir / "tembed.t.npy", t)
    save_npy(out_dir / "tembed.out.npy", emb.astype(np.float32))
    save_npy(out_dir / "pos2d.out.npy", sincos_2d(64, 4).astype(np.float32))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = ap.parse_args()

    torch.set_num_threads(1)  # fixed reduction order -> reproducible bytes
    torch.use_deterministic_algorithms(True)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)

    for case in CASES:
        make_case(case, out_dir)
    make_kernels(out_dir)

    keep = out_dir / ".gitkeep"
    if keep.exists():
        keep.unlink()

    files = sorted(p for p in out_dir.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(f"{len(files)} files, {total} bytes in {os.path.relpath(out_dir, Path.cwd())}")
    if total > SIZE_LIMIT:
        print(f"ERROR: fixtures exceed {SIZE_LIMIT} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
