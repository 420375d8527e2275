"""Independent PyTorch reference implementation of DiT (Peebles & Xie) with the GriDiT changes.

This file is the numerical ground truth for the Swift engine (gridit). It is written from the
project's own architecture specification (gridit-method.md, section 1), not copied
from any upstream repository. It favours readability over speed.

What is modelled
----------------
* DiT backbone: patch embedding (Conv2d kernel = stride = P), learned-or-fixed positional
  embedding, sinusoidal timestep embedding + MLP, optional class-label embedding (with the
  classifier-free-guidance "null" row), N adaLN-Zero transformer blocks, adaLN final layer,
  unpatchify.
* GriDiT changes:
    - ``num_classes = 0``: no class embedder at all (GriDiT stage 1 is unconditional), the
      conditioning vector is the timestep embedding alone;
    - ``condition_channels > 0``: super-resolution variant, the patch embedding sees
      ``in_channels + condition_channels`` channels, ``cat([x, cond], dim=1)`` (noisy input first);
    - ``pos_embed`` is whatever the checkpoint stores (GriDiT inits with a 3-D sin-cos but the
      released checkpoints carry the 2-D one). When a checkpoint has no ``pos_embed`` the 2-D
      sin-cos defined below is used.

State-dict keys (exactly these, nothing else)
---------------------------------------------
    pos_embed                                   (1, T, D)
    x_embedder.proj.weight / .bias              (D, Cin_total, P, P) / (D,)
    t_embedder.mlp.0.weight / .bias             (D, 256) / (D,)
    t_embedder.mlp.2.weight / .bias             (D, D) / (D,)
    y_embedder.embedding_table.weight           (num_classes + 1, D)       only if num_classes > 0
    blocks.{i}.attn.qkv.weight / .bias          (3D, D) / (3D,)
    blocks.{i}.attn.proj.weight / .bias         (D, D) / (D,)
    blocks.{i}.mlp.fc1.weight / .bias           (H, D) / (H,)       H = int(D * mlp_ratio)
    blocks.{i}.mlp.fc2.weight / .bias           (D, H) / (D,)
    blocks.{i}.adaLN_modulation.1.weight / .bias (6D, D) / (6D,)
    final_layer.linear.weight / .bias           (P*P*Cout, D) / (P*P*Cout,)
    final_layer.adaLN_modulation.1.weight / .bias (2D, D) / (2D,)

Usage
-----
    python tools/reference/dit_reference.py            # self-checks + FLOP table
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TIMESTEP_FREQ_DIM = 256  # size of the raw sinusoidal timestep embedding


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class DiTConfig:
    """Model configuration. Field names are also the snake_case keys of the JSON config format."""

    depth: int
    hidden_size: int
    num_heads: int
    patch_size: int
    input_size: int
    in_channels: int = 4
    learn_sigma: bool = True
    num_classes: int = 0  # 0 = no class embedder
    condition_channels: int = 0  # 0 = no concatenated condition (SR variant uses e.g. 4)
    mlp_ratio: float = 4.0
    prediction: str = "epsilon"  # what the first C output channels are: "epsilon" or "v" (a diffusion setting)

    # ---- derived quantities ----
    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def patch_in_channels(self) -> int:
        return self.in_channels + self.condition_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    def validate(self) -> None:
        if self.input_size % self.patch_size != 0:
            raise ValueError("input_size must be a multiple of patch_size")
        if self.hidden_size % self.num_heads != 0:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.hidden_size % 4 != 0:
            raise ValueError("hidden_size must be a multiple of 4 (2-D sin-cos embedding)")
        if self.prediction not in ("epsilon", "v"):
            raise ValueError(f"prediction {self.prediction!r}: use epsilon or v")

    # ---- JSON ----
    def to_dict(self) -> dict:
        d = {
            "depth": int(self.depth),
            "hidden_size": int(self.hidden_size),
            "num_heads": int(self.num_heads),
            "patch_size": int(self.patch_size),
            "input_size": int(self.input_size),
            "in_channels": int(self.in_channels),
            "learn_sigma": bool(self.learn_sigma),
            "num_classes": int(self.num_classes),
            "condition_channels": int(self.condition_channels),
            "mlp_ratio": float(self.mlp_ratio),
        }
        if self.prediction != "epsilon":  # optional in the format, epsilon when absent
            d["prediction"] = str(self.prediction)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping) -> "DiTConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_json(cls, text: str) -> "DiTConfig":
        return cls.from_dict(json.loads(text))


# Reference DiT sizes: name -> (depth, hidden_size, num_heads).
_SIZES = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PRESET_NAMES = [f"DiT-{s}/{p}" for s in ("S", "B", "L", "XL") for p in (2, 4, 8)]


def preset(name: str, input_size: int = 32, **overrides) -> DiTConfig:
    """Config for a named preset such as "DiT-XL/2".

    Defaults follow GriDiT stage 1: in_channels 4, learn_sigma True, no class embedder.
    Pass e.g. ``num_classes=1000`` for the original class-conditional DiT.
    """
    try:
        prefix, patch = name.split("/")
        size = prefix.split("-")[1]
        depth, hidden, heads = _SIZES[size]
        patch_size = int(patch)
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESET_NAMES)}") from None
    if patch_size not in (2, 4, 8):
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESET_NAMES)}")
    cfg = DiTConfig(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch_size,
                    input_size=input_size)
    cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    return cfg


# --------------------------------------------------------------------------------------------
# Fixed embeddings
# --------------------------------------------------------------------------------------------


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """1-D sin-cos embedding in float64: [sin(pos * w_i) for i] ++ [cos(pos * w_i) for i],
    w_i = 1 / 10000^(i / (dim/2)), i = 0 .. dim/2 - 1. Returns (len(positions), dim)."""
    if dim % 2 != 0:
        raise ValueError("dim must be even")
    half = dim // 2
    omega = 1.0 / (10000.0 ** (np.arange(half, dtype=np.float64) / half))
    angles = np.asarray(positions, dtype=np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid: int) -> np.ndarray:
    """2-D sin-cos positional embedding, float64, shape (grid*grid, dim).

    Token k (row-major over the patch grid) has row r = k // grid and column c = k % grid;
    its embedding is [sincos_1d(dim/2, c), sincos_1d(dim/2, r)]: the first half encodes the
    COLUMN, the second half the ROW.
    """
    if dim % 4 != 0:
        raise ValueError("dim must be a multiple of 4")
    k = np.arange(grid * grid)
    rows, cols = k // grid, k % grid
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


def timestep_sinusoid(t: torch.Tensor, dim: int = TIMESTEP_FREQ_DIM) -> torch.Tensor:
    """Raw sinusoidal timestep embedding, computed in float64, shape (N, dim).

    half = dim/2, freqs_i = exp(-ln(10000) * i / half), emb = [cos(t*freqs), sin(t*freqs)]
    (cos FIRST). ``dim`` must be even.
    """
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64, device=t.device)
    freqs = torch.exp(-math.log(10000.0) * i / half)
    args = t.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


# --------------------------------------------------------------------------------------------
# Modules (attribute names define the state-dict keys)
# --------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x: (N, T, D); shift, scale: (N, D)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class PatchEmbed(nn.Module):
    def __init__(self, in_ch: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)  # (N, D, h, w)
        n, d, h, w = y.shape
        # token index = row * w + col
        return y.reshape(n, d, h * w).transpose(1, 2)  # (N, T, D)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_sinusoid(t).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


class LabelEmbedder(nn.Module):
    """Class-label table with num_classes + 1 rows; row ``num_classes`` is the CFG null class."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


# "math": explicit softmax(q k^T / sqrt(hd)) v, used for fixtures (works in float64).
# "sdpa": torch.nn.functional.scaled_dot_product_attention, used for benchmarking.
ATTENTION_IMPLS = ("math", "sdpa")


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, impl: str = "math"):
        super().__init__()
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.impl = impl
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, N, heads, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.impl == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (N, heads, T, T)
            o = torch.softmax(scores, dim=-1) @ v  # (N, heads, T, hd)
        # concatenate heads in head order: channel = head * hd + j
        o = o.transpose(1, 2).reshape(n, t, d)
        return self.proj(o)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=True)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig, attn_impl: str = "math"):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(d, cfg.num_heads, attn_impl)
        self.norm2 = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(d, cfg.mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        (shift_msa, scale_msa, gate_msa,
         shift_mlp, scale_mlp, gate_mlp) = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa[:, None, :] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp[:, None, :] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        p = cfg.patch_size
        self.norm_final = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(d, p * p * cfg.out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig, attn_impl: str = "math"):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.patch_in_channels, d, cfg.patch_size)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d) if cfg.num_classes > 0 else None
        # Fixed (non-trained) positional embedding, stored in the state dict.
        pos = torch.from_numpy(sincos_2d(d, cfg.grid_size)).float()[None]
        self.register_buffer("pos_embed", pos, persistent=True)
        self.blocks = nn.ModuleList([DiTBlock(cfg, attn_impl) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(cfg)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, P*P*C) -> (N, C, H, W).

        Output pixel (c, hi*P + pi, wi*P + qi) = token (hi*w + wi), vector index (pi*P + qi)*C + c.
        """
        cfg = self.cfg
        p, c, g = cfg.patch_size, cfg.out_channels, cfg.grid_size
        n = x.shape[0]
        x = x.reshape(n, g, g, p, p, c)  # (N, hi, wi, pi, qi, c)
        x = x.permute(0, 5, 1, 3, 2, 4)  # (N, c, hi, pi, wi, qi)
        return x.reshape(n, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None,
                cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        cfg = self.cfg
        if cfg.condition_channels > 0:
            if cond is None:
                raise ValueError("this model needs a condition input")
            x = torch.cat([x, cond], dim=1)
        elif cond is not None:
            raise ValueError("this model takes no condition input")
        h = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        c = self.t_embedder(t)  # (N, D)
        if self.y_embedder is not None:
            if y is None:
                raise ValueError("this model needs class labels (use num_classes for the null class)")
            c = c + self.y_embedder(y)
        for block in self.blocks:
            h = block(h, c)
        h = self.final_layer(h, c)  # (N, T, P*P*Cout)
        return self.unpatchify(h)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def expected_shapes(cfg: DiTConfig) -> dict:
    """Every state-dict key of a model with this config and its shape."""
    d, p, hm = cfg.hidden_size, cfg.patch_size, cfg.mlp_hidden
    shapes = {
        "pos_embed": (1, cfg.num_tokens, d),
        "x_embedder.proj.weight": (d, cfg.patch_in_channels, p, p),
        "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, TIMESTEP_FREQ_DIM),
        "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d),
        "t_embedder.mlp.2.bias": (d,),
    }
    if cfg.num_classes > 0:
        shapes["y_embedder.embedding_table.weight"] = (cfg.num_classes + 1, d)
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "mlp.fc1.weight": (hm, d), b + "mlp.fc1.bias": (hm,),
            b + "mlp.fc2.weight": (d, hm), b + "mlp.fc2.bias": (d,),
            b + "adaLN_modulation.1.weight": (6 * d, d), b + "adaLN_modulation.1.bias": (6 * d,),
        })
    shapes.update({
        "final_layer.linear.weight": (p * p * cfg.out_channels, d),
        "final_layer.linear.bias": (p * p * cfg.out_channels,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d),
        "final_layer.adaLN_modulation.1.bias": (2 * d,),
    })
    return shapes


def load_weights(model: DiT, state: Mapping[str, torch.Tensor]) -> None:
    """Strict load; the only key allowed to be missing is ``pos_embed`` (then 2-D sin-cos)."""
    state = dict(state)
    if "pos_embed" not in state:
        pos = sincos_2d(model.cfg.hidden_size, model.cfg.grid_size)
        state["pos_embed"] = torch.from_numpy(pos).float()[None]
    target_dtype = next(model.parameters()).dtype
    state = {k: v.to(target_dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)


def init_random_(model: DiT, generator: torch.Generator, weight_std: Optional[float] = None,
                 bias_std: float = 0.02) -> None:
    """Fill every parameter with normal noise (no zero-init, so every path contributes).

    Weights: std ``weight_std`` or, if None, 1/sqrt(fan_in). Biases: ``bias_std``.
    The label table uses std 0.5. Parameters are filled in sorted-name order.
    """
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name in sorted(params):
            p = params[name]
            if name.endswith("embedding_table.weight"):
                std = 0.5
            elif name.endswith(".bias"):
                std = bias_std
            else:
                fan_in = int(np.prod(p.shape[1:]))
                std = weight_std if weight_std is not None else 1.0 / math.sqrt(fan_in)
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            p.copy_(noise * std)


# --------------------------------------------------------------------------------------------
# Cost model
# --------------------------------------------------------------------------------------------


def flops_per_forward(cfg: DiTConfig, batch: int) -> int:
    """2 x multiply-adds of every matrix product in one forward pass.

    Counted: patch-embed conv, timestep MLP (2 linears), per block the adaLN projection, qkv,
    q.k^T, attn.v, proj, fc1, fc2; the final adaLN projection and final linear. Not counted:
    embedding lookup, norms, activations, softmax, residual adds, modulation.
    """
    n = batch
    d, t = cfg.hidden_size, cfg.num_tokens
    p, hm = cfg.patch_size, cfg.mlp_hidden
    macs = 0
    macs += n * t * d * (cfg.patch_in_channels * p * p)  # patch embedding
    macs += n * (TIMESTEP_FREQ_DIM * d + d * d)  # timestep MLP
    per_block = (
        n * d * 6 * d  # adaLN projection
        + n * t * d * 3 * d  # qkv
        + n * t * t * d  # q.k^T, summed over heads (heads * T * T * hd)
        + n * t * t * d  # attn.v
        + n * t * d * d  # proj
        + n * t * d * hm  # fc1
        + n * t * hm * d  # fc2
    )
    macs += cfg.depth * per_block
    macs += n * d * 2 * d  # final adaLN projection
    macs += n * t * d * (p * p * cfg.out_channels)  # final linear
    return 2 * macs


# --------------------------------------------------------------------------------------------
# Self-checks
# --------------------------------------------------------------------------------------------


def _self_check() -> None:
    torch.manual_seed(0)
    for cfg in [
        DiTConfig(depth=2, hidden_size=32, num_heads=4, patch_size=2, input_size=8),
        DiTConfig(depth=1, hidden_size=24, num_heads=3, patch_size=4, input_size=16, in_channels=3,
                  learn_sigma=False, num_classes=5, mlp_ratio=2.5),
        DiTConfig(depth=1, hidden_size=32, num_heads=2, patch_size=2, input_size=8,
                  condition_channels=4),
    ]:
        model = DiT(cfg)
        sd = model.state_dict()
        exp = expected_shapes(cfg)
        assert set(sd) == set(exp), (sorted(set(sd) ^ set(exp)))
        for k, s in exp.items():
            assert tuple(sd[k].shape) == s, (k, sd[k].shape, s)
        init_random_(model, torch.Generator().manual_seed(1))
        model = model.double()
        n = 2
        x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, dtype=torch.float64)
        t = torch.tensor([999.0, 3.0], dtype=torch.float64)
        y = torch.tensor([0, cfg.num_classes]) if cfg.num_classes else None
        cond = (torch.randn(n, cfg.condition_channels, cfg.input_size, cfg.input_size,
                            dtype=torch.float64) if cfg.condition_channels else None)
        out = model(x, t, y, cond)
        assert out.shape == (n, cfg.out_channels, cfg.input_size, cfg.input_size)
        # math attention == SDPA
        for blk in model.blocks:
            blk.attn.impl = "sdpa"
        out2 = model(x, t, y, cond)
        assert torch.allclose(out, out2, atol=1e-12, rtol=1e-10), (out - out2).abs().max()
        # unpatchify layout check against the index formula
        p, co, g = cfg.patch_size, cfg.out_channels, cfg.grid_size
        tok = torch.randn(n, g * g, p * p * co, dtype=torch.float64)
        img = model.unpatchify(tok)
        for (ci, hi, wi, pi, qi) in [(0, 0, 0, 0, 0), (co - 1, g - 1, 0, p - 1, 1 % p),
                                     (1, 1, g - 1, 0, p - 1)]:
            a = img[1, ci, hi * p + pi, wi * p + qi]
            b = tok[1, hi * g + wi, (pi * p + qi) * co + ci]
            assert a == b
    # 2-D sin-cos: first half encodes the column
    pe = sincos_2d(8, 3)
    assert np.allclose(pe[1, :4], sincos_1d(4, np.array([1]))[0])
    assert np.allclose(pe[1, 4:], sincos_1d(4, np.array([0]))[0])
    assert np.allclose(pe[3, 4:], sincos_1d(4, np.array([1]))[0])
    print("self-check OK")


if __name__ == "__main__":
    _self_check()
    print(f"{'config':<22}{'batch':>6}{'tokens':>8}{'GFLOP/forward':>16}")
    for name, size in [("DiT-XL/2", 64), ("DiT-B/2", 32), ("DiT-S/2", 32)]:
        cfg = preset(name, input_size=size)
        f = flops_per_forward(cfg, 1)
        print(f"{name + '@' + str(size):<22}{1:>6}{cfg.num_tokens:>8}{f / 1e9:>16.4f}  ({f})")
