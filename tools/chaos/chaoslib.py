"""What the chaos runners share: a griditd of their own on a temporary state directory, and raw
requests on its socket (one connection each, nothing from griditctl). Standard library only."""
import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "Tests/GriditEngineTests/Fixtures/pixel/pipeline.json")
TERMINAL = ("succeeded", "failed", "canceled", "dead")


def request(sock_path, method, path, body=None, timeout=60):
    """(status, body bytes) of one request on a fresh connection; `body` is bytes or None."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    payload = body or b""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(payload)}\r\n"
    s.sendall((head + "\r\n").encode() + payload)
    chunks = []
    while chunk := s.recv(1 << 16):
        chunks.append(chunk)
    s.close()
    data = b"".join(chunks)
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data.split(b"\r\n\r\n", 1)[-1]


@contextlib.contextmanager
def griditd(bin_dir, pipeline, name, serve_arguments=()):
    """Yields (socket path, the griditd process) of a griditd serving a temporary state directory
    into which `pipeline` was imported as `name`; stops it (SIGTERM) and removes everything after."""
    binary = os.path.join(bin_dir, "griditd")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is missing: swift build -c release --product griditd (or pass --bin-dir)")
    work = tempfile.mkdtemp(prefix="gc-", dir="/tmp")  # short: socket paths are limited to 107 bytes
    os.chmod(work, 0o755)  # other uids (abuse.py's attackers) reach the socket inside
    state, sock = os.path.join(work, "state"), os.path.join(work, "s.sock")
    log = open(os.path.join(work, "griditd.log"), "w")
    daemon = None
    try:
        subprocess.run([binary, "models", "import", pipeline, "--name", name, "--link", "copy", "--state-dir", state],
                       check=True, stdout=subprocess.DEVNULL)
        daemon = subprocess.Popen([binary, "serve", "--state-dir", state, "--socket", sock, *serve_arguments],
                                  stdout=log, stderr=log)
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(OSError):
                if request(sock, "GET", "/v1/version")[0] == 200:
                    break
            if time.time() > deadline or daemon.poll() is not None:
                sys.exit(f"griditd did not start:\n{open(log.name).read()[-2000:]}")
            time.sleep(0.05)
        yield sock, daemon
    finally:
        if daemon and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=90)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


class GriditdProcess:
    """One state directory, and the griditd serving it (started and killed as told). With
    `own_group`, griditd leads a process group of its own, which its engine worker joins, so
    that `pause` stops the whole host (a frozen machine) and `resume` continues it."""

    def __init__(self, bin_dir, where, pipeline, extra, own_group=False):
        self.bin = bin_dir
        self.own_group = own_group
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
                 *self.extra], stdout=log, stderr=subprocess.STDOUT, start_new_session=self.own_group)
        while not self.answers():
            if self.proc.poll() is not None:
                raise SystemExit(f"griditd exited ({self.proc.returncode}) at start; see {self.log_path}")
            if time.monotonic() - began > 120:
                raise SystemExit(f"griditd did not answer within 120 s; see {self.log_path}")
            time.sleep(0.02)
        self.starts.append(time.monotonic() - began)

    def answers(self):
        """Whether griditd answers on its socket (`griditctl version` exits 0 either way)."""
        with contextlib.suppress(OSError):
            return request(self.socket, "GET", "/v1/version", timeout=60)[0] == 200
        return False

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def pause(self):
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)

    def running(self):
        """Whether a job runs now (the kill that follows lands in the middle of it)."""
        return bool(self.running_ids())

    def running_ids(self):
        r = self.ctl("status", "--json")
        return [j["id"] for j in json.loads(r.stdout).get("running") or []] if r.returncode == 0 else []

    def worker_pid(self):
        r = self.ctl("status", "--json")
        return json.loads(r.stdout).get("worker", {}).get("pid") if r.returncode == 0 else None

    def submit(self, request):
        """The job id once griditd acknowledged the submit; retried (same key) while it is down."""
        args = ["submit", "--length", str(request["length"]), "--seed", str(request["seed"]),
                "--idempotency-key", request["key"], "--json", *request.get("flags", [])]
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


def crash_cycle_parser(doc, kills_of, jobs, length, seed):
    """The flags the crash-cycle runners share (chaos.py, cluster_chaos.py), with their defaults."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, ".build/debug"), help="folder with griditd and griditctl")
    p.add_argument("--pipeline", default=TINY, help="pipeline.json to import (default: the tests' tiny one)")
    p.add_argument("--kills", type=int, default=20, help=f"SIGKILLs of {kills_of} (default 20)")
    p.add_argument("--jobs", type=int, default=jobs, help=f"jobs submitted, spread over the cycles (default {jobs})")
    p.add_argument("--length", type=int, default=length, help=f"frames per job (default {length})")
    p.add_argument("--min-run", type=float, default=0.3, help="shortest run before a kill, seconds (default 0.3)")
    p.add_argument("--max-run", type=float, default=1.5, help="longest run before a kill, seconds (default 1.5)")
    p.add_argument("--seed", type=int, default=seed, help=f"seed of the schedule and the jobs (default {seed})")
    p.add_argument("--timeout", type=float, default=900, help="hang guard for the jobs to finish, seconds")
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--keep", action="store_true", help="keep the state directories and logs")
    return p


def report(numbers, ok, json_path):
    """Prints the numbers (and writes them to `json_path`); the exit status: 0 when `ok`."""
    numbers["ok"] = ok
    print(json.dumps(numbers, indent=2))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(numbers, f, indent=2)
    return 0 if ok else 1
