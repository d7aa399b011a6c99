"""tape_response in process, under aiohttp's own server on 127.0.0.1 (asyncio only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

import atartape
from atartape import views
from atartape.aiohttp import tape_response
from tests.helpers import write
from tests.serving.oneshot_support import Remote, photos, selection, streamed, whole
from tests.serving.views_support import full, record, tree

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> Any:
    return "asyncio"  # aiohttp runs on asyncio only


async def serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/download", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/download"


async def test_a_held_tape_after_a_rerecording_is_503(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 1: never the new recording's bytes under the held one's ETag."""
    held = await atartape.record(dataset)

    async def download(request: web.Request) -> web.StreamResponse:
        return await tape_response(held, request)

    runner, url = await serve(download)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            fresh = await http.get(url, headers={"Range": "bytes=0-99"})
            assert fresh.status_code == 206 and fresh.headers["etag"] == f'"{held.identity}"'
            write(dataset / "a.txt", "changed, and longer\n")
            await atartape.record(dataset, overwrite=True)
            for headers in ({}, {"Range": "bytes=100-"}, {"If-Range": f'"{held.identity}"'}):
                stale = await http.get(url, headers=headers)
                assert stale.status_code == 503, headers
                assert stale.headers["cache-control"] == "no-store"
                assert b"ustar" not in stale.content
            several = await http.get(url, headers={"Range": "bytes=0-9,20-29"})
            assert several.status_code == 503
    finally:
        await runner.cleanup()
    lines = [r.getMessage() for r in caplog.records if r.name == "atartape.http"]
    assert len(lines) == 4 and all("re-recorded since it was opened" in x for x in lines)


async def test_validators_and_multipart(dataset: Path) -> None:
    tape = await atartape.record(dataset)

    async def download(request: web.Request) -> web.StreamResponse:
        return await tape_response(tape, request)

    runner, url = await serve(download)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            whole = await http.get(url)
            etag = whole.headers["etag"]
            assert etag == f'"{tape.identity}"' and whole.headers["cache-control"] == "no-cache"
            cached = await http.get(url, headers={"If-None-Match": etag})
            assert cached.status_code == 304 and cached.content == b""
            refused = await http.get(url, headers={"If-Match": '"x"'})
            assert refused.status_code == 412 and refused.content == b"Precondition Failed\n"
            several = await http.get(url, headers={"Range": "bytes=0-9,20-29"})
            assert several.status_code == 206
            assert several.headers["content-type"].startswith("multipart/byteranges")
            assert whole.content[20:30] in several.content
            assert int(several.headers["content-length"]) == len(several.content)
            head = await http.head(url, headers={"Range": "bytes=0-9"})
            assert head.status_code == 200 and head.content == b""
    finally:
        await runner.cleanup()


async def test_tape_response_serves_a_view(tmp_path: Path) -> None:
    """A sealed and compressed tape: its recorded view by default, the tar on request; each
    described by its own bytes; a resume with the view's ETag gets the rest of the view."""
    root = tree(tmp_path / "data", scale=2)
    tape = await record(root, tmp_path / "index.db", "zstd+age")
    sealed = await full(atartape.TapePlayer(tape))
    plain = await full(atartape.TapePlayer(tape, view="plain"))

    async def download(request: web.Request) -> web.StreamResponse:
        view = request.query.get("view")
        return await tape_response(tape, request, view=view)

    runner, url = await serve(download)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            whole = await http.get(url)
            identity = views.identity_of(tape.identity, "zstd+age")
            assert whole.status_code == 200 and whole.content == sealed
            assert whole.headers["etag"] == f'"{identity}"'
            assert whole.headers["content-type"] == "application/octet-stream"
            assert whole.headers["content-length"] == str(len(sealed))
            assert whole.headers["content-disposition"] == 'attachment; filename="data.tar.zst.age"'
            cut = len(sealed) // 2
            rest = await http.get(
                url, headers={"Range": f"bytes={cut}-", "If-Range": whole.headers["etag"]}
            )
            assert rest.status_code == 206 and rest.content == sealed[cut:]
            assert rest.headers["content-range"] == f"bytes {cut}-{len(sealed) - 1}/{len(sealed)}"
            several = await http.get(url, headers={"Range": "bytes=0-9,100000-100009"})
            assert several.status_code == 206
            assert sealed[100000:100010] in several.content
            assert "content-type: application/octet-stream" in several.content.decode("latin-1")
            tar = await http.get(url, params={"view": "plain"}, headers={"Range": "bytes=512-"})
            assert tar.status_code == 206 and tar.content == plain[512:]
            assert tar.headers["etag"] == f'"{tape.identity}"'
            assert tar.headers["content-type"] == "application/x-tar"
            # A view the tape lacks: ValueError in the handler, which aiohttp answers 500.
            with pytest.raises(ValueError, match="no 'age' view"):
                atartape.TapePlayer(tape, view="age")
            lacking = await http.get(url, params={"view": "age"})
            assert lacking.status_code == 500 and b"ustar" not in lacking.content
    finally:
        await runner.cleanup()


async def test_tape_response_of_one_shot_tapes(tmp_path: Path) -> None:
    """A selection built per request (prepared by tape_response): ranges and If-Range; a tape
    with a streamed member: whole, Accept-Ranges: none."""
    folder = photos(tmp_path / "photos")
    expected = await whole(await selection(folder, ["a.jpg"], Remote()).prepare())
    expected_streamed = await whole(streamed(folder))

    async def download(request: web.Request) -> web.StreamResponse:
        if request.query.get("streamed"):
            return await tape_response(streamed(folder), request)
        return await tape_response(selection(folder, ["a.jpg"], Remote()), request)

    runner, url = await serve(download)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            got = await http.get(url)
            assert got.status_code == 200 and got.content == expected
            assert got.headers["accept-ranges"] == "bytes"
            etag = got.headers["etag"]
            rest = await http.get(url, headers={"Range": "bytes=4000-", "If-Range": etag})
            assert rest.status_code == 206 and rest.content == expected[4000:]
            stale = await http.get(url, headers={"Range": "bytes=4000-", "If-Range": '"x"'})
            assert stale.status_code == 200 and stale.content == expected
            flowing = await http.get(url, params={"streamed": "1"}, headers={"Range": "bytes=9-"})
            assert flowing.status_code == 200 and flowing.content == expected_streamed
            assert flowing.headers["accept-ranges"] == "none"
    finally:
        await runner.cleanup()
