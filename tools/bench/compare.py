"""Compare gridit (Swift) with PyTorch on the same DiT forward passes and SD VAE passes.

For every config the implementations are run ALTERNATELY (gridit, pytorch, ..., then the reverse
order) for --rounds rounds, each invocation timing --repeat passes after --warmup untimed ones,
so slow drifts of the machine (thermal, other load) hit all sides alike. All per-pass times of all
rounds are pooled and the median is reported.

Example (from the repository root, after `swift build -c release --product gridit-bench`):

    <venv>/bin/python tools/bench/compare.py --configs DiT-XL/2@64 --rounds 3 --repeat 3 --threads 2 --markdown
    <venv>/bin/python tools/bench/compare.py --configs DiT-XL/2@64 --bf16 --rel-error --markdown
    <venv>/bin/python tools/bench/compare.py --configs vae-decode@256 --markdown

Configs:
    MODEL@INPUT[xBATCH]             a preset, e.g. DiT-XL/2@64, DiT-B/2@32x2
    arch:D,H,NH,P@INPUT[xBATCH][cC] an explicit DiT (depth, hidden, heads, patch; C input channels),
                                    e.g. arch:6,192,3,4@64x8c1
    vae-decode@SIZE[xBATCH]         the SD VAE decoder on a SIZE x SIZE image (latent SIZE/8)
    vae-encode@SIZE[xBATCH]         the SD VAE encoder
DiT configs run gridit and the PyTorch reference (tools/bench/pytorch_dit.py, SDPA attention); VAE
configs run gridit, the PyTorch reference VAE and diffusers' AutoencoderKL
(tools/bench/pytorch_vae.py). --bf16 passes --bf16 to every side (PyTorch: CPU autocast to
bfloat16). Every side prints one JSON line (the last stdout line starting with "{") with
"times_ms" and "median_ms".
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
from dit_reference import DiTConfig, flops_per_forward, preset  # noqa: E402

DEFAULT_CONFIGS = ["DiT-XL/2@64x1", "DiT-B/2@32x1", "DiT-S/2@32x1"]


@dataclass
class BenchConfig:
    text: str
    kind: str            # "dit" or "vae"
    model: str           # preset name, "D,H,NH,P" for arch:, or "decode" / "encode"
    input_size: int
    batch: int
    in_channels: int = 4

    @classmethod
    def parse(cls, text: str) -> "BenchConfig":
        try:
            model, rest = text.split("@")
            in_channels = 4
            if "c" in rest:
                rest, ch = rest.split("c")
                in_channels = int(ch)
            size, batch = rest.split("x") if "x" in rest else (rest, "1")
            if model in ("vae-decode", "vae-encode"):
                return cls(text, "vae", model.removeprefix("vae-"), int(size), int(batch))
            if model.startswith("arch:"):
                model = model.removeprefix("arch:")
            cfg = cls(text, "dit", model, int(size), int(batch), in_channels)
            cfg.dit_config()  # validate
            return cfg
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"bad config {text!r} ({e}); see --help for the forms")

    def dit_config(self) -> DiTConfig:
        if "," in self.model:
            depth, hidden, heads, patch = (int(v) for v in self.model.split(","))
            cfg = DiTConfig(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch,
                            input_size=self.input_size, in_channels=self.in_channels)
            cfg.validate()
            return cfg
        return preset(self.model, input_size=self.input_size, in_channels=self.in_channels)

    @property
    def flops(self) -> float | None:
        return flops_per_forward(self.dit_config(), self.batch) if self.kind == "dit" else None

    def model_args(self) -> list:
        if self.kind == "vae":
            return ["--size", str(self.input_size), "--batch", str(self.batch)] + (
                ["--encode"] if self.model == "encode" else [])
        arch = ["--arch", self.model] if "," in self.model else ["--model", self.model]
        return arch + ["--input-size", str(self.input_size), "--batch", str(self.batch),
                       "--in-channels", str(self.in_channels)]


@dataclass
class Samples:
    times_ms: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None


def sides(cfg: BenchConfig, args) -> dict:
    common = cfg.model_args() + ["--threads", str(args.threads), "--repeat", str(args.repeat), "--json"]
    if args.warmup is not None:
        common += ["--warmup", str(args.warmup)]
    if args.bf16:
        common.append("--bf16")
    if cfg.kind == "dit":
        gridit = [args.gridit, "speed"] + common + (["--compare-fp32"] if args.rel_error and args.bf16 else [])
        s = {"gridit": gridit, "pytorch": [args.python, str(HERE / "pytorch_dit.py")] + common}
    else:
        s = {"gridit": [args.gridit, "vae"] + common}
        for impl in ("reference", "diffusers"):
            s[f"pytorch-{impl}"] = [args.python, str(HERE / "pytorch_vae.py"), "--impl", impl] + common
    if args.only:
        s = {k: v for k, v in s.items() if k in args.only}
    return s


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
        print(f"  {impl}: median {result.get('median_ms')} ms {result['times_ms']}", file=sys.stderr, flush=True)
    return result


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description="gridit vs PyTorch benchmark (DiT forward, SD VAE)",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--configs", nargs="+", type=BenchConfig.parse,
                    default=[BenchConfig.parse(c) for c in DEFAULT_CONFIGS], metavar="CONFIG")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per config")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per invocation")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed passes per invocation (passed to every side only if given)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 on every side (PyTorch: CPU autocast)")
    ap.add_argument("--rel-error", action="store_true",
                    help="with --bf16: gridit also reports the relative error of its bf16 output vs fp32")
    ap.add_argument("--gridit", default=".build/release/gridit-bench", help="Swift bench binary")
    ap.add_argument("--python", default=sys.executable, help="python with torch (and diffusers) for the baselines")
    ap.add_argument("--only", nargs="+", help="run only these sides (gridit, pytorch, pytorch-reference, ...)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per invocation")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--json-out", type=Path, help="also write all raw results here")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()

    rows, raw = [], []
    for cfg in args.configs:
        cmds = sides(cfg, args)
        samples = {impl: Samples() for impl in cmds}
        for rnd in range(args.rounds):
            # alternate which side goes first, so none always runs on a "cold" machine
            order = list(cmds) if rnd % 2 == 0 else list(reversed(cmds))
            for impl in order:
                try:
                    res = run_one(cmds[impl], impl, args.timeout, not args.quiet)
                except (RuntimeError, OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                    print(f"warning: {impl} {cfg.text}: {e}", file=sys.stderr)
                    samples[impl].failures.append(str(e))
                    continue
                samples[impl].times_ms.extend(float(v) for v in res["times_ms"])
                for key in ("rel_error_vs_fp32", "precision", "backend", "peak_resident_mb"):
                    if key in res:
                        samples[impl].extra.setdefault(key, []).append(res[key])
                raw.append({"round": rnd, "config": cfg.text, **res})
        rows.append((cfg, samples))

    precision = "bf16" if args.bf16 else "fp32"
    header = ["config", "threads", "precision", "impl", "median ms", "n", "GFLOP/s", "gridit / this"]
    if args.rel_error:
        header.append("bf16 rel. error vs fp32")
    table = []
    for cfg, samples in rows:
        g = samples.get("gridit").median if "gridit" in samples else None
        for impl, s in samples.items():
            med = s.median
            gf = cfg.flops / (med * 1e6) if cfg.flops and med else None
            ratio = g / med if g and med and impl != "gridit" else None
            eff = s.extra.get("precision", [precision])[-1]
            line = [cfg.text, str(args.threads), eff, impl, fmt(med, ".1f"), str(len(s.times_ms)), fmt(gf, ".1f"),
                    fmt(ratio, ".2f")]
            if args.rel_error:
                errs = s.extra.get("rel_error_vs_fp32")
                line.append(fmt(max(errs), ".2e") if errs else "-")
            table.append(line)
    warm = "default" if args.warmup is None else str(args.warmup)
    note = (f"{precision}; medians over {args.rounds} alternating rounds x {args.repeat} passes (warm-up: {warm}); "
            "gridit / this < 1 means gridit is faster")
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
        args.json_out.write_text(json.dumps({"runs": raw}, indent=2) + "\n")
    failed = any(len(s.times_ms) == 0 for _, samples in rows for s in samples.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
