"""nginx (Debian's package) serving a folder on 127.0.0.1, with an access log that says how many
body bytes each response sent: what a reader really fetched, counted by the server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None
)

CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    log_format sent '$status $body_bytes_sent $http_range';
    access_log {tmp}/access.log sent;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@dataclass
class Served:
    base: str
    log: Path

    def sent(self) -> int:
        """Body bytes nginx has sent so far (each response is logged when it ends)."""
        if not self.log.exists():
            return 0
        return sum(int(line.split()[1]) for line in self.log.read_text().splitlines() if line)

    def requests(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def nginx(root: Path, tmp: Path) -> Iterator[Served]:
    """nginx serving ``root`` until the block ends (skips the test when nginx is missing)."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt install nginx)")
    for _ in range(3):  # a port taken between the probe and the bind: try another
        port = _free_port()
        (tmp / "nginx.conf").write_text(CONFIG.format(tmp=tmp, port=port, root=root))
        with open(tmp / "stderr.log", "wb") as err:
            proc = subprocess.Popen(
                [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        if proc.poll() is None:
            break
    else:
        pytest.fail(f"nginx did not start: {(tmp / 'stderr.log').read_text()}")
    try:
        yield Served(f"http://127.0.0.1:{port}", tmp / "access.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
