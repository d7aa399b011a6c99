"""The servers of the ``http`` group: nginx (the reference) and the Python front ends.

Each server runs on 127.0.0.1 on a free port for the length of the group and is stopped after.
nginx is Debian's binary with a configuration written into a temporary folder (its own pid file,
error log and temporary paths; ``sendfile on``, one worker, no access log), started in the
foreground so that it is this process's child.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from contenders import WORKERS

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {root}; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    """A running server: its process, the URL of the tape, and what to clean up."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    tmp: tempfile.TemporaryDirectory[str] | None = None
    pids: list[int] = field(default_factory=list)

    def peak_rss(self) -> int | None:
        """The largest VmHWM (bytes) of the server's processes (nginx: master and worker)."""
        best = None
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    kib = int(line.split()[1])
                    best = max(best or 0, kib * 1024)
        return best

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.tmp is not None:
            self.tmp.cleanup()


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _wait_ready(name: str, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 120  # the bare servers read the whole tape into memory first
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{name} exited with {proc.returncode}: {' / '.join(tail)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise TimeoutError(f"{name} did not start within 120 s")


def start_nginx(nginx: str, root: Path, filename: str, log_dir: Path) -> Server:
    tmp = tempfile.TemporaryDirectory(prefix="atartape-bench-nginx-")
    port = free_port()
    # As root the workers would run as nobody, who may not read the data folder.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    conf = Path(tmp.name, "nginx.conf")
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp.name, port=port, root=root))
    log = log_dir / "nginx.log"
    with open(log, "wb") as out:
        argv = [nginx, "-p", tmp.name, "-e", f"{tmp.name}/error.log", "-c", str(conf)]
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready("nginx", proc, port, log)
        pid_file = Path(tmp.name, "nginx.pid")
        if not pid_file.exists() or int(pid_file.read_text()) != proc.pid:
            raise RuntimeError("nginx's pid file does not name the process started")
    except BaseException:
        Server("nginx", proc, "", log, tmp).stop()
        raise
    return Server("nginx", proc, f"http://127.0.0.1:{port}/{filename}", log, tmp)


def start_python(kind: str, source: Path, index: Path, tar: Path, log_dir: Path) -> Server:
    port = free_port()
    log = log_dir / f"{kind}.log"
    argv = [sys.executable, str(WORKERS / "http_server.py"), kind, str(port)]
    argv += [str(source), str(index), str(tar)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(kind, proc, port, log)
    except BaseException:
        Server(kind, proc, "", log).stop()
        raise
    return Server(kind, proc, f"http://127.0.0.1:{port}/", log)


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
