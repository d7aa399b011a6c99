"""Read-ahead across files: the kernel starts reading the next files of a play before they are due.

The order of a tape is known, so the files to come are known too. When a read misses the page
cache (a cold disk: a one-byte ``preadv`` with ``RWF_NOWAIT`` says so, without waiting), the
producer turns its :class:`Prefetcher` on: a few threads open the files ahead of the consumer,
within a byte budget, and ask for their pages with ``posix_fadvise(WILLNEED)``, so the disk
works on many files at once while the producer reads them one by one, in order. Nothing is read
into memory here and nothing is sent from here: every byte a play sends is still read, and
checked against its promise, by the producer. On a warm cache it stays off (measured: threads
that open files already cached only contend for the GIL).
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .index import Row
from .source import OPEN_FLAGS, Where

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

PREFETCH_BYTES = 256 * 1024 * 1024  # how far ahead of the producer files are asked for
# Larger files are left to the kernel's own read-ahead, which follows a sequential reader well:
# asking for the next large file while one is read made 4 x 256 MiB cold take 0.5-1.8 s instead
# of 0.5-0.6 s (the two compete for the disk); deeper advice inside a file gained nothing.
PREFETCH_FILE_MAX = 4 * 1024 * 1024
PREFETCH_THREADS = 16  # opening a file whose inode is not cached waits for the disk too
_NOWAIT = getattr(os, "RWF_NOWAIT", None)
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)

_pool: ThreadPoolExecutor | None = None


def _threads() -> ThreadPoolExecutor:
    """The threads that ask the kernel for files, shared by every play of the process."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="atartape-prefetch")
    return _pool


def is_cold(fd: int, offset: int = 0) -> bool:
    """Whether the byte at ``offset`` of an open file is not in the page cache (never waits)."""
    if _NOWAIT is None:
        return False
    try:
        os.preadv(fd, [bytearray(1)], offset, _NOWAIT)
    except BlockingIOError:
        return True
    except OSError:  # not supported by this file system: nothing to learn
        return False
    return False


def advise(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start reading ``[offset, offset + length)`` of an open file."""
    if _WILLNEED is not None and length > 0:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, _WILLNEED)


def _advise_file(where: Where, length: int) -> None:
    """Ask for the first ``length`` bytes of a file; releases the hold on its folder."""
    root, rel = where
    try:
        fd = root.open(rel, OPEN_FLAGS)
    except (OSError, ValueError):
        return  # the producer's own open will say what is wrong
    else:
        try:
            advise(fd, 0, length)
        finally:
            os.close(fd)
    finally:
        root.release()


class Prefetcher:
    """Asks for the files of upcoming rows, at most ``budget`` bytes ahead of the producer.

    Off until :meth:`turn_on`; used from the producer's worker thread only. Every file asked
    for holds its folder's handle (:meth:`~atartape._engine.beneath.Beneath.hold`) until its
    thread is done with it, so the producer closing the handle never leaves a thread opening
    beneath a reused descriptor.
    """

    def __init__(self, locate: Callable[[Row], Where | None], budget: int = PREFETCH_BYTES) -> None:
        self.locate = locate
        self.budget = budget
        self.on = False
        self._issued = 0  # tape offset up to which files were asked for
        self._pending: deque[tuple[Future[None], Where]] = deque()

    def turn_on(self) -> None:
        self.on = True

    def ahead(self, position: int, rows: Iterable[Row]) -> None:
        """The producer is at ``position``: ask for the files of ``rows`` (in stream order)
        that start within the budget ahead of it and were not asked for yet."""
        if not self.on:
            return
        while self._pending and self._pending[0][0].done():
            self._pending.popleft()
        limit = position + self.budget
        pool = _threads()
        for row in rows:
            if row.start_offset >= limit:
                break
            if row.start_offset < self._issued or row.kind != "file" or not row.size:
                continue
            if row.size > PREFETCH_FILE_MAX:
                self._issued = row.end_offset
                continue
            self._issued = row.end_offset
            where = self.locate(row)
            if where is None:
                continue  # content that is not in a file
            where[0].hold()
            length = min(row.size, limit - row.start_offset)
            self._pending.append((pool.submit(_advise_file, where, length), where))

    def close(self) -> None:
        """Drop what was not started yet (a consumer that left needs none of it)."""
        while self._pending:
            future, (root, _) = self._pending.popleft()
            if future.cancel():
                root.release()  # it never ran, so it never will release it
