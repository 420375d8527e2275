#!/usr/bin/env python3
"""Crash cycles against three griditd hosts sharing one PostgreSQL queue (issue 13).

Starts its own PostgreSQL server (initdb + pg_ctl, as the `postgres` user when run as root) and
three griditd processes, each with its own state directory and its own database role, one
shared root and short leases, the tiny test pipeline imported into each host's model store.

Chaos phase: a client submits --jobs short jobs with idempotency keys to random hosts while
the runner kills a random host with SIGKILL --kills times (restarting it at once), stops a
host and its engine worker with SIGSTOP --pauses times for longer than the lease (long enough
for another host's reaper to take its jobs over), and restarts PostgreSQL with
`pg_ctl restart -m immediate` --pg-restarts times. Then it checks:

  lost            acknowledged submits that are not jobs                            must be 0
  duplicated      jobs beyond one per idempotency key                                must be 0
  not_succeeded   jobs not `succeeded` at the end (dead ones included)               must be 0
  completions     jobs whose row went running -> succeeded other than exactly once   must be 0
  differing       jobs whose files differ from a single-host SQLite run              must be 0
  foreign_writes  writes to a running job's row accepted from a host that did not    must be 0
                  hold its lease (a superseded lease token), or claims recorded
                  under another host's node
  unexplained_crashes  crashes counted on a lease whose host was neither stopped     must be 0
                  nor dead at the time (kills are recovered by the restart, a
                  PostgreSQL restart costs nothing)
  attempts_off    jobs whose attempts are not 1 + their crashes                      must be 0

Which host wrote what comes from the database itself: each host connects as its own role, and
a trigger (the runner's, in a schema of its own) records every committed update of a job row
with the role, the row's lease token, node and lease before and after. A write refused for a
superseded token never commits, so it never shows there; the hosts' logs count the refusals.

Outage phase: --outage-jobs long jobs run on the hosts, and PostgreSQL is stopped
(`pg_ctl stop -m fast`) for --outage seconds. Checks: every griditd stays up and its
`griditctl status` answers and reports `database_unreachable`; each running job stops (the
fence's log line) and writes no file before its lease, as the database recorded it, expires;
once the database is back every job finishes `succeeded` (none dead) with the same bytes as
the single-host run.

Every griditd must end within 120 s of the final SIGTERM (stop_hangs: else its threads' stacks
go next to its log, griditd.log.threads, through gdb where installed).

Exit status 0 when every check holds, 1 otherwise; the numbers are printed (--json writes them),
then one line that says `passed` or `FAILED` and which checks failed. --deadline (600 s) is the
hang guard of the whole run: past it everything started is stopped and the run fails. The
temporary folder (state directories, griditd logs, the PostgreSQL data with the audit table) is
removed at the end unless --keep or a check failed.

  swift build --product griditd && swift build --product griditctl
  tools/chaos/cluster_chaos.py                 # the default run, seed 13 (what CI runs; 2 to 4 minutes on 2 cores)
  tools/chaos/cluster_chaos.py --seed 7 --keep --json cluster.json

Needs only the Python standard library (and PostgreSQL's server binaries: tools/install-deps.sh).
"""
import concurrent.futures
import datetime
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from chaoslib import GriditdProcess, crash_cycle_parser, output_digests, report
from pgserver import PostgresServer

HOSTS = ("h0", "h1", "h2")
TERMINAL_SQL = "('succeeded', 'failed', 'canceled', 'dead')"
# The reaper sweeps every 15 s on each host (DaemonConfiguration.reapInterval).
REAP_INTERVAL = 15

# Every committed update of a job row: who wrote it (the host's role), and the lease before and
# after. Times as seconds since the epoch: `at` when the row was written, `tx` the transaction's
# clock (the one leases are compared with).
AUDIT_SQL = """
CREATE SCHEMA audit;
CREATE TABLE audit.job_write (
  seq bigserial PRIMARY KEY,
  at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()),
  tx double precision NOT NULL DEFAULT extract(epoch FROM now()),
  host text NOT NULL DEFAULT session_user,
  job_id bigint NOT NULL,
  old_state text, new_state text, old_token bigint, new_token bigint, old_node text, new_node text,
  old_expires double precision, new_expires double precision,
  old_attempt bigint, new_attempt bigint, old_crashes bigint, new_crashes bigint);
CREATE FUNCTION audit.job_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit.job_write (job_id, old_state, new_state, old_token, new_token, old_node, new_node,
                               old_expires, new_expires, old_attempt, new_attempt, old_crashes, new_crashes)
  VALUES (NEW.id, OLD.state, NEW.state, OLD.lease_token, NEW.lease_token, OLD.node_id::text, NEW.node_id::text,
          extract(epoch FROM OLD.lease_expires_at), extract(epoch FROM NEW.lease_expires_at),
          OLD.attempt, NEW.attempt, OLD.crash_count, NEW.crash_count);
  RETURN NULL;
END $$;
CREATE TRIGGER job_write AFTER UPDATE ON gridit.job FOR EACH ROW EXECUTE FUNCTION audit.job_write();
"""

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z ")


class Host(GriditdProcess):
    """One griditd host of the cluster: its role, its node id, and when it was down or stopped."""

    def __init__(self, name, bin_dir, where, pipeline, extra):
        super().__init__(bin_dir, os.path.join(where, name), pipeline, extra, own_group=True)
        self.name = name
        self.node = None
        self.down = []  # (from, to) in time.time(): killed until it answered again
        self.stopped = []  # (from, to): SIGSTOP until SIGCONT

    def start(self):
        super().start()
        with open(os.path.join(self.state, "node-id")) as f:
            self.node = f.read().strip().lower()

    def restart_after_kill(self):
        killed = time.time()
        self.kill()
        self.start()
        self.down.append((killed, time.time()))

    def log_lines(self):
        with open(self.log_path, errors="replace") as f:
            return f.read().splitlines()


def log_time(line):
    m = LOG_TIME.match(line)
    if not m:
        return None
    return datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()


def wait_jobs(pg, ids, timeout, what):
    """Until every job of `ids` is in a final state (read from the database), or the hang guard."""
    deadline = time.monotonic() + timeout
    listed = ",".join(str(i) for i in ids)
    while time.monotonic() < deadline:
        left = pg.rows(f"SELECT id FROM gridit.job WHERE id IN ({listed}) AND state NOT IN {TERMINAL_SQL}",
                       "gridit")
        if not left:
            return
        time.sleep(0.5)
    stuck = pg.rows(f"SELECT id, state, node_id::text AS node, lease_expires_at::text AS lease_expires, "
                    f"not_before::text AS not_before, now()::text AS now, attempt, crash_count "
                    f"FROM gridit.job WHERE id IN ({listed}) AND state NOT IN {TERMINAL_SQL} ORDER BY id", "gridit")
    raise SystemExit(f"{what}: jobs did not finish within {timeout} s (hang guard): {json.dumps(stuck)}")


def during(intervals, start, end):
    """Whether any (from, to) interval overlaps [start, end]."""
    return any(a <= end and b >= start for a, b in intervals)


def audit_checks(pg, hosts, ids, outage=None):
    """The lease checks of the jobs `ids` from the audit table: writes by a host that did not hold
    the lease, crashes with no stopped or dead host behind them (or the outage), completions."""
    by_role = {h.name: h for h in hosts}
    by_node = {h.node: h for h in hosts}
    listed = ",".join(str(i) for i in ids)
    rows = pg.rows(f"SELECT * FROM audit.job_write WHERE job_id IN ({listed}) ORDER BY seq", "gridit")
    foreign, unexplained, completions, crashes = [], [], {i: 0 for i in ids}, []
    claimed_at = {}
    for r in rows:
        writer = by_role.get(r["host"])
        if r["old_state"] in ("queued", "retryable") and r["new_state"] == "running":
            claimed_at[r["job_id"]] = r["at"]
            if writer is None or writer.node != r["new_node"]:
                foreign.append({"job": r["job_id"], "seq": r["seq"], "claim_by": r["host"], "node": r["new_node"]})
            continue
        if r["old_state"] != "running":
            continue
        expired = r["old_expires"] is not None and r["old_expires"] <= r["tx"] + 1e-6
        crashed = r["new_crashes"] > r["old_crashes"]
        holder = by_node.get(r["old_node"])
        if not (crashed and expired) and (writer is None or writer is not holder):
            foreign.append({"job": r["job_id"], "seq": r["seq"], "writer": r["host"],
                            "holder": holder.name if holder else r["old_node"],
                            "transition": f"{r['old_state']} -> {r['new_state']}"})
        if r["new_state"] == "succeeded":
            completions[r["job_id"]] += 1
        if crashed:
            start = claimed_at.get(r["job_id"], 0)
            reason = None
            if holder and during(holder.stopped, start, r["at"]):
                reason = "stopped"
            elif holder and during(holder.down, r["at"], r["at"]):
                reason = "down"
            elif outage and during([outage], start, r["at"]):
                reason = "outage"
            crashes.append({"job": r["job_id"], "host": holder.name if holder else None, "why": reason,
                            "by": r["host"], "lease_expired": expired})
            if reason is None:
                unexplained.append(crashes[-1])
    return {"audited_writes": len(rows), "foreign": foreign, "unexplained": unexplained,
            "completions_off": [i for i, n in completions.items() if n != 1], "crashes": crashes}


def final_rows(pg, ids):
    listed = ",".join(str(i) for i in ids)
    return {r["id"]: r for r in pg.rows(
        f"SELECT id, idempotency_key, state, attempt, crash_count, output_dir, node_id::text AS node, "
        f"error_class, error_message "
        f"FROM gridit.job WHERE id IN ({listed})", "gridit")}


def refusals(hosts):
    """Writes refused or withheld for want of a lease, from the hosts' logs."""
    counts = {"lease_lost": 0, "outcome_refused": 0, "fenced": 0, "output_kept": 0}
    for h in hosts:
        for line in h.log_lines():
            if "lost the lease; stopping the job" in line:
                counts["lease_lost"] += 1
            elif "outcome was not recorded" in line:
                counts["outcome_refused"] += 1
            elif "stopped unrecorded: its lease was not renewed" in line:
                counts["fenced"] += 1
            elif "output was put in place by another run of it meanwhile" in line:
                counts["output_kept"] += 1
    return counts


def digests_differ(shared, rows, expected):
    """Jobs (id -> expected digests) whose output under the shared root differs."""
    out = []
    for i, want in expected.items():
        row = rows.get(i)
        if not row or row["state"] != "succeeded" or not row["output_dir"]:
            out.append(i)
            continue
        folder = row["output_dir"] if os.path.isabs(row["output_dir"]) else os.path.join(shared, row["output_dir"])
        if output_digests(folder) != want:
            out.append(i)
    return out


def thread_dump(pid, path):
    """Every thread's stack of a process that does not end, written to `path` (with gdb, where
    installed; else the kernel's wait channel of each thread). Returns `path`."""
    with open(path, "w") as out:
        gdb = shutil.which("gdb")
        if gdb:
            subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt"], stdout=out,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=180)
            return path
        for task in sorted(os.listdir(f"/proc/{pid}/task")):
            with open(f"/proc/{pid}/task/{task}/comm") as c, open(f"/proc/{pid}/task/{task}/wchan") as w:
                out.write(f"{task} {c.read().strip()} {w.read().strip()}\n")
    return path


def status_probe(host):
    """(answered, database_unreachable reported) of one `griditctl status --json`."""
    r = host.ctl("status", "--json", timeout=120)
    if r.returncode != 0:
        return False, False
    notices = json.loads(r.stdout).get("notices") or []
    return True, any(n.get("code") == "database_unreachable" for n in notices)


def held_jobs(pg, host, fresh=False):
    """The jobs `host` holds a lease on, as the database says (`fresh`: with no crash yet).
    Not `status`: on a loaded machine it may answer without the database (after 5 s)."""
    crashes = " AND crash_count = 0" if fresh else ""
    return pg.rows(f"SELECT id FROM gridit.job WHERE state = 'running' AND node_id = '{host.node}'{crashes}",
                   "gridit")


def chaos_phase(args, rng, pg, hosts, requests, numbers):
    """Kills, pauses and PostgreSQL restarts while `requests` are submitted; returns key -> id."""
    lease = args.lease
    pause_seconds = lease + REAP_INTERVAL + 3  # the lease runs out and another host's reaper sweeps
    began = time.time()
    # Pauses overlap the kill cycles; at most two hosts are stopped at once.
    pause_starts = [began + 2 + k * pause_seconds * 0.5 for k in range(args.pauses)]
    restart_cycles = set(rng.sample(range(1, max(2, args.kills)), min(args.pg_restarts, max(1, args.kills - 1))))
    paused = {}  # host -> resume time
    acknowledged = {}
    # A third of the jobs at once, so that the first kills and pauses find work running.
    first = [rng.choice(hosts).submit(r) for r in requests[:len(requests) // 3]]
    acknowledged.update(zip((r["key"] for r in requests), first))
    # Three jobs kept for each pause, submitted when it finds no busy host (the cycles' may be done).
    kept = min(3 * args.pauses, len(requests) - len(first))
    reserve = requests[len(requests) - kept:]
    pending = requests[len(first):len(requests) - kept]
    per_cycle = max(1, -(-len(pending) // max(1, args.kills)))
    numbers.update({"kills": 0, "kills_while_running": 0, "pauses": 0, "pauses_while_running": 0,
                    "pg_restarts": 0, "pg_restart_seconds_max": 0.0})

    def live():
        return [h for h in hosts if h not in paused]

    def pauses_due():
        now = time.time()
        for h, until in list(paused.items()):
            if now >= until:
                h.resume()
                h.stopped[-1] = (h.stopped[-1][0], time.time())
                del paused[h]
        while pause_starts and now >= pause_starts[0] and len(paused) < len(hosts) - 1:
            candidates = live()
            # A host running a job that has not crashed yet: a job whose hosts stall twice in a
            # row uses up its crashes (RetryPolicy.maxCrashes, 2) and goes dead by design.
            busy = [h for h in candidates if held_jobs(pg, h, fresh=True)]
            if not busy and now < pause_starts[0] + 60:
                # A stop matters while the host holds a lease: bring jobs forward, wait for one.
                source = pending if pending else reserve
                for request in source[:3]:
                    acknowledged[request["key"]] = rng.choice(candidates).submit(request)
                del source[:3]
                return
            h = rng.choice(busy or candidates)
            h.pause()
            # Holding a lease once stopped, as the database says (its job may just have ended):
            # else continued at once, and tried again.
            held = held_jobs(pg, h)
            if busy and not held:
                h.resume()
                return
            pause_starts.pop(0)
            numbers["pauses_while_running"] += bool(held)
            h.stopped.append((time.time(), None))
            paused[h] = time.time() + pause_seconds
            numbers["pauses"] += 1

    for cycle in range(args.kills):
        pauses_due()
        for request in pending[:per_cycle]:
            acknowledged[request["key"]] = rng.choice(live()).submit(request)
        pending = pending[per_cycle:]
        time.sleep(rng.uniform(args.min_run, args.max_run))
        pauses_due()
        # A host running a job when there is one: a kill matters most in the middle of one.
        candidates = live()
        busy = [h for h in candidates if held_jobs(pg, h)]
        victim = rng.choice(busy or candidates)
        numbers["kills_while_running"] += bool(busy)
        victim.restart_after_kill()
        numbers["kills"] += 1
        if cycle in restart_cycles:
            t = time.monotonic()
            pg.restart_immediate()
            numbers["pg_restarts"] += 1
            numbers["pg_restart_seconds_max"] = max(numbers["pg_restart_seconds_max"],
                                                    round(time.monotonic() - t, 2))
    for request in pending:
        acknowledged[request["key"]] = rng.choice(live()).submit(request)
    pending = []
    while paused or pause_starts:
        pauses_due()
        time.sleep(0.2)
    for request in reserve:
        acknowledged[request["key"]] = rng.choice(hosts).submit(request)
    return acknowledged


def outage_phase(args, pg, hosts, shared, requests, numbers):
    """PostgreSQL stopped for --outage seconds under running jobs; returns their ids."""
    ids = [hosts[k % len(hosts)].submit(r) for k, r in enumerate(requests)]
    listed = ",".join(str(i) for i in ids)
    guard = time.monotonic() + 300
    while len(pg.rows(f"SELECT id FROM gridit.job WHERE id IN ({listed}) AND state = 'running'", "gridit")) < len(ids):
        if time.monotonic() > guard:
            raise SystemExit("outage: the jobs never all ran (hang guard)")
        time.sleep(0.2)
    pids = {h.name: h.proc.pid for h in hosts}
    stopped_at = time.time()
    pg.stop_fast()
    seen = {h.name: {"answered": 0, "reported": 0} for h in hosts}
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        while time.time() - stopped_at < args.outage:
            for h, (answered, reported) in zip(hosts, pool.map(status_probe, hosts)):
                seen[h.name]["answered"] += answered
                seen[h.name]["reported"] += reported
            time.sleep(1)
    back_at = time.time()
    pg.start()
    numbers["outage_seconds"] = round(back_at - stopped_at, 1)
    numbers["outage_hosts_down"] = [h.name for h in hosts if h.proc.poll() is not None or h.proc.pid != pids[h.name]]
    numbers["outage_status"] = seen
    numbers["outage_status_missing"] = [n for n, s in seen.items() if not s["reported"]]

    # What each job held when the database went away: its last lease as recorded before.
    last = pg.rows(
        f"SELECT DISTINCT ON (job_id) job_id, new_state, new_expires, new_node FROM audit.job_write "
        f"WHERE job_id IN ({listed}) AND at < {stopped_at} ORDER BY job_id, seq DESC", "gridit")
    by_node = {h.node: h for h in hosts}
    late = []
    for r in last:
        if r["new_state"] != "running":
            continue
        job, expires, holder = r["job_id"], r["new_expires"], by_node[r["new_node"]]
        fenced = [log_time(line) for line in holder.log_lines()
                  if "lease was not renewed in time" in line and f"job.id={job}" in line]
        fenced = [t for t in fenced if t and stopped_at <= t <= back_at]
        work, output = os.path.join(shared, "work", str(job)), os.path.join(shared, "outputs", f"job-{job}")
        written = {folder: [os.path.getmtime(os.path.join(base, name))
                            for base, _, names in os.walk(folder) for name in names] for folder in (work, output)}
        written_late = [t for times in written.values() for t in times if expires < t < back_at]
        # Stopped in time: nothing of the job written after its lease expired (another host may
        # take it from then on), and the fence's stop logged before then, unless the engine had
        # finished the job by itself (its outcome then waits, unrecorded, behind the fence).
        finished = any(t <= expires for t in written[output])
        in_time = bool(fenced) and min(fenced) <= expires
        if written_late or not (in_time or finished):
            late.append({"job": job, "host": holder.name, "lease_expires": expires,
                         "stopped": min(fenced) if fenced else None, "files_after_lease": len(written_late)})
        if fenced:
            numbers["outage_fenced"] = numbers.get("outage_fenced", 0) + 1
            numbers.setdefault("outage_fence_margin_seconds", []).append(round(expires - min(fenced), 2))
        else:
            numbers["outage_finished_before_fence"] = numbers.get("outage_finished_before_fence", 0) + 1
    numbers["outage_running_jobs"] = sum(1 for r in last if r["new_state"] == "running")
    numbers["outage_not_stopped_in_lease"] = late
    return ids, (stopped_at, back_at)


class Aborted(Exception):
    """The run went past --deadline, or was told to stop (SIGTERM)."""


def main():
    p = crash_cycle_parser(__doc__, "a host", jobs=60, length=64, seed=13)
    p.add_argument("--pauses", type=int, default=3, help="SIGSTOPs of a host past its lease (default 3)")
    p.add_argument("--pg-restarts", type=int, default=2, help="immediate PostgreSQL restarts (default 2)")
    p.add_argument("--lease", type=int, default=10, help="griditd's lease, seconds (default 10; 5 at least)")
    p.add_argument("--outage", type=float, default=30, help="seconds PostgreSQL is down (default 30; 0: no outage)")
    p.add_argument("--outage-jobs", type=int, default=3, help="jobs running when it goes down (default 3)")
    p.add_argument("--outage-length", type=int, default=64, help="frames per outage job (default 64)")
    p.add_argument("--deadline", type=float, default=600,
                   help="hang guard for the whole run, seconds (default 600): past it, everything started is "
                        "stopped and the run fails")
    args = p.parse_args()

    where = tempfile.mkdtemp(prefix="gcc-", dir="/tmp")  # short: socket paths are limited to 107 bytes
    os.chmod(where, 0o755)  # the postgres user reaches its folder inside
    numbers = {"seed": args.seed, "jobs": args.jobs, "length": args.length, "lease": args.lease}
    began = time.monotonic()

    def abort(signum, frame):
        if signum == signal.SIGALRM:
            raise Aborted(f"the run took over {args.deadline:g} s (hang guard)")
        raise Aborted(f"stopped by {signal.Signals(signum).name}")

    # Raised in the run, so that what it started is stopped on the way out.
    signal.signal(signal.SIGALRM, abort)
    signal.signal(signal.SIGTERM, abort)
    # Again every 5 s past the deadline, should something swallow the first one.
    signal.setitimer(signal.ITIMER_REAL, args.deadline, 5)
    try:
        run(args, where, numbers)
        failed = failures(args, numbers)
    except (Aborted, SystemExit) as e:
        if isinstance(e, SystemExit) and not isinstance(e.code, str):
            raise
        # A guard inside the run (a griditd that never answered, jobs that never finished) or
        # the deadline: everything started is stopped by now.
        numbers["aborted"] = str(e)
        failed = [f"aborted: {e}"]
    numbers["total_seconds"] = round(time.monotonic() - began, 1)
    if args.keep or failed:
        print(f"kept {where}", file=sys.stderr)
    else:
        shutil.rmtree(where, ignore_errors=True)
    status = report(numbers, not failed, args.json)
    print(summary(args, numbers, failed))
    return status


def run(args, where, numbers):
    """The cluster in `where`, the chaos and the outage; the numbers go into `numbers`.
    Everything started here is stopped when it returns or raises."""
    rng = random.Random(args.seed)
    chaos_requests = [{"length": args.length, "seed": 1300 + i, "key": f"cluster-{args.seed}-{i}"}
                      for i in range(args.jobs)]
    # More steps than the pipeline's defaults: jobs that still run when their fence falls.
    outage_requests = [{"length": args.outage_length, "seed": 1900 + i, "key": f"outage-{args.seed}-{i}",
                        "flags": ["--steps", "800", "--sr-steps", "600"]}
                       for i in range(args.outage_jobs if args.outage > 0 else 0)]
    started, pg = [], None
    began = time.monotonic()
    try:
        pg = PostgresServer(os.path.join(where, "pg"))
        pg.start()
        for name in HOSTS:
            pg.sql(f"CREATE ROLE {name} LOGIN SUPERUSER")
        pg.sql("CREATE DATABASE gridit OWNER gridit")

        # The single-host reference (SQLite), the same requests, running while the cluster does.
        reference = GriditdProcess(args.bin, os.path.join(where, "ref"), args.pipeline, ["--max-batch", "4"])
        started.append(reference)
        reference.start()
        reference_ids = {r["key"]: reference.submit(r) for r in chaos_requests + outage_requests}

        shared = os.path.join(where, "shared")
        os.makedirs(shared)
        hosts = [Host(name, args.bin, where, args.pipeline,
                      ["--database", pg.url(name, "gridit"), "--shared-root", shared, "--lease", str(args.lease),
                       "--max-batch", "4", "--max-batch-jobs", "1"]) for name in HOSTS]  # one job each: spread
        started.extend(hosts)
        hosts[0].start()  # migrates the schema; the audit trigger goes on its job table
        pg.sql(AUDIT_SQL, "gridit")
        for h in hosts[1:]:
            h.start()
        numbers["setup_seconds"] = round(time.monotonic() - began, 1)

        # Chaos.
        t = time.monotonic()
        acknowledged = chaos_phase(args, rng, pg, hosts, chaos_requests, numbers)
        chaos_ids = sorted(set(acknowledged.values()))
        wait_jobs(pg, chaos_ids, args.timeout, "chaos")
        numbers["chaos_seconds"] = round(time.monotonic() - t, 1)

        # The outage.
        outage_ids, outage = [], None
        if outage_requests:
            t = time.monotonic()
            outage_ids, outage = outage_phase(args, pg, hosts, shared, outage_requests, numbers)
            wait_jobs(pg, outage_ids, args.timeout, "after the outage")
            numbers["outage_phase_seconds"] = round(time.monotonic() - t, 1)

        # The reference's outputs.
        ref_jobs = reference.wait_all(list(reference_ids.values()), args.timeout)
        expected = {r["key"]: output_digests(ref_jobs[reference_ids[r["key"]]]["output_dir"])
                    for r in chaos_requests + outage_requests}

        # The checks.
        every = pg.rows("SELECT id, idempotency_key FROM gridit.job", "gridit")
        keys = [r["idempotency_key"] for r in every]
        all_ids = chaos_ids + outage_ids
        rows = final_rows(pg, all_ids)
        numbers["lost"] = sum(1 for i in acknowledged.values() if i not in rows)
        numbers["duplicated"] = len(keys) - len(set(keys)) + sum(1 for k in keys if k is None)
        numbers["jobs_in_queue"] = len(every)
        numbers["not_succeeded"] = sum(1 for i in all_ids if rows.get(i, {}).get("state") != "succeeded")
        numbers["dead"] = sum(1 for i in all_ids if rows.get(i, {}).get("state") == "dead")
        by_key = {rows[i]["idempotency_key"]: i for i in all_ids if i in rows}
        numbers["differing"] = digests_differ(
            shared, rows, {by_key[k]: want for k, want in expected.items() if k in by_key})
        numbers["differing"] = len(numbers["differing"])
        audit = audit_checks(pg, hosts, all_ids, outage)
        numbers["audited_writes"] = audit["audited_writes"]
        numbers["foreign_writes"] = len(audit["foreign"])
        numbers["unexplained_crashes"] = len(audit["unexplained"])
        numbers["completions"] = len(audit["completions_off"])
        numbers["crashes"] = {why: sum(1 for c in audit["crashes"] if c["why"] == why)
                              for why in ("stopped", "down", "outage", None)}
        numbers["crashes"]["unexplained"] = numbers["crashes"].pop(None)
        numbers["attempts_off"] = sum(1 for i in all_ids if i in rows and
                                      rows[i]["attempt"] != rows[i]["crash_count"] + 1)
        numbers["refused_or_withheld"] = refusals(hosts)
        numbers["problems"] = {"foreign": audit["foreign"][:10], "unexplained": audit["unexplained"][:10],
                               "completions": audit["completions_off"][:10],
                               "not_succeeded": [{k: rows[i][k] for k in ("id", "state", "attempt", "crash_count",
                                                                          "error_class", "error_message")}
                                                 for i in all_ids if i in rows and rows[i]["state"] != "succeeded"]}
        numbers["start_seconds_max"] = round(max(s for h in hosts for s in h.starts), 2)
        # A SIGTERM ends each griditd (a hang here is a finding: its pid stays in the numbers).
        numbers["stop_hangs"] = []
        for d in hosts + [reference]:
            try:
                d.stop()
            except subprocess.TimeoutExpired:
                numbers["stop_hangs"].append({"pid": d.proc.pid, "log": d.log_path,
                                              "threads": thread_dump(d.proc.pid, d.log_path + ".threads")})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)  # the hang guard does not cut the cleanup short
        # Only the processes started here (their engine workers die with them).
        for d in started:
            if d.proc and d.proc.poll() is None:
                if getattr(d, "own_group", False):
                    d.resume()  # a stopped process would not die of SIGKILL until continued
                d.proc.kill()
                d.proc.wait()
        if pg:
            pg.stop_now()


CHECKS = ("lost", "duplicated", "not_succeeded", "dead", "completions", "differing", "foreign_writes",
          "unexplained_crashes", "attempts_off")


def failures(args, numbers):
    """The checks that did not hold, as `name=value`; empty when the run passed."""
    failed = [f"{k}={numbers[k]}" for k in CHECKS if numbers[k]]
    if numbers["stop_hangs"]:
        failed.append(f"stop_hangs={[h['pid'] for h in numbers['stop_hangs']]}")
    done = (numbers["kills"], numbers["pauses"], numbers["pg_restarts"])
    if done != (args.kills, args.pauses, args.pg_restarts):
        failed.append(f"kills/pauses/pg_restarts={'/'.join(map(str, done))}")
    if numbers["pauses_while_running"] != args.pauses:
        failed.append(f"pauses_while_running={numbers['pauses_while_running']}")
    if args.outage > 0 and args.outage_jobs > 0:
        for k in ("outage_hosts_down", "outage_status_missing", "outage_not_stopped_in_lease"):
            if numbers[k]:
                failed.append(f"{k}={numbers[k]}")
        if not numbers["outage_running_jobs"]:
            failed.append("outage_running_jobs=0")
        if not numbers.get("outage_fenced"):  # the fence, not the jobs' end, stopped one at least
            failed.append("outage_fenced=0")
    return failed


def summary(args, numbers, failed):
    """The last line: passed or FAILED, and why."""
    head = f"cluster_chaos.py: {'FAILED' if failed else 'passed'} (seed {args.seed}, {numbers['total_seconds']} s)"
    if failed:
        return f"{head}: {', '.join(failed)}"
    outage = f", a {numbers['outage_seconds']:g} s outage" if "outage_seconds" in numbers else ""
    return (f"{head}: {numbers['jobs_in_queue']} jobs, {numbers['kills']} kills, {numbers['pauses']} stops past "
            f"the lease, {numbers['pg_restarts']} PostgreSQL restarts{outage}; every check held "
            f"({', '.join(f'0 {k}' for k in CHECKS)})")


if __name__ == "__main__":
    sys.exit(main())
