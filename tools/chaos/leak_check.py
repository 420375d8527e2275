#!/usr/bin/env python3
"""Leak check of griditd: resident memory over thousands of calls to every GET route.

Starts a griditd of its own (temporary state directory and socket), imports the tiny test
pipeline, runs one job so that every route has something to show (a finished job, its files and
events, a loaded model), then calls each GET route of docs/openapi.yaml --calls times, one
connection per call, and reads griditd's VmRSS before and after. A route whose calls keep more
than --max-kb-per-call on average fails the check (exit 1).

Kernel threads and zombies have an empty /proc/<pid>/maps, which is what the leak of issue 16
needed; --zombies children are left unreaped during the check, so the check means the same in a
container that shows no kernel threads.

  swift build -c release --product griditd
  tools/chaos/leak_check.py                       # 2,000 calls per route (the full check)
  tools/chaos/leak_check.py --calls 300 --warmup 300   # the bounded form CI runs
  tools/chaos/leak_check.py --bin-dir .build/debug --json leak.json

Needs only the Python standard library.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

from chaoslib import ROOT, griditd, request

PIPELINE = os.path.join(ROOT, "Tests/GriditEngineTests/Fixtures/pixel/pipeline.json")


def get_routes():
    """The GET templates of docs/openapi.yaml, in document order."""
    routes, current = [], None
    with open(os.path.join(ROOT, "docs/openapi.yaml")) as f:
        for line in f:
            m = re.match(r"^  (/\S+):\s*$", line)
            if m:
                current = m.group(1)
            elif current and re.match(r"^    get:\s*$", line):
                routes.append(current)
    return routes


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", default=os.path.join(ROOT, ".build/release"))
    p.add_argument("--calls", type=int, default=2000, help="measured calls per route")
    # Caches fill first (SQLite's page cache per reader connection, malloc's arenas per thread):
    # status grows ~3 MB over its first thousand calls, then stays flat.
    p.add_argument("--warmup", type=int, default=500, help="calls per route before measuring")
    p.add_argument("--max-kb-per-call", type=float, default=1.0)
    p.add_argument("--zombies", type=int, default=16)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    zombies = [subprocess.Popen(["/bin/true"]) for _ in range(args.zombies)]  # never waited on
    try:
        with griditd(args.bin_dir, PIPELINE, "tiny:latest") as (sock, daemon):
            return measure(args, sock, daemon)
    finally:
        for z in zombies:
            z.wait()


def measure(args, sock, daemon):
    """Runs one job (so that every route has something to show), then calls every GET route."""
    status, body = request(sock, "POST", "/v1/jobs", json.dumps({"length": 8, "parameters": {"seed": 1}}).encode())
    assert status == 201, body
    job = json.loads(body)["job"]["id"]
    while json.loads(request(sock, "GET", f"/v1/jobs/{job}")[1])["state"] not in ("succeeded", "failed", "dead"):
        time.sleep(0.1)
    values = {"{id}": str(job), "{ref}": "tiny:latest", "{path}": "sequence.json"}

    results = []
    for template in get_routes():
        path = template
        for k, v in values.items():
            path = path.replace(k, v)
        for _ in range(args.warmup):
            request(sock, "GET", path)
        before, started = rss_kb(daemon.pid), time.time()
        statuses = set()
        for _ in range(args.calls):
            statuses.add(request(sock, "GET", path)[0])
        after, seconds = rss_kb(daemon.pid), time.time() - started
        per_call = (after - before) / args.calls
        results.append({"route": template, "path": path, "calls": args.calls, "statuses": sorted(statuses),
                        "rss_before_kb": before, "rss_after_kb": after, "kb_per_call": round(per_call, 3),
                        "ms_per_call": round(seconds / args.calls * 1000, 2)})
        print(f"{template:32} {sorted(statuses)} rss {before / 1024:7.1f} -> {after / 1024:7.1f} MB "
              f"({per_call:+.3f} KB/call, {seconds / args.calls * 1000:.1f} ms/call)", flush=True)
    bad = [r for r in results if r["kb_per_call"] > args.max_kb_per_call or any(s >= 500 for s in r["statuses"])]
    summary = {"calls_per_route": args.calls, "max_kb_per_call": args.max_kb_per_call, "routes": results,
               "failed": [r["route"] for r in bad]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    if bad:
        print("FAIL: " + ", ".join(r["route"] for r in bad), file=sys.stderr)
        return 1
    print(f"ok: {len(results)} GET routes x {args.calls} calls, none above {args.max_kb_per_call} KB/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
