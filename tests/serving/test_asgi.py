"""TapeApp and TapeResponse in process: ASGI messages, mounting, disconnects and broken sources."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route

import atartape
from atartape.asgi import TapeApp
from atartape.starlette import TapeResponse
from tests.helpers import write

pytestmark = pytest.mark.anyio

Message = dict[str, Any]


def open_under(root: Path) -> list[str]:
    """Files under ``root`` this process holds open (blocking: call it in a worker thread)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root) + os.sep):
            found.append(target)
    return found


async def full_bytes(tape: atartape.Tape, root: Path) -> bytes:
    player = atartape.TapePlayer(tape, source_root=root)
    return b"".join([chunk async for chunk in player.stream()])


async def call(
    app: Any,
    method: str = "GET",
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    receive: Callable[[], Awaitable[Message]] | None = None,
    send: Callable[[Message], Awaitable[None]] | None = None,
) -> list[Message]:
    """Drive one HTTP request through an ASGI app; return the messages it sent."""
    sent: list[Message] = []
    done = anyio.Event()

    async def default_receive() -> Message:
        await done.wait()
        return {"type": "http.disconnect"}

    async def record(message: Message) -> None:
        sent.append(message)
        if send is not None:
            await send(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    try:
        with anyio.fail_after(20):
            await app(scope, receive or default_receive, record)
    finally:
        done.set()
    return sent


def body_of(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def header_map(message: Message) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in message["headers"]}


@pytest.fixture
def big_dataset(dataset: Path) -> Path:
    """The shared small tree plus an 8 MiB sparse file: a body of several hops."""
    with open(dataset / "sub" / "huge.bin", "wb") as f:
        f.truncate(8 << 20)
    return dataset


async def test_lifespan() -> None:
    app = TapeApp("/does/not/exist")  # construction does no I/O
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


async def test_other_scopes() -> None:
    app = TapeApp("/does/not/exist")
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    await app({"type": "websocket", "path": "/"}, receive, send)
    assert sent[0]["type"] == "websocket.close"
    with pytest.raises(ValueError, match="'webtransport'"):
        await app({"type": "webtransport"}, receive, send)


async def test_missing_tape_is_500_then_opened_lazily(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = TapeApp(dataset)
    sent = await call(app)
    assert sent[0]["status"] == 500
    assert b"cannot be opened" in body_of(sent)
    assert any(
        r.name == "atartape.http" and "TapeNotFoundError" in r.getMessage() for r in caplog.records
    )
    tape = await atartape.record(dataset)  # recorded after the app was built: found now
    sent = await call(app)
    assert sent[0]["status"] == 200
    assert body_of(sent) == await full_bytes(tape, dataset)


async def test_statuses_through_httpx(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    full = await full_bytes(tape, dataset)
    app = TapeApp(dataset, filename="export.tar")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tape") as client:
        whole = await client.get("/")
        assert whole.status_code == 200 and whole.content == full
        assert whole.headers["content-disposition"] == 'attachment; filename="export.tar"'
        assert whole.headers["etag"] == f'"{tape.fingerprint}"'
        head = await client.head("/")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(tape.total_size)
        part = await client.get("/", headers={"Range": "bytes=700-1799"})
        assert part.status_code == 206 and part.content == full[700:1800]
        assert part.headers["content-range"] == f"bytes 700-1799/{tape.total_size}"
        tail = await client.get("/", headers={"Range": "bytes=-3000"})
        assert tail.status_code == 206 and tail.content == full[-3000:]
        beyond = await client.get("/", headers={"Range": f"bytes={tape.total_size}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{tape.total_size}"
        same = await client.get(
            "/", headers={"Range": "bytes=10-", "If-Range": whole.headers["etag"]}
        )
        assert same.status_code == 206 and same.content == full[10:]
        stale = await client.get("/", headers={"Range": "bytes=10-", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == full
        several = await client.get("/", headers={"Range": "bytes=0-1,5-6"})
        assert several.status_code == 200 and several.content == full
        post = await client.post("/")
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        assert (await client.get("/elsewhere")).status_code == 404


async def test_mounted_in_starlette_and_tape_response(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    full = await full_bytes(tape, dataset)

    async def download(request: Request) -> TapeResponse:
        return TapeResponse(tape, request, source_root=dataset, filename="données.tar")

    app = Starlette(routes=[Route("/download", download), Mount("/data", app=TapeApp(dataset))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tape") as client:
        mounted = await client.get("/data/")
        assert mounted.status_code == 200 and mounted.content == full
        assert (await client.get("/data/x")).status_code == 404
        part = await client.get("/data/", headers={"Range": "bytes=512-"})
        assert part.status_code == 206 and part.content == full[512:]
        routed = await client.get("/download", headers={"Range": "bytes=-1024"})
        assert routed.status_code == 206 and routed.content == full[-1024:]
        assert routed.headers["content-disposition"] == (
            "attachment; filename=\"donn_es.tar\"; filename*=UTF-8''donn%C3%A9es.tar"
        )
        head = await client.head("/download")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(tape.total_size)
        assert head.headers["content-type"] == "application/x-tar"
        assert (await client.get("/download", headers={"Range": "bytes=0-0,2-3"})).content == full


async def test_reopens_after_a_new_recording(dataset: Path) -> None:
    first = await atartape.record(dataset)
    app = TapeApp(dataset)
    sent = await call(app)
    assert header_map(sent[0])["etag"] == f'"{first.fingerprint}"'
    write(dataset / "a.txt", "changed, and longer\n")
    again = await atartape.record(dataset, overwrite=True)
    assert again.fingerprint != first.fingerprint
    sent = await call(app)
    assert header_map(sent[0])["etag"] == f'"{again.fingerprint}"'
    assert body_of(sent) == await full_bytes(again, dataset)


async def test_tape_opened_once_by_concurrent_first_requests(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await atartape.record(dataset)
    opened = 0
    real_open = atartape.Tape.open.__func__  # type: ignore[attr-defined]

    async def counting_open(cls: type[atartape.Tape], *args: Any, **kwargs: Any) -> Any:
        nonlocal opened
        opened += 1
        return await real_open(cls, *args, **kwargs)

    monkeypatch.setattr(atartape.Tape, "open", classmethod(counting_open))
    app = TapeApp(dataset)
    statuses: list[int] = []

    async def one() -> None:
        sent = await call(app, headers=[(b"range", b"bytes=0-99")])
        statuses.append(sent[0]["status"])

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(one)
    assert statuses == [206] * 20
    assert opened == 1


async def test_disconnect_stops_reading_and_closes_files(big_dataset: Path) -> None:
    tape = await atartape.record(big_dataset)
    huge = await tape.entry("dataset/sub/huge.bin")
    started = anyio.Event()
    gone = anyio.Event()
    sent = 0

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal sent
        if message["type"] == "http.response.body" and not started.is_set():
            sent += len(message["body"])
            if sent > huge.data_offset:  # inside the big file, which is open now
                started.set()
                await anyio.sleep_forever()  # a client that stopped reading; cancelled then

    async with anyio.create_task_group() as group:
        result: list[Message] = []

        async def serve() -> None:
            result.extend(await call(TapeApp(big_dataset), receive=receive, send=send))

        group.start_soon(serve)
        await started.wait()
        held = await anyio.to_thread.run_sync(open_under, big_dataset)
        assert str(big_dataset / "sub" / "huge.bin") in held  # mid-file: the test means something
        gone.set()
    assert await anyio.to_thread.run_sync(open_under, big_dataset) == []
    body = [m for m in result if m["type"] == "http.response.body"]
    assert all(m["more_body"] for m in body)  # no terminating message: not "complete"
    assert sum(len(m["body"]) for m in body) < tape.total_size


async def test_send_raising_oserror_counts_as_disconnect(big_dataset: Path) -> None:
    await atartape.record(big_dataset)
    chunks = 0

    async def send(message: Message) -> None:  # an ASGI 2.4 server: send() fails when gone
        nonlocal chunks
        if message["type"] == "http.response.body":
            chunks += 1
            if chunks == 3:
                raise OSError("client gone")

    await call(TapeApp(big_dataset), send=send)  # returns quietly
    assert chunks == 3
    assert await anyio.to_thread.run_sync(open_under, big_dataset) == []


async def test_changed_file_aborts_after_start(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tape = await atartape.record(dataset)
    late = dataset / "sub" / "deeper" / "c.txt"
    os.utime(late, ns=(late.stat().st_atime_ns, late.stat().st_mtime_ns + 10**9))
    app = TapeApp(dataset)
    sent: list[Message] = []

    async def keep(message: Message) -> None:
        sent.append(message)

    with pytest.raises(atartape.TarIntegrityError, match=r"c\.txt"):
        await call(app, send=keep)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert all(m.get("more_body") for m in sent[1:])  # never the final, empty message
    assert len(body_of(sent)) < tape.total_size
    records = [r for r in caplog.records if r.name == "atartape.http"]
    assert records and records[-1].levelno == logging.ERROR
    assert "TarIntegrityError" in records[-1].getMessage() and "c.txt" in records[-1].getMessage()
    assert await anyio.to_thread.run_sync(open_under, dataset) == []
    # The same app keeps serving requests that do not touch the changed file.
    entry = await tape.entry("dataset/sub/deeper/c.txt")
    ok = await call(app, headers=[(b"range", f"bytes=0-{entry.start_offset - 1}".encode())])
    assert ok[0]["status"] == 206 and len(body_of(ok)) == entry.start_offset
    # A window that starts at the changed entry fails before the response starts: a clean 500.
    at = await call(app, headers=[(b"range", f"bytes={entry.start_offset}-".encode())])
    assert at[0]["status"] == 500 and b"cannot be played" in body_of(at)


async def test_source_gone_is_500(dataset: Path, tmp_path: Path) -> None:
    await atartape.record(dataset, index_path=tmp_path / "index.db")
    app = TapeApp(dataset, index_path=tmp_path / "index.db")
    assert (await call(app, "HEAD"))[0]["status"] == 200
    dataset.rename(tmp_path / "moved")
    sent = await call(app)
    assert sent[0]["status"] == 500
