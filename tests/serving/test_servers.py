"""Real servers, real clients: the examples under uvicorn, hypercorn on trio and aiohttp.

Each server is a subprocess on a free port of 127.0.0.1, started once for the module and torn
down by its fixture. They serve one recorded folder (with a 32 MiB sparse file, so that a client
that stops reading leaves the server mid-file). httpx drives them on every backend; curl cuts a
download and resumes it with ``-C -``; GNU tar lists the result. TapeApp's endpoints are tested
at the URL of the recording, where its root URL redirects.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
import httpx
import pytest

import atartape
from tests.helpers import free_port, write

ROOT = Path(__file__).resolve().parents[2]
BIG = 32 << 20


@dataclass
class Served:
    root: Path
    tape: atartape.Tape
    full: bytes
    offsets: dict[str, int]  # start offset of each entry, by archive path

    def names(self) -> list[str]:
        return list(self.offsets)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Endpoint:
    server: Server
    path: str
    cache_control: str
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.server.port}{self.path}"


async def _record_and_play(root: Path) -> tuple[atartape.Tape, bytes, dict[str, int]]:
    tape = await atartape.record(root)
    player = atartape.TapePlayer(tape, source_root=root)
    full = b"".join([chunk async for chunk in player.stream()])
    return tape, full, {e.arc_path: e.start_offset async for e in tape.entries()}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    root = tmp_path_factory.mktemp("http-servers") / "ds"
    write(root / "0_early.txt", "first\n")
    with open(root / "big.bin", "wb") as f:
        f.truncate(BIG)
    write(root / "sub" / "noise.bin", random.Random(4).randbytes(300_000))
    write(root / "sub" / "small.txt", "small\n" * 100)
    write(root / "z_late.txt", "last\n")
    tape, full, offsets = anyio.run(_record_and_play, root)
    return Served(root, tape, full, offsets)


def wait_for_port(proc: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    """Poll until the server accepts connections; ``False`` if it exited first."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no server on port {port} after the deadline")


def start_server(
    command: Callable[[int], list[str]], log: Path, env: dict[str, str] | None = None
) -> Server:
    for _ in range(3):  # a port taken between the probe and the bind: try another
        port = free_port()
        out: IO[bytes] = open(log, "ab")  # noqa: SIM115 - kept open by the child
        proc = subprocess.Popen(
            command(port),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        out.close()
        if wait_for_port(proc, port, time.monotonic() + 60):
            return Server(proc, port, log)
        proc.wait()
    raise RuntimeError(f"the server did not start: {log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def servers(
    served: Served, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """Starts each kind of server on first use; stops them all at the end of the module."""
    logs = tmp_path_factory.mktemp("server-logs")
    python = sys.executable
    folder = str(served.root)
    commands: dict[str, tuple[Callable[[int], list[str]], dict[str, str]]] = {
        "uvicorn": (
            lambda port: [python, "examples/starlette_app.py", folder, "--port", str(port)],
            {},
        ),
        "hypercorn": (
            lambda port: [
                *(python, "-m", "hypercorn", "--worker-class", "trio", "--workers", "0"),
                *("--bind", f"127.0.0.1:{port}", "examples/trio_hypercorn.py:app"),
            ],
            {"ATARTAPE_SOURCE": folder},
        ),
        "aiohttp": (
            lambda port: [python, "examples/aiohttp_app.py", folder, "--port", str(port)],
            {},
        ),
    }
    started: dict[str, Server] = {}

    class Lazy(dict[str, Server]):
        def __missing__(self, kind: str) -> Server:
            command, env = commands[kind]
            server = self[kind] = started[kind] = start_server(command, logs / f"{kind}.log", env)
            return server

    try:
        yield Lazy()
    finally:
        for server in started.values():
            stop(server.proc)


ENDPOINTS = {
    "starlette-mount": ("uvicorn", "/tape/"),  # TapeApp mounted in Starlette, uvicorn
    "starlette-response": ("uvicorn", "/download"),  # TapeResponse in a route, uvicorn
    "hypercorn-trio": ("hypercorn", "/"),  # TapeApp at the root, hypercorn --worker-class trio
    "aiohttp": ("aiohttp", "/download"),  # tape_response in an aiohttp handler
}
IMMUTABLE = "max-age=31536000, immutable"


@pytest.fixture(scope="module", params=list(ENDPOINTS))
def endpoint(
    request: pytest.FixtureRequest, servers: dict[str, Server], served: Served
) -> Endpoint:
    kind, path = ENDPOINTS[request.param]
    server = servers[kind]
    if path.endswith("/"):  # TapeApp: the root redirects to the recording's own URL
        root = httpx.head(f"http://127.0.0.1:{server.port}{path}", timeout=30)
        assert root.status_code == 307 and root.headers["cache-control"] == "no-store"
        location = root.headers["location"]
        assert location == f"{path}r/{served.tape.identity}/ds.tar"
        return Endpoint(server, location, IMMUTABLE)
    return Endpoint(server, path, "no-cache")


def open_in(pid: int, root: Path) -> list[str]:
    """Files under ``root`` that process ``pid`` holds open."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root) + os.sep):
            found.append(target)
    return found


async def poll(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Wait until ``check()`` (run in a worker thread) holds, or fail after ``timeout``."""
    deadline = anyio.current_time() + timeout
    while not await anyio.to_thread.run_sync(check):
        if anyio.current_time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await anyio.sleep(0.02)


def client(**kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=30, **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- httpx, every backend


@pytest.mark.anyio
async def test_whole_and_head(endpoint: Endpoint, served: Served) -> None:
    async with client() as http:
        whole = await http.get(endpoint.url)
        assert whole.status_code == 200
        assert whole.content == served.full
        assert whole.headers["content-length"] == str(served.tape.total_size)
        assert whole.headers["content-type"] == "application/x-tar"
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["etag"] == f'"{served.tape.identity}"'
        assert whole.headers["cache-control"] == endpoint.cache_control
        assert whole.headers["last-modified"].endswith(" GMT")
        assert whole.headers["content-disposition"] == 'attachment; filename="ds.tar"'
        head = await http.head(endpoint.url)
        assert head.status_code == 200
        assert head.content == b""
        for name in ("content-length", "etag", "last-modified", "content-disposition"):
            assert head.headers[name] == whole.headers[name]
        etag = whole.headers["etag"]
        for headers in (
            {"If-None-Match": etag},
            {"If-Modified-Since": whole.headers["last-modified"]},
        ):
            cached = await http.get(endpoint.url, headers=headers)
            assert cached.status_code == 304 and cached.content == b""
            assert cached.headers["etag"] == etag
        refused = await http.get(endpoint.url, headers={"If-Match": '"x"', "Range": "bytes=0-9"})
        assert refused.status_code == 412


@pytest.mark.anyio
async def test_ranges(endpoint: Endpoint, served: Served) -> None:
    total = served.tape.total_size
    full = served.full
    async with client() as http:
        for value, start, end in [
            ("bytes=0-0", 0, 1),
            ("bytes=1000-1999", 1000, 2000),
            (f"bytes={total - 5000}-", total - 5000, total),
            ("bytes=-70000", total - 70000, total),
            (f"bytes={total - 1}-{total + 99}", total - 1, total),
        ]:
            part = await http.get(endpoint.url, headers={"Range": value})
            assert part.status_code == 206, value
            assert part.content == full[start:end], value
            assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{total}"
            assert part.headers["content-length"] == str(end - start)
        beyond = await http.get(endpoint.url, headers={"Range": f"bytes={total}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{total}"
        several = await http.get(endpoint.url, headers={"Range": "bytes=70000-70009,0-1,4-5"})
        assert several.status_code == 206
        kind, _, boundary = several.headers["content-type"].partition("; boundary=")
        assert kind == "multipart/byteranges"
        assert several.content == (
            f"--{boundary}\r\ncontent-type: application/x-tar\r\n"
            f"content-range: bytes 0-1/{total}\r\n\r\n".encode() + full[0:2]
            + f"\r\n--{boundary}\r\ncontent-type: application/x-tar\r\n"
            f"content-range: bytes 4-5/{total}\r\n\r\n".encode() + full[4:6]
            + f"\r\n--{boundary}\r\ncontent-type: application/x-tar\r\n"
            f"content-range: bytes 70000-70009/{total}\r\n\r\n".encode() + full[70000:70010]
            + f"\r\n--{boundary}--\r\n".encode()
        )  # fmt: skip
        for ignored in ("bytes=9-3", "lines=1-2"):
            async with http.stream("GET", endpoint.url, headers={"Range": ignored}) as whole:
                assert whole.status_code == 200, ignored
                assert whole.headers["content-length"] == str(total)
                assert "content-range" not in whole.headers


@pytest.mark.anyio
async def test_if_range(endpoint: Endpoint, served: Served) -> None:
    etag = f'"{served.tape.identity}"'
    async with client() as http:
        same = await http.get(endpoint.url, headers={"Range": "bytes=-100", "If-Range": etag})
        assert same.status_code == 206
        assert same.content == served.full[-100:]
        for stale in ('"another-tape"', f"W/{etag}", "Mon, 06 May 2024 07:08:09 GMT"):
            headers = {"Range": "bytes=-100", "If-Range": stale}
            async with http.stream("GET", endpoint.url, headers=headers) as whole:
                assert whole.status_code == 200, stale
                assert whole.headers["content-length"] == str(served.tape.total_size)


@pytest.mark.anyio
async def test_other_methods_are_405(endpoint: Endpoint) -> None:
    async with client() as http:
        for method in ("POST", "PUT", "DELETE"):
            refused = await http.request(method, endpoint.url)
            assert refused.status_code == 405, method
            allowed = {m.strip() for m in refused.headers["allow"].split(",")}
            assert {"GET", "HEAD"} <= allowed


@pytest.mark.anyio
async def test_disconnect_closes_every_source_file(endpoint: Endpoint, served: Served) -> None:
    pid = endpoint.server.proc.pid
    big = str(served.root / "big.bin")
    request = f"GET {endpoint.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    async with await anyio.connect_tcp("127.0.0.1", endpoint.server.port) as connection:
        await connection.send(request)
        assert (await connection.receive()).startswith(b"HTTP/1.1 200")
        # The client stops reading: the server is stuck mid-file, holding it open.
        await poll(lambda: big in open_in(pid, served.root), "the server to hold big.bin")
    # The client is gone before the body was read.
    await poll(lambda: open_in(pid, served.root) == [], "the server to close every file")


@pytest.mark.anyio
async def test_changed_file_aborts_the_response(endpoint: Endpoint, served: Served) -> None:
    late = served.root / "z_late.txt"
    before = late.stat()
    late_at = served.offsets["ds/z_late.txt"]
    noise_at = served.offsets["ds/sub/noise.bin"]
    log_size = len(endpoint.server.log_text())
    os.utime(late, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    try:
        async with client() as http:
            async with http.stream(
                "GET", endpoint.url, headers={"Range": f"bytes={noise_at}-"}
            ) as broken:
                assert broken.status_code == 206  # started, then cut short of Content-Length
                received = bytearray()
                with pytest.raises(httpx.RemoteProtocolError):
                    async for chunk in broken.aiter_raw():
                        received += chunk
                assert len(received) < served.tape.total_size - noise_at
                assert bytes(received) == served.full[noise_at : noise_at + len(received)]
            refused = await http.get(endpoint.url, headers={"Range": f"bytes={late_at}-"})
            assert refused.status_code == 500  # failed before the response started
            # The server logs it and keeps serving what did not change.
            fine = await http.get(endpoint.url, headers={"Range": f"bytes=0-{noise_at - 1}"})
            assert fine.status_code == 206
            assert fine.content == served.full[:noise_at]

        def logged() -> bool:
            text = endpoint.server.log_text()[log_size:]
            return text.count("response aborted at byte") >= 2 and "z_late.txt" in text

        await poll(logged, "the integrity error in the server log")
    finally:
        os.utime(late, ns=(before.st_atime_ns, before.st_mtime_ns))
    async with client() as http:
        assert (await http.get(endpoint.url, headers={"Range": f"bytes={late_at}-"})).content == (
            served.full[late_at:]
        )


@pytest.mark.anyio
async def test_50_concurrent_range_downloads(endpoint: Endpoint, served: Served) -> None:
    total = served.tape.total_size
    rng = random.Random(50)
    boundaries = sorted(served.offsets.values())
    windows = []
    for i in range(50):
        if i % 3 == 0:  # across an entry boundary
            at = rng.choice(boundaries[1:])
            windows.append((max(0, at - rng.randrange(1, 5000)), at + rng.randrange(1, 400_000)))
        else:
            start = rng.randrange(total)
            windows.append((start, min(total, start + rng.randrange(1, 1_500_000))))
    results: dict[int, tuple[int, bytes]] = {}

    async def fetch(http: httpx.AsyncClient, i: int) -> None:
        start, end = windows[i]
        response = await http.get(endpoint.url, headers={"Range": f"bytes={start}-{end - 1}"})
        results[i] = response.status_code, response.content

    limits = httpx.Limits(max_connections=50)
    async with client(limits=limits) as http, anyio.create_task_group() as group:
        for i in range(50):
            group.start_soon(fetch, http, i)
    for i, (start, end) in enumerate(windows):
        status, content = results[i]
        assert status == 206
        assert content == served.full[start:end], (start, end)


# ----------------------------------------------------------------------------- curl and tar


def test_curl_cut_and_resume_gives_the_same_archive(
    endpoint: Endpoint, served: Served, tmp_path: Path
) -> None:
    if shutil.which("curl") is None or shutil.which("tar") is None:
        pytest.skip("needs curl and GNU tar")
    out = tmp_path / "download.tar"
    cut = served.offsets["ds/big.bin"] + BIG // 2 + 1234  # in the middle of a file
    first = subprocess.run(
        ["curl", "-sS", "--fail", "-r", f"0-{cut - 1}", "-o", out, endpoint.url],
        capture_output=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert out.stat().st_size == cut
    resumed = subprocess.run(
        ["curl", "-sS", "--fail", "-C", "-", "-o", out, "-w", "%{http_code}", endpoint.url],
        capture_output=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == b"206"
    assert out.read_bytes() == served.full
    listed = subprocess.run(["tar", "-tf", out], capture_output=True, timeout=60, check=True)
    assert [n.rstrip("/") for n in listed.stdout.decode().split()] == served.names()


# ----------------------------------------------------------------------------- connections, threads


async def read_until_closed(stream: anyio.abc.ByteStream) -> bytes:
    received = b""
    while True:
        try:
            received += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return received


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("version", "extra"),
    [("HTTP/1.0", ""), ("HTTP/1.1", "Connection: close\r\n")],
)
async def test_the_server_closes_http10_and_connection_close(
    endpoint: Endpoint, served: Served, version: str, extra: str
) -> None:
    """Issue 13.8: hypercorn on trio cancelled its own close of these connections when the app
    watched for a disconnect around the last message of the response; they must close."""
    request = (
        f"GET {endpoint.path} {version}\r\nHost: 127.0.0.1\r\n{extra}Range: bytes=0-99\r\n\r\n"
    )
    for head_first in (False, True):
        message = request.replace("GET", "HEAD", 1) if head_first else request
        async with await anyio.connect_tcp("127.0.0.1", endpoint.server.port) as connection:
            await connection.send(message.encode())
            with anyio.fail_after(10):  # a connection left open never reaches the end
                received = await read_until_closed(connection)
        head, _, body = received.partition(b"\r\n\r\n")
        if head_first:
            assert head.split(b" ")[1] == b"200" and body == b"", message
        else:
            assert head.split(b" ")[1] == b"206" and body == served.full[:100], message


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


@pytest.mark.anyio
async def test_100_concurrent_plays_keep_the_threads_bounded(
    endpoint: Endpoint, served: Served
) -> None:
    """Issue 13.7: a play holds no thread of its own; the index connection is shared by the
    plays of one recording, file reads run on anyio's worker threads (40 by default)."""
    pid = endpoint.server.proc.pid
    total = served.tape.total_size
    rng = random.Random(100)
    windows = [(start, min(total, start + 300_000)) for start in rng.sample(range(total), 100)]
    peak = threads_of(pid)
    done = anyio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await anyio.to_thread.run_sync(threads_of, pid))

    results: list[tuple[int, int, bytes]] = []

    async def fetch(http: httpx.AsyncClient, start: int, end: int) -> None:
        response = await http.get(endpoint.url, headers={"Range": f"bytes={start}-{end - 1}"})
        results.append((start, response.status_code, response.content))

    limits = httpx.Limits(max_connections=100)
    async with client(limits=limits) as http, anyio.create_task_group() as group:
        group.start_soon(sample)
        async with anyio.create_task_group() as requests:
            for start, end in windows:
                requests.start_soon(fetch, http, start, end)
        done.set()
    assert len(results) == 100
    for start, status, content in results:
        end = min(total, start + 300_000)
        assert status == 206 and content == served.full[start:end]
    # At most: anyio's 40 worker threads, the main thread, the index thread of this one
    # recording and uvloop's 4 libuv workers (measured: 46 under uvicorn, 26 under hypercorn
    # on trio, 42 under aiohttp): well below one per request.
    assert peak <= 50, peak


# ----------------------------------------------------------------------------- REDbot


def test_redbot_finds_nothing_to_warn_about(endpoint: Endpoint, tmp_path: Path) -> None:
    """REDbot, "lint for HTTP", checks the response, its caching, its validators (304) and
    ranges; nothing it notes may be a warning. Runs where ``redbot`` is on PATH (or named by
    ATARTAPE_REDBOT): ``pip install redbot``, best in a venv of its own."""
    redbot = os.environ.get("ATARTAPE_REDBOT") or shutil.which("redbot")
    if redbot is None:
        pytest.skip("redbot is not installed (pip install redbot)")
    urls = [endpoint.url]
    if "/r/" in endpoint.path:  # TapeApp: its root redirect too
        urls.append(endpoint.url[: endpoint.url.index("r/")])
    for url in urls:
        done = subprocess.run([redbot, "-o", "har", url], capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
        har = json.loads(done.stdout)
        notes = [
            (note["level"], note["summary"])
            for entry in har["log"]["entries"]
            for note in entry.get("_red_messages", [])
        ]
        assert notes, url
        assert not [n for n in notes if n[0] not in ("GOOD", "INFO")], (url, notes)
