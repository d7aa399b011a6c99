"""One-shot tapes (TarTape) served by TapeResponse, in process: Content-Length, ETag, Range and
If-Range before a byte is read; a tape with a streamed member plays whole, once."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

import atartape
from atartape._engine import producer
from atartape.starlette import TapeResponse
from tests.serving.oneshot_support import (
    REMOTE,
    STREAMED,
    Remote,
    photos,
    selection,
    streamed,
    whole,
)

pytestmark = pytest.mark.anyio


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


def records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "atartape.http"]


async def test_a_selection_with_ranges_and_if_range(tmp_path: Path) -> None:
    folder = photos(tmp_path / "photos")
    remote = Remote()

    async def download(request: Request) -> TapeResponse:
        names = request.query_params.getlist("name")
        return TapeResponse(selection(folder, names, remote), request)  # prepared when sent

    expected_tape = await selection(folder, ["a.jpg", "c.jpg"], Remote()).prepare()
    expected = await whole(expected_tape)
    size = len(expected)
    params = {"name": ["a.jpg", "c.jpg"]}
    async with client(Starlette(routes=[Route("/download", download)])) as http:
        got = await http.get("/download", params=params)
        assert got.status_code == 200 and got.content == expected
        assert got.headers["content-length"] == str(size) == str(expected_tape.total_size)
        etag = got.headers["etag"]
        assert etag == f'"{expected_tape.identity}"'  # the same members: the same identity
        assert got.headers["content-type"] == "application/x-tar"
        assert got.headers["accept-ranges"] == "bytes"
        assert got.headers["content-disposition"] == 'attachment; filename="selection.tar"'
        assert got.headers["cache-control"] == "no-cache"
        with tarfile.open(fileobj=io.BytesIO(got.content)) as archive:
            assert archive.getnames() == [
                "selection/README.txt",
                "selection/a.jpg",
                "selection/c.jpg",
                "selection/remote.bin",
            ]
        for cut in (1, 512, size // 3, size - 1):
            rest = await http.get(
                "/download", params=params, headers={"Range": f"bytes={cut}-", "If-Range": etag}
            )
            assert rest.status_code == 206 and rest.content == expected[cut:], cut
            assert rest.headers["content-range"] == f"bytes {cut}-{size - 1}/{size}"
        stale = await http.get(
            "/download", params=params, headers={"Range": "bytes=10-", "If-Range": '"other"'}
        )
        assert stale.status_code == 200 and stale.content == expected
        several = await http.get("/download", params=params, headers={"Range": "bytes=0-9,-20"})
        assert several.status_code == 206
        assert several.headers["content-type"].startswith("multipart/byteranges")
        assert expected[-20:] in several.content
        assert (
            await http.get("/download", params=params, headers={"If-None-Match": etag})
        ).status_code == 304
        head = await http.head("/download", params=params)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(size)
        beyond = await http.get("/download", params=params, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416
        # Another selection is another tape, with another ETag.
        other = await http.head("/download", params={"name": ["b.jpg"]})
        assert other.headers["etag"] != etag


async def test_a_range_reads_only_its_part_of_a_remote_member(tmp_path: Path) -> None:
    folder = photos(tmp_path / "photos")
    remote = Remote()
    tape = await selection(folder, ["b.jpg"], remote).prepare()
    full = await whole(tape)
    remote.read = 0

    async def download(request: Request) -> TapeResponse:
        return TapeResponse(tape, request)

    async with client(Starlette(routes=[Route("/download", download)])) as http:
        tail = await http.get("/download", headers={"Range": "bytes=-100000"})
    assert tail.status_code == 206 and tail.content == full[-100_000:]
    assert 0 < remote.read < 100_000 < len(REMOTE)  # only the end of the remote object


async def test_a_streamed_member_plays_whole_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = photos(tmp_path / "photos")
    expected = await whole(streamed(folder))
    held = streamed(folder)

    async def fresh(request: Request) -> TapeResponse:
        return TapeResponse(streamed(folder), request)

    async def same(request: Request) -> TapeResponse:
        return TapeResponse(held, request)

    app = Starlette(routes=[Route("/fresh", fresh), Route("/same", same)])
    async with client(app) as http:
        for headers in ({}, {"Range": "bytes=100-"}, {"Range": "bytes=0-1,5-6"}):
            got = await http.get("/fresh", headers=headers)
            assert got.status_code == 200 and got.content == expected, headers
            assert got.headers["accept-ranges"] == "none" and "content-range" not in got.headers
            assert got.headers["content-length"] == str(len(expected))
        assert STREAMED[:1000] in got.content
        head = await http.head("/same")  # plays nothing: the stream is still unread
        assert head.status_code == 200 and head.headers["accept-ranges"] == "none"
        cached = await http.get("/same", headers={"If-None-Match": head.headers["etag"]})
        assert cached.status_code == 304
        first = await http.get("/same", headers={"Range": "bytes=100-"})
        assert first.status_code == 200 and first.content == expected
        again = await http.get("/same")  # its stream was read: refused before any byte
        assert again.status_code == 500 and b"ustar" not in again.content
    assert any("streams were played already" in line for line in records(caplog))


async def test_a_tape_that_cannot_be_prepared_is_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = photos(tmp_path / "photos")

    async def missing(request: Request) -> TapeResponse:
        tape = atartape.TarTape()
        tape.add_file(folder / "gone.jpg")
        return TapeResponse(tape, request)

    async def twice(request: Request) -> TapeResponse:
        tape = atartape.TarTape()
        tape.add_bytes("x.txt", b"1", mtime=0)
        tape.add_bytes("x.txt", b"2", mtime=0)
        return TapeResponse(tape, request)

    app = Starlette(routes=[Route("/missing", missing), Route("/twice", twice)])
    async with client(app) as http:
        for path in ("/missing", "/twice"):
            refused = await http.get(path)
            assert refused.status_code == 500, path
            assert refused.content == b"the tape cannot be prepared: see the server log\n"
            assert refused.headers["cache-control"] == "no-store"
    lines = records(caplog)
    assert len(lines) == 2
    assert "SourceNotFoundError" in lines[0] and "gone.jpg" in lines[0]
    assert "DuplicateEntryError" in lines[1]


async def test_what_a_one_shot_tape_cannot_take(tmp_path: Path) -> None:
    request = Request({"type": "http", "method": "GET", "headers": [], "path": "/"})
    tape = atartape.TarTape()
    tape.add_bytes("x.txt", b"x", mtime=0)
    with pytest.raises(ValueError, match="no 'zstd' view"):
        TapeResponse(tape, request, view="zstd")
    with pytest.raises(ValueError, match="for a recorded Tape"):
        TapeResponse(tape, request, source_root=tmp_path)
    response = TapeResponse(tape, request, view="plain")  # the tar is its only view
    assert response.plan is None  # not prepared: planned when sent
    await tape.prepare()
    prepared = TapeResponse(tape, request, filename="x.tar")
    assert prepared.plan is not None and prepared.status_code == 200
    assert dict(prepared.plan.headers)["content-length"] == str(tape.total_size)


async def test_members_not_on_disk_after_a_cold_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a cold disk the producer asks for the files of the rows ahead: in-memory and
    streamed members, which have no file, are skipped (they failed with a KeyError)."""
    monkeypatch.setattr(producer, "is_cold", lambda fd, offset=0: True)
    folder = photos(tmp_path / "photos")
    tape = streamed(folder)
    tape.add_bytes("streamed/z.txt", b"last\n", mtime=0)

    async def download(request: Request) -> TapeResponse:
        return TapeResponse(tape, request)

    async with client(Starlette(routes=[Route("/download", download)])) as http:
        got = await http.get("/download")
    assert got.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(got.content)) as archive:
        assert archive.extractfile("streamed/log.txt").read() == STREAMED  # type: ignore[union-attr]
        assert archive.extractfile("streamed/z.txt").read() == b"last\n"  # type: ignore[union-attr]
