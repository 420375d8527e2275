"""What the chaos runners share: a griditd of their own on a temporary state directory, and raw
requests on its socket (one connection each, nothing from griditctl). Standard library only."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
