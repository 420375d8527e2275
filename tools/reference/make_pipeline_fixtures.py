"""Generate the numerical fixtures of GriditDiffusionTests from the PyTorch references.

Regenerate (from the repository root, with a virtualenv that has tools/requirements.txt):

    <venv>/bin/python tools/reference/make_pipeline_fixtures.py [--out DIR]

Default output: Tests/GriditDiffusionTests/Fixtures/. Deterministic (fixed torch.Generator seed,
float64 evaluation). Uses the tiny unconditional learned-sigma model of GriditModelsTests
(uncond.safetensors + uncond.config.json, copied next to the fixtures) and
diffusion_reference.py. Steps are computed in float64 and saved as float32; schedule arrays are
saved as float64 (int64 for the timestep map).

Files
-----
    uncond.safetensors, uncond.config.json      the model (copied)
    sched.<spec>.<array>.npy                    spec in {250, ddim50}; array in timestep_map (int64),
                                                betas, alphas_cumprod, coef1, coef2, logvar_clipped,
                                                posterior_variance (float64)
    <case>.x.npy          (2, 4, 8, 8) x_k
    <case>.z.npy          (2, 4, 8, 8) the noise z
    <case>.out.npy        (2, 8, 8, 8) model output at t = timestep_map[k] (float64 model)
    <case>.x0.npy / .mean.npy / .logvar.npy      p_mean_variance (learned range)
    <case>.ddpm.npy       ancestral step x_{k-1} = mean + [k!=0] exp(logvar/2) z
    <case>.fixed_large.npy / .fixed_small.npy    the same step with the eps channels only
    <case>.known.npy      (2, 4, 8, 8) clean known grid (frames at positions 0, 1 = grid row 0)
    <case>.replace_official.npy / .replace_previous.npy
                          ddpm result with positions 0, 1 (latent rows 0..3; K=2, S=4) set to
                          sqrt(a) known + sqrt(1-a) z, a = ab[k] / ab_prev[k]
    <case>.ddim_eta0.npy / .ddim_eta1.npy        (ddim50 case only)
    <case>.v_x0.npy / .v_ddpm.npy                the same output read as a v-prediction
                                                 (eps = sqrt(ab) v + sqrt(1-ab) x_k); .v_ddim_eta1.npy (ddim50)

Cases: ddpm250_k249, ddpm250_k120, ddpm250_k0 (spec "250"), ddim50_k25 (spec "ddim50").

Whole loops (spec "10", seed 45, 2x2 grids of 4x4 frames, grid ids 3 and 7; see make_loops):
    loop.xT.npy           (2, 4, 8, 8) x_T from the keyed Philox streams
    loop.prev.npy         (4, 8, 8) the previous grid whose row 1 is copied into grid 7's row 0
    loop_ddpm.x0.npy      DDPM result; loop_ddim.x0.npy: DDIM eta 0 result (same replacement)
    loop_clean_v.x0.npy   DDPM, the output read as v, grid 7's row 0 = prev row 1 clean from x_T on
                          and after every step (gridit's clean context)

DPM-Solver++(2M) against diffusers' DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint,
lower_order_final, final sigma 0; it is given the first C channels of the learned-sigma output, which
is what its variance_type "learned_range" takes, hard-coded there for 3 channels; see make_dpm):
    dpm.xT.npy                   (2, 4, 8, 8) x_T (seed 77)
    dpm_<spacing><N>.t.npy       the scheduler's timesteps (int64, descending)
    dpm_<spacing><N>.xs.npy      (N, 2, 4, 8, 8) the sample after each step (eps prediction)
    dpm_v_trailing6.xs.npy       the same loop with the output read as v (prediction_type v_prediction)
    cases: linspace6, leading6, trailing6, trailing20

SDE-DPM-Solver++(2M) against the same scheduler with algorithm_type "sde-dpmsolver++" (order 2, midpoint;
see make_dpm_sde), from dpm.xT.npy, the noise of every step given to the scheduler as variance_noise:
the engine's Philox z of spaced step k for grid ids 0 and 1 (seed 5, purpose "step"; none is read at k = 0):
    dpm_sde_<spacing><N>.xs.npy  (N, 2, 4, 8, 8) the sample after each step; cases trailing6, trailing20,
                                 and v_trailing6 (prediction_type v_prediction)

Bicubic (the stage-2 condition): bicubic.in.npy (2, 3, 5, 7) in [-1, 1]; bicubic.x{2,3,4}.npy =
F.interpolate(mode="bicubic", align_corners=False) by that scale, evaluated in float64.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusion_reference import Diffusion, grid_noise  # noqa: E402
from dit_reference import DiT, DiTConfig, load_weights  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "Tests" / "GriditModelsTests" / "Fixtures"
DEFAULT_OUT = REPO_ROOT / "Tests" / "GriditDiffusionTests" / "Fixtures"
SIZE_LIMIT = 1_000_000
SEED = 2024
LOOP_SEED = 45


def save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float32)


def make_loops(model, out: Path, gen: torch.Generator) -> None:
    """Whole 10-step loops on two grids (ids 3 and 7), noise from the keyed Philox streams.

    Grid 7 extends a previous grid the official way: after every step but k = 0, its grid row 0
    becomes sqrt(a) prev_row1 + sqrt(1-a) z_row1 (a = ab[k], z = that step's noise of grid 7, read
    at the SOURCE row), i.e. `sample[:, :, 0:S] = (sqrt(a) prev + sqrt(1-a) z)[:, :, S:2S]`.
    """
    k_side, s, c = 2, 4, 4
    d = Diffusion("10")
    grids = [3, 7]
    prev = (torch.rand((c, 8, 8), generator=gen, dtype=torch.float32) * 2 - 1).double()
    x_t = np.stack([grid_noise(k_side, s, c, LOOP_SEED, "initial", g, 0) for g in grids])
    save(out / "loop.xT.npy", x_t)
    save(out / "loop.prev.npy", f32(prev))
    for name, eta in (("loop_ddpm", None), ("loop_ddim", 0.0)):
        x = torch.from_numpy(x_t).double()
        for k in reversed(range(d.count)):
            t = torch.full((len(grids),), float(d.timestep_map[k]), dtype=torch.float64)
            with torch.no_grad():
                mo = model(x, t)
            z = torch.from_numpy(np.stack([grid_noise(k_side, s, c, LOOP_SEED, "step", g, k) for g in grids])).double()
            x = d.p_sample(x, mo, k, z) if eta is None else d.ddim_sample(x, mo, k, z, eta)
            if k != 0:
                a = d.ab[k]
                noised = math.sqrt(a) * prev + math.sqrt(1 - a) * z[1]
                x[1, :, 0:s, :] = noised[:, s:2 * s, :]
        save(out / f"{name}.x0.npy", f32(x))
        print(f"{name:<14} max |x0| {x.abs().max():.3f}")
    x = torch.from_numpy(x_t).double()
    x[1, :, 0:s, :] = prev[:, s:2 * s, :]
    for k in reversed(range(d.count)):
        t = torch.full((len(grids),), float(d.timestep_map[k]), dtype=torch.float64)
        with torch.no_grad():
            mo = model(x, t)
        z = torch.from_numpy(np.stack([grid_noise(k_side, s, c, LOOP_SEED, "step", g, k) for g in grids])).double()
        x = d.p_sample(x, mo, k, z, prediction="v")
        x[1, :, 0:s, :] = prev[:, s:2 * s, :]
    save(out / "loop_clean_v.x0.npy", f32(x))
    print(f"{'loop_clean_v':<14} max |x0| {x.abs().max():.3f}")


def make_dpm(model, out: Path) -> None:
    """Whole DPM-Solver++(2M) loops by diffusers' scheduler, with the model's float32 output."""
    from diffusers import DPMSolverMultistepScheduler

    x_t = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(77), dtype=torch.float32)
    save(out / "dpm.xT.npy", f32(x_t))
    cases = [("linspace", 6, "epsilon"), ("leading", 6, "epsilon"), ("trailing", 6, "epsilon"),
             ("trailing", 20, "epsilon"), ("trailing", 6, "v_prediction")]
    for spacing, n, prediction in cases:
        sched = DPMSolverMultistepScheduler(
            num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", solver_order=2,
            prediction_type=prediction, algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
            final_sigmas_type="zero", timestep_spacing=spacing)
        sched.set_timesteps(n)
        x = x_t.clone()
        xs = []
        for t in sched.timesteps:
            with torch.no_grad():
                mo = model(x.double(), torch.full((2,), float(t), dtype=torch.float64)).float()[:, :4]
            x = sched.step(mo, t, x).prev_sample
            xs.append(x.clone())
        name = f"dpm_{'v_' if prediction != 'epsilon' else ''}{spacing}{n}"
        save(out / f"{name}.t.npy", sched.timesteps.numpy().astype(np.int64))
        save(out / f"{name}.xs.npy", f32(torch.stack(xs)))
        print(f"{name:<18} timesteps {sched.timesteps.tolist()[:4]}... max |x0| {x.abs().max():.3f}")


SDE_SEED = 5


def make_dpm_sde(model, out: Path) -> None:
    """Whole SDE-DPM-Solver++(2M) loops by diffusers' scheduler; the injected noise is the engine's."""
    from diffusers import DPMSolverMultistepScheduler

    x_t = torch.from_numpy(np.load(out / "dpm.xT.npy"))
    for spacing, n, prediction in [("trailing", 6, "epsilon"), ("trailing", 20, "epsilon"),
                                   ("trailing", 6, "v_prediction")]:
        sched = DPMSolverMultistepScheduler(
            num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", solver_order=2,
            prediction_type=prediction, algorithm_type="sde-dpmsolver++", solver_type="midpoint",
            lower_order_final=True, final_sigmas_type="zero", timestep_spacing=spacing)
        sched.set_timesteps(n)
        x = x_t.clone()
        xs = []
        for i, t in enumerate(sched.timesteps):
            k = n - 1 - i  # the engine's spaced step
            z = np.stack([grid_noise(2, 4, 4, SDE_SEED, "step", g, k) for g in (0, 1)])
            with torch.no_grad():
                mo = model(x.double(), torch.full((2,), float(t), dtype=torch.float64)).float()[:, :4]
            x = sched.step(mo, t, x, variance_noise=torch.from_numpy(z)).prev_sample
            xs.append(x.clone())
        name = f"dpm_sde_{'v_' if prediction != 'epsilon' else ''}{spacing}{n}"
        save(out / f"{name}.xs.npy", f32(torch.stack(xs)))
        print(f"{name:<22} max |x0| {x.abs().max():.3f}")


def make_bicubic(out: Path, gen: torch.Generator) -> None:
    """The stage-2 condition convention: F.interpolate(mode="bicubic", align_corners=False)."""
    x = torch.rand((2, 3, 5, 7), generator=gen, dtype=torch.float32) * 2 - 1
    save(out / "bicubic.in.npy", f32(x))
    for scale in (2, 3, 4):
        y = F.interpolate(x.double(), scale_factor=scale, mode="bicubic", align_corners=False)
        save(out / f"bicubic.x{scale}.npy", f32(y))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only-sde", action="store_true",
                    help="write only the SDE-DPM-Solver++ fixtures (they read dpm.xT.npy from --out)")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitkeep").unlink(missing_ok=True)
    torch.set_num_threads(1)

    for name in ("uncond.safetensors", "uncond.config.json"):
        shutil.copyfile(MODEL_DIR / name, out / name)
    cfg = DiTConfig.from_json((MODEL_DIR / "uncond.config.json").read_text())
    model = DiT(cfg, attn_impl="math").double()
    load_weights(model, load_file(str(MODEL_DIR / "uncond.safetensors")))
    model.eval()
    if args.only_sde:
        make_dpm_sde(model, out)
        return 0

    diffs = {"250": Diffusion("250"), "ddim50": Diffusion("ddim50")}
    for spec, d in diffs.items():
        arrays = {
            "timestep_map": d.timestep_map.astype(np.int64),
            "betas": d.betas, "alphas_cumprod": d.ab, "coef1": d.coef1, "coef2": d.coef2,
            "logvar_clipped": d.post_logvar_clipped, "posterior_variance": d.post_var,
        }
        for key, arr in arrays.items():
            save(out / f"sched.{spec}.{key}.npy", arr)

    gen = torch.Generator().manual_seed(SEED)
    n, c, s = 2, cfg.in_channels, cfg.input_size
    cases = [("ddpm250_k249", "250", 249), ("ddpm250_k120", "250", 120), ("ddpm250_k0", "250", 0),
             ("ddim50_k25", "ddim50", 25)]
    rows, cols = slice(0, 4), slice(0, 8)  # K = 2, S = 4: grid row 0 = positions 0 and 1
    for name, spec, k in cases:
        d = diffs[spec]
        x = torch.randn((n, c, s, s), generator=gen, dtype=torch.float32).double()
        z = torch.randn((n, c, s, s), generator=gen, dtype=torch.float32).double()
        known = (torch.rand((n, c, s, s), generator=gen, dtype=torch.float32) * 2 - 1).double()
        t = torch.full((n,), float(d.timestep_map[k]), dtype=torch.float64)
        with torch.no_grad():
            mo = model(x, t).float().double()  # the Swift side gets the float32 output
        x0, mean, logvar = d.p_mean_variance(x, mo, k)
        ddpm = d.p_sample(x, mo, k, z)
        files = {"x": x, "z": z, "out": mo, "x0": x0, "mean": mean, "logvar": logvar, "ddpm": ddpm,
                 "known": known,
                 "fixed_large": d.p_sample(x, mo[:, :c], k, z, variance="fixed_large"),
                 "fixed_small": d.p_sample(x, mo[:, :c], k, z, variance="fixed_small"),
                 "replace_official": d.replace(ddpm, known, z, rows, cols, k, "official"),
                 "replace_previous": d.replace(ddpm, known, z, rows, cols, k, "previous")}
        files["v_x0"] = d.p_mean_variance(x, mo, k, prediction="v")[0]
        files["v_ddpm"] = d.p_sample(x, mo, k, z, prediction="v")
        if spec.startswith("ddim"):
            files["ddim_eta0"] = d.ddim_sample(x, mo, k, z, 0.0)
            files["ddim_eta1"] = d.ddim_sample(x, mo, k, z, 1.0)
            files["v_ddim_eta1"] = d.ddim_sample(x, mo, k, z, 1.0, prediction="v")
        for key, tensor in files.items():
            save(out / f"{name}.{key}.npy", f32(tensor))
        print(f"{name:<14} t={int(d.timestep_map[k]):<4} |x_k-1| max {ddpm.abs().max():.3f}")

    make_loops(model, out, gen)
    make_bicubic(out, gen)
    make_dpm(model, out)
    make_dpm_sde(model, out)

    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"fixtures: {total} bytes in {out}")
    if total > SIZE_LIMIT:
        print(f"error: fixture folder exceeds {SIZE_LIMIT} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
