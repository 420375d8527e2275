"""Export the EMA weights of a training checkpoint folder as a pipeline folder.

    python tools/train/export.py --ckpt-dir CKPT --out models/moving-digits [--dtype f32|f16|bf16]
        [--stage1 CKPT/snap/stage1-012000.pt --ema1 0.9999 --stage2 ... --ema2 ...]
        [--sampler ddpm --steps 100 --sr-sampler ddpm --sr-steps 50 --sr-temperature 0.5 --sr-noise shared]
        [--context-rows 2]
    python tools/train/export.py --stage1 CKPT/stage1.pt --from models/moving-digits --out OUT --context clean
    python tools/train/export.py --stage1 CKPT/stage1.pt --from models/moving-digits --out OUT \
        --guide OLD_BUNDLE --cfg-scale 2          # autoguidance by an earlier stage 1
        [--guide CKPT/snap/stage1-002000.pt --ema-guide 0.999] [--cfg-interval 700:999]

A stage without a checkpoint (--from) is copied from a pipeline folder as it is, with its
training.json entry, so a run that trained one stage lands beside the other stage of the bundle.

--guide names a weaker stage 1 for autoguidance (Karras et al. 2024): the stage 1 of a pipeline
folder (its stage1.config.json and stage1.safetensors), or a checkpoint or snapshot (its EMA
--ema-guide, default the first saved). It must take and predict what stage 1 does (input_size,
in_channels, condition_channels, num_classes, learn_sigma, prediction; depth and width may differ).
It lands as guide.{config.json,safetensors} with a "guide" entry in pipeline.json, and --cfg-scale S
(default 1 = unguided) becomes defaults.cfg_scale: stage 1's prediction is guide + S * (stage1 - guide),
and --cfg-interval LO:HI defaults.cfg_interval: guidance only at the timesteps LO <= t <= HI.
Without --guide, the guide of the --from pipeline is carried over as it is, with its cfg_scale and
cfg_interval unless --cfg-scale or --cfg-interval is given; `--guide none` drops it.

Writes pipeline.json, stage{1,2}.safetensors, stage{1,2}.config.json (guide.* with a guide) and
training.json (steps and hours of each stage and the guide) by an atomic folder swap;
`griditctl models import OUT/pipeline.json` takes it as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import sample as S  # noqa: E402
from train import DESCRIPTION, init_weights  # noqa: E402
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def load_ema(path: str, decay: float | None = None) -> tuple[C.ref.DiT, dict]:
    """The EMA of a checkpoint (or snapshot) with this decay (default: the first one saved)."""
    st = torch.load(path, map_location="cpu", weights_only=False)
    model = C.ref.DiT(C.ref.DiTConfig.from_dict(st["config"]), attn_impl="sdpa")
    emas = {float(k): v for k, v in st.get("emas", {}).items()} or {None: st["ema"]}
    if decay is not None and decay not in emas:
        raise SystemExit(f"{path}: no EMA with decay {decay} (saved: {sorted(emas)})")
    d = decay if decay is not None else next(iter(emas))
    model.load_state_dict(emas[d])
    return model.eval(), {"step": st["step"], "hours": round(st["seconds"] / 3600, 3),
                          "core_hours": round(st.get("core_seconds", st["seconds"]) / 3600, 3), "ema": d}


def from_pipeline(folder: str, stage: int) -> tuple[C.ref.DiT, dict]:
    """Stage N of a pipeline folder as it is (weights, training.json entry)."""
    state, info = init_weights(folder, stage)
    with open(os.path.join(folder, f"stage{stage}.config.json")) as f:
        model = C.ref.DiT(C.ref.DiTConfig.from_json(f.read()), attn_impl="sdpa")
    C.ref.load_weights(model, state)
    return model.eval(), info


def source_guide(folder: str) -> tuple[C.ref.DiT, dict, float, list | None] | None:
    """The guide of a pipeline folder as it is (model, training.json entry, defaults.cfg_scale and
    .cfg_interval), or None."""
    with open(os.path.join(folder, "pipeline.json")) as f:
        spec = json.load(f)
    g = spec.get("guide")
    if not g:
        return None
    model = C.load_safetensors(os.path.join(folder, g["config"]), os.path.join(folder, g["weights"]))
    info = {}
    if os.path.exists(os.path.join(folder, "training.json")):
        with open(os.path.join(folder, "training.json")) as f:
            info = json.load(f).get("guide", {})
    d = spec.get("defaults", {})
    return model, info, float(d.get("cfg_scale", 1.0)), d.get("cfg_interval")


def load_guide(path: str, decay: float | None) -> tuple[C.ref.DiT, dict]:
    """--guide: stage 1 of a pipeline folder, or the EMA of a checkpoint or snapshot."""
    if os.path.isdir(path):
        if decay is not None:
            raise SystemExit(f"--ema-guide is for a checkpoint; {path} is a pipeline folder")
        model, info = from_pipeline(path, 1)
    else:
        model, info = load_ema(path, decay)
    return model, {**info, "from": os.path.basename(os.path.normpath(path))}  # no machine paths in a bundle


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt-dir", help="checkpoint folder with stage1.pt and stage2.pt")
    ap.add_argument("--stage1", help="checkpoint or snapshot of stage 1 (default CKPT/stage1.pt)")
    ap.add_argument("--stage2", help="checkpoint or snapshot of stage 2 (default CKPT/stage2.pt)")
    ap.add_argument("--ema1", type=float, help="EMA decay of stage 1 (default: the first saved)")
    ap.add_argument("--ema2", type=float, help="EMA decay of stage 2")
    ap.add_argument("--from", dest="source", metavar="PIPELINE",
                    help="pipeline folder whose stages are copied where no checkpoint is given")
    ap.add_argument("--guide", metavar="PATH", help="a weaker stage 1 for autoguidance: a pipeline folder (its stage 1) "
                    "or a checkpoint/snapshot (default: the --from pipeline's guide, if any; none: no guide)")
    ap.add_argument("--ema-guide", type=float, help="EMA decay of a --guide checkpoint (default: the first saved)")
    ap.add_argument("--cfg-scale", type=float, help="defaults.cfg_scale: autoguidance scale with a guide (default 1 = "
                    "none; with the --from pipeline's guide carried over, its scale)")
    ap.add_argument("--cfg-interval", type=S.interval_arg, metavar="LO:HI", help="defaults.cfg_interval: the timesteps "
                    "LO <= t <= HI where guidance applies (default: every step; with the --from pipeline's guide "
                    "carried over, its interval)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    d = C.Defaults()
    ap.add_argument("--mode", default=d.mode)
    ap.add_argument("--sampler", default=d.sampler)
    ap.add_argument("--steps", default=d.steps)
    ap.add_argument("--eta", type=float, default=d.eta)
    ap.add_argument("--sr-sampler", default=d.sr_sampler)
    ap.add_argument("--sr-steps", default=d.sr_steps)
    ap.add_argument("--sr-temperature", type=S.temperature_arg, default=d.sr_temperature)
    ap.add_argument("--sr-noise", choices=S.SR_NOISES, default=d.sr_noise)
    ap.add_argument("--context-rows", type=int, default=d.context_rows)
    ap.add_argument("--context", choices=["renoised", "clean"], default=d.context,
                    help="gridit mode's known frames (clean: for a stage 1 trained with --ctx-share)")
    a = ap.parse_args(argv)
    paths = [p or (os.path.join(a.ckpt_dir, f"stage{i}.pt") if a.ckpt_dir else None)
             for i, p in ((1, a.stage1), (2, a.stage2))]
    if None in paths and not a.source:
        ap.error("give --ckpt-dir, or both --stage1 and --stage2, or --from PIPELINE for the stage without one")
    (s1, i1), (s2, i2) = (load_ema(p, e) if p else from_pipeline(a.source, i)
                          for i, p, e in ((1, paths[0], a.ema1), (2, paths[1], a.ema2)))
    if a.ema_guide is not None and a.guide in (None, "none"):
        ap.error("--ema-guide needs --guide CHECKPOINT")
    if a.guide not in (None, "none") and a.cfg_scale is None:
        ap.error("--guide needs --cfg-scale S: at the default 1 the guide is never run")
    guide, gi, scale, interval = None, None, a.cfg_scale, a.cfg_interval
    if a.guide not in (None, "none"):
        guide, gi = load_guide(a.guide, a.ema_guide)
    elif a.guide is None and a.source and (carried := source_guide(a.source)):
        guide, gi, source_scale, source_interval = carried
        scale = source_scale if scale is None else scale
        interval = source_interval if interval is None else interval
    scale = 1.0 if scale is None else scale
    if interval is not None and (guide is None or scale == 1):
        ap.error("--cfg-interval needs a guide and a --cfg-scale other than 1: it says where guidance applies")
    try:  # the guide's config against stage 1's, scale and interval as sample.py and the engine take them
        S.Pipeline.of(s1, s2, guide).cfg_scale(scale)
        interval = None if interval is None else S.check_interval(interval)
    except ValueError as e:
        raise SystemExit(f"export.py: {e}") from None
    defaults = C.Defaults(mode=a.mode, sampler=a.sampler, steps=a.steps, eta=a.eta, sr_sampler=a.sr_sampler,
                          sr_steps=a.sr_steps, sr_temperature=a.sr_temperature, sr_noise=a.sr_noise,
                          context_rows=a.context_rows, context=a.context, cfg_scale=scale, cfg_interval=interval)
    extra = {"stage1": i1, "stage2": i2, "dtype": a.dtype, **({"guide": gi} if guide is not None else {})}
    C.export_pipeline(s1, s2, a.out, defaults, DESCRIPTION, DTYPES[a.dtype], extra=extra, guide=guide)
    print(f"exported {a.out}: stage1 step {i1['step']} ({i1['hours']} h), stage2 step {i2['step']} ({i2['hours']} h)"
          + (f", guide step {gi.get('step', '?')} at cfg_scale {scale:g}" if guide is not None else "")
          + (f" in t [{interval[0]}, {interval[1]}]" if interval else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
