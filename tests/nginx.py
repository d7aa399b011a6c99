"""nginx (Debian's package) started on 127.0.0.1 for a test, from a configuration template."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None
)


@contextmanager
def running_nginx(config: str, root: Path, tmp: Path) -> Iterator[int]:
    """nginx serving ``root`` with ``config`` (a template of ``{tmp}``, ``{port}`` and ``{root}``)
    until the block ends; yields its port. Skips the test when nginx is missing."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt install nginx)")
    for _ in range(3):  # a port taken between the probe and the bind: try another
        port = free_port()
        (tmp / "nginx.conf").write_text(config.format(tmp=tmp, port=port, root=root))
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
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
