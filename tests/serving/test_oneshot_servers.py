"""One-shot tapes over real servers: uvicorn and hypercorn on trio (TapeResponse in Starlette),
aiohttp (tape_response), each building its TarTape per request (tests/serving/oneshot_app.py).
curl cuts a download and resumes it with ``-C -``; httpx resumes with ``If-Range``; a tape with
a streamed member refuses ranges, so curl's resume fails loudly instead of splicing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.serving.oneshot_support import REMOTE, Remote, photos, selection, streamed, whole
from tests.serving.test_servers import Server, start_server, stop

TIMEOUT = 60
NAMES = ["a.jpg", "c.jpg"]
QUERY = "name=a.jpg&name=c.jpg"


async def _expected(folder: Path) -> tuple[bytes, str, bytes]:
    tape = await selection(folder, NAMES, Remote()).prepare()
    return await whole(tape), tape.identity, await whole(streamed(folder))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return photos(tmp_path_factory.mktemp("oneshot") / "photos")


@pytest.fixture(scope="module")
def expected(folder: Path) -> tuple[bytes, str, bytes]:
    """The selection's bytes and identity, and the streamed tape's bytes."""
    return anyio.run(_expected, folder)


COMMANDS: dict[str, Callable[[int], list[str]]] = {
    "uvicorn": lambda port: [
        *(sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)),
        *("--log-level", "warning", "tests.serving.oneshot_app:app"),
    ],
    "hypercorn-trio": lambda port: [
        *(sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--workers", "0"),
        *("--bind", f"127.0.0.1:{port}", "tests.serving.oneshot_app:app"),
    ],
    "aiohttp": lambda port: [
        *(sys.executable, "-m", "aiohttp.web", "-H", "127.0.0.1", "-P", str(port)),
        "tests.serving.oneshot_app:aiohttp_app",
    ],
}


@pytest.fixture(scope="module", params=list(COMMANDS))
def server(
    request: pytest.FixtureRequest, folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("oneshot-logs") / f"{request.param}.log"
    started = start_server(COMMANDS[request.param], log, {"ONESHOT_FOLDER": str(folder)})
    try:
        yield started
    finally:
        stop(started.proc)
    assert "Traceback" not in started.log_text(), started.log_text()


def url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def run(*command: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(map(str, command)), capture_output=True, timeout=TIMEOUT)


def test_curl_cut_and_resume_of_a_selection(
    server: Server, expected: tuple[bytes, str, bytes], tmp_path: Path
) -> None:
    if shutil.which("curl") is None or shutil.which("tar") is None:
        pytest.skip("needs curl and tar")
    data, _, _ = expected
    where = url(server, f"/selection?{QUERY}")
    out = tmp_path / "selection.tar"
    at = len(data) // 2 + 77
    with open(out, "wb") as sink:  # `curl URL | head -c N > out`: cut mid-body
        curl = subprocess.Popen(["curl", "-fsS", where], stdout=subprocess.PIPE)
        assert curl.stdout is not None
        sink.write(curl.stdout.read(at))
        curl.stdout.close()
        assert curl.wait(timeout=TIMEOUT) == 23
    assert out.read_bytes() == data[:at]
    resumed = run("curl", "-fsS", "-C", "-", "-o", out, "-w", "%{http_code}", where)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == b"206"
    assert out.read_bytes() == data
    listed = run("tar", "-tf", out)
    assert listed.stdout.decode().split() == [
        "selection/README.txt",
        "selection/a.jpg",
        "selection/c.jpg",
        "selection/remote.bin",
    ]


@pytest.mark.anyio
async def test_if_range_resume_and_remote_reads(
    server: Server, expected: tuple[bytes, str, bytes]
) -> None:
    data, identity, _ = expected
    where = url(server, f"/selection?{QUERY}")
    async with httpx.AsyncClient(timeout=30) as http:
        head = await http.head(where)
        assert head.status_code == 200 and head.headers["etag"] == f'"{identity}"'
        assert head.headers["content-length"] == str(len(data))
        assert head.headers["accept-ranges"] == "bytes"
        for cut in (1000, len(data) // 2, len(data) - 10):
            rest = await http.get(
                where, headers={"Range": f"bytes={cut}-", "If-Range": head.headers["etag"]}
            )
            assert rest.status_code == 206 and rest.content == data[cut:], cut
        stale = await http.get(where, headers={"Range": "bytes=10-", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == data
        before = int((await http.get(url(server, "/remote-read"))).text)
        tail = await http.get(where, headers={"Range": "bytes=-2000"})
        assert tail.status_code == 206 and tail.content == data[-2000:]
        read = int((await http.get(url(server, "/remote-read"))).text) - before
        assert 0 < read < 2000  # the end of the remote object only, not its 700 kB
        assert len(REMOTE) > 100 * read


def test_a_streamed_member_refuses_ranges(
    server: Server, expected: tuple[bytes, str, bytes], tmp_path: Path
) -> None:
    _, _, data = expected
    where = url(server, "/streamed")
    got = httpx.get(where, headers={"Range": "bytes=100-"}, timeout=30)
    assert got.status_code == 200 and got.content == data
    assert got.headers["accept-ranges"] == "none" and "content-range" not in got.headers
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    out = tmp_path / "streamed.tar"
    out.write_bytes(data[:5000])
    refused = run("curl", "-sS", "-C", "-", "-o", out, where)
    assert refused.returncode == 33, refused.stderr  # "server doesn't support byte ranges"
    assert out.read_bytes() == data[:5000]  # nothing appended
    fresh = tmp_path / "fresh.tar"
    done = run("curl", "-fsS", "-o", fresh, where)
    assert done.returncode == 0 and fresh.read_bytes() == data
