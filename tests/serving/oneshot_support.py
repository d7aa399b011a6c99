"""One-shot tapes the HTTP tests serve: a selection of files, bytes and a remote object (ranges
work), and the same with a streamed member (it plays whole, once). The same members give the
same tape, so a route that builds its tape per request has a stable ETag."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import atartape
from tests.helpers import write

MTIME = 1_700_000_000
REMOTE = random.Random(3).randbytes(700_000)  # an object elsewhere, read by ranges
STREAMED = b"streamed line\n" * 20_000


def photos(root: Path) -> Path:
    """Files to pick a selection from."""
    write(root / "a.jpg", random.Random(1).randbytes(150_000))
    write(root / "b.jpg", b"b" * 3000)
    write(root / "c.jpg", random.Random(2).randbytes(90_000))
    return root


class Remote:
    """An object read by ranges, counting the bytes asked for."""

    def __init__(self, data: bytes = REMOTE) -> None:
        self.data = data
        self.read = 0

    async def read_range(self, start: int, end: int) -> bytes:
        self.read += end - start
        return self.data[start:end]


def selection(folder: Path, names: list[str], remote: Remote) -> atartape.TarTape:
    """Files of ``folder``, a note in memory and the remote object, not prepared yet."""
    tape = atartape.TarTape(name="selection")
    for name in names:
        tape.add_file(folder / name, arcname=f"selection/{name}")
    tape.add_bytes("selection/README.txt", b"picked for you\n", mtime=MTIME)
    tape.add_remote(
        "selection/remote.bin",
        len(remote.data),
        mtime=MTIME,
        read_range=remote.read_range,
        version="v1",
    )
    return tape


async def lines() -> AsyncIterator[bytes]:
    for at in range(0, len(STREAMED), 50_000):
        yield STREAMED[at : at + 50_000]


def streamed(folder: Path) -> atartape.TarTape:
    """A file and a streamed member: it plays whole, once."""
    tape = atartape.TarTape(name="streamed")
    tape.add_file(folder / "b.jpg", arcname="streamed/b.jpg")
    tape.add_stream("streamed/log.txt", len(STREAMED), lines(), mtime=MTIME)
    return tape


async def whole(tape: atartape.TarTape) -> bytes:
    return b"".join([chunk async for chunk in tape.chunks()])
