"""nginx (Debian's package) serving a folder on 127.0.0.1, with an access log that says how many
body bytes each response sent: what a reader really fetched, counted by the server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.nginx import running_nginx

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


@contextmanager
def nginx(root: Path, tmp: Path) -> Iterator[Served]:
    """nginx serving ``root`` until the block ends (skips the test when nginx is missing)."""
    with running_nginx(CONFIG, root, tmp) as port:
        yield Served(f"http://127.0.0.1:{port}", tmp / "access.log")
