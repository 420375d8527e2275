"""A throwaway PostgreSQL server for the chaos runners, as the Swift tests make theirs
(Tests/GriditTestSupport/PostgresTestServer.swift): initdb and the server on a temporary folder and a
free loopback port, as the `postgres` user when run as root (the server refuses root), trust
authentication on loopback. Here it runs through pg_ctl, so that it can be restarted and stopped
under griditd. Standard library only."""
import json
import os
import shutil
import socket
import subprocess


def binary_folder():
    """GRIDIT_PG_BIN, else the newest Debian /usr/lib/postgresql/NN/bin with pg_ctl."""
    if os.environ.get("GRIDIT_PG_BIN"):
        return os.environ["GRIDIT_PG_BIN"]
    versions = sorted((int(v) for v in os.listdir("/usr/lib/postgresql") if v.isdigit()), reverse=True) \
        if os.path.isdir("/usr/lib/postgresql") else []
    for version in versions:
        folder = f"/usr/lib/postgresql/{version}/bin"
        if os.access(os.path.join(folder, "pg_ctl"), os.X_OK):
            return folder
    raise SystemExit("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
                     "(tools/install-deps.sh installs postgresql), or set GRIDIT_PG_BIN")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb'd into `root` (a new folder); `start`, `restart_immediate`, `stop_fast`, `sql`."""

    user = "gridit"  # the superuser initdb makes

    def __init__(self, root):
        self.bin = binary_folder()
        self.root = root
        self.data = os.path.join(root, "data")
        self.log_path = os.path.join(root, "server.log")
        self.port = free_port()
        self.as_root = os.getuid() == 0
        os.makedirs(root)
        if self.as_root:
            shutil.chown(root, "postgres", "postgres")
        self._tool("initdb", "-D", self.data, "-U", self.user, "--auth=trust", "--encoding=UTF8", "--locale=C",
                   "--no-sync")

    def _tool(self, name, *args, check=True):
        command = [os.path.join(self.bin, name), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        r = subprocess.run(command, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                           cwd=self.root)
        if check and r.returncode != 0:
            raise SystemExit(f"{name} failed ({r.returncode}): {r.stderr}{r.stdout}\n{self.log_tail()}")
        return r

    def log_tail(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def start(self):
        # Throwaway settings, with one exception: synchronous_commit stays on, so that a commit
        # griditd was told of survives an immediate restart (a crash of the server's processes;
        # the kernel keeps what was written, so fsync may be off).
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=100 -c shared_buffers=32MB")
        self._tool("pg_ctl", "start", "-D", self.data, "-l", self.log_path, "-w", "-t", "300", "-o", options)

    def restart_immediate(self):
        """`pg_ctl restart -m immediate`: every backend dies at once, recovery from the WAL."""
        self._tool("pg_ctl", "restart", "-D", self.data, "-l", self.log_path, "-m", "immediate", "-w", "-t", "300")

    def stop_fast(self):
        self._tool("pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w", "-t", "300")

    def stop_now(self):
        """At the end, whatever state it is in (no error if it is not running)."""
        self._tool("pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w", "-t", "60", check=False)

    def url(self, user, database):
        return f"postgres://{user}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def sql(self, statement, database="postgres"):
        """Runs `statement` (one or more; the last one's rows come back, one line each)."""
        r = subprocess.run(
            [os.path.join(self.bin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", self.user, "-d", database, "-c", statement],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise SystemExit(f"psql failed ({r.returncode}): {r.stderr}")
        return r.stdout

    def rows(self, query, database="postgres"):
        """The rows of `query` as dictionaries (through json_agg)."""
        text = self.sql(f"SELECT coalesce(json_agg(q), '[]') FROM ({query}) AS q", database).strip()
        return json.loads(text)
