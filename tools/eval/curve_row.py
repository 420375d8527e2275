"""One learning-curve row (tools/train/README.md, "Learning curve") from a report's JSON files.

    python tools/eval/curve_row.py PIPELINE_DIR WORK_DIR [--name NAME]

Reads PIPELINE_DIR/training.json (steps, core-hours of stage 1) and, from WORK_DIR as
tools/eval/report.sh writes it: proxy16.json (one 16-frame grid of stage 1 seen through the
bicubic x4, the check on which real data passes about 96%), gridit128.json (the whole pipeline,
128 frames, pipeline defaults) and, when present, i3d128.json (KVD of the same sequences).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def load(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline")
    ap.add_argument("work")
    ap.add_argument("--name", default="")
    a = ap.parse_args(argv)
    s1 = load(os.path.join(a.pipeline, "training.json"))["stage1"]
    long = load(os.path.join(a.work, "gridit128.json"))
    proxy = load(os.path.join(a.work, "proxy16.json"))
    i3d = load(os.path.join(a.work, "i3d128.json"))
    if long is None or proxy is None:
        raise SystemExit(f"{a.work}: needs gridit128.json and proxy16.json (tools/eval/report.sh)")
    r = long["results"]["gridit, defaults"]
    p = proxy["stage1_rows"]["stage 1, 16 frames"]
    kvd = next(iter(i3d["results"].values())).get("kvd_x1e3") if i3d else None
    core = s1.get("core_hours", s1.get("hours"))
    cells = [a.name or os.path.basename(os.path.normpath(a.pipeline)), f"{core:.2f}", f"{s1['step']:,}",
             f"{100 * p['track_pass']:.0f}%", f"{100 * r['track_pass']:.0f}%", f"{100 * r['identity_kept']:.0f}%",
             f"{r['sharp_ratio']:.2f}", f"{r['warp_ratio']:.2f}", f"{r['pca_fd']:.2f}",
             f"{kvd:,.0f}" if kvd is not None else "–"]
    print("| bundle | stage-1 core-h | stage-1 steps | 16-frame track | 128-frame track | identity kept | "
          "sharpness | warp | PCA-FD | KVD ×1e3 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
