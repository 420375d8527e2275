#!/usr/bin/env python3
"""Convert official checkpoints to what gridit imports: safetensors + model config JSON + pipeline.json.

Inputs
------
* DiT / GriDiT ``.pt`` files (facebookresearch/DiT releases, GriDiT stage 1 and stage 2): either a
  raw ``state_dict`` or a training checkpoint ``{"model", "ema", "opt", "args"}``, from which the
  ``ema`` weights are taken (the official samplers do the same); ``state_dict`` and DDP
  ``module.`` prefixes are understood too.
* diffusers ``AutoencoderKL`` weights: a folder with ``config.json`` and
  ``diffusion_pytorch_model.safetensors`` (or ``.bin``), or one weights file plus ``--vae-config``.
  Deprecated attention names (``query``/``key``/``value``/``proj_attn``) become the current ones
  (``to_q``/``to_k``/``to_v``/``to_out.0``), as diffusers itself does when it loads them.

Outputs (in ``--out``): ``stage1.safetensors`` + ``stage1.config.json`` (and ``stage2.*``, ``vae.*``),
and with the ``pipeline`` command a ``pipeline.json`` ready for ``griditd models import``. Tensor
keys are the PyTorch ``state_dict`` keys verbatim. The model config (docs/MODEL_CONFIG.md) is
read off the tensor shapes; only ``num_heads`` is not in them: it comes from ``--num-heads``,
``--model DiT-XL/2``, the checkpoint's ``args.model``, or the DiT preset with that depth and width.

The report says which position embedding a DiT carries, by comparing ``pos_embed`` with both
formulas: the standard 2-D sin-cos of DiT, the 3-D sin-cos GriDiT initialises with
(gridit-method.md section 1.4; official stage-1 checkpoints should hold the 2-D one), or neither
(learned / unknown). gridit always uses the stored tensor.

``.pt`` files are read WITHOUT PyTorch and without running code from them: a restricted
unpickler accepts only tensors, storages, containers, numbers, strings, ``argparse.Namespace`` and
numpy scalars, and refuses anything else (a pickle that names ``os.system`` is an error, not a
shell command). ``--use-torch`` loads with ``torch.load(weights_only=True)`` instead, e.g. for the
pre-1.6 (non-zip) format.

Usage
-----
    tools/convert_checkpoint.py inspect CKPT.pt
    tools/convert_checkpoint.py dit CKPT.pt --role stage1 --out DIR [--num-heads N]
    tools/convert_checkpoint.py vae VAE_DIR --out DIR
    tools/convert_checkpoint.py pipeline --stage1 S1.pt [--stage2 S2.pt] [--vae VAE_DIR] \\
        [--k 4] [--name NAME] --out DIR
Needs numpy and safetensors (``pip install numpy safetensors``).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import math
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

TIMESTEP_FREQ_DIM = 256
# DiT presets: (depth, hidden_size) -> num_heads, as in facebookresearch/DiT models.py.
PRESET_HEADS = {(12, 384): 6, (12, 768): 12, (24, 1024): 16, (28, 1152): 16}
PRESETS = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


class ConversionError(Exception):
    """A checkpoint that cannot be converted; the message says why and what to do."""


# ------------------------------------------------------------------------------------------
# Reading .pt files without torch
# ------------------------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclass
class StorageType:
    name: str


@dataclass
class Tensor:
    """A tensor read from a checkpoint: its values (float32 for bfloat16) and original dtype."""

    array: np.ndarray
    dtype: str  # "F32", "F16", "BF16", "F64", "I64", ...

    @property
    def shape(self) -> tuple:
        return tuple(self.array.shape)


class Namespace:
    """Stand-in for argparse.Namespace (training scripts save their args)."""

    def __repr__(self) -> str:
        return "Namespace(" + ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items())) + ")"


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: str, big_endian: bool):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path, self.big_endian = archive, prefix, path, big_endian
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, requires_grad, hooks: data
        if module == "torch" and name in _STORAGE_DTYPES:
            return StorageType(name)
        if (module, name) == ("argparse", "Namespace"):
            return Namespace
        if (module, name) == ("torch", "device"):
            return str
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return lambda dtype, data: np.frombuffer(data, dtype=dtype)[0]
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise ConversionError(
            f"{self.path}: the pickle names {module}.{name}, which a checkpoint does not need; refusing to load it "
            "(it could run code). Re-save the weights with torch.save(model.state_dict()), or convert with "
            "--use-torch if you trust the file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], StorageType)):
            raise ConversionError(f"{self.path}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if key not in self.storages:
            dtype = _STORAGE_DTYPES[storage_type.name]
            raw_dtype = np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
            try:
                data = self.archive.read(f"{self.prefix}/data/{key}")
            except KeyError:
                raise ConversionError(f"{self.path}: storage {key} is missing; the file is truncated or damaged")
            array = np.frombuffer(data, dtype=np.dtype(raw_dtype).newbyteorder(">" if self.big_endian else "<"))
            if array.size < numel:
                raise ConversionError(f"{self.path}: storage {key} holds {array.size} elements, {numel} expected")
            self.storages[key] = (array.astype(np.dtype(raw_dtype).newbyteorder("=")), dtype)
        return self.storages[key]

    def _rebuild_tensor(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        array, dtype = storage
        size, stride = tuple(size), tuple(stride)
        if any(s < 0 for s in size) or offset < 0:
            raise ConversionError(f"{self.path}: a tensor has a negative size or offset")
        extent = offset + sum((n - 1) * s for n, s in zip(size, stride) if n > 0) + 1 if all(size) else offset
        if extent > array.size:
            raise ConversionError(f"{self.path}: a tensor of shape {size} runs past its storage")
        view = np.lib.stride_tricks.as_strided(
            array[offset:], shape=size, strides=tuple(s * array.itemsize for s in stride), writeable=False)
        values = np.ascontiguousarray(view)
        names = {np.float32: "F32", np.float64: "F64", np.float16: "F16", np.int64: "I64", np.int32: "I32",
                 np.int16: "I16", np.int8: "I8", np.uint8: "U8", np.bool_: "BOOL"}
        if dtype == "bfloat16":
            return Tensor(_bf16_to_f32(values), "BF16")
        return Tensor(values, names[dtype])


def load_pt(path: str, use_torch: bool = False) -> Any:
    """The object a .pt file holds, tensors as `Tensor`."""
    if use_torch:
        return _load_with_torch(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ConversionError(
            f"{path}: not a zip-format PyTorch file (saved by PyTorch before 1.6, or not a checkpoint). "
            "Convert it with --use-torch (needs torch), or re-save it with a recent torch.save")
    except OSError as e:
        raise ConversionError(f"{path}: cannot read it ({e.strerror})")
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ConversionError(f"{path}: a PyTorch zip file has one <name>/data.pkl; found {pkls}")
        prefix = pkls[0].split("/")[0]
        order = archive.read(f"{prefix}/byteorder").decode() if f"{prefix}/byteorder" in archive.namelist() else "little"
        unpickler = _Unpickler(archive.read(pkls[0]), archive, prefix, path, big_endian=order == "big")
        try:
            return unpickler.load()
        except ConversionError:
            raise
        except Exception as e:  # a malformed pickle
            raise ConversionError(f"{path}: the pickle is damaged or not a checkpoint ({type(e).__name__}: {e})")


def _load_with_torch(path: str) -> Any:
    try:
        import torch
    except ImportError:
        raise ConversionError("--use-torch needs PyTorch (pip install torch)")
    # Training scripts save their argparse args; allow that one class beside tensors.
    torch.serialization.add_safe_globals([argparse.Namespace])
    obj = torch.load(path, map_location="cpu", weights_only=True)

    def convert(o):
        if isinstance(o, torch.Tensor):
            name = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}.get(o.dtype, "I64")
            values = o.detach().float().numpy() if o.dtype == torch.bfloat16 else o.detach().numpy()
            return Tensor(np.ascontiguousarray(values), name)
        if isinstance(o, dict):
            return type(o)((k, convert(v)) for k, v in o.items())
        if isinstance(o, (list, tuple)):
            return type(o)(convert(v) for v in o)
        return o

    return convert(obj)


def state_dict_of(obj: Any, path: str) -> tuple[dict[str, Tensor], str, Optional[Any]]:
    """(state dict, which part of the file it came from, the saved args if any)."""
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a state dict or a training checkpoint")
    args = obj.get("args")
    if "ema" in obj and isinstance(obj["ema"], dict):
        sd, source = obj["ema"], "ema (training checkpoint)"
    elif "model" in obj and isinstance(obj["model"], dict):
        sd, source = obj["model"], "model (training checkpoint without ema)"
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd, source = obj["state_dict"], "state_dict"
    else:
        sd, source = obj, "raw state dict"
    tensors = {k: v for k, v in sd.items() if isinstance(v, Tensor)}
    if not tensors or len(tensors) != len(sd):
        odd = [k for k, v in sd.items() if not isinstance(v, Tensor)][:5]
        raise ConversionError(f"{path}: the {source} holds non-tensor entries {odd}; is this a model checkpoint?")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
        source += ", DDP 'module.' prefix removed"
    return dict(tensors), source, args


# ------------------------------------------------------------------------------------------
# Position embeddings
# ------------------------------------------------------------------------------------------


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """[sin(p w_i)] ++ [cos(p w_i)], w_i = 10000^(-i/(dim/2)), float64, (len(positions), dim)."""
    half = dim // 2
    omega = 1.0 / 10000.0 ** (np.arange(half, dtype=np.float64) / half)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid: int) -> np.ndarray:
    """DiT's 2-D embedding: token k = (row r, column c) -> [1-D(c), 1-D(r)], each dim/2 wide."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


def sincos_3d(dim: int, tokens: int, depth: int) -> np.ndarray:
    """GriDiT's 3-D init (gridit-method.md 1.4): g = sqrt(tokens / depth); token k gets
    (d, b, c) = (k // g^2, (k % g^2) // g, k % g) and [1-D(d), 1-D(b), 1-D(c)], each dim/3 wide."""
    g = math.isqrt(tokens // depth)
    k = np.arange(tokens)
    d, rest = np.divmod(k, g * g)
    b, c = np.divmod(rest, g)
    third = dim // 3
    return np.concatenate([sincos_1d(third, d), sincos_1d(third, b), sincos_1d(third, c)], axis=1)


@dataclass
class PosEmbedReport:
    variant: str  # "2d-sincos", "3d-sincos", "other", "absent"
    max_diff_2d: Optional[float] = None
    max_diff_3d: Optional[float] = None
    depth_3d: Optional[int] = None

    def describe(self) -> str:
        if self.variant == "absent":
            return "absent (gridit computes the 2-D sin-cos)"
        parts = [f"max |pos_embed - 2-D sin-cos| = {self.max_diff_2d:.3g}"]
        if self.max_diff_3d is not None:
            parts.append(f"max |pos_embed - 3-D sin-cos (depth {self.depth_3d})| = {self.max_diff_3d:.3g}")
        name = {"2d-sincos": "the standard DiT 2-D sin-cos", "3d-sincos": "GriDiT's 3-D sin-cos init",
                "other": "neither formula (learned or unknown); gridit uses it as stored"}[self.variant]
        return f"{name} ({'; '.join(parts)})"


def classify_pos_embed(tensor: Optional[Tensor]) -> PosEmbedReport:
    if tensor is None:
        return PosEmbedReport("absent")
    values = tensor.array.astype(np.float64).reshape(tensor.shape[-2], tensor.shape[-1])
    tokens, dim = values.shape
    tolerance = {"F32": 1e-5, "F64": 1e-9, "F16": 2e-3, "BF16": 1e-2}.get(tensor.dtype, 1e-5)
    grid = math.isqrt(tokens)
    diff2 = float(np.abs(values - sincos_2d(dim, grid)).max()) if grid * grid == tokens and dim % 4 == 0 else math.inf
    best3, depth3 = None, None
    if dim % 6 == 0:
        for depth in [16] + [k * k for k in range(2, 9) if k * k != 16]:
            g = math.isqrt(tokens // depth) if tokens % depth == 0 else 0
            if g and g * g * depth == tokens:
                diff = float(np.abs(values - sincos_3d(dim, tokens, depth)).max())
                if best3 is None or diff < best3:
                    best3, depth3 = diff, depth
    if diff2 <= tolerance:
        variant = "2d-sincos"
    elif best3 is not None and best3 <= tolerance:
        variant = "3d-sincos"
    else:
        variant = "other"
    return PosEmbedReport(variant, diff2, best3, depth3)


# ------------------------------------------------------------------------------------------
# DiT configs
# ------------------------------------------------------------------------------------------


@dataclass
class Converted:
    role: str
    source: str
    part: str
    tensors: dict[str, Tensor]
    config: dict
    notes: list[str] = field(default_factory=list)
    pos_embed: Optional[PosEmbedReport] = None

    @property
    def parameters(self) -> int:
        return int(sum(t.array.size for t in self.tensors.values()))


def _num_heads(depth: int, hidden: int, num_heads: Optional[int], model: Optional[str], args: Any, notes: list[str]) -> int:
    if num_heads:
        return num_heads
    names = [("--model", model)] + [("args.model", getattr(args, "model", None))]
    for label, name in names:
        if not name:
            continue
        size = str(name).removeprefix("DiT-").split("/")[0]
        if size in PRESETS and PRESETS[size][:2] == (depth, hidden):
            return PRESETS[size][2]
        notes.append(f"{label} {name} does not match the checkpoint (depth {depth}, hidden {hidden}); ignored")
    if (depth, hidden) in PRESET_HEADS:
        return PRESET_HEADS[(depth, hidden)]
    raise ConversionError(
        f"cannot tell num_heads (depth {depth}, hidden {hidden} is no DiT preset"
        + "".join(f"; {n}" for n in notes) + "): pass --num-heads N")


def dit_config(tensors: dict[str, Tensor], role: str, path: str, num_heads: Optional[int] = None,
               model: Optional[str] = None, input_size: Optional[int] = None, args: Any = None) -> tuple[dict, list[str]]:
    """The model config JSON of a DiT state dict, read off its shapes."""
    notes: list[str] = []
    required = ["x_embedder.proj.weight", "t_embedder.mlp.0.weight", "final_layer.linear.weight", "blocks.0.attn.qkv.weight"]
    missing = [k for k in required if k not in tensors]
    if missing:
        raise ConversionError(f"{path}: not a DiT state dict (lacks {', '.join(missing)})")
    d, embed_in, p, _ = tensors["x_embedder.proj.weight"].shape
    depth = 0
    while f"blocks.{depth}.attn.qkv.weight" in tensors:
        depth += 1
    mlp_hidden = tensors["blocks.0.mlp.fc1.weight"].shape[0]
    out = tensors["final_layer.linear.weight"].shape[0] // (p * p)
    classes = tensors["y_embedder.embedding_table.weight"].shape[0] - 1 if "y_embedder.embedding_table.weight" in tensors else 0
    if role == "stage1":
        in_ch, cond = embed_in, 0
    else:
        if embed_in % 2:
            raise ConversionError(f"{path}: a stage-2 (super-resolution) DiT takes [noisy, condition] with equal channels; "
                                  f"its patch embedding takes {embed_in}")
        in_ch = cond = embed_in // 2
    if out == 2 * in_ch:
        learn_sigma = True
    elif out == in_ch:
        learn_sigma = False
    else:
        raise ConversionError(f"{path}: the final layer gives {out} channels per pixel for {in_ch} input channels; "
                              f"is --role {role} right?")
    if "pos_embed" in tensors:
        tokens = tensors["pos_embed"].shape[-2]
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise ConversionError(f"{path}: pos_embed has {tokens} tokens, not a square grid")
        size = grid * p
        if input_size and input_size != size:
            raise ConversionError(f"{path}: pos_embed says input_size {size}, --input-size says {input_size}")
    elif input_size:
        size = input_size
    elif args is not None and getattr(args, "image_size", None):
        size = int(args.image_size) // 8
        notes.append(f"input_size {size} = args.image_size {args.image_size} / 8 (SD-VAE latent)")
    else:
        raise ConversionError(f"{path}: no pos_embed, so the input size is unknown: pass --input-size")
    heads = _num_heads(depth, d, num_heads, model, args, notes)
    config = {"depth": depth, "hidden_size": d, "num_heads": heads, "patch_size": p, "input_size": size,
              "in_channels": in_ch, "learn_sigma": learn_sigma, "num_classes": classes, "condition_channels": cond,
              "mlp_ratio": mlp_hidden / d}
    if d % heads:
        raise ConversionError(f"{path}: num_heads {heads} does not divide hidden_size {d}")
    expected = {f"blocks.{i}.{k}" for i in range(depth) for k in (
        "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "mlp.fc1.weight", "mlp.fc1.bias",
        "mlp.fc2.weight", "mlp.fc2.bias", "adaLN_modulation.1.weight", "adaLN_modulation.1.bias")}
    expected |= {"pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias", "t_embedder.mlp.0.weight",
                 "t_embedder.mlp.0.bias", "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias",
                 "final_layer.linear.weight", "final_layer.linear.bias", "final_layer.adaLN_modulation.1.weight",
                 "final_layer.adaLN_modulation.1.bias", "y_embedder.embedding_table.weight"}
    unknown = sorted(set(tensors) - expected)
    if unknown:
        raise ConversionError(f"{path}: keys a DiT does not have: {', '.join(unknown[:5])}"
                              + (" ..." if len(unknown) > 5 else ""))
    return config, notes


def convert_dit(path: str, role: str, num_heads: Optional[int] = None, model: Optional[str] = None,
                input_size: Optional[int] = None, use_torch: bool = False) -> Converted:
    tensors, part, args = state_dict_of(load_pt(path, use_torch), path)
    config, notes = dit_config(tensors, role, path, num_heads, model, input_size, args)
    return Converted(role, path, part, tensors, config, notes, classify_pos_embed(tensors.get("pos_embed")))


# ------------------------------------------------------------------------------------------
# VAE
# ------------------------------------------------------------------------------------------

VAE_CONFIG_KEYS = ["in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
                   "norm_num_groups", "scaling_factor"]
_DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def convert_vae(path: str, config_path: Optional[str] = None, use_torch: bool = False) -> Converted:
    p = Path(path)
    if p.is_dir():
        config_path = config_path or str(p / "config.json")
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
            if (p / name).exists():
                p = p / name
                break
        else:
            raise ConversionError(f"{path}: no diffusion_pytorch_model.safetensors or .bin in it")
    if not config_path or not Path(config_path).exists():
        raise ConversionError(f"{path}: the VAE needs its diffusers config.json (pass --vae-config)")
    try:
        raw = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as e:
        raise ConversionError(f"{config_path}: not a readable JSON config ({e})")
    if "block_out_channels" not in raw:
        raise ConversionError(f"{config_path}: not an AutoencoderKL config (no block_out_channels)")
    config = {k: raw[k] for k in VAE_CONFIG_KEYS if k in raw}
    notes: list[str] = []
    if p.suffix == ".safetensors":
        from safetensors.numpy import load_file
        try:
            arrays = load_file(str(p))
        except Exception as e:
            raise ConversionError(f"{p}: not a readable safetensors file ({e})")
        tensors = {k: Tensor(np.ascontiguousarray(v), {np.dtype(np.float16): "F16"}.get(v.dtype, "F32")) for k, v in arrays.items()}
        part = "safetensors"
    else:
        tensors, part, _ = state_dict_of(load_pt(str(p), use_torch), str(p))
    converted: dict[str, Tensor] = {}
    renamed = False
    for key, t in tensors.items():
        head, _, leaf = key.rpartition(".")  # encoder.mid_block.attentions.0.query | weight
        base, _, last = head.rpartition(".")  # encoder.mid_block.attentions.0 | query
        if ".attentions." in key and last in _DEPRECATED_ATTENTION:
            key = f"{base}.{_DEPRECATED_ATTENTION[last]}.{leaf}"
            if t.array.ndim == 4:  # 1x1 convolution weights in the oldest checkpoints
                t = Tensor(t.array.reshape(t.array.shape[:2]), t.dtype)
            renamed = True
        if key in converted:
            raise ConversionError(f"{p}: holds both the old and the new name of {key}")
        converted[key] = t
    if renamed:
        notes.append("deprecated attention names (query/key/value/proj_attn) renamed to to_q/to_k/to_v/to_out.0")
    return Converted("vae", str(p), part, converted, config, notes)


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


def write_model(c: Converted, out: Path, dtype: str = "keep") -> tuple[str, str]:
    """Writes <role>.safetensors and <role>.config.json; returns their names."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for key, t in c.tensors.items():
        if t.dtype in ("F16",) and dtype == "keep":
            arrays[key] = t.array.astype(np.float16)
        elif t.dtype in ("F32", "F16", "BF16", "F64"):
            arrays[key] = t.array.astype(np.float32)  # BF16 -> F32 is exact
        else:
            raise ConversionError(f"{c.source}: tensor {key} is {t.dtype}; a model holds floating-point weights")
    weights, config = f"{c.role}.safetensors", f"{c.role}.config.json"
    save_file(arrays, str(out / weights), metadata={"source": Path(c.source).name, "converted_by": "tools/convert_checkpoint.py"})
    (out / config).write_text(json.dumps(c.config, indent=2, sort_keys=True) + "\n")
    return weights, config


def pipeline_json(stage1: Converted, stage2: Optional[Converted], vae: Optional[Converted], k: int, name: str,
                  mode: str) -> dict:
    s1 = stage1.config
    factor = 2 ** (len(vae.config["block_out_channels"]) - 1) if vae else 1
    if s1["input_size"] % k:
        raise ConversionError(f"stage 1 input_size {s1['input_size']} is not a multiple of k = {k}")
    latent_frame = s1["input_size"] // k
    channels = vae.config.get("in_channels", 3) if vae else s1["in_channels"]
    spec: dict = {
        "format": "gridit.pipeline.v1", "name": name,
        "description": f"converted by tools/convert_checkpoint.py from {Path(stage1.source).name}"
                       + (f", {Path(stage2.source).name}" if stage2 else "") + (f", {Path(vae.source).name}" if vae else ""),
        "grid": {"k": k, "frame_size": latent_frame * factor, "channels": channels},
        "stage1": {"config": "stage1.config.json", "weights": "stage1.safetensors"},
        "defaults": {"mode": mode},
    }
    if stage2:
        side = stage2.config["input_size"]
        if side % latent_frame:
            raise ConversionError(f"stage 2 input_size {side} is not a multiple of the stage-1 frame ({latent_frame})")
        spec["stage2"] = {"config": "stage2.config.json", "weights": "stage2.safetensors", "scale": side // latent_frame}
    if vae:
        spec["vae"] = {"config": "vae.config.json", "weights": "vae.safetensors",
                       "scaling_factor": vae.config.get("scaling_factor", 0.18215)}
    return spec


def report(c: Converted) -> dict:
    r = {"role": c.role, "source": c.source, "weights_from": c.part, "tensors": len(c.tensors), "parameters": c.parameters,
         "dtypes": sorted({t.dtype for t in c.tensors.values()}), "config": c.config, "notes": c.notes}
    if c.pos_embed:
        r["pos_embed"] = {"variant": c.pos_embed.variant, "description": c.pos_embed.describe(),
                          "max_diff_2d": c.pos_embed.max_diff_2d, "max_diff_3d": c.pos_embed.max_diff_3d,
                          "depth_3d": c.pos_embed.depth_3d}
    return r


def print_report(r: dict) -> None:
    print(f"{r['role']}: {r['source']}")
    print(f"  weights: {r['weights_from']}, {r['tensors']} tensors, {r['parameters']:,} parameters, {'/'.join(r['dtypes'])}")
    print("  config: " + " ".join(f"{k}={v}" for k, v in sorted(r["config"].items())))
    if "pos_embed" in r:
        print(f"  pos_embed: {r['pos_embed']['description']}")
    for note in r["notes"]:
        print(f"  note: {note}")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--use-torch", action="store_true", help="load .pt files with torch.load(weights_only=True)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    sub = ap.add_subparsers(dest="command", required=True)

    def dit_options(p, prefix=""):
        p.add_argument(f"--{prefix}num-heads", type=int, help="attention heads (not in the tensor shapes)")
        p.add_argument(f"--{prefix}model", help="a DiT preset name, e.g. DiT-XL/2 (gives num_heads)")
        p.add_argument(f"--{prefix}input-size", type=int, help="model input side, if the file has no pos_embed")

    p = sub.add_parser("inspect", help="report what a DiT .pt holds (stage 1 assumed unless --role stage2)")
    p.add_argument("checkpoint")
    p.add_argument("--role", choices=["stage1", "stage2"], default="stage1")
    dit_options(p)
    p = sub.add_parser("dit", help="convert one DiT checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--role", choices=["stage1", "stage2"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["keep", "f32"], default="keep", help="F16 stays F16 with keep (BF16 becomes F32, exactly)")
    dit_options(p)
    p = sub.add_parser("vae", help="convert diffusers AutoencoderKL weights")
    p.add_argument("path")
    p.add_argument("--vae-config")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["keep", "f32"], default="keep")
    p = sub.add_parser("pipeline", help="convert stage 1 (+ stage 2, + VAE) and write pipeline.json")
    p.add_argument("--stage1", required=True)
    p.add_argument("--stage2")
    p.add_argument("--vae")
    p.add_argument("--vae-config")
    p.add_argument("--k", type=int, default=4, help="frames per grid side (4 in GriDiT)")
    p.add_argument("--name", default="converted")
    p.add_argument("--mode", choices=["gridit", "official"], default="gridit")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["keep", "f32"], default="keep")
    dit_options(p)
    dit_options(p, "stage2-")
    a = ap.parse_args(argv)

    try:
        if a.command == "inspect":
            c = convert_dit(a.checkpoint, a.role, a.num_heads, a.model, a.input_size, a.use_torch)
            reports = [report(c)]
        elif a.command == "dit":
            c = convert_dit(a.checkpoint, a.role, a.num_heads, a.model, a.input_size, a.use_torch)
            write_model(c, Path(a.out), a.dtype)
            reports = [report(c)]
        elif a.command == "vae":
            c = convert_vae(a.path, a.vae_config, a.use_torch)
            write_model(c, Path(a.out), a.dtype)
            reports = [report(c)]
        else:
            s1 = convert_dit(a.stage1, "stage1", a.num_heads, a.model, a.input_size, a.use_torch)
            s2 = convert_dit(a.stage2, "stage2", a.stage2_num_heads, a.stage2_model, a.stage2_input_size,
                             a.use_torch) if a.stage2 else None
            vae = convert_vae(a.vae, a.vae_config, a.use_torch) if a.vae else None
            spec = pipeline_json(s1, s2, vae, a.k, a.name, a.mode)
            out = Path(a.out)
            for c in (s1, s2, vae):
                if c:
                    write_model(c, out, a.dtype)
            (out / "pipeline.json").write_text(json.dumps(spec, indent=2) + "\n")
            reports = [report(c) for c in (s1, s2, vae) if c]
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(reports, indent=2))
    else:
        for r in reports:
            print_report(r)
        if a.command == "pipeline":
            print(f"wrote {Path(a.out) / 'pipeline.json'}; import it with: griditd models import "
                  f"{Path(a.out) / 'pipeline.json'} --name {a.name}:latest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
