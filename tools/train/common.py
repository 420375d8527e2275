"""Shared pieces of the moving-digits training and sampling tools.

The model is the independent PyTorch DiT of tools/reference/dit_reference.py (so exported keys are
exactly the Swift binding table), the schedule is tools/reference/diffusion_reference.py (linear
betas 1e-4..0.02 over 1000 steps, respacing). This file adds what training needs on top: the DiT
initialisation, batched q_sample / posterior / the IDDPM hybrid loss, the data batches, EMA and
the pipeline export.

Shape legend: N batch, C channels (1), H = W model input side, K grid side in frames, S frame side.
Pixel mapping (the project's convention, also in the Swift engine): x = u8 / 255 * 2 - 1 in, and
u8 = clamp(floor((x + 1) / 2 * 255 + 0.5), 0, 255) out.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

_HERE = os.path.dirname(os.path.abspath(__file__))
_TOOLS = os.path.dirname(_HERE)
for _p in (os.path.join(_TOOLS, "reference"), os.path.join(_TOOLS, "data")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import dit_reference as ref  # noqa: E402
import diffusion_reference as dref  # noqa: E402
import moving_digits as md  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Data geometry (tools/train/README.md, top; models/moving-digits/README.md)
# ---------------------------------------------------------------------------------------------

K = 4                    # frames per grid side
LR = 16                  # stage-1 frame side
SCALE = 4                # stage-2 factor
HR = LR * SCALE          # 64: classic Moving-MNIST frame side
DIGIT_SCALE = 28 / 64    # classic Moving MNIST: 28 px digits on a 64 px canvas
DATA_KW = dict(digit_scale=DIGIT_SCALE, num_digits=(1, 2), digit_probs=(0.5, 0.5),
               speed=md.DEFAULT_SPEED)


def to_model(u8: np.ndarray) -> torch.Tensor:
    """uint8 (...) -> float32 in [-1, 1]."""
    return torch.from_numpy(u8.astype(np.float32) / 255.0 * 2.0 - 1.0)


def to_u8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """[-1, 1] -> uint8 by round-half-up, clamped."""
    x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
    return np.clip(np.floor((x + 1.0) / 2.0 * 255.0 + 0.5), 0, 255).astype(np.uint8)


def upsample(lr: torch.Tensor, scale: int = SCALE) -> torch.Tensor:
    """The stage-2 condition: bicubic (a = -0.75, align_corners False) of (N, C, S, S)."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


def stage1_u8(n: int, seed: int) -> np.ndarray:
    """(N, K*LR, K*LR) uint8 grids of 16 consecutive LR frames (exact mean-pool of a 64 px render)."""
    s = md.sequences(n, K * K, LR, seed, "train", render_factor=SCALE, **DATA_KW)
    return md.to_grids(s.frames, K)


def stage2_u8(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(high (N, HR, HR), low (N, LR, LR)) uint8: exact pairs, low = mean_pool(high, 4)."""
    low, high = md.sr_pairs(n, LR, SCALE, seed, "train", **DATA_KW)
    return high, low


def stage1_batch(n: int, seed: int) -> torch.Tensor:
    """(N, 1, K*LR, K*LR) model-space grids (stage1_u8)."""
    return to_model(stage1_u8(n, seed))[:, None]


def stage2_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (N, 1, HR, HR), low (N, 1, LR, LR)) in model space (stage2_u8)."""
    high, low = stage2_u8(n, seed)
    return to_model(high)[:, None], to_model(low)[:, None]


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def stage_config(stage: int, depth: int, hidden: int, heads: int, patch: int) -> ref.DiTConfig:
    if stage == 1:
        return ref.DiTConfig(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch,
                             input_size=K * LR, in_channels=1, learn_sigma=True)
    return ref.DiTConfig(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch,
                         input_size=HR, in_channels=1, learn_sigma=True, condition_channels=1)


def grid_pos_embed(dim: int, k: int = K, frame_tokens: int = LR // 4) -> np.ndarray:
    """(T, dim) fixed positional embedding of a stage-1 grid token: sin-cos of its frame's time
    index (dim/2 channels) ++ of its row and column inside the frame (dim/4 each).

    The token grid is (k * f) x (k * f) with f = frame_tokens; token (r, c) belongs to frame
    (r // f) * k + c // f (row-major time) at (r % f, c % f) inside it. Tokens at the same place of
    consecutive frames thus get nearby embeddings, which the plain 2-D sin-cos of the whole grid
    (ref.sincos_2d) does not give. The engine loads `pos_embed` from the checkpoint, so it needs no
    code for this (GriDiT itself initialises with a 3-D sin-cos)."""
    if dim % 8:
        raise ValueError("dim must be a multiple of 8")
    side = k * frame_tokens
    r, c = np.divmod(np.arange(side * side), side)
    t = (r // frame_tokens) * k + c // frame_tokens

    def sincos(d: int, pos: np.ndarray, period: float) -> np.ndarray:
        # wavelengths from 2 tokens up to `period`, geometrically spaced
        w = 2 * np.pi / (2.0 * (period / 2.0) ** (np.arange(d // 2) / max(d // 2 - 1, 1)))
        a = pos[:, None].astype(np.float64) * w[None]
        return np.concatenate([np.sin(a), np.cos(a)], axis=1)

    return np.concatenate([sincos(dim // 2, t, 4.0 * k * k), sincos(dim // 4, r % frame_tokens, 4.0 * frame_tokens),
                           sincos(dim // 4, c % frame_tokens, 4.0 * frame_tokens)], axis=1)


def build_model(cfg: ref.DiTConfig, seed: int, grid_pos: bool = False) -> ref.DiT:
    """The reference DiT with the usual DiT initialisation (xavier linears, normal(0.02) timestep
    MLP, zero adaLN and output layer, so every block starts as the identity). grid_pos (stage 1):
    `pos_embed` = grid_pos_embed instead of the 2-D sin-cos of the token grid."""
    torch.manual_seed(seed)
    model = ref.DiT(cfg, attn_impl="sdpa")
    if grid_pos:
        ft = LR // cfg.patch_size
        model.pos_embed.copy_(torch.from_numpy(grid_pos_embed(cfg.hidden_size, K, ft)).float()[None])
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    w = model.x_embedder.proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(model.x_embedder.proj.bias)
    for lin in (model.t_embedder.mlp[0], model.t_embedder.mlp[2]):
        nn.init.normal_(lin.weight, std=0.02)
    for blk in model.blocks:
        nn.init.zeros_(blk.adaLN_modulation[-1].weight)
        nn.init.zeros_(blk.adaLN_modulation[-1].bias)
    for lin in (model.final_layer.adaLN_modulation[-1], model.final_layer.linear):
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
    return model


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Diffusion training terms (batched over per-sample t; float64 tables cast to float32)
# ---------------------------------------------------------------------------------------------


class TrainDiffusion:
    """The 1000-step schedule of diffusion_reference with per-sample gathers."""

    def __init__(self):
        d = dref.Diffusion("1000")
        self.count = d.count
        tab = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
        self.sqrt_ab = tab(np.sqrt(d.ab))
        self.sqrt_1mab = tab(np.sqrt(1.0 - d.ab))
        self.sqrt_recip = tab(d.sqrt_recip)
        self.sqrt_recipm1 = tab(d.sqrt_recipm1)
        self.coef1 = tab(d.coef1)
        self.coef2 = tab(d.coef2)
        self.post_logvar = tab(d.post_logvar_clipped)
        self.log_betas = tab(np.log(d.betas))

    @staticmethod
    def _g(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return table[t].float()[:, None, None, None]

    def q_sample(self, x0, t, noise):
        return self._g(self.sqrt_ab, t) * x0 + self._g(self.sqrt_1mab, t) * noise

    def predict_x0(self, pred: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
        """x0 from the model's prediction (epsilon, or v = sqrt(ab) eps - sqrt(1-ab) x0) at x_t."""
        g = lambda a: self._g(a, t)  # noqa: E731
        if prediction == "v":
            return g(self.sqrt_ab) * xt - g(self.sqrt_1mab) * pred
        if prediction == "epsilon":
            return g(self.sqrt_recip) * xt - g(self.sqrt_recipm1) * pred
        raise ValueError(f"prediction {prediction!r}")

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ/(1-ᾱ) of each sample's t, (N,) float32."""
        ab = self.sqrt_ab[t] ** 2
        return (ab / (1.0 - ab)).float()

    def x0_weight(self, t: torch.Tensor, gamma: float, floor: float) -> torch.Tensor:
        """The weight of each sample's x0 error: SNR clamped to [floor, gamma]. Min-SNR-gamma (Hang
        et al. 2023) caps the weight of the nearly clean levels; a floor of 1 (truncated SNR,
        Salimans & Ho 2022; v-prediction only, as epsilon's error would be scaled by up to 1/SNR)
        keeps a gradient at the noisy levels where a grid's layout (how many digits, where they go)
        is decided, which epsilon-MSE (x0 weight = SNR) all but ignores."""
        return self.snr(t).clamp(floor, gamma)

    def hybrid_loss(self, out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                    noise: torch.Tensor, prediction: str = "epsilon", gamma: float = 0.0,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """IDDPM hybrid loss: the mean-squared error of the prediction (epsilon, or v = sqrt(ab) eps -
        sqrt(1-ab) x0), weighted per sample when gamma > 0 (x0_weight expressed on that target), plus
        the variational bound term in bits, whose model mean uses the detached epsilon so it trains
        only the variance channels. mask (N, 1, H, W), 1 where the loss counts (0 on clean context
        frames). out: (N, 2C, H, W) float32. Returns (loss, mse, vb): scalar means over the batch,
        mse the unweighted error of the target."""
        c = x0.shape[1]
        pred, v = out[:, :c], out[:, c:]
        g = lambda a: self._g(a, t)  # noqa: E731
        if prediction == "v":
            target = g(self.sqrt_ab) * noise - g(self.sqrt_1mab) * x0
            eps = g(self.sqrt_ab) * pred + g(self.sqrt_1mab) * xt
        elif prediction == "epsilon":
            target, eps = noise, pred
        else:
            raise ValueError(f"prediction {prediction!r}")
        m = torch.ones_like(x0[:, :1]) if mask is None else mask
        area = m.sum(dim=(1, 2, 3)).clamp(min=1.0) * c

        def mean(e):  # per-sample mean over the counted pixels
            return (e * m).sum(dim=(1, 2, 3)) / area

        mse = mean((pred - target) ** 2)
        w = torch.ones_like(mse)
        if gamma > 0:
            snr = self.snr(t)
            w = (self.x0_weight(t, gamma, 1.0) / (snr + 1.0) if prediction == "v"
                 else self.x0_weight(t, gamma, 0.0) / snr)
        true_mean = g(self.coef1) * x0 + g(self.coef2) * xt
        true_logvar = g(self.post_logvar)
        frac = (v + 1) / 2
        model_logvar = frac * g(self.log_betas) + (1 - frac) * g(self.post_logvar)
        x0_pred = self.predict_x0(eps.detach(), xt, t, "epsilon")
        model_mean = g(self.coef1) * x0_pred + g(self.coef2) * xt
        kl = 0.5 * (-1.0 + model_logvar - true_logvar + torch.exp(true_logvar - model_logvar)
                    + (true_mean - model_mean) ** 2 * torch.exp(-model_logvar))
        kl = mean(kl) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)
        nll = mean(nll) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        return (w * mse + vb).mean(), mse.mean(), vb.mean()

    def sample_t(self, n: int, gen: torch.Generator, low_share: float, low_end: int) -> torch.Tensor:
        """(N,) timesteps: with probability low_share uniform in [0, low_end), else uniform in
        [0, count) (low_share 0: uniform, the reference recipe)."""
        t = torch.randint(0, self.count, (n,), generator=gen)
        if low_share > 0:
            low = torch.rand(n, generator=gen) < low_share
            t = torch.where(low, torch.randint(0, low_end, (n,), generator=gen), t)
        return t


def context_mask(n: int, gen: torch.Generator, share: float, rows: tuple[int, ...], k: int = K,
                 frame: int = LR) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuation training: a share of the batch gets its first r grid rows (r drawn from `rows`)
    as clean known frames, the way gridit mode's clean context gives them while sampling. Returns
    (known (N, 1, kS, kS) bool, where x_t is the clean x0; counted (N, 1, kS, kS) float, 1 where
    the loss counts)."""
    side = k * frame
    r = torch.tensor(rows)[torch.randint(0, len(rows), (n,), generator=gen)]
    r = torch.where(torch.rand(n, generator=gen) < share, r, torch.zeros_like(r))
    row = torch.arange(side)[None, :] // frame  # (1, side): grid row of each pixel row
    known = (row < r[:, None])[:, None, :, None].expand(n, 1, side, side)
    return known, (~known).float()


def _approx_std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log-likelihood of 8-bit data x in [-1, 1] (bins of width 2/255) under N(means, e^(2 log_scales))."""
    centered = x - means
    inv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_1m_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_1m_cdf_min, torch.log(delta.clamp(min=1e-12))))


# ---------------------------------------------------------------------------------------------
# EMA and export
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1.0 - decay)


def save_safetensors(model: ref.DiT, path: str, dtype: torch.dtype = torch.float32) -> None:
    from safetensors.torch import save_file
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    assert set(sd) == set(ref.expected_shapes(model.cfg)), "state dict keys differ from the binding table"
    save_file(sd, path)


def load_safetensors(config_path: str, weights_path: str) -> ref.DiT:
    from safetensors.torch import load_file
    with open(config_path) as f:
        cfg = ref.DiTConfig.from_json(f.read())
    model = ref.DiT(cfg, attn_impl="sdpa")
    ref.load_weights(model, load_file(weights_path))
    return model.eval()


@dataclass
class Defaults:
    """pipeline.json defaults. Stochastic samplers: with these small, briefly trained models the
    deterministic ones (DDIM eta 0, DPM-Solver++ 2M) leave noisier frames; DPM-Solver++ 2M SDE at
    35 / 18 trailing steps keeps every 128-frame metric within 10% of DDPM 100 / 50 at 2.8x less
    work (tools/train/README.md, "Fewer steps")."""
    mode: str = "gridit"
    sampler: str = "dpmpp-2m-sde"
    steps: str = "trailing35"
    eta: float = 0.0
    sr_sampler: str = "dpmpp-2m-sde"
    sr_steps: str = "trailing18"
    # Stage 2's noise at half scale, the same for every frame of a sequence: 20% less warp error on
    # real sequences, sharpness ratio 0.99 (tools/train/README.md, "Stage 2's noise").
    sr_temperature: float = 0.5
    sr_noise: str = "shared"
    context_rows: int = 2
    context: str = "renoised"
    # bf16 products keep every 128-frame metric of fp32 (tools/train/README.md, "Precision") and
    # run at twice the rate where VDPBF16PS does (AMD Zen 4 and 5).
    precision: str = "bf16"
    # stage 1's guidance scale (1: none); with a guide, autoguidance guide + s * (stage1 - guide)
    cfg_scale: float = 1.0
    # the timesteps [lower, upper] on 0...999 where that guidance applies (None: every step)
    cfg_interval: tuple[int, int] | None = None


def pipeline_json(defaults: Defaults, description: str, guide: bool = False) -> dict:
    """pipeline.json of the moving-digits bundle; `guide`: it names guide.{config.json,safetensors}.
    defaults.cfg_scale is written when it is not 1, defaults.cfg_interval when it is set."""
    spec = {
        "format": "gridit.pipeline.v1",
        "name": "moving-digits",
        "description": description,
        "grid": {"k": K, "frame_size": LR, "channels": 1},
        "stage1": {"config": "stage1.config.json", "weights": "stage1.safetensors"},
        **({"guide": {"config": "guide.config.json", "weights": "guide.safetensors"}} if guide else {}),
        "stage2": {"config": "stage2.config.json", "weights": "stage2.safetensors", "scale": SCALE},
        "vae": None,
        "defaults": {"mode": defaults.mode, "sampler": defaults.sampler, "steps": defaults.steps,
                     "eta": defaults.eta, "sr_sampler": defaults.sr_sampler, "sr_steps": defaults.sr_steps,
                     "sr_temperature": defaults.sr_temperature, "sr_noise": defaults.sr_noise,
                     "context_rows": defaults.context_rows, "context": defaults.context,
                     "precision": defaults.precision},
        "limits": {"max_length": 100000},
    }
    if defaults.cfg_scale != 1:
        spec["defaults"]["cfg_scale"] = defaults.cfg_scale
    if defaults.cfg_interval is not None:
        spec["defaults"]["cfg_interval"] = list(defaults.cfg_interval)
    return spec


def export_pipeline(stage1: ref.DiT, stage2: ref.DiT, out_dir: str, defaults: Defaults,
                    description: str, dtype: torch.dtype = torch.float32, extra: dict | None = None,
                    guide: ref.DiT | None = None) -> None:
    """Writes pipeline.json, stage{1,2}.safetensors and .config.json (and guide.safetensors and
    guide.config.json with a guide) into a fresh temp folder next to out_dir, then swaps it into
    place (readers see the old or the new bundle, never a mix)."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    models = [("stage1", stage1), ("stage2", stage2)] + ([("guide", guide)] if guide is not None else [])
    for name, m in models:
        save_safetensors(m, os.path.join(tmp, f"{name}.safetensors"), dtype)
        with open(os.path.join(tmp, f"{name}.config.json"), "w") as f:
            f.write(m.cfg.to_json())
    with open(os.path.join(tmp, "pipeline.json"), "w") as f:
        json.dump(pipeline_json(defaults, description, guide is not None), f, indent=2)
        f.write("\n")
    if extra:
        with open(os.path.join(tmp, "training.json"), "w") as f:
            json.dump(extra, f, indent=2)
            f.write("\n")
    for name in os.listdir(tmp):
        os.chmod(os.path.join(tmp, name), 0o644)
        fd = os.open(os.path.join(tmp, name), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    os.chmod(tmp, 0o755)
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix=".old-", dir=parent)
        os.rename(out_dir, os.path.join(old, "x"))
        os.rename(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.rename(tmp, out_dir)
