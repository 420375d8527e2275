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

Recipe (docs: tools/train/README.md): AdamW (wd 0), linear warm-up then constant lr, bf16
autocast on CPU, uniform t in [0, 1000), hybrid loss L_simple + L_vb (mean detached in L_vb),
EMA of the weights, exported in float32.
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

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

STAGE_SEED = {1: 1_000_003, 2: 2_000_003}  # data seed of step s = STAGE_SEED + s
DESCRIPTION = "4x4 grids of 16x16 moving MNIST digits, x4 super-resolution to 64x64 (pixel space)"


def parse_arch(s: str) -> tuple[int, int, int, int]:
    """"depth,hidden,heads,patch"."""
    d, h, n, p = (int(v) for v in s.split(","))
    return d, h, n, p


def parse_decay(s: str | None) -> tuple[int, int] | None:
    """"START:STEPS" -> (START, STEPS): cosine decay of the lr from step START over STEPS steps."""
    if not s:
        return None
    a, b = (int(v) for v in s.split(":"))
    return a, b


def lr_at(step: int, lr: float, warmup: int, decay: tuple[int, int] | None, lr_min: float) -> float:
    """Warm-up, constant, then (optionally) a cosine decay to lr_min (warmup-stable-decay: the
    decay can be scheduled when resuming, once the length of the run is known)."""
    f = min(1.0, (step + 1) / max(warmup, 1))
    if decay is not None and step >= decay[0]:
        u = min(1.0, (step - decay[0]) / max(decay[1], 1))
        return lr_min + (lr * f - lr_min) * 0.5 * (1 + math.cos(math.pi * u))
    return lr * f


class Stage:
    def __init__(self, stage: int, arch, batch: int, lr: float, warmup: int, ema_decays: list[float],
                 ckpt_dir: str | None, bf16: bool, lr_noise: float, decay=None, lr_min: float = 0.0,
                 grid_pos: bool = True):
        self.stage, self.batch, self.lr, self.warmup = stage, batch, lr, warmup
        self.decay, self.lr_min = decay, lr_min
        self.bf16, self.lr_noise = bf16, lr_noise
        self.cfg = C.stage_config(stage, *arch)
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
        self.seconds = 0.0
        self.path = os.path.join(ckpt_dir, f"stage{stage}.pt") if ckpt_dir else None
        self.loss_acc = []
        if self.path and os.path.exists(self.path):
            st = torch.load(self.path, map_location="cpu", weights_only=False)
            if st["config"] != self.cfg.to_dict():
                raise SystemExit(f"{self.path}: checkpoint config {st['config']} differs from "
                                 f"--arch{stage} {self.cfg.to_dict()}; use another --ckpt-dir")
            self.model.load_state_dict(st["model"])
            saved = {float(k): v for k, v in st.get("emas", {}).items()}
            for d, e in self.emas.items():
                # a decay new to this run starts from the closest saved EMA (or the old single one)
                src = saved.get(d) or (saved[min(saved, key=lambda x: abs(x - d))] if saved else st["ema"])
                e.load_state_dict(src)
            self.opt.load_state_dict(st["opt"])
            self.step, self.seconds = st["step"], st["seconds"]

    def save(self) -> None:
        if not self.path:
            return
        tmp = self.path + ".tmp"
        first = next(iter(self.emas))
        torch.save({"model": self.model.state_dict(), "ema": self.emas[first].state_dict(),
                    "emas": {str(d): e.state_dict() for d, e in self.emas.items()},
                    "opt": self.opt.state_dict(), "step": self.step, "seconds": self.seconds,
                    "config": self.cfg.to_dict()}, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def train_step(self) -> float:
        seed = STAGE_SEED[self.stage] + self.step
        g = torch.Generator().manual_seed(seed)
        if self.stage == 1:
            x0, cond = C.stage1_batch(self.batch, seed), None
        else:
            x0, low = C.stage2_batch(self.batch, seed)
            if self.lr_noise > 0:  # robustness to imperfect stage-1 frames: small noise on half the LR inputs
                sigma = torch.rand(self.batch, 1, 1, 1, generator=g) * self.lr_noise
                sigma[self.batch // 2:] = 0
                low = (low + sigma * torch.randn(low.shape, generator=g)).clamp(-1, 1)
            cond = C.upsample(low)
        t = torch.randint(0, self.diff.count, (self.batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        xt = self.diff.q_sample(x0, t, noise)
        self.cur_lr = lr_at(self.step, self.lr, self.warmup, self.decay, self.lr_min)
        for grp in self.opt.param_groups:
            grp["lr"] = self.cur_lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(xt, t.float(), None, cond)
        loss, mse, vb = self.diff.hybrid_loss(out.float(), x0, xt, t, noise)
        mse, vb = mse.detach(), vb.detach()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        for d, e in self.emas.items():
            C.ema_update(e, self.model, min(d, (1 + self.step) / (10 + self.step)))
        self.step += 1
        self.loss_acc.append((loss.item(), mse.item(), vb.item()))
        return self.loss_acc[-1][0]

    def pop_losses(self):
        acc, self.loss_acc = self.loss_acc, []
        if not acc:
            return None
        return [sum(v[i] for v in acc) / len(acc) for i in range(3)]


def log(fh, msg: str) -> None:
    line = time.strftime("%Y-%m-%d %H:%M:%S ") + msg
    print(line, flush=True)
    if fh:
        fh.write(line + "\n")
        fh.flush()


def export_pipeline(ckpt_dir: str | None, out: str, live: dict, ema: float | None, fh=None, tag: str = "") -> None:
    """Exports the pipeline: stages trained in this process from memory (`live`: stage -> Stage),
    the others from their checkpoint in ckpt_dir (so two single-stage processes each export the
    whole, current pipeline)."""
    import export as E
    models, info = {}, {}
    for i in (1, 2):
        if i in live:
            s = live[i]
            d = ema if ema in s.emas else next(iter(s.emas))
            models[i] = s.emas[d]
            info[i] = {"step": s.step, "hours": round(s.seconds / 3600, 3), "ema": d}
        else:
            path = os.path.join(ckpt_dir or "", f"stage{i}.pt")
            if not ckpt_dir or not os.path.exists(path):
                log(fh, f"export skipped: no {path} for stage {i}")
                return
            models[i], info[i] = E.load_ema(path, ema)
    C.export_pipeline(models[1], models[2], out, C.Defaults(), DESCRIPTION,
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
    ap.add_argument("--arch1", default="4,128,4,4", help="stage 1 depth,hidden,heads,patch")
    ap.add_argument("--arch2", default="4,192,3,8", help="stage 2 depth,hidden,heads,patch")
    ap.add_argument("--batch1", type=int, default=32)
    ap.add_argument("--batch2", type=int, default=32)
    ap.add_argument("--lr1", type=float, default=1e-3)
    ap.add_argument("--lr2", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--decay1", help="START:STEPS cosine lr decay of stage 1 (default: constant lr)")
    ap.add_argument("--decay2", help="START:STEPS cosine lr decay of stage 2")
    ap.add_argument("--lr-min", type=float, default=1e-5, help="lr at the end of a decay")
    ap.add_argument("--ema", default="0.999,0.9999", help="EMA decays kept (comma-separated)")
    ap.add_argument("--export-ema", type=float, help="EMA decay exported (default: the first of --ema)")
    ap.add_argument("--no-grid-pos", action="store_true",
                    help="stage 1 with the plain 2-D sin-cos pos_embed of the token grid")
    ap.add_argument("--lr-noise", type=float, default=0.04,
                    help="max std of the noise added to half of the stage-2 LR conditions ([-1,1] units)")
    ap.add_argument("--share1", type=float, default=0.7, help="share of wall time for stage 1 (both in one process)")
    ap.add_argument("--stages", default="1,2", help="stages trained by this process (1, 2 or 1,2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--ckpt-dir")
    ap.add_argument("--export-dir")
    ap.add_argument("--pid-file")
    ap.add_argument("--log")
    ap.add_argument("--hours", type=float, default=1.0, help="wall-clock budget of this invocation")
    ap.add_argument("--max-steps1", type=int, default=0)
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

    spec = {1: (a.arch1, a.batch1, a.lr1, parse_decay(a.decay1), 0.0),
            2: (a.arch2, a.batch2, a.lr2, parse_decay(a.decay2), a.lr_noise)}
    st = {}
    for i in stages_on:
        arch, batch, lr, decay, noise = spec[i]
        st[i] = Stage(i, parse_arch(arch), batch, lr, a.warmup, emas, None if a.bench else a.ckpt_dir,
                      not a.fp32, noise, decay=decay, lr_min=a.lr_min, grid_pos=not a.no_grid_pos)
    for i, s in st.items():
        fl = C.ref.flops_per_forward(s.cfg, 1)
        log(fh, f"stage{i}: {json.dumps(s.cfg.to_dict())} params {C.param_count(s.model):,} "
                f"forward {fl / 1e9:.3f} GFLOP/sample, batch {s.batch}, step {s.step}, "
                f"{s.seconds / 3600:.2f} h trained, lr {s.lr} decay {s.decay}, EMAs {list(s.emas)}, "
                f"threads {a.threads}, bf16 {not a.fp32}")

    if a.bench:
        for i in stages_on:
            s = st[i]
            s.train_step()  # warm-up
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                s.train_step()
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

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    share = {1: a.share1, 2: 1.0 - a.share1}
    run_seconds = {1: 0.0, 2: 0.0}  # shares apply to this invocation's time
    typical = {1: 0.0, 2: 0.0}  # running mean of a step's time
    limits = {1: a.max_steps1, 2: a.max_steps2}
    start = time.time()
    t_ckpt = t_export = t_log = t_snap = start

    def active():
        return [i for i in stages_on if not (limits[i] and st[i].step >= limits[i])]

    def export(tag: str):
        if a.export_dir:
            export_pipeline(a.ckpt_dir, a.export_dir, st, a.export_ema, fh, tag)

    def snapshot():
        snap = os.path.join(a.ckpt_dir, "snap")
        os.makedirs(snap, exist_ok=True)
        for j in stages_on:
            path = os.path.join(snap, f"stage{j}-{st[j].step:06d}.pt")
            torch.save({"emas": {str(d): e.state_dict() for d, e in st[j].emas.items()}, "step": st[j].step,
                        "seconds": st[j].seconds, "config": st[j].cfg.to_dict()}, path + ".tmp")
            os.replace(path + ".tmp", path)

    while not stop["flag"] and active() and time.time() - start < a.hours * 3600:
        # The stage furthest behind its share of this invocation's time goes next.
        i = min(active(), key=lambda j: run_seconds[j] / max(share[j], 1e-9))
        if a.follow:
            follow(a.follow, stop)
            if stop["flag"]:
                break
        t0 = time.perf_counter()
        st[i].train_step()
        # A step much longer than usual was most likely paused (SIGSTOP for someone's benchmark, or
        # a burst of load): charge at most 3x the running mean so the shares stay fair.
        dt = time.perf_counter() - t0
        if typical[i]:
            dt = min(dt, 3.0 * typical[i])
        typical[i] = dt if not typical[i] else 0.9 * typical[i] + 0.1 * dt
        st[i].seconds += dt
        run_seconds[i] += dt
        now = time.time()
        if now - t_log >= a.log_every:
            for j in stages_on:
                l = st[j].pop_losses()
                if l:
                    log(fh, f"stage{j} step {st[j].step} loss {l[0]:.4f} mse {l[1]:.4f} vb {l[2]:.4f} "
                            f"lr {st[j].cur_lr:.2e} ({st[j].seconds / max(st[j].step, 1):.2f} s/step avg, "
                            f"{st[j].seconds / 3600:.2f} h)")
            t_log = now
        if a.ckpt_dir and now - t_ckpt >= a.ckpt_every:
            for j in stages_on:
                st[j].save()
            t_ckpt = now
        if a.ckpt_dir and a.snapshot_every and now - t_snap >= a.snapshot_every:
            snapshot()
            t_snap = now
        if now - t_export >= a.export_every:
            export("periodic")
            t_export = now
    for j in stages_on:
        st[j].save()
    export("final" if not stop["flag"] else "stopped")
    log(fh, "stopped by signal" if stop["flag"] else "done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
