"""Independent PyTorch reference of the Stable Diffusion VAE (AutoencoderKL), written from the
architecture description (not copied from diffusers). Parameter names follow diffusers' state-dict
keys verbatim (current diffusers: attention `to_q`, `to_k`, `to_v`, `to_out.0`).

Architecture (block_out_channels B, layers_per_block L, GroupNorm G groups eps 1e-6, SiLU):
  encoder: conv_in 3x3 (in -> B0); down_blocks[i]: L resnets (prev -> Bi), then (except the last)
           downsamplers.0.conv 3x3 stride 2 after padding (left 0, right 1, top 0, bottom 1);
           mid_block: resnets.0, attentions.0 (single head over channels), resnets.1;
           conv_norm_out, SiLU, conv_out 3x3 (B[-1] -> 2*latent); quant_conv 1x1 (2z -> 2z).
  decoder: post_quant_conv 1x1 (z -> z); conv_in 3x3 (z -> B[-1]); mid_block;
           up_blocks[i] over reversed(B): L+1 resnets (first takes the previous block's channels),
           then (except the last) nearest 2x upsample + upsamplers.0.conv 3x3;
           conv_norm_out, SiLU, conv_out 3x3 (B0 -> out).
  resnet:  h = conv1(silu(norm1(x))); h = conv2(silu(norm2(h))); out = shortcut(x) + h where
           shortcut is conv_shortcut 1x1 when channels change.
  attention: h = group_norm(x) as tokens (HW, C); q,k,v linear; softmax(q k^T / sqrt(C)) v;
           to_out.0 linear; out = x + h.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d


def param_shapes(c: VAEConfig) -> dict[str, tuple]:
    """Every parameter key with its shape, in a fixed order."""
    s: dict[str, tuple] = {}

    def conv(name, cin, cout, k):
        s[name + ".weight"] = (cout, cin, k, k)
        s[name + ".bias"] = (cout,)

    def norm(name, ch):
        s[name + ".weight"] = (ch,)
        s[name + ".bias"] = (ch,)

    def lin(name, cin, cout):
        s[name + ".weight"] = (cout, cin)
        s[name + ".bias"] = (cout,)

    def resnet(p, cin, cout):
        norm(p + "norm1", cin)
        conv(p + "conv1", cin, cout, 3)
        norm(p + "norm2", cout)
        conv(p + "conv2", cout, cout, 3)
        if cin != cout:
            conv(p + "conv_shortcut", cin, cout, 1)

    def mid(p, ch):
        resnet(p + "resnets.0.", ch, ch)
        a = p + "attentions.0."
        norm(a + "group_norm", ch)
        lin(a + "to_q", ch, ch)
        lin(a + "to_k", ch, ch)
        lin(a + "to_v", ch, ch)
        lin(a + "to_out.0", ch, ch)
        resnet(p + "resnets.1.", ch, ch)

    B, L, z = list(c.block_out_channels), c.layers_per_block, c.latent_channels
    conv("encoder.conv_in", c.in_channels, B[0], 3)
    prev = B[0]
    for i, ch in enumerate(B):
        for j in range(L):
            resnet(f"encoder.down_blocks.{i}.resnets.{j}.", prev if j == 0 else ch, ch)
        if i < len(B) - 1:
            conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", ch, ch, 3)
        prev = ch
    mid("encoder.mid_block.", B[-1])
    norm("encoder.conv_norm_out", B[-1])
    conv("encoder.conv_out", B[-1], 2 * z, 3)
    conv("quant_conv", 2 * z, 2 * z, 1)
    conv("post_quant_conv", z, z, 1)
    conv("decoder.conv_in", z, B[-1], 3)
    mid("decoder.mid_block.", B[-1])
    R = list(reversed(B))
    prev = R[0]
    for i, ch in enumerate(R):
        for j in range(L + 1):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}.", prev if j == 0 else ch, ch)
        if i < len(R) - 1:
            conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", ch, ch, 3)
        prev = ch
    norm("decoder.conv_norm_out", B[0])
    conv("decoder.conv_out", B[0], c.out_channels, 3)
    return s


class VAE:
    def __init__(self, config: VAEConfig, params: dict[str, torch.Tensor]):
        self.c = config
        self.p = params
        assert set(params) == set(param_shapes(config)), "parameter keys differ from the table"

    def _gn(self, x, name):
        return F.group_norm(x, self.c.norm_num_groups, self.p[name + ".weight"], self.p[name + ".bias"], eps=1e-6)

    def _conv(self, x, name, stride=1, padding=1):
        return F.conv2d(x, self.p[name + ".weight"], self.p[name + ".bias"], stride=stride, padding=padding)

    def _resnet(self, x, p):
        h = self._conv(F.silu(self._gn(x, p + "norm1")), p + "conv1")
        h = self._conv(F.silu(self._gn(h, p + "norm2")), p + "conv2")
        if p + "conv_shortcut.weight" in self.p:
            x = self._conv(x, p + "conv_shortcut", padding=0)
        return x + h

    def _attn(self, x, p):
        n, ch, hh, ww = x.shape
        h = self._gn(x, p + "group_norm").reshape(n, ch, hh * ww).transpose(1, 2)  # (N, T, C)
        q = F.linear(h, self.p[p + "to_q.weight"], self.p[p + "to_q.bias"])
        k = F.linear(h, self.p[p + "to_k.weight"], self.p[p + "to_k.bias"])
        v = F.linear(h, self.p[p + "to_v.weight"], self.p[p + "to_v.bias"])
        w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(ch), dim=-1)
        o = F.linear(w @ v, self.p[p + "to_out.0.weight"], self.p[p + "to_out.0.bias"])
        return x + o.transpose(1, 2).reshape(n, ch, hh, ww)

    def _mid(self, x, p):
        x = self._resnet(x, p + "resnets.0.")
        x = self._attn(x, p + "attentions.0.")
        return self._resnet(x, p + "resnets.1.")

    def encode(self, x):
        """Image (N, in, H, W) -> (mean, logvar) of the posterior, each (N, z, H/f, W/f)."""
        B, L = list(self.c.block_out_channels), self.c.layers_per_block
        h = self._conv(x, "encoder.conv_in")
        for i in range(len(B)):
            for j in range(L):
                h = self._resnet(h, f"encoder.down_blocks.{i}.resnets.{j}.")
            if i < len(B) - 1:
                h = F.pad(h, (0, 1, 0, 1))
                h = self._conv(h, f"encoder.down_blocks.{i}.downsamplers.0.conv", stride=2, padding=0)
        h = self._mid(h, "encoder.mid_block.")
        h = self._conv(F.silu(self._gn(h, "encoder.conv_norm_out")), "encoder.conv_out")
        m = self._conv(h, "quant_conv", padding=0)
        mean, logvar = m.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z):
        """Latent (N, z, h, w) (already divided by the scale factor) -> image (N, out, h*f, w*f)."""
        B, L = list(self.c.block_out_channels), self.c.layers_per_block
        h = self._conv(z, "post_quant_conv", padding=0)
        h = self._conv(h, "decoder.conv_in")
        h = self._mid(h, "decoder.mid_block.")
        for i in range(len(B)):
            for j in range(L + 1):
                h = self._resnet(h, f"decoder.up_blocks.{i}.resnets.{j}.")
            if i < len(B) - 1:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self._conv(h, f"decoder.up_blocks.{i}.upsamplers.0.conv")
        return self._conv(F.silu(self._gn(h, "decoder.conv_norm_out")), "decoder.conv_out")
