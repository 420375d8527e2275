#!/usr/bin/env python3
"""Crash cycles against the real griditd and griditctl binaries.

griditd is killed with SIGKILL at random moments while jobs run (and, with --worker-kills, its
engine worker process too), restarted each time, while a client keeps submitting with
idempotency keys (retrying a submit whose answer a kill swallowed). At the end every job must
have finished, and the runner checks what the issue (16) asks:

  lost        acknowledged submits that are not in the queue            must be 0
  duplicated  jobs for one idempotency key, beyond the first            must be 0
  dead        jobs made dead (or failed) although only griditd died     must be 0
  crashes     crashes counted against jobs (the engine never crashed)   must be 0
  differing   jobs whose output files differ from an uninterrupted run  must be 0

The uninterrupted run is the same requests on a fresh state directory, without kills. Exit
status 0 when every check holds, 1 otherwise; --json writes the numbers.

  swift build --product griditd && swift build --product griditctl
  tools/chaos/chaos.py                       # bounded: 20 kills, tiny pipeline (what CI runs)
  tools/chaos/chaos.py --kills 60 --jobs 24 --worker-kills 10 --bin .build/release

Needs only the Python standard library. Everything lives in a temporary folder under /tmp,
removed at the end unless --keep.
"""
import os
import random
import shutil
import signal
import sys
import tempfile
import time

from chaoslib import GriditdProcess, crash_cycle_parser, output_digests, report

def main():
    p = crash_cycle_parser(__doc__, "griditd", jobs=8, length=200, seed=16)
    p.add_argument("--worker-kills", type=int, default=0, help="SIGKILLs of the engine worker besides (default 0)")
    args = p.parse_args()

    rng = random.Random(args.seed)
    requests = [{"length": args.length, "seed": 1000 + i, "key": f"chaos-{args.seed}-{i}"} for i in range(args.jobs)]
    where = tempfile.mkdtemp(prefix="gridit-chaos-", dir="/tmp")
    extra = ["--max-batch", "4"]
    numbers = {"kills": 0, "kills_while_running": 0, "worker_kills": 0, "jobs": args.jobs, "length": args.length}
    started = []
    began = time.monotonic()
    try:
        # The uninterrupted run.
        reference = GriditdProcess(args.bin, os.path.join(where, "reference"), args.pipeline, extra)
        started.append(reference)
        reference.start()
        ref_ids = [reference.submit(r) for r in requests]
        ref_jobs = reference.wait_all(ref_ids, args.timeout)
        expected = [output_digests(ref_jobs[i]["output_dir"]) for i in ref_ids]
        reference.stop()
        numbers["reference_seconds"] = round(time.monotonic() - began, 1)

        # The same requests, with griditd killed again and again.
        chaos_began = time.monotonic()
        daemon = GriditdProcess(args.bin, os.path.join(where, "chaos"), args.pipeline, extra)
        started.append(daemon)
        daemon.start()
        acknowledged = {}  # key -> id
        pending = list(requests)
        per_cycle = max(1, -(-len(pending) // max(1, args.kills)))
        worker_kill_cycles = set(rng.sample(range(args.kills), min(args.worker_kills, args.kills)))
        for cycle in range(args.kills):
            for request in pending[:per_cycle]:
                acknowledged[request["key"]] = daemon.submit(request)
            pending = pending[per_cycle:]
            time.sleep(rng.uniform(args.min_run, args.max_run))
            if cycle in worker_kill_cycles:
                pid = daemon.worker_pid()
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    numbers["worker_kills"] += 1
                    time.sleep(rng.uniform(args.min_run, args.max_run))
            if daemon.running():
                numbers["kills_while_running"] += 1
            daemon.kill()
            numbers["kills"] += 1
            daemon.start()
        for request in pending:
            acknowledged[request["key"]] = daemon.submit(request)
        ids = [acknowledged[r["key"]] for r in requests]
        jobs = daemon.wait_all(ids, args.timeout)
        numbers["chaos_seconds"] = round(time.monotonic() - chaos_began, 1)

        # The checks.
        numbers["lost"] = sum(1 for i in ids if i not in jobs)
        numbers["duplicated"] = len(jobs) - len(set(ids))
        numbers["dead"] = sum(1 for i in ids if jobs[i]["state"] in ("dead", "failed"))
        numbers["not_succeeded"] = sum(1 for i in ids if jobs[i]["state"] != "succeeded")
        numbers["crashes"] = sum(jobs[i]["crash_count"] for i in ids)
        numbers["attempts_max"] = max(jobs[i]["attempt"] for i in ids)
        numbers["interruptions"] = sum(
            sum(1 for e in daemon.shown(i).get("errors") or [] if e["class"] == "interrupted") for i in ids)
        numbers["differing"] = sum(
            1 for i, want in zip(ids, expected)
            if jobs[i]["state"] != "succeeded" or output_digests(jobs[i]["output_dir"]) != want)
        # What went wrong, for the log: each job that counted a crash, an attempt or did not succeed.
        numbers["problems"] = [
            {"id": i, "state": jobs[i]["state"], "crash_count": jobs[i]["crash_count"], "attempt": jobs[i]["attempt"],
             "errors": [e for e in daemon.shown(i).get("errors") or [] if e["class"] != "interrupted"]}
            for i in ids
            if jobs[i]["state"] != "succeeded" or jobs[i]["crash_count"] or jobs[i]["attempt"] > 1]
        numbers["start_seconds_max"] = round(max(daemon.starts), 2)
        numbers["start_seconds_mean"] = round(sum(daemon.starts) / len(daemon.starts), 2)
        daemon.stop()
    finally:
        # Only the griditd processes started here (their workers die with them).
        for d in started:
            if d.proc and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        if args.keep:
            print(f"kept {where}", file=sys.stderr)
        else:
            shutil.rmtree(where, ignore_errors=True)

    ok = all(numbers[k] == 0 for k in ("lost", "duplicated", "dead", "not_succeeded", "crashes", "differing"))
    ok = ok and numbers["kills"] == args.kills
    return report(numbers, ok, args.json)


if __name__ == "__main__":
    sys.exit(main())
