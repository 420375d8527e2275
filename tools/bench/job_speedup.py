#!/usr/bin/env python3
"""Wall time of one sequence job (`griditd run`, release build, one process per run) under several
settings or builds, rounds alternating, medians reported, each against the first case.

A case is NAME=GRIDITD plus that run's flags; the first is the baseline. Issue 15's target, a
128-frame job at least 4x faster than the defaults it was filed at (DDPM 100 / DDPM 50), with a
build of the commit before a change kept as the baseline's binary:

    swift build -c release --product griditd
    python3 tools/bench/job_speedup.py --pipeline models/moving-digits/pipeline.json --rounds 3 \\
        --case "ddpm-100/50=/tmp/griditd-before --sampler ddpm --steps 100 --sr-sampler ddpm --sr-steps 50 --precision fp32" \\
        --case "defaults=.build/release/griditd"

(The bundled pipeline's default precision is bf16 since 2026-12-06: the baseline asks for fp32, the
arithmetic of the defaults it stands for.)

Every run of a case must write the same frames (same seed): the script checks it, so a faster
case that changed the output of its own earlier rounds is caught.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shlex
import shutil
import statistics
import sys
import tempfile

from e2e_bench import run_job  # one `griditd run`, timed to its exit


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def frames_digest(folder: str) -> str:
    h = hashlib.sha256()
    frames = os.path.join(folder, "frames")
    for name in sorted(os.listdir(frames)):
        with open(os.path.join(frames, name), "rb") as f:
            h.update(name.encode() + f.read())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--case", action="append", required=True, help="NAME=GRIDITD [flags...] (the first is the baseline)")
    args = ap.parse_args()

    cases = []
    for spec in args.case:
        name, sep, command = spec.partition("=")
        words = shlex.split(command)
        if not sep or not name or not words:
            ap.error(f"--case wants NAME=GRIDITD [flags...], got {spec!r}")
        if not os.access(words[0], os.X_OK):
            ap.error(f"case {name}: {words[0]} is not an executable griditd (build it first)")
        cases.append((name, words))

    print(f"# {cpu_name()}, {os.cpu_count()} CPUs, {args.threads} threads, {args.length} frames, seed {args.seed}")
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    digests: dict[str, set[str]] = {name: set() for name, _ in cases}
    work = tempfile.mkdtemp(prefix="gridit-speedup-")
    try:
        for r in range(args.rounds):
            # Alternating: the order is reversed every other round, so no case always runs first.
            for name, words in cases if r % 2 == 0 else list(reversed(cases)):
                out = os.path.join(work, f"{name.replace('/', '_')}-{r}")
                flags = words[1:] + ["--length", str(args.length), "--seed", str(args.seed),
                                     "--threads", str(args.threads)]
                busy0, own0 = busy_seconds(), children_cpu()
                seconds = run_job(words[0], args.pipeline, out, flags)["wall"]
                # CPU time the machine spent on anything but this run: other load skews the figure.
                others = max(0.0, busy_seconds() - busy0 - (children_cpu() - own0))
                times[name].append(seconds)
                digests[name].add(frames_digest(out))
                shutil.rmtree(out)
                loaded = f"  (other load: {others:.2f} CPU-s)" if others > 0.05 * seconds else ""
                print(f"round {r + 1} {name}: {seconds:.2f} s{loaded}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(times[cases[0][0]])
    print(f"\n| case | median s | runs | speed-up vs {cases[0][0]} |\n|---|---:|---|---:|")
    for name, _ in cases:
        m = statistics.median(times[name])
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"| {name} | {m:.2f} | {runs} | {base / m:.2f}x |")
    unstable = [name for name in digests if len(digests[name]) != 1]
    if unstable:
        print(f"FAILED: frames differ between rounds of {', '.join(unstable)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
