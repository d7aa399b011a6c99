"""A tape's views over HTTP, in process: TapeApp and TapeResponse serve the bytes of the view the
tape was recorded with (or ``view=``), and every header describes those bytes."""

from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

import atartape
import atartape.asgi
from atartape import transforms, views
from atartape.asgi import TapeApp
from atartape.format import zstd_seekable
from atartape.starlette import TapeResponse
from tests.helpers import write
from tests.serving.views_support import IDENTITY, SEALED, edges, full, record, tree

pytestmark = pytest.mark.anyio

TYPES = {
    "plain": "application/x-tar",
    "zstd": "application/zstd",
    "age": "application/octet-stream",
    "zstd+age": "application/octet-stream",
}


@dataclass
class Recorded:
    root: Path
    index: Path
    view: str
    tape: atartape.Tape
    data: bytes  # the view's bytes
    plain: bytes  # the tar's

    @property
    def identity(self) -> str:
        return views.identity_of(self.tape.identity, self.view)

    @property
    def path(self) -> str:
        return f"/r/{self.identity}/data{views.suffix(self.view)}"

    def app(self, **options: Any) -> TapeApp:
        return TapeApp(self.root, index_path=self.index, **options)


async def recorded(tmp_path: Path, view: str, scale: int = 4) -> Recorded:
    root = tree(tmp_path / "data", scale)
    index = tmp_path / "index.db"
    tape = await record(root, index, view)
    data = await full(atartape.TapePlayer(tape))
    plain = await full(atartape.TapePlayer(tape, view="plain"))
    return Recorded(root, index, view, tape, data, plain)


@pytest.fixture(params=SEALED)
async def sealed(request: pytest.FixtureRequest, tmp_path: Path) -> Recorded:
    return await recorded(tmp_path, request.param)


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tape")


def records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "atartape.http"]


def read_multipart(response: httpx.Response) -> list[tuple[str, int, int, bytes]]:
    """[(content-type, first, end, bytes)] of each part of a multipart/byteranges body."""
    boundary = response.headers["content-type"].partition("; boundary=")[2].encode()
    found = []
    for chunk in (b"\r\n" + response.content).split(b"\r\n--" + boundary)[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        kind = re.findall(rb"content-type: (\S+)", head)[0].decode()
        first, last = map(int, re.findall(rb"bytes (\d+)-(\d+)/", head)[0])
        found.append((kind, first, last + 1, data))
    return found


async def test_tape_app_serves_the_recorded_view(sealed: Recorded) -> None:
    size = len(sealed.data)
    async with client(sealed.app()) as http:
        root = await http.head("/")
        assert root.status_code == 307 and root.headers["location"] == sealed.path
        whole = await http.get("/", follow_redirects=True)
        assert whole.status_code == 200 and whole.url.path == sealed.path
        assert whole.content == sealed.data != sealed.plain
        assert whole.headers["content-length"] == str(size)
        assert whole.headers["etag"] == f'"{sealed.identity}"' != f'"{sealed.tape.identity}"'
        assert whole.headers["content-type"] == TYPES[sealed.view]
        assert "content-encoding" not in whole.headers  # a file, not a coding of the tar
        assert whole.headers["content-disposition"] == (
            f'attachment; filename="data{views.suffix(sealed.view)}"'
        )
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["cache-control"] == "max-age=31536000, immutable"
        head = await http.head(sealed.path)
        assert head.status_code == 200 and head.content == b""
        for name in ("content-length", "etag", "content-type", "content-disposition"):
            assert head.headers[name] == whole.headers[name], name
        beyond = await http.get(sealed.path, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize("view", SEALED)
async def test_ranges_at_hundreds_of_offsets_are_the_slices(tmp_path: Path, view: str) -> None:
    """Every boundary of the view (age header and chunks, zstd frames and seek table) and
    hundreds of random offsets: each part is exactly the slice of the view's bytes."""
    sealed = await recorded(tmp_path, view, scale=1)  # small: each part replays its frames
    data, size = sealed.data, len(sealed.data)
    rng = random.Random(sealed.view)
    marks = edges(sealed.view, data)
    starts = [a for a in marks if a < size] + [rng.randrange(size) for _ in range(200)]
    async with client(sealed.app()) as http:
        # One range per request across each boundary, and to the end.
        for a in marks:
            if a >= size:
                continue
            b = min(size, a + rng.choice([1, 2, 17, 600, 70_000]))
            part = await http.get(sealed.path, headers={"Range": f"bytes={a}-{b - 1}"})
            assert part.status_code == 206, (a, b)
            assert part.content == data[a:b], (a, b)
            assert part.headers["content-range"] == f"bytes {a}-{b - 1}/{size}"
            assert part.headers["content-type"] == TYPES[sealed.view]
            tail = await http.get(sealed.path, headers={"Range": f"bytes={a}-"})
            assert tail.content == data[a:], a
        suffix = await http.get(sealed.path, headers={"Range": "bytes=-100"})
        assert suffix.content == data[-100:]
        # The random offsets, sixteen small ranges at a time (multipart/byteranges).
        rng.shuffle(starts)
        for batch in range(0, len(starts), 16):
            wanted = [(a, min(size, a + rng.randrange(1, 3000))) for a in starts[batch:][:16]]
            value = "bytes=" + ",".join(f"{a}-{b - 1}" for a, b in wanted)
            several = await http.get(sealed.path, headers={"Range": value})
            assert several.status_code == 206
            if not several.headers["content-type"].startswith("multipart/byteranges"):
                (first, last) = map(
                    int, re.findall(r"(\d+)-(\d+)/", several.headers["content-range"])[0]
                )
                assert several.content == data[first : last + 1]
                continue
            for kind, first, end, got in read_multipart(several):
                assert kind == TYPES[sealed.view] and got == data[first:end], (first, end)


@pytest.fixture
async def small_sealed(tmp_path: Path) -> Recorded:
    return await recorded(tmp_path, "zstd+age", scale=1)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.floats(0, 1), min_size=2, max_size=2), open_ended=st.booleans())
async def test_any_range_of_the_sealed_view_is_its_slice(
    small_sealed: Recorded, cuts: list[float], open_ended: bool
) -> None:
    data, size = small_sealed.data, len(small_sealed.data)
    a, b = sorted(min(size - 1, int(c * size)) for c in cuts)
    value = f"bytes={a}-" if open_ended else f"bytes={a}-{b}"
    async with client(small_sealed.app()) as http:
        part = await http.get(small_sealed.path, headers={"Range": value})
    end = size if open_ended else b + 1
    assert part.status_code == 206 and part.content == data[a:end]
    assert part.headers["content-range"] == f"bytes {a}-{end - 1}/{size}"


async def test_if_range_and_validators_name_the_view(sealed: Recorded) -> None:
    """A resume validated by the view's ETag gets the rest of the view; the tar's ETag (the
    recording identity) validates nothing of the view's bytes."""
    etag = f'"{sealed.identity}"'
    async with client(sealed.app()) as http:
        cut = len(sealed.data) // 3
        rest = await http.get(sealed.path, headers={"Range": f"bytes={cut}-", "If-Range": etag})
        assert rest.status_code == 206 and rest.content == sealed.data[cut:]
        tar_etag = f'"{sealed.tape.identity}"'
        whole = await http.get(
            sealed.path, headers={"Range": f"bytes={cut}-", "If-Range": tar_etag}
        )
        assert whole.status_code == 200 and whole.content == sealed.data
        assert (await http.get(sealed.path, headers={"If-None-Match": etag})).status_code == 304
        assert (await http.get(sealed.path, headers={"If-Match": tar_etag})).status_code == 412
        # The tar's URL of this recording is not served by an app serving the view.
        tar_path = f"/r/{sealed.tape.identity}/data.tar"
        assert (await http.get(tar_path)).status_code == 410


async def test_view_option_serves_another_view(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    both = await recorded(tmp_path, "zstd+age")
    zstd = await full(atartape.TapePlayer(both.tape, view="zstd"))
    for view, expected in (("plain", both.plain), ("zstd", zstd), ("zstd+age", both.data)):
        app = both.app(view=view)
        async with client(app) as http:
            got = await http.get("/", follow_redirects=True)
        assert got.status_code == 200 and got.content == expected, view
        identity = views.identity_of(both.tape.identity, view)
        assert got.url.path == f"/r/{identity}/data{views.suffix(view)}"
        assert got.headers["etag"] == f'"{identity}"' and got.headers["content-type"] == TYPES[view]
        assert app.recording_path(both.tape) == got.url.path
    named = both.app(view="plain", filename="export.tar")
    async with client(named) as http:
        got = await http.get("/", follow_redirects=True)
    assert (
        got.url.path.endswith("/export.tar")
        and 'filename="export.tar"' in got.headers["content-disposition"]
    )
    # A view the tape lacks: each request is a 500 that says why in the log.
    async with client(both.app(view="age")) as http:
        for path in ("/", f"/r/{both.identity}/data.tar.age"):
            refused = await http.get(path)
            assert refused.status_code == 500 and b"ustar" not in refused.content
    assert any("no 'age' view" in line for line in records(caplog))
    with pytest.raises(ValueError, match="view must be one of"):
        TapeApp(both.root, view="gzip")


async def test_a_superseded_view_url_is_410(tmp_path: Path) -> None:
    first = await recorded(tmp_path, "zstd+age")
    app = first.app()
    async with client(app) as http:
        assert (await http.head(first.path)).status_code == 200
        # The same folder sealed again: a new file key, a new header, a new recording.
        again = await record(first.root, first.index, "zstd+age")
        assert again.identity != first.tape.identity
        new_path = f"/r/{views.identity_of(again.identity, 'zstd+age')}/data.tar.zst.age"
        gone = await http.get(first.path, headers={"Range": "bytes=1000-"})
        assert gone.status_code == 410 and gone.headers["cache-control"] == "no-store"
        root = await http.head("/")
        assert root.headers["location"] == new_path
        fresh = await http.get(new_path, headers={"Range": "bytes=1000-"})
        assert fresh.status_code == 206
        assert fresh.content == (await full(atartape.TapePlayer(again)))[1000:]
        assert fresh.content != first.data[1000:]  # another seal: other bytes


async def test_rerecorded_between_plan_and_play_of_a_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sealed view planned from one recording is never played from the next (whose key file
    is already the new one): refused before its first byte, answered anew (410 at the old URL)."""
    first = await recorded(tmp_path, "zstd+age")
    app = first.app()
    real_send_tape = atartape.asgi.send_tape
    rerecorded: list[atartape.Tape] = []

    async def send_tape_after_rerecording(*args: Any, **kwargs: Any) -> Any:
        if not rerecorded:
            await anyio.to_thread.run_sync(write, first.root / "a.txt", "changed, and longer\n")
            rerecorded.append(await record(first.root, first.index, "zstd+age"))
        return await real_send_tape(*args, **kwargs)

    assert await anyio.to_thread.run_sync(lambda: os.path.exists(first.index))
    async with client(app) as http:
        assert (await http.head(first.path)).status_code == 200  # opened: the first recording
        monkeypatch.setattr(atartape.asgi, "send_tape", send_tape_after_rerecording)
        headers = {"Range": "bytes=100-", "If-Range": f'"{first.identity}"'}
        stale = await http.get(first.path, headers=headers)
        monkeypatch.setattr(atartape.asgi, "send_tape", real_send_tape)
        assert rerecorded and stale.status_code == 410
        assert first.data[100:200] not in stale.content
        second = rerecorded[0]
        second_identity = views.identity_of(second.identity, "zstd+age")
        fresh = await http.get(f"/r/{second_identity}/data.tar.zst.age")
        assert fresh.status_code == 200
        assert fresh.content == await full(atartape.TapePlayer(second))
    assert not [line for line in records(caplog) if "aborted" in line or "500" in line]


async def test_a_sealed_view_without_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sealed = await recorded(tmp_path, "age")
    os.unlink(views.key_path(str(sealed.index)))
    async with client(sealed.app()) as http:
        refused = await http.get(sealed.path)
        assert refused.status_code == 500 and refused.headers["cache-control"] == "no-store"
    assert any("ViewError" in line and "no key" in line for line in records(caplog))
    unwrapped = 0
    real_unseal = transforms.unseal_key

    async def counting_unseal(*args: Any, **kwargs: Any) -> bytes:
        nonlocal unwrapped
        unwrapped += 1
        return await real_unseal(*args, **kwargs)

    monkeypatch.setattr(transforms, "unseal_key", counting_unseal)
    app = sealed.app(age_identity=str(IDENTITY))
    async with client(app) as http:
        for start in (0, 500, 70_000):
            part = await http.get(sealed.path, headers={"Range": f"bytes={start}-"})
            assert part.status_code == 206 and part.content == sealed.data[start:]
    assert unwrapped == 1  # the key is unwrapped once per recording, not once per request


async def test_a_view_that_cannot_give_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another zstd build: refused before the response when the first frame differs (500),
    cut short of Content-Length when a later one does; one log line each."""
    compressed = await recorded(tmp_path, "zstd")
    real = zstd_seekable.compress_frame

    def other_build(chunk: bytes, params: Any) -> bytes:
        made = real(chunk, params)
        return made if len(chunk) == 65536 else made[:-5] + b"\0" + made[-4:]  # the last frame

    monkeypatch.setattr(zstd_seekable, "compress_frame", other_build)
    caplog.set_level(logging.ERROR, "atartape.http")
    sent = await asgi_get(compressed.app(), compressed.path)
    assert sent[0]["status"] == 200
    assert all(m.get("more_body") for m in sent[1:])  # never the final message: cut short
    received = b"".join(m.get("body", b"") for m in sent[1:])
    assert 0 < len(received) < len(compressed.data)
    assert compressed.data.startswith(received)
    async with client(compressed.app()) as http:
        table = zstd_seekable.parse_seek_table(compressed.data)
        last = sum(e.compressed_size for e in table.entries[:-1])  # where the last frame begins
        refused = await http.get(compressed.path, headers={"Range": f"bytes={last}-"})
        assert refused.status_code == 500
    lines = records(caplog)
    assert len(lines) == 2 and all("ViewError" in line for line in lines), lines


async def asgi_get(app: TapeApp, path: str) -> list[dict[str, Any]]:
    """The messages ``app`` sends for a GET of ``path`` (httpx would refuse an unfinished
    response)."""
    sent: list[dict[str, Any]] = []
    done = anyio.Event()

    async def receive() -> dict[str, Any]:
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    try:
        with anyio.fail_after(20):
            await app(scope, receive, send)
    finally:
        done.set()
    return sent


async def test_tape_response_serves_views(tmp_path: Path) -> None:
    both = await recorded(tmp_path, "zstd+age")
    zstd = await full(atartape.TapePlayer(both.tape, view="zstd"))

    async def recorded_view(request: Request) -> TapeResponse:
        return TapeResponse(both.tape, request)

    async def tar(request: Request) -> TapeResponse:
        return TapeResponse(both.tape, request, view="plain", filename="data export.tar")

    async def player(request: Request) -> TapeResponse:
        return TapeResponse(atartape.TapePlayer(both.tape, view="zstd"), request)

    routes = [Route("/sealed", recorded_view), Route("/tar", tar), Route("/zstd", player)]
    async with client(Starlette(routes=routes)) as http:
        for path, data, view in (
            ("/sealed", both.data, "zstd+age"),
            ("/tar", both.plain, "plain"),
            ("/zstd", zstd, "zstd"),
        ):
            whole = await http.get(path)
            assert whole.status_code == 200 and whole.content == data, path
            identity = views.identity_of(both.tape.identity, view)
            assert (
                whole.headers["etag"] == f'"{identity}"'
                and whole.headers["cache-control"] == "no-cache"
            )
            assert whole.headers["content-type"] == TYPES[view]
            assert whole.headers["content-length"] == str(len(data))
            etag = whole.headers["etag"]
            rest = await http.get(path, headers={"Range": "bytes=777-", "If-Range": etag})
            assert rest.status_code == 206 and rest.content == data[777:]
            head = await http.head(path)
            assert head.headers["content-length"] == str(len(data)) and head.content == b""
        assert (
            'filename="data export.tar"' in (await http.head("/tar")).headers["content-disposition"]
        )
        assert (
            'filename="data.tar.zst.age"'
            in (await http.head("/sealed")).headers["content-disposition"]
        )


async def test_tape_response_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    compressed = await recorded(tmp_path, "zstd")
    request = Request({"type": "http", "method": "GET", "headers": [], "path": "/"})
    with pytest.raises(ValueError, match="no 'age' view"):
        TapeResponse(compressed.tape, request, view="age")
    player = atartape.TapePlayer(compressed.tape)
    with pytest.raises(ValueError, match="view: a TapePlayer was made with its own"):
        TapeResponse(player, request, view="plain")
    with pytest.raises(TypeError, match="cannot serve a str"):
        TapeResponse("data", request)  # type: ignore[arg-type]
