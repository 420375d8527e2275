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
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "Tests/GriditEngineTests/Fixtures/pixel/pipeline.json")
TERMINAL = ("succeeded", "failed", "canceled", "dead")


class Griditd:
    """One state directory, and the griditd serving it (started and killed as told)."""

    def __init__(self, bin_dir, where, pipeline, extra):
        self.bin = bin_dir
        self.state = os.path.join(where, "state")
        self.socket = os.path.join(where, "s.sock")
        self.log_path = os.path.join(where, "griditd.log")
        self.extra = extra
        self.proc = None
        self.starts = []  # seconds from start to the first answer, per start
        subprocess.run([os.path.join(bin_dir, "griditd"), "models", "import", pipeline, "--name", "chaos:latest",
                        "--link", "copy", "--state-dir", self.state], check=True, capture_output=True)

    def ctl(self, *args, timeout=60):
        return subprocess.run([os.path.join(self.bin, "griditctl"), "--socket", self.socket, *args],
                              capture_output=True, text=True, timeout=timeout)

    def start(self):
        began = time.monotonic()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [os.path.join(self.bin, "griditd"), "serve", "--state-dir", self.state, "--socket", self.socket,
                 *self.extra], stdout=log, stderr=subprocess.STDOUT)
        while self.ctl("version").returncode != 0:
            if self.proc.poll() is not None:
                raise SystemExit(f"griditd exited ({self.proc.returncode}) at start; see {self.log_path}")
            if time.monotonic() - began > 120:
                raise SystemExit(f"griditd did not answer within 120 s; see {self.log_path}")
            time.sleep(0.02)
        self.starts.append(time.monotonic() - began)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)

    def running(self):
        """Whether a job runs now (the kill that follows lands in the middle of it)."""
        r = self.ctl("status", "--json")
        return r.returncode == 0 and bool(json.loads(r.stdout).get("running"))

    def worker_pid(self):
        r = self.ctl("status", "--json")
        return json.loads(r.stdout).get("worker", {}).get("pid") if r.returncode == 0 else None

    def submit(self, request):
        """The job id once griditd acknowledged the submit; retried (same key) while it is down."""
        args = ["submit", "--length", str(request["length"]), "--seed", str(request["seed"]),
                "--idempotency-key", request["key"], "--json"]
        for _ in range(600):
            r = self.ctl(*args)
            if r.returncode == 0:
                return json.loads(r.stdout)["job"]["id"]
            if r.returncode not in (69, 70, 75):  # not "unreachable / busy / mid-restart"
                raise SystemExit(f"submit refused ({r.returncode}): {r.stderr}")
            time.sleep(0.05)
        raise SystemExit("griditd never took the submit")

    def jobs(self):
        r = self.ctl("jobs", "list", "--all", "--limit", "10000", "--json")
        if r.returncode != 0:
            return None
        return {j["id"]: j for j in json.loads(r.stdout)["jobs"]}

    def wait_all(self, ids, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.jobs()
            if jobs is not None and all(i in jobs and jobs[i]["state"] in TERMINAL for i in ids):
                return jobs
            time.sleep(0.2)
        raise SystemExit(f"jobs did not finish within {timeout} s; see {self.log_path}")

    def shown(self, job_id):
        return json.loads(self.ctl("jobs", "show", str(job_id), "--json").stdout)


def output_digests(output_dir):
    """SHA-256 of every output file but sequence.json (which holds timings); its frame list too."""
    digests = {}
    for base, _, files in os.walk(output_dir):
        for name in files:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, output_dir)
            if rel == "sequence.json":
                with open(path) as f:
                    digests[rel] = [e.get("sha256") for e in json.load(f)["files"]]
            else:
                with open(path, "rb") as f:
                    digests[rel] = hashlib.sha256(f.read()).hexdigest()
    return digests


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, ".build/debug"), help="folder with griditd and griditctl")
    p.add_argument("--pipeline", default=TINY, help="pipeline.json to import (default: the tests' tiny one)")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs of griditd (default 20)")
    p.add_argument("--worker-kills", type=int, default=0, help="SIGKILLs of the engine worker besides (default 0)")
    p.add_argument("--jobs", type=int, default=8, help="jobs submitted, spread over the cycles (default 8)")
    p.add_argument("--length", type=int, default=200, help="frames per job (default 200)")
    p.add_argument("--min-run", type=float, default=0.3, help="shortest run before a kill, seconds (default 0.3)")
    p.add_argument("--max-run", type=float, default=1.5, help="longest run before a kill, seconds (default 1.5)")
    p.add_argument("--seed", type=int, default=16, help="seed of the kill schedule and the jobs (default 16)")
    p.add_argument("--timeout", type=float, default=900, help="seconds for the jobs to finish after the last kill")
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--keep", action="store_true", help="keep the state directories and logs")
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
        reference = Griditd(args.bin, os.path.join(where, "reference"), args.pipeline, extra)
        started.append(reference)
        reference.start()
        ref_ids = [reference.submit(r) for r in requests]
        ref_jobs = reference.wait_all(ref_ids, args.timeout)
        expected = [output_digests(ref_jobs[i]["output_dir"]) for i in ref_ids]
        reference.stop()
        numbers["reference_seconds"] = round(time.monotonic() - began, 1)

        # The same requests, with griditd killed again and again.
        chaos_began = time.monotonic()
        daemon = Griditd(args.bin, os.path.join(where, "chaos"), args.pipeline, extra)
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
    numbers["ok"] = ok
    print(json.dumps(numbers, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(numbers, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
