#!/usr/bin/env python3
"""Resident memory of a bf16-bound DiT (default DiT-XL/2 at 64, random weights), side by side.

Each case runs `gridit-bench memory --json --forward` in a fresh process (resident memory is a
per-process figure) and reports VmRSS after binding and after one forward, VmHWM (the peak), the
binding time and the times of a first and a second forward (the second: the products alone):

* baseline: an F32 checkpoint bound in bf16 keeping the file pages read for packing resident
  (`--keep-pages`, the loader before page release);
* the same checkpoint bound in bf16 with page release (today's loader);
* its BF16 conversion (`gridit-bench memory --convert-to`, what `griditd models convert
  --precision bf16` stores), bound in bf16 from its bits;
* the F32 checkpoint in fp32 (weights read in place from the mapping), for reference.

The cases alternate round by round; medians are reported. The checkpoints are written under
--dir (default: a new folder in /tmp) and removed at the end unless --keep.

    swift build -c release --product gridit-bench
    python3 tools/bench/memory_bench.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile

CASES = [
    ("F32 file, bf16, pages kept (baseline)", "f32", ["--precision", "bf16", "--keep-pages"]),
    ("F32 file, bf16, pages released", "f32", ["--precision", "bf16"]),
    ("BF16 file (converted), bf16", "bf16", ["--precision", "bf16"]),
    ("F32 file, fp32 (weights in place)", "f32", ["--precision", "fp32"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=".build/release/gridit-bench")
    ap.add_argument("--model", default="DiT-XL/2")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", help="where to write the checkpoints (default: a new folder in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints")
    ap.add_argument("--skip-fp32", action="store_true", help="leave out the fp32 reference case")
    ap.add_argument("--json", help="write every record here")
    args = ap.parse_args()

    folder = args.dir or tempfile.mkdtemp(prefix="gridit-memory-", dir="/tmp")
    os.makedirs(folder, exist_ok=True)
    files = {"f32": os.path.join(folder, "dit.safetensors"), "bf16": os.path.join(folder, "dit-bf16.safetensors")}
    base = [args.bench, "memory", "--model", args.model, "--input-size", str(args.input_size)]
    try:
        if not os.path.exists(files["f32"]):
            subprocess.run(base + ["--checkpoint", files["f32"], "--create", "--convert-to", files["bf16"]], check=True)
        elif not os.path.exists(files["bf16"]):
            subprocess.run(base + ["--checkpoint", files["f32"], "--convert-to", files["bf16"]], check=True)
        cases = [c for c in CASES if not (args.skip_fp32 and c[2][1] == "fp32")]
        records: dict[str, list[dict]] = {name: [] for name, _, _ in cases}
        for r in range(args.rounds):
            for name, file, flags in cases:
                out = subprocess.run(
                    base + ["--checkpoint", files[file], "--forward", "--json", "--threads", str(args.threads)] + flags,
                    check=True, capture_output=True, text=True).stdout
                record = json.loads(out.strip().splitlines()[-1])
                records[name].append(record)
                print(f"round {r + 1} {name}: bound {record['rss_bound'] / 1e6:.1f} MB, "
                      f"peak {record['hwm'] / 1e6:.1f} MB", flush=True)
        sizes = {k: os.path.getsize(v) for k, v in files.items()}
        print()
        print(f"{args.model} @ {args.input_size}, random weights; F32 file {sizes['f32'] / 1e9:.2f} GB, "
              f"BF16 file {sizes['bf16'] / 1e9:.2f} GB; medians of {args.rounds} rounds, {args.threads} threads")
        print()
        print("| case | precision run | resident after binding | peak after binding | resident after one forward "
              "| peak (VmHWM) | binding | first forward | second forward |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, _, _ in cases:
            rs = records[name]

            def med(key: str) -> float:
                return statistics.median(x[key] for x in rs)

            print(f"| {name} | {rs[0]['precision']} | {med('rss_bound') / 1e6:.1f} MB | {med('hwm_bound') / 1e6:.1f} MB "
                  f"| {med('rss_forward') / 1e6:.1f} MB | {med('hwm') / 1e6:.1f} MB | {med('bind_s'):.2f} s "
                  f"| {med('first_forward_s'):.2f} s | {med('forward_s'):.2f} s |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"sizes": sizes, "records": records}, f, indent=1)
    finally:
        if not args.keep:
            for path in files.values():
                if os.path.exists(path):
                    os.remove(path)
            if not args.dir:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
