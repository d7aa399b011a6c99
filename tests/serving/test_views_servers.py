"""A sealed and compressed tape over real servers: ``atartape serve`` (uvicorn on asyncio,
hypercorn on trio) on 127.0.0.1, curl cutting a download and resuming it with ``-C -``, and the
stock tools reading the result: ``age -d`` opens it, ``zstd -d`` gives the tar, ``tar --zstd``
lists it."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio
import httpx
import pytest

import atartape
from atartape import views
from tests.serving.views_support import edges, full, identity_file, record, tree

BACKENDS = ["asyncio", "trio"]  # uvicorn on asyncio, hypercorn on trio
TIMEOUT = 60
TOOLS = ("curl", "age", "zstd", "tar")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


needs_tools = pytest.mark.skipif(
    bool(missing_tools()),
    reason=f"needs {', '.join(missing_tools())} (Debian packages curl, age, zstd, tar)",
)


@dataclass
class Sealed:
    root: Path
    tape: atartape.Tape
    data: bytes  # the zstd+age view
    plain: bytes  # the tar
    key: Path  # an age identity file that opens it

    @property
    def names(self) -> list[str]:
        with_dirs = subprocess.run(
            ["tar", "-tf", "-"], input=self.plain, capture_output=True, check=True
        ).stdout.decode()
        return with_dirs.split()


async def _recorded(root: Path) -> tuple[atartape.Tape, bytes, bytes]:
    tape = await record(root, root / ".tartape" / "index.db", "zstd+age")
    return (
        tape,
        await full(atartape.TapePlayer(tape)),
        await full(atartape.TapePlayer(tape, view="plain")),
    )


def sealed_folder(base: Path) -> Sealed:
    root = tree(base / "data", scale=8)  # about 1.4 MB of tar, 0.7 MB sealed
    tape, data, plain = anyio.run(_recorded, root)
    return Sealed(root, tape, data, plain, identity_file(base))


@dataclass
class Serving:
    proc: subprocess.Popen[bytes]
    log: Path
    root: str  # http://127.0.0.1:PORT
    recording_url: str

    def stop(self) -> tuple[int | None, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None, self.log.read_text(errors="replace")
        return self.proc.returncode, self.log.read_text(errors="replace")


def serve(root: Path, log: Path, backend: str, *options: object) -> Serving:
    """Start ``atartape serve ROOT OPTIONS`` and wait until it answers."""
    err: IO[bytes] = open(log, "wb")  # noqa: SIM115 - kept open by the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "atartape", "serve", str(root), "--port", "0",
         "--backend", backend, *map(str, options)],
        stdout=subprocess.DEVNULL,
        stderr=err,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    err.close()
    deadline = time.monotonic() + TIMEOUT
    pattern = r"on (http://127\.0\.0\.1:\d+)/ .*to resume safely: (http://\S+)"
    while (found := re.search(pattern, log.read_text(errors="replace"))) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise RuntimeError(f"serve did not start: {log.read_text(errors='replace')}")
        time.sleep(0.02)
    server = Serving(proc, log, found.group(1), found.group(2))
    while time.monotonic() < deadline:  # the line comes just before the server listens
        try:
            httpx.head(server.root + "/", timeout=5)
            return server
        except httpx.TransportError:
            time.sleep(0.02)
    server.stop()
    raise RuntimeError("serve never answered")


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    return sealed_folder(tmp_path_factory.mktemp("sealed-http"))


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, sealed: Sealed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serving]:
    log = tmp_path_factory.mktemp("sealed-logs") / f"{request.param}.log"
    serving = serve(sealed.root, log, request.param)
    try:
        yield serving
    finally:
        code, text = serving.stop()
    assert code == 0 and "Traceback" not in text, text


def run(*command: object, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(map(str, command)),
        capture_output=True,
        timeout=TIMEOUT,
        **kwargs,  # type: ignore[arg-type]
    )


def opened_with_the_stock_tools(sealed: Sealed, download: Path) -> None:
    """``age -d`` opens ``download``, ``zstd -d`` gives the tar, ``tar --zstd`` lists it."""
    compressed = download.with_suffix("")  # data.tar.zst
    decrypted = run("age", "-d", "-i", sealed.key, "-o", compressed, download)
    assert decrypted.returncode == 0, decrypted.stderr
    decompressed = run("zstd", "-d", "-c", compressed)
    assert decompressed.returncode == 0, decompressed.stderr
    assert decompressed.stdout == sealed.plain
    listed = run("tar", "--zstd", "-tf", compressed)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().split() == sealed.names


@needs_tools
@pytest.mark.parametrize("cut", ["range", "pipe"])
def test_curl_resume_of_a_sealed_tape_opens_with_age(
    server: Serving, sealed: Sealed, tmp_path: Path, cut: str
) -> None:
    """Issue 17: a download of the sealed view cut part-way (a first ``curl -r``, or a client
    whose reader stopped after N bytes), resumed with ``curl -C -``, opens with ``age``."""
    url = server.recording_url
    identity = views.identity_of(sealed.tape.identity, "zstd+age")
    assert url == f"{server.root}/r/{identity}/data.tar.zst.age"
    out = tmp_path / "data.tar.zst.age"
    at = len(sealed.data) // 3 + 1234
    if cut == "range":
        first = run("curl", "-fsS", "-r", f"0-{at - 1}", "-o", out, url)
        assert first.returncode == 0, first.stderr
    else:  # `curl URL | head -c N > out`: the reader leaves mid-body, curl fails writing
        with open(out, "wb") as sink:
            curl = subprocess.Popen(["curl", "-fsS", url], stdout=subprocess.PIPE)
            assert curl.stdout is not None
            sink.write(curl.stdout.read(at))
            curl.stdout.close()
            assert curl.wait(timeout=TIMEOUT) == 23  # "write error": cut short
    assert out.read_bytes() == sealed.data[:at]
    resumed = run("curl", "-fsS", "-C", "-", "-o", out, "-w", "%{http_code}", url)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == b"206"
    assert out.read_bytes() == sealed.data
    opened_with_the_stock_tools(sealed, out)


def test_ranges_headers_and_root_of_a_sealed_view(server: Serving, sealed: Sealed) -> None:
    """Each boundary of the view and random offsets, through the real server (every range
    replays the 1 MiB sealed blocks it lies in: the many-offsets property runs in process, in
    test_views_http.py)."""
    data, size = sealed.data, len(sealed.data)
    identity = views.identity_of(sealed.tape.identity, "zstd+age")
    rng = random.Random(5)
    starts = [a for a in edges("zstd+age", data) if a < size]
    starts += [rng.randrange(size) for _ in range(24)]
    with httpx.Client(timeout=30) as http:
        root = http.head(server.root + "/")
        assert root.status_code == 307
        assert server.root + root.headers["location"] == server.recording_url
        head = http.head(server.recording_url)
        assert head.headers["etag"] == f'"{identity}"'
        assert head.headers["content-type"] == "application/octet-stream"
        assert head.headers["content-length"] == str(size)
        assert head.headers["content-disposition"] == 'attachment; filename="data.tar.zst.age"'
        assert head.headers["accept-ranges"] == "bytes"
        for a in starts:
            b = min(size, a + rng.randrange(1, 90_000))
            part = http.get(
                server.recording_url,
                headers={"Range": f"bytes={a}-{b - 1}", "If-Range": f'"{identity}"'},
            )
            assert part.status_code == 206 and part.content == data[a:b], (a, b)


@needs_tools
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_superseded_sealed_recording_refuses_the_resume(backend: str, tmp_path: Path) -> None:
    """Sealed again (a new file key: other bytes at every offset), the old recording's URL is
    410: ``curl -C -`` fails and leaves the partial file as it was; the root URL gives the
    new recording, which opens with age."""
    sealed = sealed_folder(tmp_path)
    server = serve(sealed.root, tmp_path / "serve.log", backend)
    try:
        out = tmp_path / "data.tar.zst.age"
        at = 200_000
        first = run("curl", "-fsS", "-r", f"0-{at - 1}", "-o", out, server.recording_url)
        assert first.returncode == 0, first.stderr
        anyio.run(record, sealed.root, sealed.root / ".tartape" / "index.db", "zstd+age")
        for command in (
            ["curl", "-fsS", "-C", "-", "-o", out, server.recording_url],
            ["curl", "-sS", "-C", "-", "-o", out, server.recording_url],
        ):
            refused = run(*command)
            assert refused.returncode != 0, command
            assert out.read_bytes() == sealed.data[:at], command  # untouched: no splice
        gone = httpx.get(server.recording_url, timeout=30)
        assert gone.status_code == 410 and gone.headers["cache-control"] == "no-store"
        fresh = tmp_path / "fresh" / "data.tar.zst.age"
        fresh.parent.mkdir()
        again = run("curl", "-fsSL", "-o", fresh, "-w", "%{url_effective}", server.root + "/")
        assert again.returncode == 0, again.stderr
        assert again.stdout.decode() != server.recording_url
        opened_with_the_stock_tools(sealed, fresh)  # the same tar, sealed anew
    finally:
        code, log = server.stop()
    assert code == 0 and "Traceback" not in log, log


def test_serve_view_options(sealed: Sealed, tmp_path: Path) -> None:
    """``--view`` serves another view; a view the tape lacks is exit 2 and a missing key
    exit 1, each one line, before anything is served; ``--age-identity-file`` stands for the
    key file."""
    server = serve(sealed.root, tmp_path / "plain.log", "asyncio", "--view", "plain")
    try:
        assert server.recording_url.endswith(f"/r/{sealed.tape.identity}/data.tar")
        got = httpx.get(server.recording_url, headers={"Range": "bytes=1000-"}, timeout=30)
        assert got.status_code == 206 and got.content == sealed.plain[1000:]
        assert got.headers["content-type"] == "application/x-tar"
    finally:
        code, log = server.stop()
    assert code == 0, log
    assert f"serving 'data' as data.tar ({len(sealed.plain)} bytes)" in log

    def refused(*options: object) -> tuple[int, list[str]]:
        done = run(sys.executable, "-m", "atartape", "serve", sealed.root, "--port", "0",
                   *options)  # fmt: skip
        return done.returncode, done.stderr.decode().strip().splitlines()

    code, lines = refused("--view", "age")
    assert code == 2 and len(lines) == 1 and "no 'age' view" in lines[0], lines
    key = views.key_path(sealed.tape.index_path)
    hidden = tmp_path / "key"
    shutil.move(key, hidden)
    try:
        code, lines = refused()
        assert code == 1 and len(lines) == 1 and "no key" in lines[0], lines
        server = serve(
            sealed.root, tmp_path / "identity.log", "trio", "--age-identity-file", sealed.key
        )
        try:
            got = httpx.get(server.recording_url, headers={"Range": "bytes=-5000"}, timeout=30)
            assert got.status_code == 206 and got.content == sealed.data[-5000:]
        finally:
            code, log = server.stop()
        assert code == 0 and "Traceback" not in log, log
    finally:
        shutil.move(hidden, key)
