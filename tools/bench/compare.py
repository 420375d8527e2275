"""Compare gridit (Swift) with the PyTorch reference on the same DiT forward passes.

For every config the two implementations are run ALTERNATELY (gridit, pytorch, gridit, ...)
for --rounds rounds, each invocation timing --repeat forwards after --warmup untimed ones,
so slow drifts of the machine (thermal, other load) hit both sides alike. All per-forward
times of all rounds are pooled and the median is reported.

Example (from the repository root, after `swift build -c release`):

    <venv>/bin/python tools/bench/compare.py --rounds 3 --repeat 3 --threads 2 --markdown

Both sides must print one JSON line (the last line of stdout starting with "{"):
    {"impl": ..., "model": ..., "input_size": ..., "batch": ..., "threads": ...,
     "precision": ..., "times_ms": [...], "median_ms": ..., "gflops": ...}

Swift:   <gridit> speed --model M --input-size S --batch B --threads T --repeat K [--warmup W] --json
PyTorch: <python> tools/bench/pytorch_dit.py (same options)

--configs takes entries "MODEL@INPUT[xBATCH]", e.g. "DiT-XL/2@64" or "DiT-B/2@32x2".
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "reference"))
from dit_reference import flops_per_forward, preset  # noqa: E402

DEFAULT_CONFIGS = ["DiT-XL/2@64x1", "DiT-B/2@32x1", "DiT-S/2@32x1"]


@dataclass
class BenchConfig:
    model: str
    input_size: int
    batch: int

    @classmethod
    def parse(cls, text: str) -> "BenchConfig":
        try:
            model, rest = text.split("@")
            if "x" in rest:
                size, batch = rest.split("x")
            else:
                size, batch = rest, "1"
            cfg = cls(model, int(size), int(batch))
            preset(cfg.model, input_size=cfg.input_size)  # validate
            return cfg
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"bad config {text!r} ({e}); want MODEL@INPUT[xBATCH]")

    @property
    def flops(self) -> int:
        return flops_per_forward(preset(self.model, input_size=self.input_size), self.batch)


@dataclass
class Samples:
    times_ms: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None


def bench_args(cfg: BenchConfig, args) -> list:
    a = ["--model", cfg.model, "--input-size", str(cfg.input_size), "--batch", str(cfg.batch),
         "--threads", str(args.threads), "--repeat", str(args.repeat), "--json"]
    if args.warmup is not None:
        a += ["--warmup", str(args.warmup)]
    if args.bf16:
        a.append("--bf16")
    return a


def run_one(cmd: list, impl: str, timeout: float, verbose: bool) -> dict:
    if verbose:
        print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.lstrip().startswith("{")]
    if not lines:
        raise RuntimeError(f"{impl} printed no JSON line: {proc.stdout.strip()[-2000:]}")
    result = json.loads(lines[-1])
    if not result.get("times_ms"):
        raise RuntimeError(f"{impl} JSON has no times_ms: {lines[-1]}")
    if verbose:
        print(f"  {impl}: median {result.get('median_ms')} ms {result['times_ms']}",
              file=sys.stderr, flush=True)
    return result


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description="gridit vs PyTorch DiT forward benchmark")
    ap.add_argument("--configs", nargs="+", type=BenchConfig.parse,
                    default=[BenchConfig.parse(c) for c in DEFAULT_CONFIGS],
                    metavar="MODEL@INPUT[xBATCH]")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per config")
    ap.add_argument("--repeat", type=int, default=3, help="timed forwards per invocation")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed forwards per invocation (passed to both sides only if given; "
                         "each side's own default otherwise)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="pass --bf16 to both sides")
    ap.add_argument("--gridit", default=".build/release/gridit-bench", help="Swift bench binary")
    ap.add_argument("--python", default=sys.executable, help="python with torch for the baseline")
    ap.add_argument("--pytorch-script", default=str(HERE / "pytorch_dit.py"))
    ap.add_argument("--only", choices=["gridit", "pytorch"], help="run one side only")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per invocation")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--json-out", type=Path, help="also write all raw results here")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()

    sides = {
        "gridit": lambda c: [args.gridit, "speed"] + bench_args(c, args),
        "pytorch": lambda c: [args.python, args.pytorch_script] + bench_args(c, args),
    }
    if args.only:
        sides = {args.only: sides[args.only]}

    rows, raw = [], []
    for cfg in args.configs:
        samples = {impl: Samples() for impl in sides}
        for rnd in range(args.rounds):
            # alternate which side goes first, so neither always runs on a "cold" machine
            order = list(sides) if rnd % 2 == 0 else list(reversed(sides))
            for impl in order:
                try:
                    res = run_one(sides[impl](cfg), impl, args.timeout, not args.quiet)
                except (RuntimeError, OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                    print(f"warning: {impl} {cfg.model}@{cfg.input_size}: {e}", file=sys.stderr)
                    samples[impl].failures.append(str(e))
                    continue
                samples[impl].times_ms.extend(float(v) for v in res["times_ms"])
                raw.append({"round": rnd, **res})
        gflop = cfg.flops / 1e9
        row = {"model": cfg.model, "input": cfg.input_size, "batch": cfg.batch,
               "threads": args.threads, "gflop_per_forward": gflop}
        for impl in ("gridit", "pytorch"):
            s = samples.get(impl)
            med = s.median if s else None
            row[f"{impl}_ms"] = med
            row[f"{impl}_gflops"] = gflop / (med * 1e-3) if med else None
            row[f"{impl}_n"] = len(s.times_ms) if s else 0
        g, p = row["gridit_ms"], row["pytorch_ms"]
        row["ratio"] = g / p if g and p else None
        rows.append(row)

    header = ["model", "input", "batch", "threads", "gridit ms", "gridit GFLOP/s",
              "pytorch ms", "pytorch GFLOP/s", "gridit/pytorch"]
    table = [[r["model"], str(r["input"]), str(r["batch"]), str(r["threads"]),
              fmt(r["gridit_ms"], ".1f"), fmt(r["gridit_gflops"], ".1f"),
              fmt(r["pytorch_ms"], ".1f"), fmt(r["pytorch_gflops"], ".1f"),
              fmt(r["ratio"], ".2f")] for r in rows]
    precision = "bf16" if args.bf16 else "fp32"
    warm = "default" if args.warmup is None else str(args.warmup)
    note = (f"{precision}; medians over {args.rounds} alternating rounds x {args.repeat} "
            f"forwards (warm-up: {warm}); ratio < 1 means gridit is faster")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if i < 4 else "---:" for i in range(len(header))) + "|")
        for t in table:
            print("| " + " | ".join(t) + " |")
        print(f"\n{note}")
    else:
        widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
        print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for t in table:
            print("  ".join(c.rjust(w) for c, w in zip(t, widths)))
        print(note)
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": rows, "runs": raw}, indent=2) + "\n")
    failed = any(r[f"{impl}_n"] == 0 for r in rows for impl in sides)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
