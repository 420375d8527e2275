"""Train the moving-digits pipeline: stage 1 (grid DiT) and stage 2 (x4 SR DiT) in one process.

Both stages train in the same process, alternating steps so that each gets its share of the wall
time (--share1), which keeps one PID to pause and one log. Everything is resumable: the state of
each stage (model, EMA, optimizer, step) is saved atomically to --ckpt-dir every --ckpt-every
seconds and on SIGTERM/SIGINT; a restart with the same --ckpt-dir continues where it stopped. Data
batches are a pure function of (stage, step), so a resumed run sees the same data. Every
--export-every seconds the EMA weights are exported as a pipeline folder (--export-dir) by an
atomic swap.

    python tools/train/train.py --ckpt-dir CK --export-dir OUT --hours 2       # train
    python tools/train/train.py --bench                                       # time steps only

A training run (one invocation) has its own warmup-stable-decay learning rate: --warmup steps up to
the lr, constant, then a cosine decay to --lr-min over the last --decay-frac of its budget (--hours
of step time, pauses excluded, or --max-steps), so every run ends with a decayed lr and its EMA
export is ready to land; `kill -USR1` starts the decay now (the run then ends after it). --init-from
a pipeline folder warm-starts a new checkpoint folder from its weights (model and EMAs; fresh
optimizer), so each run continues where the last landed bundle stopped.

Recipe (docs: tools/train/README.md): AdamW (wd 0), bf16 autocast on CPU, hybrid loss (prediction
MSE + L_vb with the mean detached), epsilon or v prediction (--prediction), optional min-SNR
weighting (--snr-gamma) and low-t-heavy t sampling (--t-low), continuation training (--ctx-share:
part of each stage-1 batch has 1-3 clean known rows, left out of the loss), EMAs of the weights,
exported in float32. Stage-1 data is generated in a worker process, ahead of the step.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

STAGE_SEED = {1: 1_000_003, 2: 2_000_003}  # data seed of step s = STAGE_SEED + s
DESCRIPTION = "4x4 grids of 16x16 moving MNIST digits, x4 super-resolution to 64x64 (pixel space)"


def parse_arch(s: str) -> tuple[int, int, int, int]:
    """"depth,hidden,heads,patch"."""
    d, h, n, p = (int(v) for v in s.split(","))
    return d, h, n, p


def lr_at(run_step: int, progress: float, lr: float, warmup: int, decay_frac: float, lr_min: float) -> float:
    """Warmup-stable-decay within one run: linear warm-up over `warmup` steps of the run, constant,
    then a cosine decay to lr_min over the last `decay_frac` of the run (progress in [0, 1])."""
    f = min(1.0, (run_step + 1) / max(warmup, 1))
    start = 1.0 - decay_frac
    if decay_frac > 0 and progress >= start:
        u = min(1.0, (progress - start) / decay_frac)
        return lr_min + (lr * f - lr_min) * 0.5 * (1 + math.cos(math.pi * u))
    return lr * f


def init_weights(folder: str, stage: int) -> tuple[dict, dict]:
    """(state dict, training.json's entry for the stage) of stage N of a pipeline folder."""
    from safetensors.torch import load_file
    info = {}
    path = os.path.join(folder, "training.json")
    if os.path.exists(path):
        with open(path) as f:
            info = json.load(f).get(f"stage{stage}", {})
    return load_file(os.path.join(folder, f"stage{stage}.safetensors")), info


def grow_depth(sd: dict, fresh: dict) -> dict:
    """A pipeline's weights for a model r times as deep (same width): old block i becomes block
    i*r, and the blocks between keep their fresh initialisation, whose zero adaLN gates make them
    the identity, so the grown model computes what the old one did and training goes on from
    there. Weights of the model's own depth pass through unchanged."""
    depth = lambda d: 1 + max((int(k.split(".")[1]) for k in d if k.startswith("blocks.")), default=-1)
    old, new = depth(sd), depth(fresh)
    if old == new:
        return sd
    if old == 0 or new % old:
        raise SystemExit(f"--init-from: a depth-{old} stage cannot grow to depth {new} (a multiple of it)")
    r = new // old
    out = {k: v for k, v in fresh.items() if k.startswith("blocks.")}
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            k = f"blocks.{int(i) * r}.{rest}"
        if k not in fresh or fresh[k].shape != v.shape:
            raise SystemExit(f"--init-from: {k} {tuple(v.shape)} does not fit the grown model (only depth can grow)")
        out[k] = v
    return out


@dataclass
class Recipe:
    """What a stage trains on and for (tools/train/README.md, "Recipe")."""
    prediction: str = "epsilon"            # "epsilon" or "v"
    snr_gamma: float = 0.0                 # > 0: x0 weight clamp(SNR, floor, gamma) (common.x0_weight)
    t_low: float = 0.0                     # share of t drawn from [0, t_low_end) instead of [0, 1000)
    t_low_end: int = 700
    ctx_share: float = 0.0                 # stage 1: share of grids with clean known rows
    ctx_rows: tuple[int, ...] = (1, 2, 3)
    ctx_noise: int = 0                     # > 0: half of the context rows noised to a level t' < ctx_noise
    ctx_self: float = 0.0                  # share of context grids whose known rows are the model's own estimate
    ctx_self_t: int = 400                  # ... of x0 from the grid noised to a level in [ctx_self_t/5, ctx_self_t)
    ctx_dim: float = 0.0                   # share of context grids whose known rows are dimmed by a factor in [0.5, 1)
    lr_noise: float = 0.0                  # stage 2: max std of the noise on half of the LR conditions


class Stage:
    def __init__(self, stage: int, arch, batch: int, lr: float, ema_decays: list[float], ckpt_dir: str | None,
                 bf16: bool, recipe: Recipe, init_from: str | None = None, grid_pos: bool = True):
        self.stage, self.batch, self.lr, self.bf16, self.recipe = stage, batch, lr, bf16, recipe
        self.cfg = C.stage_config(stage, *arch)
        self.cfg.prediction = recipe.prediction
        self.model = C.build_model(self.cfg, seed=stage, grid_pos=grid_pos and stage == 1)
        # EMAs of the weights, one per decay (the best one for sampling is chosen by evaluation)
        self.emas = {}
        for d in ema_decays:
            e = copy.deepcopy(self.model).eval()
            for p in e.parameters():
                p.requires_grad_(False)
            self.emas[d] = e
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.999))
        self.diff = C.TrainDiffusion()
        self.step = 0
        self.seconds = 0.0       # step time of all runs
        self.core_seconds = 0.0  # CPU time of all runs (this process and its data worker)
        self.ema_start = 0       # the EMA warm-up counts from here (a warm start restarts it)
        self.run = None          # the saved state of an unfinished run ({"start_step", "elapsed", "budget"})
        self.path = os.path.join(ckpt_dir, f"stage{stage}.pt") if ckpt_dir else None
        self.loss_acc = []
        self.cur_lr = 0.0
        if self.path and os.path.exists(self.path):
            self._resume(torch.load(self.path, map_location="cpu", weights_only=False))
        elif init_from:
            self._warm_start(init_from)

    def _resume(self, st: dict) -> None:
        saved_cfg = C.ref.DiTConfig.from_dict(st["config"])
        if saved_cfg != self.cfg:
            raise SystemExit(f"{self.path}: checkpoint config {saved_cfg.to_dict()} differs from this run's "
                             f"{self.cfg.to_dict()} (--arch{self.stage}, --prediction); use another --ckpt-dir")
        self.model.load_state_dict(st["model"])
        saved = {float(k): v for k, v in st.get("emas", {}).items()}
        for d, e in self.emas.items():
            # a decay new to this run starts from the closest saved EMA (or the old single one)
            src = saved.get(d) or (saved[min(saved, key=lambda x: abs(x - d))] if saved else st["ema"])
            e.load_state_dict(src)
        self.opt.load_state_dict(st["opt"])
        self.step, self.seconds = st["step"], st["seconds"]
        self.core_seconds = st.get("core_seconds", self.seconds)
        self.ema_start = st.get("ema_start", 0)
        self.run = st.get("run")

    def _warm_start(self, folder: str) -> None:
        """Model and every EMA from the pipeline folder's weights, a fresh optimizer; the step and
        hours continue from its training.json so the learning curve counts all of them."""
        sd, info = init_weights(folder, self.stage)
        C.ref.load_weights(self.model, grow_depth(sd, self.model.state_dict()))
        for e in self.emas.values():
            e.load_state_dict(self.model.state_dict())
        self.step = int(info.get("step", 0))
        self.seconds = float(info.get("hours", 0.0)) * 3600
        self.core_seconds = float(info.get("core_hours", info.get("hours", 0.0))) * 3600
        self.ema_start = self.step

    def save(self, run: dict | None = None) -> None:
        if not self.path:
            return
        tmp = self.path + ".tmp"
        first = next(iter(self.emas))
        torch.save({"model": self.model.state_dict(), "ema": self.emas[first].state_dict(),
                    "emas": {str(d): e.state_dict() for d, e in self.emas.items()},
                    "opt": self.opt.state_dict(), "step": self.step, "seconds": self.seconds,
                    "core_seconds": self.core_seconds, "ema_start": self.ema_start, "run": run,
                    "config": self.cfg.to_dict()}, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def info(self, ema: float) -> dict:
        return {"step": self.step, "hours": round(self.seconds / 3600, 3),
                "core_hours": round(self.core_seconds / 3600, 3), "ema": ema,
                "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.recipe).items()}}

    def train_step(self, data, lr: float) -> float:
        r = self.recipe
        g = torch.Generator().manual_seed(STAGE_SEED[self.stage] + self.step)
        x0, low = (None if a is None else C.to_model(a)[:, None] for a in data)
        cond, known, counted = None, None, None
        if self.stage == 2:
            if r.lr_noise > 0:  # robustness to imperfect stage-1 frames: small noise on half the LR inputs
                sigma = torch.rand(self.batch, 1, 1, 1, generator=g) * r.lr_noise
                sigma[self.batch // 2:] = 0
                low = (low + sigma * torch.randn(low.shape, generator=g)).clamp(-1, 1)
            cond = C.upsample(low)
        t = self.diff.sample_t(self.batch, g, r.t_low, r.t_low_end)
        noise = torch.randn(x0.shape, generator=g)
        xt = self.diff.q_sample(x0, t, noise)
        if self.stage == 1 and r.ctx_share > 0:
            known, counted = C.context_mask(self.batch, g, r.ctx_share, r.ctx_rows)
            ctx = x0
            if r.ctx_self > 0:
                # Exposure bias: a roll-out's context is the model's own last frames, a little dimmer and
                # blurrier than data, and a model that copies their look fades within a few grids. Part
                # of the context grids get the model's one-step estimate of x0 instead of x0, so it
                # learns to continue degraded frames with data-like ones (scheduled sampling, cheap).
                pick = (torch.rand(self.batch, generator=g) < r.ctx_self) & known.flatten(1).any(1)
                ts = torch.randint(r.ctx_self_t // 5, r.ctx_self_t, (self.batch,), generator=g)
                ns = torch.randn(x0.shape, generator=g)
                if bool(pick.any()):
                    ctx = x0.clone()
                    ctx[pick] = self.estimate_x0(x0[pick], ts[pick], ns[pick])
            if r.ctx_dim > 0:
                # Clean-context roll-outs fade to black: each grid continues its context a little
                # dimmer. Dimmed context with data-bright continuations teaches the way back up.
                dim = torch.rand(self.batch, generator=g) < r.ctx_dim
                scale = torch.where(dim, 0.5 + 0.5 * torch.rand(self.batch, generator=g), torch.ones(self.batch))
                ctx = (ctx + 1) * scale[:, None, None, None] - 1  # black (-1) stays black
            if r.ctx_noise > 0:
                # Conditioning augmentation (Ho et al. 2022, cascaded diffusion; GameNGen's noise
                # augmentation): the frames a long roll-out carries are the model's own, never exact,
                # and a model that only ever saw exact context drifts (its continuations fade).
                tc = torch.randint(0, r.ctx_noise, (self.batch,), generator=g)
                tc = torch.where(torch.rand(self.batch, generator=g) < 0.5, tc, torch.zeros_like(tc))
                ctx = torch.where(tc[:, None, None, None] > 0,
                                  self.diff.q_sample(ctx, tc, torch.randn(x0.shape, generator=g)), ctx)
            xt = torch.where(known, ctx, xt)
        self.cur_lr = lr
        for grp in self.opt.param_groups:
            grp["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(xt, t.float(), None, cond)
        loss, mse, vb = self.diff.hybrid_loss(out.float(), x0, xt, t, noise, r.prediction, r.snr_gamma, counted)
        mse, vb = mse.detach(), vb.detach()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        s = self.step - self.ema_start
        for d, e in self.emas.items():
            C.ema_update(e, self.model, min(d, (1 + s) / (10 + s)))
        self.step += 1
        self.loss_acc.append((loss.item(), mse.item(), vb.item()))
        return self.loss_acc[-1][0]

    @torch.no_grad()
    def estimate_x0(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The model's one-step estimate of x0 from x0 noised to level t (no context), in [-1, 1]."""
        xt = self.diff.q_sample(x0, t, noise)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            pred = self.model(xt, t.float(), None, None)[:, :x0.shape[1]].float()
        return self.diff.predict_x0(pred, xt, t, self.recipe.prediction).clamp(-1, 1)

    def pop_losses(self):
        acc, self.loss_acc = self.loss_acc, []
        if not acc:
            return None
        return [sum(v[i] for v in acc) / len(acc) for i in range(3)]


def make_batch(stage: int, n: int, step: int):
    """The uint8 data of a step of a stage (x0, and the LR frames for stage 2): a pure function of
    (stage, step), so a resumed run sees the same data."""
    seed = STAGE_SEED[stage] + step
    return (C.stage1_u8(n, seed), None) if stage == 1 else C.stage2_u8(n, seed)


class Prefetch:
    """The batches of the coming steps of each stage, made in a worker process while the model
    trains (workers 0: made in line)."""

    def __init__(self, stages: dict, depth: int = 2, workers: int = 1):
        import multiprocessing as mp
        self.stages, self.depth = stages, depth
        self.pool = mp.get_context("spawn").Pool(workers) if workers > 0 else None
        self.pending = {}

    def get(self, i: int, step: int):
        n = self.stages[i].batch
        if self.pool is None:
            return make_batch(i, n, step)
        for ahead in range(step, step + self.depth):
            if (i, ahead) not in self.pending:
                self.pending[(i, ahead)] = self.pool.apply_async(make_batch, (i, n, ahead))
        for key in [k for k in self.pending if k[0] == i and k[1] < step]:
            del self.pending[key]
        return self.pending.pop((i, step)).get()

    def cpu_seconds(self) -> float:
        """CPU time used so far by the worker processes."""
        total = 0.0
        for p in getattr(self.pool, "_pool", []) if self.pool is not None else []:
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return total

    def close(self):
        if self.pool is not None:
            self.pool.terminate()


def log(fh, msg: str) -> None:
    line = time.strftime("%Y-%m-%d %H:%M:%S ") + msg
    print(line, flush=True)
    if fh:
        fh.write(line + "\n")
        fh.flush()


def export_pipeline(ckpt_dir: str | None, out: str, live: dict, ema: float | None, init_from: str | None,
                    fh=None, tag: str = "") -> None:
    """Exports the pipeline: stages trained in this process from memory (`live`: stage -> Stage),
    the others from their checkpoint in ckpt_dir (so two single-stage processes each export the
    whole, current pipeline), else from the --init-from pipeline as it is."""
    import export as E
    models, info = {}, {}
    for i in (1, 2):
        path = os.path.join(ckpt_dir or "", f"stage{i}.pt")
        if i in live:
            s = live[i]
            d = ema if ema in s.emas else next(iter(s.emas))
            models[i], info[i] = s.emas[d], s.info(d)
        elif ckpt_dir and os.path.exists(path):
            models[i], info[i] = E.load_ema(path, ema)
        elif init_from:
            models[i] = C.load_safetensors(os.path.join(init_from, f"stage{i}.config.json"),
                                           os.path.join(init_from, f"stage{i}.safetensors"))
            info[i] = init_weights(init_from, i)[1]
        else:
            log(fh, f"export skipped: no {path} for stage {i}")
            return
    ctx = live[1].recipe.ctx_share if 1 in live else 0.0
    defaults = C.Defaults(context="clean" if ctx > 0 else "renoised")
    C.export_pipeline(models[1], models[2], out, defaults, DESCRIPTION,
                      extra={"stage1": info[1], "stage2": info[2], "tag": tag})
    log(fh, f"exported {out} ({tag}: stage1 step {info[1]['step']}, stage2 step {info[2]['step']})")


def leader_state(pid: int) -> str | None:
    """The state letter of process pid ('T' when stopped), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def follow(pid: int, stop: dict) -> None:
    """Waits while the leader is stopped (SIGSTOP for someone's benchmark pauses both processes
    through the one PID in the pid file); sets stop once the leader has exited."""
    while True:
        state = leader_state(pid)
        if state is None or state in "ZX":
            stop["flag"] = True
            return
        if state not in "Tt":
            return
        time.sleep(0.5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch1", default="6,128,4,4", help="stage 1 depth,hidden,heads,patch (the bundle's)")
    ap.add_argument("--arch2", default="4,192,3,8", help="stage 2 depth,hidden,heads,patch (the bundle's)")
    ap.add_argument("--init-from", metavar="PIPELINE",
                    help="warm start a new --ckpt-dir from this pipeline folder's weights (ignored once "
                         "the checkpoint folder has a checkpoint of the stage)")
    ap.add_argument("--batch1", type=int, default=32)
    ap.add_argument("--batch2", type=int, default=32)
    ap.add_argument("--lr1", type=float, default=1e-3)
    ap.add_argument("--lr2", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=500, help="lr warm-up steps at the start of each run")
    ap.add_argument("--decay-frac", type=float, default=0.25,
                    help="share of the run's budget at its end over which the lr decays (cosine) to --lr-min")
    ap.add_argument("--lr-min", type=float, default=1e-5, help="lr at the end of a run")
    ap.add_argument("--ema", default="0.999,0.9999", help="EMA decays kept (comma-separated)")
    ap.add_argument("--export-ema", type=float, help="EMA decay exported (default: the first of --ema)")
    ap.add_argument("--no-grid-pos", action="store_true",
                    help="stage 1 with the plain 2-D sin-cos pos_embed of the token grid")
    ap.add_argument("--prediction", choices=["epsilon", "v"], default="epsilon",
                    help="what the model predicts (written to the exported configs)")
    ap.add_argument("--snr-gamma", type=float, default=0.0,
                    help="> 0: weight each sample's x0 error by SNR clamped to [1 (v only), gamma]")
    ap.add_argument("--t-low", type=float, default=0.0,
                    help="share of timesteps drawn from [0, --t-low-end) instead of [0, 1000)")
    ap.add_argument("--t-low-end", type=int, default=700)
    ap.add_argument("--ctx-share", type=float, default=0.0,
                    help="stage 1: share of grids whose first 1-3 rows are clean known frames (continuation "
                         "training; the export then defaults to clean context)")
    ap.add_argument("--ctx-rows", default="1,2,3", help="numbers of known rows drawn from")
    ap.add_argument("--ctx-noise", type=int, default=0,
                    help="> 0: half of the context rows are noised to a level drawn from [0, this) (robustness "
                         "to the model's own imperfect frames in long roll-outs)")
    ap.add_argument("--ctx-self", type=float, default=0.0,
                    help="share of context grids whose known rows are the model's one-step x0 estimate")
    ap.add_argument("--ctx-self-t", type=int, default=400, help="their noise level is drawn from [T/5, T)")
    ap.add_argument("--ctx-dim", type=float, default=0.0,
                    help="share of context grids whose known rows are dimmed towards black by a factor in "
                         "[0.5, 1) (against the fade of clean-context roll-outs)")
    ap.add_argument("--lr-noise", type=float, default=0.04,
                    help="max std of the noise added to half of the stage-2 LR conditions ([-1,1] units)")
    ap.add_argument("--share1", type=float, default=0.7, help="share of step time for stage 1 (both in one process)")
    ap.add_argument("--stages", default="1,2", help="stages trained by this process (1, 2 or 1,2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-workers", type=int, default=1, help="processes making batches ahead (0: in line)")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--ckpt-dir")
    ap.add_argument("--export-dir")
    ap.add_argument("--pid-file")
    ap.add_argument("--log")
    ap.add_argument("--hours", type=float, default=1.0,
                    help="budget of this run in hours of step time (pauses excluded)")
    ap.add_argument("--max-steps1", type=int, default=0, help="stop stage 1 at this step (0: no limit)")
    ap.add_argument("--max-steps2", type=int, default=0)
    ap.add_argument("--ckpt-every", type=float, default=300.0, help="seconds")
    ap.add_argument("--export-every", type=float, default=900.0, help="seconds")
    ap.add_argument("--snapshot-every", type=float, default=0.0,
                    help="seconds between EMA-only snapshots CKPT/snap/stageN-STEP.pt (0: none)")
    ap.add_argument("--log-every", type=float, default=60.0, help="seconds")
    ap.add_argument("--follow", type=int, metavar="PID",
                    help="pause while process PID is stopped, save and exit once it has exited (a second "
                         "single-stage process follows the first, whose PID is the one others pause)")
    ap.add_argument("--bench", action="store_true", help="time a few steps of each stage and exit")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    stages_on = [int(s) for s in a.stages.split(",")]
    emas = [float(v) for v in a.ema.split(",")]
    if a.ckpt_dir:
        os.makedirs(a.ckpt_dir, exist_ok=True)
    if a.pid_file:
        with open(a.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    fh = open(a.log, "a") if a.log else None

    common = dict(prediction=a.prediction, snr_gamma=a.snr_gamma, t_low=a.t_low, t_low_end=a.t_low_end)
    recipes = {1: Recipe(**common, ctx_share=a.ctx_share, ctx_rows=tuple(int(v) for v in a.ctx_rows.split(",")),
                         ctx_noise=a.ctx_noise, ctx_self=a.ctx_self, ctx_self_t=a.ctx_self_t,
                         ctx_dim=a.ctx_dim),
               2: Recipe(**common, lr_noise=a.lr_noise)}
    spec = {1: (a.arch1, a.batch1, a.lr1), 2: (a.arch2, a.batch2, a.lr2)}
    st = {}
    for i in stages_on:
        arch, batch, lr = spec[i]
        st[i] = Stage(i, parse_arch(arch), batch, lr, emas, None if a.bench else a.ckpt_dir, not a.fp32, recipes[i],
                      init_from=a.init_from, grid_pos=not a.no_grid_pos)
    for i, s in st.items():
        fl = C.ref.flops_per_forward(s.cfg, 1)
        log(fh, f"stage{i}: {json.dumps(s.cfg.to_dict())} params {C.param_count(s.model):,} "
                f"forward {fl / 1e9:.3f} GFLOP/sample, batch {s.batch}, step {s.step}, "
                f"{s.seconds / 3600:.2f} h trained, lr {s.lr}, EMAs {list(s.emas)}, recipe {vars(s.recipe)}, "
                f"threads {a.threads}, bf16 {not a.fp32}")
    data = Prefetch(st, workers=0 if a.bench else a.data_workers)

    if a.bench:
        for i in stages_on:
            s = st[i]
            s.train_step(data.get(i, s.step), s.lr)  # warm-up
            times = []
            for _ in range(5):
                batch = data.get(i, s.step)
                t0 = time.perf_counter()
                s.train_step(batch, s.lr)
                times.append(time.perf_counter() - t0)
            times.sort()
            fl = 3 * C.ref.flops_per_forward(s.cfg, s.batch)
            log(fh, f"bench stage{i}: median {times[2]:.3f} s/step (min {times[0]:.3f}), "
                    f"{s.batch / times[2]:.1f} samples/s, ~{fl / times[2] / 1e9:.0f} GFLOP/s (3x forward), "
                    f"bf16={not a.fp32}, threads {a.threads}")
        return 0

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    # The run: this invocation, or the unfinished run its checkpoints were saved in.
    saved = [s.run for s in st.values() if s.run]
    run = dict(saved[0]) if saved else {"start_step": {str(i): s.step for i, s in st.items()}, "elapsed": 0.0,
                                        "budget": a.hours * 3600}

    def decay_now(signum, frame):  # the decay starts now; the run ends after it
        run["budget"] = min(run["budget"], run["elapsed"] / max(1.0 - a.decay_frac, 1e-9))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, decay_now)
    if saved:
        log(fh, f"continuing the run started at steps {run['start_step']}: {run['elapsed'] / 3600:.2f} of "
                f"{run['budget'] / 3600:.2f} h")

    share = {1: a.share1, 2: 1.0 - a.share1}
    run_seconds = {1: 0.0, 2: 0.0}  # shares apply to this invocation's time
    typical = {1: 0.0, 2: 0.0}  # running mean of a step's time
    limits = {1: a.max_steps1, 2: a.max_steps2}
    start = time.time()
    t_ckpt = t_export = t_log = t_snap = start

    def progress(i: int) -> float:
        p = run["elapsed"] / max(run["budget"], 1e-9)
        if limits[i]:
            first = run["start_step"].get(str(i), 0)
            p = max(p, (st[i].step - first) / max(limits[i] - first, 1))
        return p

    def active():
        return [i for i in stages_on if progress(i) < 1.0 and not (limits[i] and st[i].step >= limits[i])]

    def save_all():
        done = not active()
        for j in stages_on:
            st[j].save(None if done else run)

    def export(tag: str):
        if a.export_dir:
            export_pipeline(a.ckpt_dir, a.export_dir, st, a.export_ema, a.init_from, fh, tag)

    def snapshot():
        snap = os.path.join(a.ckpt_dir, "snap")
        os.makedirs(snap, exist_ok=True)
        for j in stages_on:
            path = os.path.join(snap, f"stage{j}-{st[j].step:06d}.pt")
            torch.save({"emas": {str(d): e.state_dict() for d, e in st[j].emas.items()}, "step": st[j].step,
                        "seconds": st[j].seconds, "config": st[j].cfg.to_dict()}, path + ".tmp")
            os.replace(path + ".tmp", path)

    try:
        while not stop["flag"] and active():
            # The stage furthest behind its share of this invocation's time goes next.
            i = min(active(), key=lambda j: run_seconds[j] / max(share[j], 1e-9))
            if a.follow:
                follow(a.follow, stop)
                if stop["flag"]:
                    break
            s = st[i]
            batch = data.get(i, s.step)
            lr = lr_at(s.step - run["start_step"].get(str(i), 0), progress(i), s.lr, a.warmup, a.decay_frac,
                       a.lr_min)
            t0, cpu0 = time.perf_counter(), time.process_time() + data.cpu_seconds()
            s.train_step(batch, lr)
            # A step much longer than usual was most likely paused (SIGSTOP for someone's benchmark, or
            # a burst of load): charge at most 3x the running mean so the shares stay fair.
            dt = time.perf_counter() - t0
            if typical[i]:
                dt = min(dt, 3.0 * typical[i])
            typical[i] = dt if not typical[i] else 0.9 * typical[i] + 0.1 * dt
            s.seconds += dt
            s.core_seconds += time.process_time() + data.cpu_seconds() - cpu0  # what it really got
            run_seconds[i] += dt
            run["elapsed"] += dt
            now = time.time()
            if now - t_log >= a.log_every:
                for j in stages_on:
                    losses = st[j].pop_losses()
                    if losses:
                        log(fh, f"stage{j} step {st[j].step} loss {losses[0]:.4f} mse {losses[1]:.4f} "
                                f"vb {losses[2]:.4f} lr {st[j].cur_lr:.2e} ({st[j].seconds / max(st[j].step, 1):.2f} "
                                f"s/step avg, {st[j].seconds / 3600:.2f} h; run {100 * progress(j):.0f}%)")
                t_log = now
            if a.ckpt_dir and now - t_ckpt >= a.ckpt_every:
                save_all()
                t_ckpt = now
            if a.ckpt_dir and a.snapshot_every and now - t_snap >= a.snapshot_every:
                snapshot()
                t_snap = now
            if now - t_export >= a.export_every:
                export("periodic")
                t_export = now
    finally:
        data.close()
    save_all()
    export("stopped" if stop["flag"] else "final")
    log(fh, "stopped by signal" if stop["flag"] else "done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
