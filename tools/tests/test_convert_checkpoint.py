"""Tests of tools/convert_checkpoint.py on the tiny official-layout checkpoints in fixtures/
(made by tools/reference/make_convert_fixtures.py with PyTorch). Needs numpy, safetensors and
pytest; PyTorch only for the optional cross-check against torch.load."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

TOOLS = Path(__file__).resolve().parents[1]
ROOT = TOOLS.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(TOOLS))
import convert_checkpoint as cc  # noqa: E402

EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def check_written(out: Path, role: str, fixture: str) -> dict:
    """The written safetensors hold exactly the expected keys and values; returns the config."""
    tensors = load_file(str(out / f"{role}.safetensors"))
    want = EXPECTED[fixture]["sha256"]
    assert sorted(tensors) == sorted(want), "keys are the state-dict keys, verbatim"
    for key, value in tensors.items():
        assert sha(value) == want[key], f"{fixture}/{key} differs from the checkpoint's tensor"
    return json.loads((out / f"{role}.config.json").read_text())


def test_training_checkpoint_takes_ema_and_infers_the_config(tmp_path):
    assert cc.main(["dit", str(FIXTURES / "gridit_stage1.pt"), "--role", "stage1", "--num-heads", "2",
                    "--out", str(tmp_path)]) == 0
    config = check_written(tmp_path, "stage1", "gridit_stage1")
    assert config == EXPECTED["gridit_stage1"]["config"]
    c = cc.convert_dit(str(FIXTURES / "gridit_stage1.pt"), "stage1", num_heads=2)
    assert c.part.startswith("ema")


def test_stage2_super_resolution_model(tmp_path):
    assert cc.main(["dit", str(FIXTURES / "gridit_stage2.pt"), "--role", "stage2", "--num-heads", "2",
                    "--out", str(tmp_path)]) == 0
    config = check_written(tmp_path, "stage2", "gridit_stage2")
    assert config == EXPECTED["gridit_stage2"]["config"]
    assert config["condition_channels"] == 4 and config["in_channels"] == 4


def test_raw_release_state_dict_with_classes(tmp_path):
    assert cc.main(["dit", str(FIXTURES / "dit_classcond.pt"), "--role", "stage1", "--num-heads", "4",
                    "--out", str(tmp_path)]) == 0
    config = check_written(tmp_path, "stage1", "dit_classcond")
    assert config == EXPECTED["dit_classcond"]["config"]
    assert config["num_classes"] == 10


def test_bfloat16_is_widened_exactly(tmp_path):
    assert cc.main(["dit", str(FIXTURES / "learned_bf16.pt"), "--role", "stage1", "--num-heads", "2",
                    "--out", str(tmp_path)]) == 0
    config = check_written(tmp_path, "stage1", "learned_bf16")
    assert config == EXPECTED["learned_bf16"]["config"] and config["learn_sigma"] is False
    assert cc.convert_dit(str(FIXTURES / "learned_bf16.pt"), "stage1", num_heads=2).tensors["pos_embed"].dtype == "BF16"


@pytest.mark.parametrize("fixture,role,variant", [
    ("gridit_stage1", "stage1", "3d-sincos"),
    ("gridit_stage2", "stage2", "2d-sincos"),
    ("dit_classcond", "stage1", "2d-sincos"),
    ("learned_bf16", "stage1", "other"),
])
def test_position_embedding_variant(fixture, role, variant):
    report = cc.convert_dit(str(FIXTURES / f"{fixture}.pt"), role, num_heads=2 if fixture != "dit_classcond" else 4).pos_embed
    print(f"{fixture}: {report.describe()}")
    assert report.variant == variant
    if variant == "3d-sincos":
        assert report.depth_3d == 16 and report.max_diff_3d < 1e-6 and report.max_diff_2d > 0.5
    if variant == "2d-sincos":
        assert report.max_diff_2d < 1e-6


def test_the_two_formulas_differ_as_the_method_notes_say():
    # gridit-method.md 1.4: at DiT-XL/2 512 px (1024 tokens, 1152 wide) max |2-D - 3-D| is about 2.
    diff = np.abs(cc.sincos_2d(1152, 32) - cc.sincos_3d(1152, 1024, 16)).max()
    assert 1.9 < diff <= 2.0


def test_num_heads_must_be_known():
    with pytest.raises(cc.ConversionError, match=r"args.model DiT-XL/2 does not match.*--num-heads"):
        cc.convert_dit(str(FIXTURES / "gridit_stage1.pt"), "stage1")
    with pytest.raises(cc.ConversionError, match="--model DiT-S/2 does not match"):
        cc.convert_dit(str(FIXTURES / "dit_classcond.pt"), "stage1", model="DiT-S/2")


def test_wrong_role_is_caught():
    # A stage-1 model (4 in, 8 out) read as stage 2 would take 2 + 2 channels and give 8: impossible.
    with pytest.raises(cc.ConversionError, match="is --role stage2 right"):
        cc.convert_dit(str(FIXTURES / "dit_classcond.pt"), "stage2", num_heads=4)


def test_vae_folder_and_legacy_bin_give_the_same_weights(tmp_path):
    assert cc.main(["vae", str(FIXTURES / "vae"), "--out", str(tmp_path / "a")]) == 0
    config = check_written(tmp_path / "a", "vae", "vae")
    assert config == EXPECTED["vae"]["config"]
    assert cc.main(["vae", str(FIXTURES / "vae_legacy.bin"), "--vae-config", str(FIXTURES / "vae" / "config.json"),
                    "--out", str(tmp_path / "b")]) == 0
    check_written(tmp_path / "b", "vae", "vae")
    assert any("renamed" in n for n in cc.convert_vae(str(FIXTURES / "vae_legacy.bin"), str(FIXTURES / "vae" / "config.json")).notes)


def griditd_binary() -> Path | None:
    for build in (ROOT / ".build" / "debug", ROOT / ".build" / "release"):
        if (build / "griditd").exists():
            return build / "griditd"
    return None


def test_pipeline_is_ready_to_import(tmp_path):
    out = tmp_path / "converted"
    assert cc.main(["pipeline", "--stage1", str(FIXTURES / "gridit_stage1.pt"), "--num-heads", "2",
                    "--stage2", str(FIXTURES / "gridit_stage2.pt"), "--stage2-num-heads", "2",
                    "--vae", str(FIXTURES / "vae"), "--name", "tiny-gridit", "--out", str(out)]) == 0
    spec = json.loads((out / "pipeline.json").read_text())
    assert spec["grid"] == {"k": 4, "frame_size": 8, "channels": 3}  # 16/4 latent pixels x VAE factor 2
    assert spec["stage2"]["scale"] == 2 and spec["vae"]["scaling_factor"] == 0.18215
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["pipeline.json"] + [f"{r}.{x}" for r in ("stage1", "stage2", "vae") for x in ("safetensors", "config.json")])
    griditd = griditd_binary()
    if griditd is None:
        pytest.skip("griditd is not built (swift build --product griditd); the import check needs it")
    state = tmp_path / "state"
    run = subprocess.run([str(griditd), "models", "import", str(out / "pipeline.json"), "--state-dir", str(state),
                          "--link", "copy", "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["reference"] == "tiny-gridit:latest"


def test_code_in_a_pickle_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"model": Evil()}, protocol=2))
    with pytest.raises(cc.ConversionError, match=r"names (posix|os)\.system.*refusing"):
        cc.load_pt(str(path))
    assert not marker.exists()


def test_non_zip_and_truncated_files_are_refused(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(cc.ConversionError, match="--use-torch"):
        cc.load_pt(str(legacy))
    cut = tmp_path / "cut.pt"
    data = (FIXTURES / "gridit_stage1.pt").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(cc.ConversionError):
        cc.load_pt(str(cut))
    assert cc.main(["inspect", str(cut)]) == 2


def test_reader_matches_torch_load():
    torch = pytest.importorskip("torch")
    for name in ("gridit_stage1", "gridit_stage2", "dit_classcond", "learned_bf16"):
        ours, _, _ = cc.state_dict_of(cc.load_pt(str(FIXTURES / f"{name}.pt")), name)
        theirs, _, _ = cc.state_dict_of(cc._load_with_torch(str(FIXTURES / f"{name}.pt")), name)
        assert sorted(ours) == sorted(theirs)
        for k in ours:
            assert ours[k].dtype == theirs[k].dtype and np.array_equal(ours[k].array, theirs[k].array), f"{name}/{k}"
    opt = cc.load_pt(str(FIXTURES / "gridit_stage1.pt"))["opt"]
    ref = torch.load(FIXTURES / "gridit_stage1.pt", weights_only=False)["opt"]  # our own fixture
    assert np.array_equal(opt["state"][0]["exp_avg"].array, ref["state"][0]["exp_avg"].numpy())
