"""The producer: turns index rows into tape bytes, a bounded amount per worker-thread hop.

:class:`Producer` runs in a worker thread, one :meth:`~Producer.hop` at a time: per hop it checks
and reads many small files, or several chunks of a large one, up to a byte budget, and describes
what it made to a sink (see :mod:`atartape._engine.sinks`). The async side (see
:mod:`atartape._engine.play`) pulls one hop at a time, so nothing is read ahead of the consumer
beyond one hop. A small file costs one header encoding and five system calls.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import AsyncIterable, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import TarIntegrityError
from ..format.header import BLOCK_SIZE, entry_span
from ..format.layout import Window
from .files import pread_exact
from .index import Row
from .prefetch import Prefetcher, is_cold
from .sinks import FdSink, Sink
from .source import (
    Folders,
    Sources,
    StrictFolders,
    Where,
    check_entry,
    check_unchanged,
    mismatch,
    open_file,
)

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

# One hop reads READ_AHEAD bytes in pieces of CHUNK_SIZE. All pieces of a hop are alive at once
# and freed together; when they add up to more than twice one piece, glibc trims the worker's
# heap after every hop and faults it back in (16 x 64 KiB or 4 x 256 KiB per hop: 115,000 page
# faults and twice the time per GiB, measured). Two pieces of 1 MiB stay in the heap, and the
# hops are few enough that handing them over costs little (0.19 s per GiB in process, against
# 0.30 s for 1 MiB hops of 512 KiB).
CHUNK_SIZE = 1024 * 1024  # the largest bytes objects handed to the consumer
READ_AHEAD = 2 * CHUNK_SIZE  # read per thread hop: amortises the hop, bounds the read-ahead
# Small files are read in runs of up to SMALL_RUN_BYTES per hop: more would be held at once for
# no gain in time.
SMALL_RUN_BYTES = 512 * 1024
_QUEUE_ROWS = 256  # rows kept queued ahead of the producer
_QUEUE_ROWS_PREFETCHING = 8192  # more, when the files ahead are being asked for
_PROBE_EVERY = 64  # one small file in so many is probed: is the disk cold?
_PADDING = [bytes(n) for n in range(BLOCK_SIZE)]


def md5() -> hashlib._Hash:
    """An MD5 for checksums, not security (so it works on FIPS systems too)."""
    return hashlib.md5(usedforsecurity=False)


class _PipelinedMD5:
    """The MD5 of a large file, hashed by a helper thread while the next pieces are read.

    Hashing costs ten times what reading from the page cache does; done in turn with reading it
    adds both up. The helper runs one task at a time, in order, so updates stay ordered; at
    most two pieces wait for it (the caller waits past that), so memory stays bounded.
    """

    def __init__(self) -> None:
        self._md5 = md5()
        self._pending: deque[Future[None]] = deque()

    def update(self, data: bytes) -> None:
        while len(self._pending) >= 2:
            self._pending.popleft().result()
        self._pending.append(_hasher().submit(self._md5.update, data))

    def settle(self) -> None:
        """Wait for the updates already handed over (also when the file is left half-way)."""
        while self._pending:
            self._pending.popleft().result()

    def hexdigest(self) -> str:
        self.settle()
        return self._md5.hexdigest()


_hasher_thread: ThreadPoolExecutor | None = None


def _hasher() -> ThreadPoolExecutor:
    """One thread that hashes, in submission order, for every producer."""
    global _hasher_thread
    if _hasher_thread is None:
        # Imported here: concurrent.futures costs 15 ms of start-up, for md5 of large files only.
        from concurrent.futures import ThreadPoolExecutor

        _hasher_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atartape-md5")
    return _hasher_thread


class Producer:
    """Produces the bytes of ``window`` from queued rows, describing them to a sink.

    ``sources`` says where the file (or folder, or symlink) a row describes lies, beneath
    which folder; the producer owns it (:meth:`close` closes it).
    ``memory`` holds the content of in-memory files, ``streams`` that of files whose content
    arrives as an async iterable (produced on the event loop, see
    :mod:`atartape._engine.play`), and ``folders`` says whether a folder whose mtime moved
    still holds its promise. Runs in a worker thread, one hop at a time.
    """

    def __init__(
        self,
        window: Window,
        *,
        sources: Sources,
        md5: bool,
        chunk_size: int = CHUNK_SIZE,
        read_ahead: int = READ_AHEAD,
        memory: Mapping[bytes, bytes] | None = None,
        streams: Mapping[bytes, AsyncIterable[bytes]] | None = None,
        folders: Folders | None = None,
    ) -> None:
        self.window = window
        self.sources = sources
        self.locate = sources.where
        self.md5 = md5
        self.chunk_size = chunk_size
        self.read_ahead = read_ahead
        self.memory: Mapping[bytes, bytes] = {} if memory is None else memory
        self.streams: Mapping[bytes, AsyncIterable[bytes]] = {} if streams is None else streams
        self.folders: Folders = folders if folders is not None else StrictFolders()
        self.queue: deque[Row] = deque()
        self.prefetch = Prefetcher(self._on_disk)
        self._probed = 0
        self._current: Generator[bytes | int, None, str | None] | None = None
        self._current_row: Row | None = None
        self._current_ends = False  # whether the window includes the current entry's last byte

    def _on_disk(self, row: Row) -> Where | None:
        """Where the file a row is read from lies; ``None`` for content in memory or streamed."""
        if row.arc_path in self.memory or row.arc_path in self.streams:
            return None
        return self.locate(row)

    @property
    def idle(self) -> bool:
        return self._current is None and not self.queue

    @property
    def wants_rows(self) -> bool:
        return len(self.queue) < (_QUEUE_ROWS_PREFETCHING if self.prefetch.on else _QUEUE_ROWS)

    def next_is_stream(self) -> bool:
        """Whether the next entry's content comes from an async iterable (event-loop side)."""
        return (
            bool(self.streams)
            and self._current is None
            and bool(self.queue)
            and self.queue[0].arc_path in self.streams
        )

    def close(self) -> None:
        """Close the file being read, drop the read-ahead not begun and give up the folders'
        handles (between hops; the play is over)."""
        self._stop()
        self.sources.close()

    def _stop(self) -> None:
        """Close the file being read, if any, and drop the read-ahead not begun."""
        if self._current is not None:
            self._current.close()
            self._current = None
            self._current_row = None
        self.prefetch.close()

    def hop(self, sink: Sink[Any]) -> TarIntegrityError | None:
        """Produce up to ``read_ahead`` bytes into ``sink``; return the integrity error, if any.

        Every byte handed to the sink was read while its file held its promise; after an error
        the entry it names gets no further byte.
        """
        budget = self.read_ahead
        if self.prefetch.on and self.queue:
            self.prefetch.ahead(self.queue[0].start_offset, self.queue)
        try:
            while budget > 0:
                if self._current is None:
                    if not self.queue or self.next_is_stream():
                        break
                    run = self._take_small_run(min(budget, SMALL_RUN_BYTES))
                    if run:
                        for row in run:
                            self._whole(row, sink)
                        break  # one run per hop
                    row = self.queue.popleft()
                    span = entry_span(row.size)
                    skip, stop = self.window.cut(row.start_offset, span)
                    self._current = self._pieces(row, skip, stop, sink)
                    self._current_row = row
                    self._current_ends = stop == span
                    sink.start(row, skip > 0)
                try:
                    while budget > 0:
                        piece = next(self._current)
                        if isinstance(piece, int):
                            budget -= piece  # copied into the sink by the kernel
                            continue
                        sink.piece(piece)
                        budget -= len(piece)
                except StopIteration as done:
                    if self._current_ends:
                        assert self._current_row is not None
                        sink.end(self._current_row, done.value)
                    self._current = self._current_row = None
        except TarIntegrityError as error:
            self._stop()
            return error
        return None

    def _take_small_run(self, budget: int) -> list[Row]:
        """Whole small entries at the front of the queue, up to ``budget`` bytes."""
        run: list[Row] = []
        queue = self.queue
        window = self.window
        while queue and budget > 0:
            row = queue[0]
            span = entry_span(row.size)
            if (
                row.start_offset < window.start
                or row.start_offset + span > window.end
                or (row.kind == "file" and row.size >= self.chunk_size)
                or row.arc_path in self.memory
                or row.arc_path in self.streams
            ):
                break
            run.append(queue.popleft())
            budget -= span
        return run

    # ------------------------------------------------------------------ one entry

    def _whole(self, row: Row, sink: Sink[Any]) -> None:
        """A whole small entry, checked (and read) at once."""
        header = row.header()
        if row.kind != "file":
            check_entry(self.locate(row), row, self.folders)
            sink.whole(row, header, b"", b"", None)
            return
        fd, opened = open_file(self.locate(row), row)
        self._probed += 1
        if not self.prefetch.on and self._probed % _PROBE_EVERY == 1 and is_cold(fd):
            self.prefetch.turn_on()  # a cold disk: ask for the files ahead, many at once
            self.prefetch.ahead(row.end_offset, self.queue)
        try:
            data = os.pread(fd, row.size + 1, 0)  # one byte more: a file that grew shows it here
            if len(data) != row.size:
                data = self._read(fd, row, 0, row.size, True)
            check_unchanged(fd, row, opened)
        finally:
            os.close(fd)
        digest = md5() if self.md5 else None
        if digest is not None:
            digest.update(data)
        sink.whole(
            row,
            header,
            data,
            _PADDING[-row.size % BLOCK_SIZE],
            digest.hexdigest() if digest is not None else None,
        )

    def _pieces(
        self, row: Row, skip: int, stop: int, sink: Sink[Any]
    ) -> Generator[bytes | int, None, str | None]:
        """The bytes ``[skip, stop)`` of one entry; returns the content MD5 when hashed whole.

        Content goes through the kernel when ``sink`` copies (see :class:`FdSink`) and no MD5
        is asked for: then the count of bytes copied is yielded instead of the bytes."""
        header = row.header()
        if row.kind != "file":
            if row.arc_path not in self.memory:
                check_entry(self.locate(row), row, self.folders)
            yield header[skip:stop]
            return None
        data = self.memory.get(row.arc_path)
        if data is not None:
            content = data
            return (
                yield from self._file_pieces(
                    row, header, skip, stop, lambda lo, hi, _: content[lo:hi]
                )
            )
        fd, opened = open_file(self.locate(row), row)
        first = max(0, min(skip - BLOCK_SIZE, row.size - 1))
        if not self.prefetch.on and row.size and is_cold(fd, first):
            self.prefetch.turn_on()
        if self.prefetch.on:
            self.prefetch.ahead(row.end_offset, self.queue)  # the files after this one
        copier: FdSink | None = sink if isinstance(sink, FdSink) and not self.md5 else None

        def read(lo: int, hi: int, to_end: bool) -> bytes | int:
            if copier is not None and copier.copies:
                copied = self._copy(copier, fd, row, opened, lo, hi, to_end)
                if copied is not None:
                    return copied
            data = self._read(fd, row, lo, hi, to_end)
            check_unchanged(fd, row, opened)
            return data

        try:
            return (yield from self._file_pieces(row, header, skip, stop, read))
        finally:
            os.close(fd)

    def _file_pieces(
        self,
        row: Row,
        header: bytes,
        skip: int,
        stop: int,
        read: Callable[[int, int, bool], bytes | int],
    ) -> Generator[bytes | int, None, str | None]:
        """Header, content and padding of a file's window; content in ``chunk_size`` pieces."""
        size = row.size
        pad = bytes(max(0, stop - max(skip, BLOCK_SIZE + size)))
        lo = min(max(skip - BLOCK_SIZE, 0), size)
        hi = max(min(stop - BLOCK_SIZE, size), lo)
        digest = _PipelinedMD5() if self.md5 and skip == 0 and hi == size else None
        if skip < BLOCK_SIZE:
            yield header[skip:stop]
        at = lo
        try:
            while at < hi:
                step = min(self.chunk_size, hi - at)
                body = read(at, at + step, at + step == size)
                if digest is not None and not isinstance(body, int):
                    digest.update(body)
                yield body
                at += step
            if pad:
                yield pad
            return digest.hexdigest() if digest is not None else None
        finally:
            if digest is not None:
                digest.settle()

    def _copy(
        self,
        sink: FdSink,
        fd: int,
        row: Row,
        opened: os.stat_result,
        lo: int,
        hi: int,
        to_end: bool,
    ) -> int | None:
        """Content bytes ``[lo, hi)`` copied into ``sink`` by the kernel, then checked as a read
        is: when the file shrank, grew or changed meanwhile, the output is cut back to before
        this piece and the error raised. ``None``: the kernel refused, nothing was copied."""
        mark = sink.mark()
        want = hi - lo
        try:
            done = sink.copy(fd, lo, want)
            if done is None:
                return None
            if done < want:
                raise mismatch(
                    row,
                    "size",
                    f"shrank while being read (recorded {row.size} bytes, ended at {lo + done})",
                )
            if to_end and os.pread(fd, 1, hi):
                raise mismatch(row, "size", f"grew while being read (recorded {row.size} bytes)")
            check_unchanged(fd, row, opened)
        except BaseException:
            sink.rollback(mark)
            raise
        return done

    def _read(self, fd: int, row: Row, lo: int, hi: int, to_end: bool) -> bytes:
        """Content bytes ``[lo, hi)``; at the end of the file, one more byte to see growth."""
        want = hi - lo
        data = pread_exact(fd, want + 1 if to_end else want, lo)
        if len(data) > want:
            raise mismatch(row, "size", f"grew while being read (recorded {row.size} bytes)")
        if len(data) < want:
            raise mismatch(
                row,
                "size",
                f"shrank while being read (recorded {row.size} bytes, ended at {lo + len(data)})",
            )
        return data
