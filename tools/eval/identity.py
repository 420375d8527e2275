"""Digit identity: does each tracked digit stay the same digit from frame to frame?

A small convolutional classifier (the reader) reads the digit under each track of
`metrics.track_sequence` in every frame. It is trained by `train_reader` (PyTorch, a minute) on the
training split's digits only (the 4,000 MNIST digits tools/data trains on; sequences are scored
on held-out digits) and nothing is learnt from generated frames; its weights are committed
(`digit_reader.npz`, float16) and it runs here in numpy, so the evaluation needs no PyTorch.
Training images are the 28 px MNIST cells (a digit's size in a 64 px frame) under random shifts
(a tracked centroid is not exactly the cell's centre of mass), small rotations and scalings,
intensity changes, blur, noise, a neighbouring digit at the border of the cell, and the 4x
mean-pool + bicubic x4 round trip of stage-1 frames seen through the stage-2 condition.

A sequence keeps its digits' identity when at least KEEP (90%) of its readable frames read the
same digits (`sequence_identity`); frames where two tracks are closer than OVERLAP cells are not
readable (two digits in one crop read as neither). Only consistency counts: a digit that reads as
the same wrong class in every frame keeps its identity.

    python tools/eval/identity.py --train     # rewrite digit_reader.npz (needs torch)
    python tools/eval/identity.py             # the reader's accuracy on held-out digits
"""

from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "data"))
import metrics as M  # noqa: E402
import moving_digits as md  # noqa: E402

WEIGHTS = os.path.join(_HERE, "digit_reader.npz")
CELL = 28            # digit cell side at 64 px (DIGIT_SCALE 28/64)
KEEP = 0.9           # share of the readable frames that must read the sequence's usual digits
OVERLAP = 0.75       # frames with another track closer than this many cells are left out


def normalise(cells: np.ndarray) -> np.ndarray:
    """(N, 28, 28) cells of any intensity scale -> float32 with unit peak (generated frames may
    be dimmer or brighter than the data)."""
    f = cells.astype(np.float32)
    return f / np.maximum(f.reshape(len(f), -1).max(1), 1e-6)[:, None, None]


def soft(cells: np.ndarray) -> np.ndarray:
    """The 4x mean-pool and bicubic x4 round trip of (N, 28, 28) cells placed in 32 px canvases."""
    pad = np.zeros((len(cells), 32, 32), np.float32)
    pad[:, 2:30, 2:30] = cells
    low = pad.reshape(-1, 8, 4, 8, 4).mean((2, 4))
    up = np.stack([cv2.resize(x, (32, 32), interpolation=cv2.INTER_CUBIC) for x in low])
    return np.clip(up[:, 2:30, 2:30], 0, None)


# --------------------------------------------------------------------------------------------
# The reader in numpy: conv 5x5 (16) - ReLU - max 2 - conv 5x5 (32) - ReLU - max 2 - fc 64 - fc 10
# --------------------------------------------------------------------------------------------


def _conv_relu_pool(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (N, C, H, W), w (O, C, 5, 5): valid convolution, ReLU, 2x2 max pool."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = h - kh + 1, wd - kw + 1
    cols = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # (N, C, oh, ow, kh, kw)
    cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    y = (cols @ w.reshape(o, -1).T + b).reshape(n, oh, ow, o).transpose(0, 3, 1, 2)
    y = np.maximum(y, 0)
    return y.reshape(n, o, oh // 2, 2, ow // 2, 2).max((3, 5))


class DigitReader:
    def __init__(self, path: str = WEIGHTS):
        with np.load(path) as z:
            self.p = {k: z[k].astype(np.float32) for k in z.files}

    def logits(self, cells: np.ndarray) -> np.ndarray:
        p = self.p
        x = normalise(cells)[:, None]
        x = _conv_relu_pool(x, p["c1.w"], p["c1.b"])
        x = _conv_relu_pool(x, p["c2.w"], p["c2.b"])
        x = np.maximum(x.reshape(len(x), -1) @ p["f1.w"].T + p["f1.b"], 0)
        return x @ p["f2.w"].T + p["f2.b"]

    def read(self, cells: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """(N, 28, 28) cells -> (N,) classes."""
        if len(cells) == 0:
            return np.zeros(0, np.int64)
        return np.concatenate([self.logits(cells[i:i + chunk]).argmax(1) for i in range(0, len(cells), chunk)])


_READER: DigitReader | None = None


def reader() -> DigitReader:
    global _READER
    if _READER is None:
        _READER = DigitReader()
    return _READER


# --------------------------------------------------------------------------------------------
# Identity of tracked digits
# --------------------------------------------------------------------------------------------


def crops(frame: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(K, 28, 28) cells of a frame (H, W) around centres (K, 2) x, y in its pixels, at the 64 px
    scale (a 16 px frame is read through its bicubic x4, like the stage-2 condition)."""
    h = frame.shape[0]
    if h != M.REF_SIDE:
        frame = cv2.resize(frame, (M.REF_SIDE, M.REF_SIDE), interpolation=cv2.INTER_CUBIC)
        centres = centres * (M.REF_SIDE / h)
    canvas = np.pad(frame.astype(np.float32), CELL)
    out = np.zeros((len(centres), CELL, CELL), np.float32)
    for j, (x, y) in enumerate(centres):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        x0 = min(max(int(round(x - CELL / 2)) + CELL, 0), canvas.shape[1] - CELL)
        y0 = min(max(int(round(y - CELL / 2)) + CELL, 0), canvas.shape[0] - CELL)
        out[j] = canvas[y0:y0 + CELL, x0:x0 + CELL]
    return out


def sequence_identity(frames: np.ndarray, track: dict) -> dict:
    """frames (L, H, W) uint8 and their `metrics.track_sequence` result -> {"kept": bool, "share":
    the share of the readable frames that show the sequence's usual digits, "digits": those}.

    A frame is readable when every pair of tracks is at least OVERLAP cells apart; it shows the
    sorted classes read under its tracks. Sorting makes this blind to which track is which, so two
    digits that cross and swap tracks keep their identity; a digit that changes into another does
    not."""
    centres = track["centres"]
    k = centres.shape[1]
    if k == 0:
        return {"kept": False, "share": 0.0, "digits": []}
    near = OVERLAP * CELL * frames.shape[1] / M.REF_SIDE
    readable = []
    for t, c in enumerate(centres):
        d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1)) + np.eye(k) * 1e9
        if d.min() >= near:
            readable.append(t)
    if not readable:
        return {"kept": False, "share": 0.0, "digits": []}
    cells = np.concatenate([crops(frames[t], centres[t]) for t in readable])
    classes = reader().read(cells).reshape(len(readable), k)
    seen: dict[tuple, int] = {}
    for row in classes:
        key = tuple(sorted(int(v) for v in row))
        seen[key] = seen.get(key, 0) + 1
    digits, count = max(seen.items(), key=lambda kv: kv[1])
    share = count / len(readable)
    return {"kept": bool(share >= KEEP), "share": float(share), "digits": list(digits)}


def identity(frames: np.ndarray, max_speed_px: float, tracks: list[dict] | None = None) -> dict:
    """Over sequences (N, L, H, W): the share whose every tracked digit keeps its identity, and the
    mean top-class share of a track (tracks: their `track_sequence` results, if already computed)."""
    tracks = tracks or [M.track_sequence(f, max_speed_px) for f in frames]
    r = [sequence_identity(f, t) for f, t in zip(frames, tracks)]
    return {"identity_kept": sum(x["kept"] for x in r) / len(r),
            "identity_share_mean": float(np.mean([x["share"] for x in r]))}


# --------------------------------------------------------------------------------------------
# Training (PyTorch) and the accuracy check
# --------------------------------------------------------------------------------------------


def train_reader(out: str = WEIGHTS, epochs: int = 40, seed: int = 0) -> None:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # the same weights on every machine
    rng = np.random.default_rng(seed)
    images, labels = md.load_mnist()
    idx = md.split_indices("train")
    base = images[idx].astype(np.float32) / 255.0
    y_all = torch.from_numpy(labels[idx].astype(np.int64))
    net = nn.Sequential(nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = epochs * (len(base) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)

    def augment(cells: np.ndarray) -> np.ndarray:
        n = len(cells)
        out = np.empty_like(cells)
        for i in range(n):
            a = rng.uniform(-12, 12)
            s = rng.uniform(0.88, 1.12)
            m = cv2.getRotationMatrix2D((14, 14), a, s)
            m[:, 2] += rng.uniform(-2.5, 2.5, 2)
            out[i] = cv2.warpAffine(cells[i], m, (CELL, CELL), flags=cv2.INTER_LINEAR)
        # a neighbouring digit reaching into the cell (tracks closer than a cell are skipped, not closer than 0.75)
        near = rng.random(n) < 0.25
        for i in np.nonzero(near)[0]:
            other = base[rng.integers(len(base))]
            dx, dy = rng.choice([-1, 1], 2) * rng.integers(21, 26, 2) * (rng.random(2) < 0.7)
            if dx == 0 and dy == 0:
                dx = 22
            m = np.float32([[1, 0, dx], [0, 1, dy]])
            out[i] = np.maximum(out[i], cv2.warpAffine(other, m, (CELL, CELL)))
        sel = rng.random(n) < 0.35
        out[sel] = soft(out[sel])
        blur = rng.random(n) < 0.25
        for i in np.nonzero(blur)[0]:
            out[i] = cv2.GaussianBlur(out[i], (0, 0), rng.uniform(0.4, 1.2))
        out *= rng.uniform(0.6, 1.3, (n, 1, 1)).astype(np.float32)
        out += rng.normal(0, 1, out.shape).astype(np.float32) * rng.uniform(0, 0.06, (n, 1, 1)).astype(np.float32)
        return normalise(np.clip(out, 0, None))

    net.train()
    for epoch in range(epochs):
        perm = rng.permutation(len(base))
        for i in range(0, len(perm) - 127, 128):
            b = perm[i:i + 128]
            x = torch.from_numpy(augment(base[b]))[:, None]
            loss = F.cross_entropy(net(x), y_all[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}", flush=True)
    names = {"0": "c1", "3": "c2", "7": "f1", "9": "f2"}
    params = {}
    for key, t in net.state_dict().items():
        layer, kind = key.split(".")
        params[f"{names[layer]}.{'w' if kind == 'weight' else 'b'}"] = t.numpy().astype(np.float16)
    np.savez(out, **params)
    print(f"wrote {out} ({os.path.getsize(out):,} bytes)")


def accuracy(split: str = "heldout") -> dict:
    """The reader's accuracy on a split's digits, sharp and through the stage-1 round trip."""
    images, labels = md.load_mnist()
    idx = md.split_indices(split)
    cells = images[idx].astype(np.float32)
    return {"sharp": float((reader().read(cells) == labels[idx]).mean()),
            "soft": float((reader().read(soft(cells)) == labels[idx]).mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="store_true", help="train the reader and rewrite digit_reader.npz")
    ap.add_argument("--epochs", type=int, default=40)
    a = ap.parse_args(argv)
    if a.train:
        train_reader(epochs=a.epochs)
    print(f"held-out digits: {accuracy()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
