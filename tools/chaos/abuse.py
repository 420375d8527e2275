#!/usr/bin/env python3
"""Multi-user abuse of griditd, as issue 16's attacks ran it: idle connections (slowloris) from one
user and from many, and a queue flood, against a griditd of its own with its default limits.

  slowloris   one member opens --connections idle connections (sending nothing, or half a head);
              how many griditd keeps, how many it refuses at once, whether another member and root
              still get answers, and how long the held ones last (griditd's --header-timeout).
  crowd       --users members open as many idle connections as they can: users never take the
              admins' reserve, root still gets in.
  flood       one member submits --jobs jobs of --length frames from 16 threads at once: how many
              the per-user limits accept; a member's --priority 1000 is refused, root's is not.

Needs root (the attackers are other uids: forked children that drop to them) and the bundled
model (models/moving-digits, for the compute estimates). Only the Python standard library.

  swift build -c release --product griditd
  sudo tools/chaos/abuse.py                   # 600 connections, 20 users, 1,000 jobs of 100,000 frames
  sudo tools/chaos/abuse.py --quick           # the bounded form: 100 connections, 5 users, 200 jobs
"""
import argparse
import concurrent.futures
import json
import os
import selectors
import socket
import sys
import time

from chaoslib import ROOT, griditd, request

MEMBER = 40_101  # first attacker uid; the group is `users`


def call(sock_path, method, path, body=None):
    """(status, parsed JSON body or None) of one request."""
    status, data = request(sock_path, method, path, json.dumps(body).encode() if body is not None else None)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, None


def as_user(uid, gid, work):
    """Runs `work()` in a child process with that uid and gid; returns its JSON-able result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            result = work()
        except BaseException as e:  # the parent reports it
            result, code = {"error": repr(e)}, 1
        os.write(write, json.dumps(result).encode())
        os._exit(code)
    os.close(write)
    data = b""
    while chunk := os.read(read, 1 << 16):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    return json.loads(data)


def hold(sock_path, count, partial, ready_file):
    """Opens `count` connections; returns what became of them once griditd closed them all:
    answered (by status) or closed without an answer, and after how long."""
    sel = selectors.DefaultSelector()
    for i in range(count):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(sock_path)
        if partial and i % 2:
            c.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")  # half a head
        sel.register(c, selectors.EVENT_READ, [time.time(), b""])
    with open(ready_file, "w") as f:
        f.write("ready")
    outcomes = {}
    deadline = time.time() + 600
    while sel.get_map() and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            opened_data = key.data
            try:
                chunk = key.fileobj.recv(1 << 16)
            except OSError:
                chunk = b""
            if chunk:
                opened_data[1] += chunk
                continue
            data = opened_data[1]
            kind = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed without answer"
            entry = outcomes.setdefault(kind, {"count": 0, "longest_s": 0.0})
            entry["count"] += 1
            entry["longest_s"] = round(max(entry["longest_s"], time.time() - opened_data[0]), 2)
            sel.unregister(key.fileobj)
            key.fileobj.close()
    outcomes["still open after 600 s"] = len(sel.get_map())
    return outcomes


def wait_for(path, timeout=120):
    """Until `path` (made writable for the attacker beforehand) has content."""
    deadline = time.time() + timeout
    while os.path.getsize(path) == 0:
        if time.time() > deadline:
            raise TimeoutError(path)
        time.sleep(0.05)


def holders(sock, work, users, count, partial):
    """Starts a holding process per uid in `users`, each once the last is connected; returns the
    pool and the futures of their outcomes."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(users))
    futures = []
    for uid in users:
        ready = os.path.join(work, f"ready-{uid}")
        open(ready, "w").close()
        os.chmod(ready, 0o666)
        futures.append(pool.submit(as_user, uid, users_gid(), lambda r=ready: hold(sock, count, partial, r)))
        wait_for(ready)
    return pool, futures


def users_gid():
    import grp
    return grp.getgrnam("users").gr_gid


def timed(sock, path, uid=None):
    started = time.time()
    if uid is None:
        status, _ = call(sock, "GET", path)
    else:
        status = as_user(uid, users_gid(), lambda: call(sock, "GET", path)[0])
    return {"status": status, "seconds": round(time.time() - started, 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", default=os.path.join(ROOT, ".build/release"))
    p.add_argument("--quick", action="store_true", help="the bounded form")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    connections, users, jobs, length = (100, 5, 200, 100_000) if args.quick else (600, 20, 1000, 100_000)
    if os.geteuid() != 0:
        sys.exit("run as root: the attackers are other uids")
    results = {"connections": connections, "users": users, "jobs": jobs, "length": length}
    # Defaults for every limit; the attackers are in `users`, root is the admin.
    serve = ["--group", "users", "--admin-group", "root", "--start-paused"]
    with griditd(args.bin_dir, os.path.join(ROOT, "models/moving-digits/pipeline.json"), "md:latest", serve) as (sock, _):
        work = os.path.dirname(sock)
        # slowloris: one member, idle connections and half heads.
        pool, futures = holders(sock, work, [MEMBER], connections, partial=True)
        results["slowloris"] = {
            "root_status": timed(sock, "/v1/status"),
            "other_member_status": timed(sock, "/v1/status", uid=MEMBER + 1),
            "attacker_connections": futures[0].result(),
        }
        pool.shutdown()
        print("slowloris", json.dumps(results["slowloris"]), flush=True)

        # crowd: many members, as many idle connections as each may hold.
        pool, futures = holders(sock, work, [MEMBER + 10 + i for i in range(users)], 40, partial=False)
        late = as_user(MEMBER + 9, users_gid(), lambda: call(sock, "GET", "/v1/status"))
        results["crowd"] = {
            "root_status": timed(sock, "/v1/status"),
            "late_member": {"status": late[0], "message": (late[1] or {}).get("error", {}).get("message")},
            "per_user": [f.result() for f in futures][:3],
        }
        pool.shutdown()
        print("crowd", json.dumps(results["crowd"]), flush=True)

        # flood: one member submits many huge jobs at once.
        def flood():
            body = {"length": length, "parameters": {"seed": 1}}
            with concurrent.futures.ThreadPoolExecutor(16) as threads:
                statuses = list(threads.map(lambda _: call(sock, "POST", "/v1/jobs", body)[0], range(jobs)))
            urgent = call(sock, "POST", "/v1/jobs", {"length": 128, "priority": 1000})
            # 503: the member's own connections, some still closing, were at its connection limit.
            others = sorted(s for s in statuses if s not in (201, 429, 503))
            return {"accepted": statuses.count(201), "refused_429": statuses.count(429),
                    "busy_503": statuses.count(503), "other": others, "priority_1000": urgent[0]}
        started = time.time()
        results["flood"] = as_user(MEMBER, users_gid(), flood)
        results["flood"]["seconds"] = round(time.time() - started, 1)
        root_job = call(sock, "POST", "/v1/jobs", {"length": 128, "priority": 1000})[1]["job"]
        results["flood"]["root_priority_1000_position"] = root_job["queue_position"]
        print("flood", json.dumps(results["flood"]), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        ok = (results["slowloris"]["root_status"]["status"] == 200
              and results["slowloris"]["other_member_status"]["status"] == 200
              and results["crowd"]["root_status"]["status"] == 200
              and results["flood"]["priority_1000"] == 403 and not results["flood"]["other"]
              and results["flood"]["root_priority_1000_position"] == 1)
        print("ok" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
