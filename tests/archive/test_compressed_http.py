"""Compressed and sealed archives read over HTTP from nginx on 127.0.0.1 (HttpRangeSource), and
from a real S3 server (SeaweedFS, S3Source).

One member of a sealed, compressed tape costs the age chunks that hold the zstd frames that
hold it (and the headers a lookup checks): counted by the client and by nginx's access log. A
gzip stream is read in one pass of range requests.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

import atartape
from atartape.archive import HttpRangeSource, open_archive
from atartape.archive.sources import RangeSource
from atartape.format import age
from tests.archive.made import Made, reference
from tests.archive.servers import Served, nginx
from tests.helpers import write
from tests.s3server import S3Server

pytestmark = pytest.mark.anyio

IDENTITY = age.X25519Identity.generate()


class Counting:
    """A range source that counts what it fetched through another one."""

    def __init__(self, inner: RangeSource) -> None:
        self.inner = inner
        self.fetched = 0
        self.requests = 0

    @property
    def size(self) -> int:
        return self.inner.size

    async def prepare(self) -> None:
        await self.inner.prepare()  # type: ignore[attr-defined]

    async def read_range(self, start: int, end: int) -> bytes:
        self.requests += 1
        data = await self.inner.read_range(start, end)
        self.fetched += len(data)
        return data


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    root = tmp_path_factory.mktemp("www")
    with nginx(root, tmp_path_factory.mktemp("nginx")) as server:
        yield server, root


async def logged(server: Served, requests: int) -> int:
    """Body bytes nginx sent, once it has logged ``requests`` requests (polled, deadline)."""
    deadline = time.monotonic() + 10
    while server.requests() < requests:
        assert time.monotonic() < deadline, "nginx did not log the requests"
        await anyio.sleep(0.01)
    return server.sent()


async def test_one_member_of_a_sealed_compressed_tape_over_http(
    served: tuple[Served, Path], tmp_path: Path
) -> None:
    server, root = served
    src = tmp_path / "d"
    for i in range(8):
        write(src / f"big{i}.bin", os.urandom(2 << 20))
    write(src / "z" / "note.txt", "note\n" * 10)
    tape = await atartape.record(
        src,
        compress="zstd",
        frame_size="64KiB",
        seal=[str(IDENTITY.recipient)],
        embed_index=True,
    )
    name = f"tape-{os.getpid()}-{time.monotonic_ns()}.tar.zst.age"
    async with await anyio.open_file(root / name, "wb") as out:
        async for chunk in atartape.TapePlayer(tape).chunks():
            await out.write(chunk)
    total = (root / name).stat().st_size
    url = f"{server.base}/{name}"

    async with httpx.AsyncClient() as client:
        for trust_index, share in [(False, 12), (True, 50)]:
            before, logged_before = server.sent(), server.requests()
            counting = Counting(HttpRangeSource(url, client=client))
            async with open_archive(
                counting, age_identity=str(IDENTITY), trust_index=trust_index
            ) as archive:
                assert archive.sealed and archive.compression == "zstd" and archive.random_access
                assert await archive.read("d/z/note.txt") == b"note\n" * 10
            # The size probe (one byte) and every range, as nginx counted them.
            sent = await logged(server, logged_before + counting.requests + 1) - before
            assert sent == counting.fetched + 1
            assert counting.fetched < total // share, (trust_index, counting.fetched, total)


async def test_a_gzip_stream_over_http_is_one_pass(
    served: tuple[Served, Path], tmp_path: Path
) -> None:
    server, root = served
    src = tmp_path / "g"
    for i in range(3):
        write(src / f"f{i}.bin", os.urandom(700_000))
    tape = await atartape.record(src)
    plain = b"".join([c async for c in atartape.TapePlayer(tape).chunks()])
    name = f"g-{os.getpid()}-{time.monotonic_ns()}.tar.gz"
    (root / name).write_bytes(gzip.compress(plain))
    async with httpx.AsyncClient() as client:
        counting = Counting(HttpRangeSource(f"{server.base}/{name}", client=client))
        async with open_archive(counting) as archive:
            assert archive.compression == "gzip" and not archive.random_access
            async for member in archive.members():
                if member.is_file:
                    assert await archive.read(member) == (src.parent / member.name).read_bytes()
            assert archive.passes == 1
    assert counting.fetched == (root / name).stat().st_size + 512  # and the first block, sniffed


@pytest.mark.parametrize("name", ["t.tar.gz", "tape.tar.zst.age"])
async def test_compressed_and_sealed_objects_read_from_s3(
    s3_server: S3Server, s3_bucket: str, made: Made, name: str
) -> None:
    from atartape import s3

    variant = made.variants[name]
    client = s3_server.client()
    try:
        client.put_object(Bucket=s3_bucket, Key=name, Body=variant.path.read_bytes())
        source = s3.S3Source(f"s3://{s3_bucket}/{name}", client=client)
        async with source, open_archive(source, age_identity=variant.identity) as archive:  # type: ignore[arg-type]
            assert archive.compression == variant.compression
            assert archive.sealed == variant.sealed
            names = [member.name async for member in archive.members()]
            assert names == [entry[0] for entry in reference(variant.plain)[0]]
            assert await archive.read("t/d/a.txt") == b"alpha\n" * 100
    finally:
        client.close()
