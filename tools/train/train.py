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


class Stage:
    def __init__(self, stage: int, arch, batch: int, lr: float, warmup: int, ema_decay: float,
                 ckpt_dir: str | None, bf16: bool, lr_noise: float):
        self.stage, self.batch, self.lr, self.warmup = stage, batch, lr, warmup
        self.ema_decay, self.bf16, self.lr_noise = ema_decay, bf16, lr_noise
        self.cfg = C.stage_config(stage, *arch)
        self.model = C.build_model(self.cfg, seed=stage)
        self.ema = copy.deepcopy(self.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
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
            self.ema.load_state_dict(st["ema"])
            self.opt.load_state_dict(st["opt"])
            self.step, self.seconds = st["step"], st["seconds"]

    def save(self) -> None:
        if not self.path:
            return
        tmp = self.path + ".tmp"
        torch.save({"model": self.model.state_dict(), "ema": self.ema.state_dict(),
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
        for grp in self.opt.param_groups:
            grp["lr"] = self.lr * min(1.0, (self.step + 1) / self.warmup)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(xt, t.float(), None, cond)
        loss, mse, vb = self.diff.hybrid_loss(out.float(), x0, xt, t, noise)
        mse, vb = mse.detach(), vb.detach()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
        C.ema_update(self.ema, self.model, decay)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch1", default="6,192,3,4", help="stage 1 depth,hidden,heads,patch")
    ap.add_argument("--arch2", default="4,192,3,8", help="stage 2 depth,hidden,heads,patch")
    ap.add_argument("--batch1", type=int, default=32)
    ap.add_argument("--batch2", type=int, default=32)
    ap.add_argument("--lr1", type=float, default=3e-4)
    ap.add_argument("--lr2", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--lr-noise", type=float, default=0.04,
                    help="max std of the noise added to half of the stage-2 LR conditions ([-1,1] units)")
    ap.add_argument("--share1", type=float, default=0.7, help="share of wall time for stage 1")
    ap.add_argument("--stages", default="1,2")
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
    ap.add_argument("--log-every", type=float, default=60.0, help="seconds")
    ap.add_argument("--bench", action="store_true", help="time a few steps of each stage and exit")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    stages_on = [int(s) for s in a.stages.split(",")]
    if a.ckpt_dir:
        os.makedirs(a.ckpt_dir, exist_ok=True)
    if a.pid_file:
        with open(a.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    fh = open(a.log, "a") if a.log else None

    st = {
        1: Stage(1, parse_arch(a.arch1), a.batch1, a.lr1, a.warmup, a.ema, None if a.bench else a.ckpt_dir,
                 not a.fp32, 0.0),
        2: Stage(2, parse_arch(a.arch2), a.batch2, a.lr2, a.warmup, a.ema, None if a.bench else a.ckpt_dir,
                 not a.fp32, a.lr_noise),
    }
    for i, s in st.items():
        fl = C.ref.flops_per_forward(s.cfg, 1)
        log(fh, f"stage{i}: {json.dumps(s.cfg.to_dict())} params {C.param_count(s.model):,} "
                f"forward {fl / 1e9:.3f} GFLOP/sample, batch {s.batch}, step {s.step}, "
                f"{s.seconds / 3600:.2f} h trained")

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
                    f"~{fl / times[2] / 1e9:.0f} GFLOP/s (3x forward), bf16={not a.fp32}")
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
    t_ckpt = t_export = t_log = start

    def active():
        return [i for i in stages_on if not (limits[i] and st[i].step >= limits[i])]

    def export(tag: str):
        if not a.export_dir:
            return
        info = {i: {"step": st[i].step, "hours": round(st[i].seconds / 3600, 3)} for i in st}
        C.export_pipeline(st[1].ema, st[2].ema, a.export_dir, C.Defaults(), DESCRIPTION,
                          extra={"stage1": info[1], "stage2": info[2], "tag": tag})
        log(fh, f"exported {a.export_dir} ({tag}: stage1 step {st[1].step}, stage2 step {st[2].step})")

    while not stop["flag"] and active() and time.time() - start < a.hours * 3600:
        # The stage furthest behind its share of this invocation's time goes next.
        i = min(active(), key=lambda j: run_seconds[j] / max(share[j], 1e-9))
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
                            f"({st[j].seconds / max(st[j].step, 1):.2f} s/step avg, {st[j].seconds / 3600:.2f} h)")
            t_log = now
        if now - t_ckpt >= a.ckpt_every:
            for j in stages_on:
                st[j].save()
            t_ckpt = now
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
