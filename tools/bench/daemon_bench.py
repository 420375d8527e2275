#!/usr/bin/env python3
"""Benchmarks of griditd as users run it (release build, real socket, real database):

  throughput  N jobs submitted together (batched: their stage-1 grids share batched forwards, their
              frames share stage-2 batches) against the same N jobs run one after the other;
              alternating, medians of --repeat rounds.
  sweep       the same --jobs jobs submitted together to daemons with each --max-batch-jobs of
              --sweep (1: one by one, as a daemon without batching runs them); alternating order,
              medians of --repeat rounds: where batching pays, and the default to choose.
  memory      peak RSS (VmHWM) of griditd and its engine worker process (summed: an upper bound of
              their joint peak) over one --memory-length job, and their RSS before/after.
  soak        RSS after each of --soak consecutive short jobs in one daemon, and each process's
              anonymous memory (no growth expected).

The pipeline is --pipeline (default models/moving-digits/pipeline.json); when it is missing, a
random-weight pipeline of the same shapes is made with gridit-bench (the timings then measure the
same arithmetic; the frames are noise). Needs only the Python standard library.

  swift build -c release --product griditd && swift build -c release --product griditctl \\
      && swift build -c release --product gridit-bench
  tools/bench/daemon_bench.py [--pause-pid-file FILE] [--json results.json]
  tools/bench/daemon_bench.py --only sweep --jobs 8 --sweep 1,2,4,8 --repeat 2

--pause-pid-file names a process (the background training) to SIGSTOP while timing; it is always
sent SIGCONT again, whatever happens.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The bundled pipeline's geometry (models/moving-digits): pixel space, 1 channel, 4x4 grids of
# 16x16 frames, x4 super-resolution.
STAGE1 = {"depth": 4, "hidden_size": 128, "num_heads": 4, "patch_size": 4, "input_size": 64, "in_channels": 1,
          "learn_sigma": True, "num_classes": 0, "condition_channels": 0, "mlp_ratio": 4.0}
STAGE2 = {"depth": 4, "hidden_size": 192, "num_heads": 3, "patch_size": 8, "input_size": 64, "in_channels": 1,
          "learn_sigma": True, "num_classes": 0, "condition_channels": 1, "mlp_ratio": 4.0}
PIPELINE = {
    "format": "gridit.pipeline.v1", "name": "moving-digits",
    "grid": {"k": 4, "frame_size": 16, "channels": 1},
    "stage1": {"config": "stage1.config.json", "weights": "stage1.safetensors"},
    "stage2": {"config": "stage2.config.json", "weights": "stage2.safetensors", "scale": 4},
    "vae": None,
    "defaults": {"mode": "gridit", "sampler": "ddim", "steps": 50, "eta": 0.0, "sr_sampler": "ddim", "sr_steps": 25,
                 "context_rows": 2, "precision": "fp32"},
    "limits": {"max_length": 100000},
}


class Paused:
    """SIGSTOPs a process while timing; SIGCONT on exit, on error and on SIGINT/SIGTERM."""

    def __init__(self, pid_file):
        self.pid = None
        if pid_file and os.path.exists(pid_file):
            with open(pid_file) as f:
                self.pid = int(f.read().strip())

    def __enter__(self):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGSTOP)
            except ProcessLookupError:
                self.pid = None
        return self

    def __exit__(self, *exc):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


class Daemon:
    def __init__(self, bin_dir, pipeline, extra=()):
        self.bin = bin_dir
        self.dir = tempfile.mkdtemp(prefix="gdb-", dir="/tmp")
        self.state = os.path.join(self.dir, "state")
        self.socket = os.path.join(self.dir, "s.sock")
        self.log = open(os.path.join(self.dir, "griditd.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(bin_dir, "griditd"), "serve", "--state-dir", self.state, "--socket", self.socket, *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(600):
            if self.proc.poll() is not None:
                raise SystemExit("griditd exited: see " + self.log.name)
            if self.ctl("status", check=False).returncode == 0:
                break
            time.sleep(0.1)
        self.ctl("models", "import", pipeline, "--name", "bench:latest", "--link", "copy")

    def ctl(self, *args, check=True):
        return subprocess.run([os.path.join(self.bin, "griditctl"), "--socket", self.socket, *args],
                              capture_output=True, text=True, check=check)

    def submit(self, length, seed, wait=False, extra=()):
        args = ["submit", "--length", str(length), "--seed", str(seed), "--json", *extra] + (["--wait"] if wait else [])
        out = json.loads(self.ctl(*args).stdout)
        return out["job"]["id"] if "job" in out else out["id"]

    def wait_all(self, ids, every=0.5):
        """Polls `jobs list` until the jobs end. Each poll starts a griditctl process (~12 ms of CPU
        and the daemon's answer): polled every 50 ms, that took a sixth of a core from the engine
        being timed and made the batched side look slower; every 0.5 s it costs ~3 %."""
        while True:
            jobs = {j["id"]: j for j in json.loads(self.ctl("jobs", "list", "--json", "--limit", "10000").stdout)["jobs"]}
            states = [jobs[i]["state"] for i in ids]
            if all(s in ("succeeded", "failed", "canceled", "dead") for s in states):
                bad = [i for i in ids if jobs[i]["state"] != "succeeded"]
                if bad:
                    raise SystemExit(f"jobs {bad} did not succeed: see {self.log.name}")
                return
            time.sleep(every)

    def status(self, key, pids=None):
        """`key` (VmRSS, VmHWM, RssAnon) of griditd plus its engine worker process (or of `pids`), in bytes."""
        total = 0
        for pid in [self.proc.pid] + self.children() if pids is None else pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith(key + ":"):
                            total += int(line.split()[1]) * 1024
            except FileNotFoundError:
                pass
        return total

    def children(self):
        pids = []
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split()]
            except FileNotFoundError:
                pass
        return pids

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def random_pipeline(bin_dir, where):
    os.makedirs(where, exist_ok=True)
    for name, config in (("stage1", STAGE1), ("stage2", STAGE2)):
        path = os.path.join(where, name + ".config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        subprocess.run([os.path.join(bin_dir, "gridit-bench"), "memory", "--config", path,
                        "--checkpoint", os.path.join(where, name + ".safetensors"), "--create"],
                       check=True, capture_output=True)
    with open(os.path.join(where, "pipeline.json"), "w") as f:
        json.dump(PIPELINE, f, indent=2)
    return os.path.join(where, "pipeline.json")


def throughput(args, pipeline):
    times = {"together": [], "one by one": []}
    for r in range(args.repeat):
        order = ["together", "one by one"] if r % 2 == 0 else ["one by one", "together"]
        for side in order:
            daemon = Daemon(args.bin, pipeline, ["--max-batch-jobs", str(args.jobs), *args.serve_args.split()])
            try:
                daemon.submit(4, 999, wait=True)  # warm-up: map the model, page its weights in
                seeds = [100 + i for i in range(args.jobs)]
                extra = ["--no-sr"] if args.no_sr else []
                with Paused(args.pause_pid_file):
                    start = time.monotonic()
                    if side == "together":
                        daemon.wait_all([daemon.submit(args.length, s, extra=extra) for s in seeds])
                    else:
                        for s in seeds:
                            daemon.submit(args.length, s, wait=True, extra=extra)
                    elapsed = time.monotonic() - start
            finally:
                daemon.stop()
            times[side].append(elapsed)
            print(f"  round {r + 1}: {side}: {elapsed:.2f} s", file=sys.stderr)
    frames = args.jobs * args.length
    together, alone = statistics.median(times["together"]), statistics.median(times["one by one"])
    return {"jobs": args.jobs, "length": args.length, "no_sr": args.no_sr, "rounds": args.repeat, "seconds": times,
            "together_s": together, "one_by_one_s": alone,
            "together_fps": frames / together, "one_by_one_fps": frames / alone, "speedup": alone / together}


def sweep(args, pipeline):
    sizes = [int(x) for x in args.sweep.split(",")]
    times = {m: [] for m in sizes}
    for r in range(args.repeat):
        for m in (sizes if r % 2 == 0 else sizes[::-1]):
            daemon = Daemon(args.bin, pipeline, ["--max-batch-jobs", str(m), *args.serve_args.split()])
            try:
                daemon.submit(4, 999, wait=True)  # warm-up
                with Paused(args.pause_pid_file):
                    start = time.monotonic()
                    daemon.wait_all([daemon.submit(args.length, 100 + i) for i in range(args.jobs)])
                    elapsed = time.monotonic() - start
            finally:
                daemon.stop()
            times[m].append(elapsed)
            print(f"  round {r + 1}: --max-batch-jobs {m}: {elapsed:.2f} s", file=sys.stderr)
    medians = {m: statistics.median(t) for m, t in times.items()}
    return {"jobs": args.jobs, "length": args.length, "rounds": args.repeat, "seconds": times,
            "median_s": medians, "speedup_vs_1": {m: medians[sizes[0]] / v for m, v in medians.items()}}


def memory(args, pipeline):
    daemon = Daemon(args.bin, pipeline)
    try:
        idle = daemon.status("VmRSS")
        with Paused(args.pause_pid_file):
            start = time.monotonic()
            daemon.submit(args.memory_length, 7, wait=True)
            elapsed = time.monotonic() - start
        return {"length": args.memory_length, "seconds": elapsed, "rss_idle": idle,
                "rss_peak": daemon.status("VmHWM"), "rss_after": daemon.status("VmRSS")}
    finally:
        daemon.stop()


def soak(args, pipeline):
    """RSS of both processes after each job, and the anonymous (heap) memory of each: a leak in
    griditd itself hides in the sum, as the worker's varies by megabytes from job to job."""
    daemon = Daemon(args.bin, pipeline)
    rss, own, worker = [], [], []
    try:
        with Paused(args.pause_pid_file):
            for i in range(args.soak):
                daemon.submit(args.soak_length, 1000 + i, wait=True)
                rss.append(daemon.status("VmRSS"))
                own.append(daemon.status("RssAnon", [daemon.proc.pid]))
                worker.append(daemon.status("RssAnon", daemon.children()))
    finally:
        daemon.stop()

    def slope(ys):
        tail = ys[9:]  # after the first jobs (allocator pools, caches warm up)
        n = len(tail)
        mx, my = (n - 1) / 2, statistics.fmean(tail)
        return sum((x - mx) * (y - my) for x, y in enumerate(tail)) / max(sum((x - mx) ** 2 for x in range(n)), 1)

    return {"jobs": args.soak, "length": args.soak_length, "rss": rss, "rss_first": rss[0], "rss_10": rss[9],
            "rss_last": rss[-1], "rss_max": max(rss), "slope_bytes_per_job": slope(rss),
            "griditd_anon": own, "griditd_anon_slope": slope(own), "worker_anon": worker,
            "worker_anon_slope": slope(worker)}


def mb(n):
    return f"{n / 1e6:.1f} MB"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default=os.path.join(ROOT, "models/moving-digits/pipeline.json"))
    p.add_argument("--bin", default=os.path.join(ROOT, ".build/release"))
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--length", type=int, default=64, help="frames per throughput job")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-sr", action="store_true", help="throughput of stage 1 only (grids batched across jobs)")
    p.add_argument("--serve-args", default="", help="more `griditd serve` options for the throughput daemons")
    p.add_argument("--sweep", default="1,2,4,8", help="--max-batch-jobs values of the sweep (the first is the baseline)")
    p.add_argument("--memory-length", type=int, default=128)
    p.add_argument("--soak", type=int, default=100)
    p.add_argument("--soak-length", type=int, default=16)
    p.add_argument("--only", default="throughput,memory,soak")
    p.add_argument("--pause-pid-file")
    p.add_argument("--json")
    args = p.parse_args()
    # SIGTERM unwinds like Ctrl-C, so a paused process is always continued.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scratch = tempfile.mkdtemp(prefix="gdb-pipe-", dir="/tmp")
    try:
        pipeline = args.pipeline
        if not os.path.exists(pipeline):
            print(f"{pipeline} is missing: using random weights of the same shapes", file=sys.stderr)
            pipeline = random_pipeline(args.bin, scratch)
        results = {"pipeline": pipeline}
        wanted = args.only.split(",")
        if "throughput" in wanted:
            t = results["throughput"] = throughput(args, pipeline)
            print(f"throughput{' (stage 1 only)' if args.no_sr else ''}: {t['jobs']} jobs x {t['length']} frames: "
                  f"together {t['together_s']:.2f} s "
                  f"({t['together_fps']:.2f} frames/s), one by one {t['one_by_one_s']:.2f} s "
                  f"({t['one_by_one_fps']:.2f} frames/s): {t['speedup']:.2f}x")
        if "sweep" in wanted:
            w = results["sweep"] = sweep(args, pipeline)
            print(f"sweep: {w['jobs']} jobs x {w['length']} frames submitted together: " + ", ".join(
                f"--max-batch-jobs {m}: {w['median_s'][m]:.2f} s ({w['speedup_vs_1'][m]:.2f}x)" for m in w["median_s"]))
        if "memory" in wanted:
            m = results["memory"] = memory(args, pipeline)
            print(f"memory: {m['length']}-frame job in {m['seconds']:.1f} s: RSS idle {mb(m['rss_idle'])}, "
                  f"peak {mb(m['rss_peak'])}, after {mb(m['rss_after'])}")
        if "soak" in wanted:
            s = results["soak"] = soak(args, pipeline)
            print(f"soak: {s['jobs']} jobs x {s['length']} frames: RSS after job 1 {mb(s['rss_first'])}, "
                  f"job 10 {mb(s['rss_10'])}, job {s['jobs']} {mb(s['rss_last'])}, max {mb(s['rss_max'])}; "
                  f"trend after job 10: {s['slope_bytes_per_job'] / 1024:+.1f} KiB/job; anonymous memory of griditd "
                  f"{mb(s['griditd_anon'][9])} at job 10, {mb(s['griditd_anon'][-1])} at the end "
                  f"({s['griditd_anon_slope'] / 1024:+.2f} KiB/job), of the worker {mb(s['worker_anon'][9])}, "
                  f"{mb(s['worker_anon'][-1])} ({s['worker_anon_slope'] / 1024:+.2f} KiB/job)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
