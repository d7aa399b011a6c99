"""``atartape serve`` across re-recordings, with real servers and real clients.

The folder holds the files of two known trees at once; recording it with one exclude pattern or
the other gives recording A or recording B, whose bytes are known before the server starts
(the sources never change, so a play never fails for their sake). The server is ``atartape
serve`` (uvicorn on asyncio, hypercorn on trio) on a free port of 127.0.0.1; httpx, curl, wget
and aria2c are the clients.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio
import httpx
import pytest

import atartape
from tests.helpers import write

BACKENDS = ["asyncio", "trio"]  # uvicorn on asyncio, hypercorn on trio
EXCLUDE = {"A": ["b_only.bin"], "B": ["a_only.bin"]}
TIMEOUT = 60


@dataclass
class Recording:
    tape: atartape.Tape
    full: bytes


@dataclass
class Swapped:
    """A folder that records as A or B, and the bytes of each."""

    root: Path
    recordings: dict[str, Recording]

    def by_identity(self) -> dict[str, bytes]:
        return {r.tape.identity: r.full for r in self.recordings.values()}

    async def record(self, which: str) -> atartape.Tape:
        tape = await atartape.record(self.root, exclude=EXCLUDE[which], overwrite=True)
        assert tape.identity == self.recordings[which].tape.identity
        return tape


async def _record_both(root: Path) -> dict[str, Recording]:
    found = {}
    for which, exclude in EXCLUDE.items():
        tape = await atartape.record(root, exclude=exclude, overwrite=True)
        player = atartape.TapePlayer(tape)
        found[which] = Recording(tape, b"".join([c async for c in player.chunks()]))
    return found


@pytest.fixture
def swapped(tmp_path: Path) -> Swapped:
    root = tmp_path / "ds"
    rng = random.Random(7)
    write(root / "0_first.txt", "first\n")
    write(root / "a_only.bin", rng.randbytes(200_000))  # A and B have the same size...
    write(root / "b_only.bin", rng.randbytes(200_000))  # ...and different bytes
    write(root / "shared" / "big.bin", rng.randbytes(1_500_000))
    write(root / "shared" / "small.txt", "small\n" * 100)
    recordings = anyio.run(_record_both, root)
    assert recordings["A"].tape.total_size == recordings["B"].tape.total_size
    assert recordings["A"].full != recordings["B"].full
    return Swapped(root, recordings)


@dataclass
class Serving:
    proc: subprocess.Popen[bytes]
    log: Path
    root: str  # http://127.0.0.1:PORT
    recording_url: str  # the URL of the recording it started with

    def stop(self, timeout: float = 20) -> tuple[int | None, str]:
        """Interrupt the server; its exit status (``None``: it had to be killed) and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None, self.log.read_text(errors="replace")
        return self.proc.returncode, self.log.read_text(errors="replace")


def serve(root: Path, log: Path, backend: str, *options: str) -> Serving:
    """Start ``atartape serve`` and wait for the line that says where it serves."""
    err: IO[bytes] = open(log, "wb")  # noqa: SIM115 - kept open by the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "atartape", *options, "serve", str(root), "--port", "0",
         "--backend", backend],
        stdout=subprocess.DEVNULL,
        stderr=err,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    err.close()
    deadline = time.monotonic() + TIMEOUT
    pattern = r"on (http://127\.0\.0\.1:\d+)/ .*to resume safely: (http://\S+)"
    while (found := re.search(pattern, log.read_text(errors="replace"))) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"serve did not start: {log.read_text(errors='replace')}")
        time.sleep(0.02)
    server = Serving(proc, log, found.group(1), found.group(2))
    for _ in range(int(TIMEOUT / 0.02)):  # the line comes just before the server listens
        try:
            httpx.head(server.root + "/", timeout=5)
            return server
        except httpx.TransportError:
            time.sleep(0.02)
    server.stop()
    raise RuntimeError("serve never answered")


# ----------------------------------------------------------------------------- the race


def read_multipart(content: bytes, content_type: str) -> list[tuple[int, int, bytes]]:
    boundary = content_type.partition("; boundary=")[2].encode()
    found = []
    for chunk in (b"\r\n" + content).split(b"\r\n--" + boundary)[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        first, last = map(int, re.findall(rb"bytes (\d+)-(\d+)/", head)[0])
        found.append((first, last + 1, data))
    return found


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", BACKENDS)
async def test_responses_during_rerecordings_carry_their_etags_bytes(
    anyio_backend: str, swapped: Swapped, tmp_path: Path
) -> None:
    """Case 2: re-recording A, B, A... while 16 clients fetch ranges through the root URL's
    redirect, with If-Range or a bare Range: every 206 body holds the bytes of the recording
    its ETag (and URL) names; a superseded recording is 410; nothing else."""
    known = swapped.by_identity()
    total = swapped.recordings["A"].tape.total_size
    await swapped.record("A")
    server = await anyio.to_thread.run_sync(
        serve, swapped.root, tmp_path / "serve.log", anyio_backend
    )
    seen = {"206": 0, "410": 0, "dropped": 0, "multipart": 0}
    done = anyio.Event()

    async def rerecord() -> None:
        for i in range(30):
            await swapped.record("B" if i % 2 == 0 else "A")
        done.set()

    async def fetch(http: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set():
            redirect = await http.head(server.root + "/")
            assert redirect.status_code == 307
            location = redirect.headers["location"]
            identity = location.split("/")[2]
            expected = known[identity]
            start = rng.randrange(total)
            if rng.random() < 0.2:  # two small ranges: multipart
                end = min(total, start + rng.randrange(1, 60_000))
                other = rng.randrange(total)
                ranges = f"bytes={start}-{end - 1},{other}-{other + rng.randrange(60_000)}"
            else:
                end = min(total, start + rng.randrange(1, 400_000))
                ranges = f"bytes={start}-{end - 1}"
            headers = {"Range": ranges}
            if rng.random() < 0.5:
                headers["If-Range"] = f'"{identity}"'
            async with http.stream("GET", server.root + location, headers=headers) as response:
                if response.status_code == 410:
                    seen["410"] += 1
                    continue
                assert response.status_code == 206, (response.status_code, headers)
                assert response.headers["etag"] == f'"{identity}"'
                received = bytearray()
                try:
                    async for chunk in response.aiter_raw():
                        received += chunk
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    seen["dropped"] += 1
                    length = int(response.headers["content-length"])
                    assert len(received) < length
                    if "content-range" in response.headers:
                        first = int(re.findall(r"(\d+)-", response.headers["content-range"])[0])
                        assert bytes(received) == expected[first : first + len(received)]
                    continue
            seen["206"] += 1
            if response.headers["content-type"].startswith("multipart/byteranges"):
                seen["multipart"] += 1
                kind = response.headers["content-type"]
                for first, last, data in read_multipart(received, kind):
                    assert data == expected[first:last]
            else:  # one part (two ranges may coalesce): the window Content-Range names
                first, last = map(
                    int, re.findall(r"(\d+)-(\d+)/", response.headers["content-range"])[0]
                )
                assert first <= start and end <= last + 1
                assert bytes(received) == expected[first : last + 1]

    try:
        limits = httpx.Limits(max_connections=16)
        with anyio.fail_after(120):
            async with (
                httpx.AsyncClient(timeout=30, limits=limits) as http,
                anyio.create_task_group() as group,
            ):
                group.start_soon(rerecord)
                for seed in range(16):
                    group.start_soon(fetch, http, seed)
    finally:
        code, log = await anyio.to_thread.run_sync(server.stop, 10)
    assert seen["206"] > 0, seen
    lines = log.strip().splitlines()
    assert len(lines) == 1 and "serving" in lines[0], log  # no error, no 500, no traceback
    assert code == 0  # it exits on SIGINT: no index connection was left open


# ----------------------------------------------------------------------------- curl, wget, aria2c


def run(*command: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(map(str, command)), capture_output=True, timeout=TIMEOUT)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bare_range_resume_fails_loudly_after_a_rerecording(
    backend: str, swapped: Swapped, tmp_path: Path
) -> None:
    """Case 4: curl -C -, wget -c and aria2c send a bare Range. Resumed against the URL the
    first download ended at (the recording's own), they finish the download when the tape is
    the same, and fail without touching the file once it was re-recorded."""
    if shutil.which("curl") is None or shutil.which("wget") is None:
        pytest.skip("needs curl and wget")
    a, b = swapped.recordings["A"], swapped.recordings["B"]
    anyio.run(swapped.record, "A")
    server = serve(swapped.root, tmp_path / "serve.log", backend)
    try:
        cut = 700_000  # inside shared/big.bin
        part = tmp_path / "ds.tar"
        first = run("curl", "-fsSL", "-r", f"0-{cut - 1}", "-o", part, "-w", "%{url_effective}",
                    server.root + "/")  # fmt: skip
        assert first.returncode == 0, first.stderr
        url = first.stdout.decode()
        assert url == server.recording_url == f"{server.root}/r/{a.tape.identity}/ds.tar"
        assert part.read_bytes() == a.full[:cut]

        def copy(name: str) -> Path:
            path = tmp_path / name
            path.mkdir()
            shutil.copy(part, path / "ds.tar")
            return path / "ds.tar"

        # The same recording: each resumes and finishes the download.
        same = copy("curl")
        done = run("curl", "-fsS", "-C", "-", "-o", same, url)
        assert done.returncode == 0, done.stderr
        assert same.read_bytes() == a.full
        same = copy("wget")
        done = run("wget", "-q", "-c", "-O", same, url)
        assert done.returncode == 0, done.stderr
        assert same.read_bytes() == a.full
        aria2c = shutil.which("aria2c")
        if aria2c is not None:
            same = copy("aria2c")
            done = run(aria2c, "-q", "-c", "-d", same.parent, "-o", same.name, url)
            assert done.returncode == 0, done.stdout
            assert same.read_bytes() == a.full

        anyio.run(swapped.record, "B")  # re-recorded: A's bytes after `cut` are no more
        for command in (
            ["curl", "-sS", "-C", "-", "-o", part, url],
            ["curl", "-fsS", "-C", "-", "-o", part, url],
            ["curl", "-fsSL", "-C", "-", "-o", part, url],
            ["wget", "-q", "-c", "-O", part, url],
            *([[aria2c, "-q", "-c", "-d", part.parent, "-o", part.name, url]] if aria2c else []),
        ):
            refused = run(*command)
            assert refused.returncode != 0, command
            assert part.read_bytes() == a.full[:cut], command  # untouched: no splice
        gone = httpx.get(url, timeout=30)
        assert gone.status_code == 410 and gone.headers["cache-control"] == "no-store"
        # A new download from the root URL gets the new recording, at its own URL.
        fresh = tmp_path / "fresh.tar"
        again = run("curl", "-fsSL", "-o", fresh, "-w", "%{url_effective}", server.root + "/")
        assert again.returncode == 0 and fresh.read_bytes() == b.full
        assert again.stdout.decode() == f"{server.root}/r/{b.tape.identity}/ds.tar"
    finally:
        code, log = server.stop()
    assert code == 0 and "Traceback" not in log, log


# ----------------------------------------------------------------------------- a broken body


@pytest.mark.parametrize("quiet", [False, True], ids=["", "quiet"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_broken_body_is_one_line_and_a_truncated_transfer(
    backend: str, quiet: bool, swapped: Swapped, tmp_path: Path
) -> None:
    """Case 6: a source file changed since the recording: curl sees a transfer cut short of
    Content-Length (exit 18), the server's stderr has one line for it, no traceback."""
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    a = swapped.recordings["A"]
    anyio.run(swapped.record, "A")
    late = swapped.root / "shared" / "small.txt"
    before = late.stat()
    os.utime(late, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    server = serve(swapped.root, tmp_path / "serve.log", backend, *(["-q"] if quiet else []))
    try:
        out = tmp_path / "out.tar"
        cut = run("curl", "-sS", "-o", out, server.recording_url)
        assert cut.returncode == 18, cut.stderr  # "Partial file"
        received = out.read_bytes()
        assert 0 < len(received) < a.tape.total_size
        assert received == a.full[: len(received)]
    finally:
        code, log = server.stop()
    assert code == 0
    lines = log.strip().splitlines()
    assert len(lines) == 2, log
    assert "serving" in lines[0]
    assert re.fullmatch(
        r"atartape: GET /r/[0-9a-f]{64}/ds\.tar: response aborted at byte \d+ of \d+: "
        r"TarIntegrityError: .*small\.txt.*",
        lines[1],
    ), lines[1]


# ----------------------------------------------------------------------------- no server


@pytest.mark.parametrize(("backend", "missing"), [("asyncio", "uvicorn"), ("trio", "hypercorn")])
def test_serve_without_its_server_says_so_before_announcing(
    backend: str, missing: str, swapped: Swapped
) -> None:
    """Case 10 (issue 13.13): the server is imported before anything is announced."""
    code = (
        f"import sys; sys.modules[{missing!r}] = None; from atartape.cli import main; "
        f"sys.exit(main(['serve', {str(swapped.root)!r}, '--port', '0', '--backend', "
        f"{backend!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        "atartape serve: serve needs uvicorn, which is not installed: pip install 'atartape[serve]'"
        if backend == "asyncio"
        else "atartape serve: serve --backend trio needs hypercorn, which is not installed: "
        "pip install 'atartape[serve]'"
    ]
