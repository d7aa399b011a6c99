"""TapeApp and TapeResponse in process: ASGI messages, URLs, validators, re-recordings, failures."""

from __future__ import annotations

import logging
import os
import re
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
import atartape.asgi
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


def path_of(tape: atartape.Tape, name: str | None = None) -> str:
    """The URL path TapeApp serves ``tape``'s recording at."""
    return f"/r/{tape.identity}/{name or tape.name + '.tar'}"


async def call(
    app: Any,
    method: str = "GET",
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    receive: Callable[[], Awaitable[Message]] | None = None,
    send: Callable[[Message], Awaitable[None]] | None = None,
    root_path: str = "",
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
        "root_path": root_path,
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


def records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "atartape.http"]


@pytest.fixture
def big_dataset(dataset: Path) -> Path:
    """The shared small tree plus an 8 MiB sparse file: a body of several hops."""
    with open(dataset / "sub" / "huge.bin", "wb") as f:
        f.truncate(8 << 20)
    return dataset


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tape")


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
    assert any("TapeNotFoundError" in line for line in records(caplog))
    tape = await atartape.record(dataset)  # recorded after the app was built: found now
    sent = await call(app)
    assert sent[0]["status"] == 307
    assert header_map(sent[0])["location"] == path_of(tape)
    sent = await call(app, path=path_of(tape))
    assert sent[0]["status"] == 200
    assert body_of(sent) == await full_bytes(tape, dataset)


async def test_root_redirects_to_the_recording(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    app = TapeApp(dataset, filename="my export.tar")
    for method in ("GET", "HEAD"):
        sent = await call(app, method)
        assert sent[0]["status"] == 307 and body_of(sent) == b""
        assert header_map(sent[0]) == {
            "location": f"/r/{tape.identity}/my%20export.tar",
            "content-length": "0",
            "cache-control": "no-store",
        }
    mounted = await call(app, path="/files/tape/", root_path="/files/tape")
    assert header_map(mounted[0])["location"] == f"/files/tape/r/{tape.identity}/my%20export.tar"
    assert app.recording_path(tape) == f"/r/{tape.identity}/my%20export.tar"
    # The name after the identity only names the download.
    assert (await call(app, "HEAD", f"/r/{tape.identity}/other.tar"))[0]["status"] == 200


async def test_statuses_through_httpx(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    full = await full_bytes(tape, dataset)
    app = TapeApp(dataset, filename="export.tar")
    etag = f'"{tape.identity}"'
    async with client(app) as http:
        whole = await http.get("/", follow_redirects=True)
        assert whole.status_code == 200 and whole.content == full
        assert whole.url.path == f"/r/{tape.identity}/export.tar"
        url = whole.url.path
        assert whole.headers["content-disposition"] == 'attachment; filename="export.tar"'
        assert whole.headers["etag"] == etag != f'"{tape.fingerprint}"'
        assert whole.headers["cache-control"] == "max-age=31536000, immutable"
        head = await http.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(tape.total_size)
        part = await http.get(url, headers={"Range": "bytes=700-1799"})
        assert part.status_code == 206 and part.content == full[700:1800]
        assert part.headers["content-range"] == f"bytes 700-1799/{tape.total_size}"
        tail = await http.get(url, headers={"Range": "bytes=-3000"})
        assert tail.status_code == 206 and tail.content == full[-3000:]
        beyond = await http.get(url, headers={"Range": f"bytes={tape.total_size}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{tape.total_size}"
        same = await http.get(url, headers={"Range": "bytes=10-", "If-Range": etag})
        assert same.status_code == 206 and same.content == full[10:]
        stale = await http.get(url, headers={"Range": "bytes=10-", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == full
        several = await http.get(url, headers={"Range": "bytes=0-1,5-6"})
        assert several.status_code == 206
        assert several.headers["content-type"].startswith("multipart/byteranges; boundary=")
        assert full[0:2] in several.content and full[5:7] in several.content
        cached = await http.get(url, headers={"If-None-Match": f"W/{etag}"})
        assert cached.status_code == 304 and cached.content == b""
        assert cached.headers["etag"] == etag
        since = await http.get(url, headers={"If-Modified-Since": whole.headers["last-modified"]})
        assert since.status_code == 304
        refused = await http.get(url, headers={"If-Match": '"old"', "Range": "bytes=0-9"})
        assert refused.status_code == 412
        for path in ("/", url):
            post = await http.post(path)
            assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        for path in ("/elsewhere", f"/r/{tape.identity}", "/r/xyz/export.tar"):
            assert (await http.get(path)).status_code == 404, path


async def test_mounted_in_starlette_and_tape_response(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    full = await full_bytes(tape, dataset)

    async def download(request: Request) -> TapeResponse:
        return TapeResponse(tape, request, source_root=dataset, filename="données.tar")

    app = Starlette(routes=[Route("/download", download), Mount("/data", app=TapeApp(dataset))])
    async with client(app) as http:
        mounted = await http.get("/data/", follow_redirects=True)
        assert mounted.status_code == 200 and mounted.content == full
        assert mounted.url.path == f"/data/r/{tape.identity}/dataset.tar"
        assert (await http.get("/data/x")).status_code == 404
        part = await http.get(mounted.url, headers={"Range": "bytes=512-"})
        assert part.status_code == 206 and part.content == full[512:]
        routed = await http.get("/download", headers={"Range": "bytes=-1024"})
        assert routed.status_code == 206 and routed.content == full[-1024:]
        assert routed.headers["content-disposition"] == (
            "attachment; filename=\"donn_es.tar\"; filename*=UTF-8''donn%C3%A9es.tar"
        )
        assert routed.headers["etag"] == f'"{tape.identity}"'
        assert routed.headers["cache-control"] == "no-cache"  # the route may serve another
        head = await http.head("/download")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(tape.total_size)
        assert head.headers["content-type"] == "application/x-tar"
        several = await http.get("/download", headers={"Range": "bytes=0-0,2-3"})
        assert several.status_code == 206 and full[2:4] in several.content
        etag = routed.headers["etag"]
        assert (await http.get("/download", headers={"If-None-Match": etag})).status_code == 304
        assert (await http.get("/download", headers={"If-Match": '"x"'})).status_code == 412


async def test_etag_is_the_identity_not_the_layout(dataset: Path) -> None:
    """Case 3: a same-size rewrite in the same second keeps the layout, not the ETag."""
    target = dataset / "a.txt"
    first = await atartape.record(dataset)
    app = TapeApp(dataset)
    old = await call(app, "HEAD")
    assert header_map(old[0])["location"] == path_of(first)
    st = target.stat()
    write(target, "HELLO\n")  # the same size...
    second_ns = st.st_mtime_ns - st.st_mtime_ns % 10**9
    os.utime(target, ns=(st.st_atime_ns, second_ns + (st.st_mtime_ns + 1) % 10**9))  # ...second
    again = await atartape.record(dataset, overwrite=True)
    assert again.fingerprint == first.fingerprint and again.identity != first.identity
    new = await call(app, "HEAD")
    assert header_map(new[0])["location"] == path_of(again)
    served = await call(app, path=path_of(again))
    assert header_map(served[0])["etag"] == f'"{again.identity}"'
    assert b"HELLO" in body_of(served)
    gone = await call(app, path=path_of(first), headers=[(b"range", b"bytes=0-99")])
    assert gone[0]["status"] == 410 and header_map(gone[0])["cache-control"] == "no-store"


async def test_rerecorded_between_plan_and_play(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 1 and 2, deterministic: the index is re-recorded after TapeApp planned a response
    from the recording it had open and before the player opened the index. The player refuses
    before any byte; TapeApp opens the tape again and answers for the new recording."""
    target = dataset / "a.txt"
    original = target.read_bytes(), target.stat().st_atime_ns, target.stat().st_mtime_ns
    first = await atartape.record(dataset)
    full_first = await full_bytes(first, dataset)
    app = TapeApp(dataset)
    real_send_tape = atartape.asgi.send_tape
    rerecorded: list[atartape.Tape] = []

    async def send_tape_after_rerecording(*args: Any, **kwargs: Any) -> Any:
        if not rerecorded:  # (called from atartape's code: no blocking call here)
            await anyio.to_thread.run_sync(write, target, "changed, and longer\n")
            rerecorded.append(await atartape.record(dataset, overwrite=True))
        return await real_send_tape(*args, **kwargs)

    # Bare Range, If-Range and If-Match of the old recording at its URL: refused, never spliced.
    for headers in (
        [(b"range", b"bytes=100-")],
        [(b"range", b"bytes=100-"), (b"if-range", f'"{first.identity}"'.encode())],
        [(b"if-match", f'"{first.identity}"'.encode())],
        [],
    ):
        write(target, original[0])
        os.utime(target, ns=original[1:])
        assert (await atartape.record(dataset, overwrite=True)).identity == first.identity
        assert (await call(app, "HEAD", path_of(first)))[0]["status"] == 200  # opened: first
        rerecorded.clear()
        monkeypatch.setattr(atartape.asgi, "send_tape", send_tape_after_rerecording)
        sent = await call(app, path=path_of(first), headers=headers)
        monkeypatch.setattr(atartape.asgi, "send_tape", real_send_tape)
        assert rerecorded, "the race was not staged"
        assert sent[0]["status"] == 410, headers
        assert full_first[100:200] not in body_of(sent)
    second = rerecorded[0]
    assert second.identity != first.identity
    # The new recording's URL: planned from the new tape, whose identity the player pins.
    sent = await call(app, path=path_of(second), headers=[(b"range", b"bytes=100-")])
    assert sent[0]["status"] == 206
    assert header_map(sent[0])["etag"] == f'"{second.identity}"'
    assert body_of(sent) == (await full_bytes(second, dataset))[100:]
    assert not [line for line in records(caplog) if "aborted" in line or "500" in line]


async def test_the_app_notices_a_recording_its_stat_missed(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the index file's stat says (an inode reused in the same tick), a request for
    a recording the app has not opened makes it look again, and a play pinned to the one it
    has open is refused and retried."""
    first = await atartape.record(dataset)
    app = TapeApp(dataset)
    monkeypatch.setattr(atartape.asgi, "_stamp", lambda path: (1, 2, 3))
    assert (await call(app, "HEAD", path_of(first)))[0]["status"] == 200
    write(dataset / "a.txt", "changed, and longer\n")
    second = await atartape.record(dataset, overwrite=True)
    sent = await call(app, path=path_of(first), headers=[(b"range", b"bytes=0-")])
    assert sent[0]["status"] == 410  # planned from first, refused by the player, retried
    sent = await call(app, path=path_of(second), headers=[(b"range", b"bytes=0-")])
    assert sent[0]["status"] == 206 and body_of(sent) == await full_bytes(second, dataset)


async def test_a_superseded_recording_is_410_without_opening_the_index(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await atartape.record(dataset)
    app = TapeApp(dataset)
    assert (await call(app, "HEAD", path_of(first)))[0]["status"] == 200
    write(dataset / "a.txt", "changed, and longer\n")
    second = await atartape.record(dataset, overwrite=True)
    assert (await call(app, "HEAD", path_of(second)))[0]["status"] == 200
    opened = 0
    real_open = atartape.Tape.open.__func__  # type: ignore[attr-defined]

    async def counting_open(cls: type[atartape.Tape], *args: Any, **kwargs: Any) -> Any:
        nonlocal opened
        opened += 1
        return await real_open(cls, *args, **kwargs)

    monkeypatch.setattr(atartape.Tape, "open", classmethod(counting_open))
    for _ in range(5):  # a client hammering the old recording's URL
        assert (await call(app, "HEAD", path_of(first)))[0]["status"] == 410
    assert opened == 0
    unknown = "0" * 64  # never served here: the index is looked at once more
    assert (await call(app, "HEAD", f"/r/{unknown}/x.tar"))[0]["status"] == 410
    assert opened == 1


async def test_keeps_being_rerecorded_is_503(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tape = await atartape.record(dataset)
    app = TapeApp(dataset)

    async def always_changed(player: Any, plan: Any, *args: Any, **kwargs: Any) -> Any:
        error = atartape.TapeChangedError("re-recorded (staged)")
        return atartape.asgi.Failure(0, error, started=False)

    monkeypatch.setattr(atartape.asgi, "send_tape", always_changed)
    sent = await call(app, path=path_of(tape))
    assert sent[0]["status"] == 503 and b"re-recorded" in body_of(sent)
    assert any("re-recorded 8 times" in line for line in records(caplog))


async def test_tape_response_of_a_held_tape_after_a_rerecording(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 1: a route holding a Tape opened before a re-recording answers 503 and logs why,
    never the new recording's bytes under the old ETag."""
    held = await atartape.record(dataset)

    async def download(request: Request) -> TapeResponse:
        return TapeResponse(held, request)

    write(dataset / "a.txt", "changed, and longer\n")
    await atartape.record(dataset, overwrite=True)
    async with client(Starlette(routes=[Route("/download", download)])) as http:
        for headers in ({}, {"Range": "bytes=10-"}, {"If-Range": f'"{held.identity}"'}):
            response = await http.get("/download", headers=headers)
            assert response.status_code == 503, headers
            assert response.headers["cache-control"] == "no-store"
            assert b"ustar" not in response.content
        head = await http.head("/download")  # no body to play: the held tape's headers
        assert head.status_code == 200
    lines = [line for line in records(caplog) if "503" in line]
    assert len(lines) == 3 and all("re-recorded since it was opened" in x for x in lines)


async def test_tape_opened_once_by_concurrent_first_requests(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tape = await atartape.record(dataset)
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
        sent = await call(app, path=path_of(tape), headers=[(b"range", b"bytes=0-99")])
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

    result: list[Message] = []

    async def serve() -> None:
        app = TapeApp(big_dataset)
        result.extend(await call(app, path=path_of(tape), receive=receive, send=send))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(serve)
            await started.wait()
            held = await anyio.to_thread.run_sync(open_under, big_dataset)
            assert str(big_dataset / "sub" / "huge.bin") in held  # mid-file: it means something
            gone.set()
    assert await anyio.to_thread.run_sync(open_under, big_dataset) == []
    body = [m for m in result if m["type"] == "http.response.body"]
    assert all(m["more_body"] for m in body)  # no terminating message: not "complete"
    assert sum(len(m["body"]) for m in body) < tape.total_size


async def test_send_raising_oserror_counts_as_disconnect(big_dataset: Path) -> None:
    tape = await atartape.record(big_dataset)
    chunks = 0

    async def send(message: Message) -> None:  # an ASGI 2.4 server: send() fails when gone
        nonlocal chunks
        if message["type"] == "http.response.body":
            chunks += 1
            if chunks == 3:
                raise OSError("client gone")

    await call(TapeApp(big_dataset), path=path_of(tape), send=send)  # returns quietly
    assert chunks == 3
    assert await anyio.to_thread.run_sync(open_under, big_dataset) == []


async def test_no_disconnect_watcher_around_the_final_message(dataset: Path) -> None:
    """Case 8: the final body message is sent once the disconnect watcher is gone, so that a
    server closing the connection inside that call (hypercorn on trio, for HTTP/1.0 and
    ``Connection: close``) is not cancelled by the http.disconnect it delivers there."""
    tape = await atartape.record(dataset)
    final_sent = anyio.Event()
    receiving_at_the_end: list[bool] = []
    waiting = 0

    async def receive() -> Message:
        nonlocal waiting
        waiting += 1
        try:
            await final_sent.wait()
            return {"type": "http.disconnect"}
        finally:
            waiting -= 1

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            receiving_at_the_end.append(waiting > 0)
            final_sent.set()
            await anyio.lowlevel.checkpoint()  # where hypercorn's close would be cancelled

    sent = await call(TapeApp(dataset), path=path_of(tape), receive=receive, send=send)
    assert receiving_at_the_end == [False]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_changed_file_aborts_after_start_without_raising(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 6: the broken response is logged as one line and left unfinished (the server
    drops the connection); nothing is raised to the server, which would log a traceback."""
    tape = await atartape.record(dataset)
    late = dataset / "sub" / "deeper" / "c.txt"
    os.utime(late, ns=(late.stat().st_atime_ns, late.stat().st_mtime_ns + 10**9))
    app = TapeApp(dataset)
    sent = await call(app, path=path_of(tape))  # returns: nothing raised
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert all(m.get("more_body") for m in sent[1:])  # never the final, empty message
    assert len(body_of(sent)) < tape.total_size
    errors = [r for r in caplog.records if r.name == "atartape.http"]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR
    line = errors[0].getMessage()
    assert "\n" not in line and "TarIntegrityError" in line and "c.txt" in line
    assert re.search(r"response aborted at byte \d+ of \d+", line)
    assert await anyio.to_thread.run_sync(open_under, dataset) == []
    # The same app keeps serving requests that do not touch the changed file.
    entry = await tape.entry("dataset/sub/deeper/c.txt")
    ok = await call(
        app, path=path_of(tape), headers=[(b"range", f"bytes=0-{entry.start_offset - 1}".encode())]
    )
    assert ok[0]["status"] == 206 and len(body_of(ok)) == entry.start_offset
    # A window that starts at the changed entry fails before the response starts: a clean 500.
    at = await call(
        app, path=path_of(tape), headers=[(b"range", f"bytes={entry.start_offset}-".encode())]
    )
    assert at[0]["status"] == 500 and b"cannot be played" in body_of(at)
    # A multipart body is read whole first: its second part breaking is a clean 500 too.
    ranges = f"bytes=0-9,{entry.start_offset}-{entry.start_offset + 9}".encode()
    several = await call(app, path=path_of(tape), headers=[(b"range", ranges)])
    assert several[0]["status"] == 500


async def test_source_gone_is_500(dataset: Path, tmp_path: Path) -> None:
    tape = await atartape.record(dataset, index_path=tmp_path / "index.db")
    app = TapeApp(dataset, index_path=tmp_path / "index.db")
    assert (await call(app, "HEAD", path_of(tape)))[0]["status"] == 200
    dataset.rename(tmp_path / "moved")
    sent = await call(app, path=path_of(tape))
    assert sent[0]["status"] == 500
