#!/usr/bin/env python3
"""End-to-end cost of a sequence job, gridit against the official algorithm, on one pipeline.

Runs `griditd run` (release build) as a user does, one process per run, each timed from start
to exit with its peak resident memory (wait4's ru_maxrss):

* gridit mode, fp32 and bf16, `--length L` (default 128), the pipeline's default steps;
* the official algorithm on the same models and step counts (`--mode official`: its 16 + 8N frame
  assembly, the 8-bit PNG (and VAE) round trip of every grid, the discarded rows), asked for the
  length that gives at least L frames (the official N = ((L - 8) // 12) + 1);
* both stage 1 only (`--no-sr`), where the algorithms differ.

The official scripts also run every forward on a batch of two identical halves (a no-op
classifier-free guidance, gridit-method.md §1.5; stage 1's samplers and scripts/sample_sr.py
alike), which gridit's official mode does not copy, and super-resolve one frame per invocation
(sample_sr.py: n = 1), so the official runs here use `--max-batch 1`. The doubled batch is
measured as the time of one forward at batch 2 minus batch 1 (`gridit-bench speed`, same threads;
stage 2 as the same architecture with its 2 input channels, noisy frame + condition), times the
official run's model evaluations of that stage, and added to the official runs. The runs
alternate round by round; medians are reported.

    swift build -c release --product griditd && swift build -c release --product gridit-bench
    python3 tools/bench/e2e_bench.py --pipeline models/moving-digits/pipeline.json --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run_job(griditd: str, pipeline: str, out: str, args: list[str]) -> dict:
    """One `griditd run`: wall seconds, peak RSS (MB) and the engine's own stage timings."""
    cmd = [griditd, "run", "--pipeline", pipeline, "--out", out, "--progress", "none", "--json"] + args
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        start = time.monotonic()
        p = subprocess.Popen(cmd, stdout=out_f, stderr=err_f)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.monotonic() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read()
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{stderr.decode()[-2000:]}")
    summary = json.loads(stdout)
    t = summary["timings"]
    return {"wall": wall, "frames": summary["frames"], "stage1": t["stage1_seconds"],
            "stage2": t["stage2_seconds"], "rss_mb": usage.ru_maxrss / 1024}


def forward_ms(bench: str, arch: str, size: int, channels: int, batch: int, threads: int) -> float:
    out = subprocess.run([bench, "speed", "--arch", arch, "--input-size", str(size), "--in-channels", str(channels),
                          "--batch", str(batch), "--threads", str(threads), "--repeat", "10", "--json"],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["median_ms"])


def plan(griditd: str, pipeline: str, args: list[str]) -> dict:
    out = subprocess.run([griditd, "run", "--pipeline", pipeline, "--dry-run", "--json"] + args,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", default=".build/release")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    griditd, bench = os.path.join(a.build, "griditd"), os.path.join(a.build, "gridit-bench")
    pipeline = os.path.abspath(a.pipeline)
    folder = os.path.dirname(pipeline)
    spec = json.load(open(pipeline))
    s1 = json.load(open(os.path.join(folder, spec["stage1"]["config"])))
    arch = f"{s1['depth']},{s1['hidden_size']},{s1['num_heads']},{s1['patch_size']}"

    # The official length whose 16 + 8N frames cover L: N = ((len - 8) // 12) + 1 >= ceil((L - 16) / 8).
    n = max(0, -(-(a.length - 16) // 8))
    official_length = 12 * (n - 1) + 8 if n > 0 else 16
    common = ["--seed", str(a.seed), "--threads", str(a.threads)]
    cases = {
        "gridit fp32": ["--length", str(a.length), "--precision", "fp32"],
        "gridit bf16": ["--length", str(a.length), "--precision", "bf16"],
        "official fp32": ["--length", str(official_length), "--mode", "official", "--max-batch", "1",
                          "--precision", "fp32"],
        "gridit fp32, stage 1 only": ["--length", str(a.length), "--no-sr", "--precision", "fp32"],
        "official fp32, stage 1 only": ["--length", str(official_length), "--mode", "official", "--no-sr",
                                        "--max-batch", "1", "--precision", "fp32"],
    }
    plans = {name: plan(griditd, pipeline, args) for name, args in cases.items()}
    evals = {name: p["stage1"]["evaluations"] for name, p in plans.items()}
    evals2 = {name: (p.get("stage2") or {}).get("evaluations", 0) for name, p in plans.items()}
    s2 = json.load(open(os.path.join(folder, spec["stage2"]["config"]))) if spec.get("stage2") else None
    arch2 = s2 and f"{s2['depth']},{s2['hidden_size']},{s2['num_heads']},{s2['patch_size']}"

    results: dict[str, list[dict]] = {name: [] for name in cases}
    doubled: list[float] = []
    doubled2: list[float] = []
    tmp = tempfile.mkdtemp(prefix="gridit-e2e-")
    try:
        for r in range(a.rounds):
            names = list(cases) if r % 2 == 0 else list(reversed(cases))
            for name in names:
                out = os.path.join(tmp, f"r{r}-{len(results[name])}-{name.replace(' ', '_').replace(',', '')}")
                results[name].append(run_job(griditd, pipeline, out, cases[name] + common))
                shutil.rmtree(out)
                print(f"round {r + 1} {name}: {results[name][-1]['wall']:.1f} s", file=sys.stderr)
            b1 = forward_ms(bench, arch, spec["grid"]["k"] * spec["grid"]["frame_size"], spec["grid"]["channels"], 1,
                            a.threads)
            b2 = forward_ms(bench, arch, spec["grid"]["k"] * spec["grid"]["frame_size"], spec["grid"]["channels"], 2,
                            a.threads)
            doubled.append((b2 - b1) / 1000)
            if s2:
                size2, ch2 = s2["input_size"], s2["in_channels"] + s2["condition_channels"]
                c1 = forward_ms(bench, arch2, size2, ch2, 1, a.threads)
                c2 = forward_ms(bench, arch2, size2, ch2, 2, a.threads)
                doubled2.append((c2 - c1) / 1000)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    extra = statistics.median(doubled)
    extra2 = statistics.median(doubled2) if doubled2 else 0.0
    med = {name: {k: statistics.median(x[k] for x in rs) for k in ("wall", "stage1", "stage2")}
           for name, rs in results.items()}
    for name in med:
        med[name]["frames"] = results[name][0]["frames"]
        med[name]["rss_mb"] = max(x["rss_mb"] for x in results[name])
        med[name]["stage1_evaluations"] = evals[name]
        med[name]["stage2_evaluations"] = evals2[name]
        med[name]["doubled_batch_s"] = ((extra * evals[name] + extra2 * evals2[name]) if name.startswith("official")
                                        else 0.0)

    print(f"\n{a.rounds} rounds, {a.threads} threads; a forward at batch 2 minus batch 1: stage 1 {1000 * extra:.2f} ms, "
          f"stage 2 {1000 * extra2:.2f} ms (medians of {len(doubled)})\n")
    print("| run | frames | stage-1 / stage-2 evaluations | wall (s) | stage 1 (s) | stage 2 (s) | + doubled batch (s) | "
          "official cost (s) | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in med.items():
        cost = m["wall"] + m["doubled_batch_s"]
        print(f"| {name} | {m['frames']} | {m['stage1_evaluations']} / {m['stage2_evaluations']} | {m['wall']:.1f} | {m['stage1']:.1f} | "
              f"{m['stage2']:.1f} | {m['doubled_batch_s']:.1f} | {cost:.1f} | {m['rss_mb']:.0f} |")
    whole = (med["official fp32"]["wall"] + med["official fp32"]["doubled_batch_s"]) / med["gridit fp32"]["wall"]
    s1only = ((med["official fp32, stage 1 only"]["wall"] + med["official fp32, stage 1 only"]["doubled_batch_s"])
              / med["gridit fp32, stage 1 only"]["wall"])
    print(f"\nofficial cost / gridit: whole pipeline {whole:.2f}x, stage 1 only {s1only:.2f}x; "
          f"bf16 / fp32 (gridit): {med['gridit bf16']['wall'] / med['gridit fp32']['wall']:.2f}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"median": med, "runs": results, "doubled_batch_extra_s": {"stage1": doubled, "stage2": doubled2}},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
