"""as_file(): a tape, a window of it or a volume as a synchronous, seekable file.

Driven the way users drive it: from plain threads with no event loop, from a worker thread of a
running loop, by ``requests`` and ``httpx``'s sync client uploading to a small threaded server on
127.0.0.1, by ``shutil.copyfileobj`` and ``io.BufferedReader``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest

import atartape

requests = pytest.importorskip("requests")


class _Uploads(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receiver)
        self.bodies: dict[str, bytes] = {}
        self.lengths: dict[str, str | None] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receiver(BaseHTTPRequestHandler):
    """Stores the body of every PUT (sized or chunked) under its path."""

    server: _Uploads

    def do_PUT(self) -> None:
        length = self.headers.get("Content-Length")
        if length is not None:
            body = self.rfile.read(int(length))
        else:
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(parts)
        self.server.bodies[self.path] = body
        self.server.lengths[self.path] = length
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def uploads() -> Iterator[_Uploads]:
    server = _Uploads()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def recorded(dataset: Path, tmp_path: Path) -> tuple[atartape.Tape, bytes]:
    """A recorded tape and its bytes, made on an event loop that is gone again."""

    async def make() -> tuple[atartape.Tape, bytes]:
        tape = await atartape.record(dataset, index_path=tmp_path / "index.db")
        data = b"".join([c async for c in atartape.TapePlayer(tape).chunks()])
        return tape, data

    return anyio.run(make)


def threads_settle_to(count: int, deadline: float = 10.0) -> bool:
    """Whether the threads come back down to ``count`` (polled until ``deadline`` seconds):
    a closed reader's portal, worker and SQLite threads end as soon as they see it."""
    end = time.monotonic() + deadline
    while threading.active_count() > count:
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


# ------------------------------------------------------------------ file semantics


def test_a_file_over_the_tape(recorded: tuple[atartape.Tape, bytes]) -> None:
    """tartape's as_file test, and the rest of what a file promises."""
    tape, data = recorded
    total = tape.total_size
    before = threading.active_count()
    with tape.as_file() as reader:
        assert reader.readable() and reader.seekable() and not reader.writable()
        header = reader.read(512)
        assert header == data[:512] and reader.tell() == 512
        assert reader.read() == data[512:] and reader.tell() == total
        assert reader.seek(0) == 0 and reader.read(512) == header
        assert reader.seek(-1024, os.SEEK_END) == total - 1024
        assert reader.read(4096) == bytes(1024)
        assert reader.seek(total) == total and reader.read() == b"" and reader.read(10) == b""
        with pytest.raises(atartape.InvalidOffsetError, match="outside"):
            reader.seek(total + 1)
        with pytest.raises(ValueError):  # InvalidOffsetError is a ValueError
            reader.seek(-1)
        assert reader.tell() == total  # a refused seek leaves the position
        reader.seek(1000)
        reader.seek(500, os.SEEK_CUR)
        buffer = bytearray(3000)
        assert reader.readinto(buffer) == 3000 and bytes(buffer) == data[1500:4500]
        assert reader.read(0) == b""
        with pytest.raises(ValueError, match="whence"):
            reader.seek(0, 7)
    assert reader.closed and threads_settle_to(before)
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)
    reader.close()  # again: nothing


def test_buffered_and_copied(recorded: tuple[atartape.Tape, bytes], tmp_path: Path) -> None:
    tape, data = recorded
    with io.BufferedReader(tape.as_file(), buffer_size=7000) as buffered:
        assert buffered.read(100) == data[:100]
        buffered.seek(50_000)
        assert buffered.read(100_000) == data[50_000:150_000]
    out = tmp_path / "copy.tar"
    with tape.as_file() as reader, out.open("wb") as file:
        shutil.copyfileobj(reader, file, 64 * 1024)
    assert out.read_bytes() == data


def test_windows_volumes_and_one_shot_tapes(recorded: tuple[atartape.Tape, bytes]) -> None:
    tape, data = recorded
    player = atartape.TapePlayer(tape)
    with player.as_file(1000, 250_000) as window:
        assert window.size == 249_000 and window.seek(0, os.SEEK_END) == 249_000
        window.seek(0)
        assert window.read() == data[1000:250_000]

    async def register() -> atartape.Layout:
        return await tape.register_layout("128KiB", tag="parts")

    layout = anyio.run(register)
    volume = player.volume(2, layout)
    with volume.as_file() as file:
        assert file.name == "dataset.tar.0002"
        assert file.read() == data[2 * 131072 : 3 * 131072]
    assert volume.md5 == hashlib.md5(data[2 * 131072 : 3 * 131072]).hexdigest()
    assert tape.get_layout("parts").checksum(2) == volume.md5  # kept, as a linear read completes

    async def one_shot() -> atartape.TarTape:
        blob = os.urandom(70_000)

        async def read_range(start: int, end: int) -> bytes:
            return blob[start:end]

        one = atartape.TarTape(name="bundle")
        one.add_bytes("a.txt", b"in memory", mtime=1_700_000_000)
        one.add_remote("b.bin", len(blob), mtime=1_700_000_000, read_range=read_range)
        return await one.prepare()

    one = anyio.run(one_shot)

    async def whole() -> bytes:
        return b"".join([c async for c in one.chunks()])

    expected = anyio.run(whole)
    with one.as_file(600, None) as file:
        assert file.read() == expected[600:] and file.name == "bundle.tar"


def test_a_changed_file_fails_the_read(recorded: tuple[atartape.Tape, bytes]) -> None:
    tape, data = recorded
    big = Path(tape.source_root) / "sub" / "big.bin"
    recorded_ns = big.stat().st_mtime_ns
    os.utime(big, ns=(1, 1))
    with tape.as_file() as reader:
        with pytest.raises(atartape.TarIntegrityError) as info:
            reader.read()
        assert info.value.arc_path == "dataset/sub/big.bin"
        assert reader.tell() == 0  # nothing handed out by the failed read
        os.utime(big, ns=(recorded_ns, recorded_ns))
        assert reader.read() == data  # a new play, from where it was asked


def test_a_shared_portal_is_left_running(recorded: tuple[atartape.Tape, bytes]) -> None:
    tape, data = recorded
    with anyio.from_thread.start_blocking_portal() as portal:
        with tape.as_file(portal=portal) as reader:
            assert reader.read(2048) == data[:2048]
        assert portal.call(anyio.sleep, 0) is None  # still running
        with atartape.TapePlayer(tape).as_file(portal=portal) as again:
            assert again.read() == data


# ------------------------------------------------------------------ real upload clients


def test_requests_and_httpx_upload_it(
    recorded: tuple[atartape.Tape, bytes], uploads: _Uploads
) -> None:
    tape, data = recorded
    with tape.as_file() as reader:
        answer = requests.put(f"{uploads.url}/requests.tar", data=reader, timeout=30)
    assert answer.status_code == 201
    assert uploads.bodies["/requests.tar"] == data
    assert uploads.lengths["/requests.tar"] == str(tape.total_size)  # sized, not chunked
    with httpx.Client() as client, tape.as_file() as reader:
        answer = client.put(f"{uploads.url}/httpx.tar", content=reader)
    assert answer.status_code == 201 and uploads.bodies["/httpx.tar"] == data
    # A resumed upload: the rest of the tape, from where the server stopped.
    with tape.as_file() as reader:
        reader.seek(300_000)
        requests.put(f"{uploads.url}/rest.tar", data=reader, timeout=30)
    assert uploads.bodies["/rest.tar"] == data[300_000:]
    assert uploads.lengths["/rest.tar"] == str(tape.total_size - 300_000)


def test_from_several_plain_threads(
    recorded: tuple[atartape.Tape, bytes], uploads: _Uploads
) -> None:
    tape, data = recorded
    player = atartape.TapePlayer(tape)
    volumes = player.volumes("200KiB")
    errors: list[BaseException] = []

    def upload(volume: atartape.Volume) -> None:
        try:
            with volume.as_file() as file:
                requests.put(f"{uploads.url}/{volume.name}", data=file, timeout=30)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(v,)) for v in volumes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert b"".join(uploads.bodies[f"/{v.name}"] for v in volumes) == data


@pytest.mark.anyio
async def test_from_a_worker_thread_of_a_running_loop(dataset: Path, uploads: _Uploads) -> None:
    tape = await atartape.record(dataset)
    data = b"".join([c async for c in atartape.TapePlayer(tape).chunks()])

    def upload() -> int:
        with tape.as_file() as reader:
            answer = requests.put(f"{uploads.url}/from-worker.tar", data=reader, timeout=30)
            return int(answer.status_code)

    assert await anyio.to_thread.run_sync(upload) == 201
    assert uploads.bodies["/from-worker.tar"] == data


@pytest.mark.anyio
async def test_reading_on_the_event_loop_is_refused(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    reader = tape.as_file()
    with pytest.raises(RuntimeError, match="chunks"):
        reader.read(10)
    reader.close()
    with pytest.raises(atartape.InvalidOffsetError):
        tape.as_file(10, 5)


def test_a_tape_played_from_elsewhere(
    recorded: tuple[atartape.Tape, bytes], tmp_path: Path
) -> None:
    tape, data = recorded
    moved = tmp_path / "moved"
    shutil.copytree(tape.source_root, moved, symlinks=True)
    shutil.rmtree(tape.source_root)
    with tape.as_file() as reader, pytest.raises(atartape.SourceNotFoundError):
        reader.read(10)
    with tape.as_file(0, 2048, source_root=moved) as reader:
        assert reader.read() == data[:2048]


def test_boto3_upload_fileobj_sends_it(
    recorded: tuple[atartape.Tape, bytes], s3_server: Any, s3_bucket: str
) -> None:
    """boto3's managed upload reads it as any file (in its own threads, in parts when large);
    the object is the tape, and a volume goes up as its own object."""
    from boto3.s3.transfer import TransferConfig

    tape, data = recorded
    client = s3_server.client()
    try:
        small_parts = TransferConfig(
            multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024
        )
        with tape.as_file() as reader:
            client.upload_fileobj(reader, s3_bucket, "tape.tar", Config=small_parts)
        stored = client.get_object(Bucket=s3_bucket, Key="tape.tar")["Body"].read()
        assert stored == data
        volume = atartape.TapePlayer(tape).volume(1, "64KiB")
        with volume.as_file() as reader:
            client.upload_fileobj(reader, s3_bucket, volume.name)
        part = client.get_object(Bucket=s3_bucket, Key=volume.name)["Body"].read()
        assert part == data[65536:131072]
    finally:
        client.close()
