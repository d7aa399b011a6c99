"""Hashing segments in worker threads, the same way wherever a transfer does it.

:class:`~atartape.format.wire.SegmentHasher` does the arithmetic; these helpers feed it: the
sender as it frames what it streams (:func:`hash_and_frame`), the sender re-reading a prefix
from the source and the receiver re-reading the prefix it holds (:func:`hash_segments`, from
the player's chunks or from :func:`file_chunks`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterable, Callable

import anyio.to_thread

from .._engine.files import pread_exact
from ..format.wire import SegmentHasher, encode_data

__all__ = ["READ_SIZE", "file_chunks", "hash_and_frame", "hash_segments", "open_for_reading"]

READ_SIZE = 4 * 1024 * 1024

Digests = list[tuple[int, bytes]]
"""Segments completed: ``(index, sha256)``."""


def hash_and_frame(
    hasher: SegmentHasher, piece: memoryview, skip: int
) -> tuple[Digests, bytes | None]:
    """In a worker thread: hash ``piece`` (the next bytes of the stream), and frame them from
    ``skip`` on, unless the peer holds them all already."""
    offset = hasher.position
    done = hasher.feed(piece)
    if skip >= len(piece):
        return done, None
    return done, encode_data(offset + skip, bytes(piece[skip:]))


async def hash_segments(
    chunks: AsyncIterable[bytes], hasher: SegmentHasher, record: Callable[[int, bytes], object]
) -> None:
    """Hash ``chunks`` (the stream from ``hasher``'s position on) and ``record`` each segment."""
    async for chunk in chunks:
        for index, digest in await anyio.to_thread.run_sync(hasher.feed, chunk):
            record(index, digest)


async def file_chunks(fd: int, start: int, end: int) -> AsyncGenerator[bytes, None]:
    """Bytes ``[start, end)`` of the open file ``fd``, read in worker threads.

    Raises :class:`OSError` if the file ends before ``end``.
    """
    position = start
    while position < end:
        data = await anyio.to_thread.run_sync(
            pread_exact, fd, min(READ_SIZE, end - position), position
        )
        if not data:
            raise OSError(f"unexpected end of file at byte {position}")
        position += len(data)
        yield data


def open_for_reading(path: str) -> int:
    return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
