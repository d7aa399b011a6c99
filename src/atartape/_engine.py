"""The playing engine: turn index rows into tape bytes, a bounded amount per thread hop.

The synchronous half (:class:`Producer`) runs in a worker thread: per hop it checks and reads
many small files, or several chunks of a large one, up to a byte budget. The async half pulls one
hop at a time, so nothing is read ahead of the consumer beyond one hop, and turns the result into
events or bytes. Rows stay the plain tuples the index returns (see :mod:`atartape._index`):
a small file costs one header encoding and four system calls, and no object of its own.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Generator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread

from . import paths
from ._errors import TarIntegrityError
from ._index import row_entry
from ._store import Row
from .events import EventMetadata, TarEvent, TarEventType
from .header import BLOCK_SIZE, FOOTER_SIZE, encode_raw, entry_span
from .layout import Entry

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

# One hop reads HOP_BYTES in pieces of CHUNK_SIZE. All pieces of a hop are alive at once and
# freed together; when they add up to more than twice one piece, glibc trims the worker's heap
# after every hop and faults it back in (16 x 64 KiB or 4 x 256 KiB per hop: 115,000 page faults
# and twice the time per GiB, measured). Two pieces of 1 MiB stay in the heap, and the hops are
# few enough that handing them over costs little (0.19 s per GiB in process, against 0.30 s
# for 1 MiB hops of 512 KiB).
CHUNK_SIZE = 1024 * 1024  # the largest bytes objects handed to the consumer
HOP_BYTES = 2 * CHUNK_SIZE  # read per thread hop: amortises the hop, bounds the read-ahead
# Small files are read in runs of up to SMALL_RUN_BYTES per hop, and in byte mode their pieces
# are joined into chunks of JOIN_BYTES: many small objects held at once cost memory (a 2 MiB
# run joined into 1 MiB chunks peaked 5 MiB higher, for no gain in time).
SMALL_RUN_BYTES = 512 * 1024
JOIN_BYTES = 256 * 1024
_COALESCE_BELOW = 64 * 1024  # in byte mode, pieces below this are joined, larger ones pass
_PADDING = [bytes(n) for n in range(BLOCK_SIZE)]


class _PipelinedMD5:
    """The MD5 of a large file, hashed by a helper thread while the next pieces are read.

    Hashing costs ten times what reading from the page cache does; done in turn with reading it
    adds both up. The helper runs one task at a time, in order, so updates stay ordered; at
    most two pieces wait for it (the caller waits past that), so memory stays bounded.
    """

    def __init__(self) -> None:
        self._md5 = hashlib.md5()
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


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_FLAGS |= getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in for a file must not hang us


class Feed(Protocol):
    """Where the rows of a play come from (the index, or a one-shot plan)."""

    async def next_batch(self) -> list[Row]:
        """The next rows to produce, in stream order; ``[]`` when there are none."""
        ...

    async def aclose(self) -> None: ...


Session = Callable[[], Awaitable[tuple["Producer", Feed]]]
"""Opens a play: its producer and its feed (called inside the generator, on first use)."""


@dataclass(slots=True)
class Output:
    """What one hop produced for one entry (event mode)."""

    entry: Entry
    started: bool
    resumed: bool
    chunks: list[bytes] = field(default_factory=list)
    finished: bool = False
    md5: str | None = None


def _integrity(row: Row, what: str) -> TarIntegrityError:
    arc_path = paths.from_bytes(row[1])
    return TarIntegrityError(f"{arc_path!r}: {what}", arc_path=arc_path)


def _open_error(row: Row, exc: OSError) -> TarIntegrityError:
    if isinstance(exc, FileNotFoundError):
        return _integrity(row, "missing (it was recorded as a file)")
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return _integrity(row, "is now a symlink (it was recorded as a file)")
    return _integrity(row, f"cannot be opened ({exc.strerror})")


def _stat_error(row: Row, st: os.stat_result) -> TarIntegrityError | None:
    size, mtime_ns = row[3], row[6]
    if not stat.S_ISREG(st.st_mode):
        return _integrity(row, "is no longer a regular file")
    if st.st_size != size:
        return _integrity(
            row, f"size changed since recording (recorded {size} bytes, now {st.st_size})"
        )
    if st.st_mtime_ns != mtime_ns:
        return _integrity(
            row, f"mtime changed since recording (recorded {mtime_ns} ns, now {st.st_mtime_ns})"
        )
    return None


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``, fewer only at end of file (short reads are retried)."""
    data = os.pread(fd, size, offset)
    if len(data) >= size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class Producer:
    """Produces the bytes ``[start, end)`` of a tape of ``total_size`` bytes from queued rows.

    ``resolve`` maps an archive path to the file that holds its content. ``memory`` holds the
    content of in-memory files, ``streams`` that of files whose content arrives as an async
    iterable (produced on the event loop, see :func:`play_events`), and ``unchecked`` the folders
    whose mtime is not promised (roots). Runs in a worker thread, one hop at a time.
    """

    def __init__(
        self,
        *,
        start: int,
        end: int,
        total_size: int,
        resolve: Callable[[bytes], bytes],
        md5: bool,
        chunk_size: int = CHUNK_SIZE,
        hop_bytes: int = HOP_BYTES,
        memory: Mapping[bytes, bytes] | None = None,
        streams: Mapping[bytes, AsyncIterable[bytes]] | None = None,
        unchecked: frozenset[bytes] = frozenset(),
    ) -> None:
        self.start = start
        self.end = end
        self.total_size = total_size
        self.resolve = resolve
        self.md5 = md5
        self.chunk_size = chunk_size
        self.join_bytes = min(chunk_size, JOIN_BYTES)
        self.hop_bytes = hop_bytes
        self.memory = {} if memory is None else memory
        self.streams = {} if streams is None else streams
        self.unchecked = unchecked
        self.queue: deque[Row] = deque()
        self._current: Generator[bytes, None, str | None] | None = None
        self._current_out: Output | None = None  # event mode: the entry being produced
        self._current_ends = False  # whether the window includes the current entry's last byte
        self._parts: list[bytes] = []  # byte mode: small pieces waiting to be joined
        self._pending = 0

    @property
    def idle(self) -> bool:
        return self._current is None and not self.queue

    def next_is_stream(self) -> bool:
        """Whether the next row's content comes from an async iterable (event-loop side)."""
        return (
            bool(self.streams)
            and self._current is None
            and bool(self.queue)
            and self.queue[0][1] in self.streams
        )

    def close(self) -> None:
        """Close the file being read, if any (call between hops)."""
        if self._current is not None:
            self._current.close()
            self._current = None
            self._current_out = None

    # ------------------------------------------------------------------ hops

    def _window(self, row: Row) -> tuple[int, int, int]:
        begin = row[0]
        span = entry_span(row[3])
        return max(0, self.start - begin), min(span, self.end - begin), span

    def _is_small_and_whole(self, row: Row, skip: int, stop: int, span: int) -> bool:
        return (
            skip == 0
            and stop == span
            and (row[2] != "file" or row[3] < self.chunk_size)
            and row[1] not in self.memory
        )

    def produce_events(self) -> tuple[list[Output], TarIntegrityError | None]:
        """Produce up to ``hop_bytes`` as per-entry outputs; an integrity error comes last.

        The output of the entry that failed is dropped: no byte of it past the point where the
        difference was seen leaves this hop.
        """
        outputs: list[Output] = []
        budget = self.hop_bytes
        try:
            while budget > 0:
                if self._current is None:
                    if not self.queue or self.next_is_stream():
                        break
                    run = self._take_small_run(min(budget, SMALL_RUN_BYTES))
                    if run:
                        done, error = self._read_run(run)
                        for row, (header, data, digest) in zip(run, done):
                            piece = b"".join((header, data, _PADDING[-len(data) % BLOCK_SIZE]))
                            outputs.append(
                                Output(row_entry(row), True, False, [piece], True, digest)
                            )
                        if error is not None:
                            raise error
                        break  # one run per hop
                    row = self.queue.popleft()
                    skip, stop, span = self._window(row)
                    entry = row_entry(row)
                    self._current = self._pieces(row, skip, stop)
                    self._current_ends = stop == span
                    out = self._current_out = Output(entry, True, skip > 0)
                else:
                    assert self._current_out is not None
                    previous = self._current_out
                    out = self._current_out = Output(previous.entry, False, previous.resumed)
                try:
                    while budget > 0:
                        chunk = next(self._current)
                        out.chunks.append(chunk)
                        budget -= len(chunk)
                except StopIteration as done:
                    out.md5 = done.value
                    out.finished = self._current_ends
                    self._current = self._current_out = None
                outputs.append(out)
        except TarIntegrityError as error:
            self.close()
            return outputs, error
        return outputs, None

    def produce_bytes(self) -> tuple[list[bytes], TarIntegrityError | None]:
        """Produce up to ``hop_bytes`` as chunks of about ``chunk_size``; an error comes last.

        Small pieces wait (at most ``chunk_size`` of them) to be joined with the next ones;
        :meth:`flush` hands over the rest at the end.
        """
        chunks: list[bytes] = []
        parts = self._parts
        budget = self.hop_bytes
        try:
            while budget > 0:
                if self._current is None:
                    if not self.queue:
                        break
                    run = self._take_small_run(min(budget, SMALL_RUN_BYTES))
                    if run:
                        done, error = self._read_run(run)
                        for row, (header, data, _) in zip(run, done):
                            parts.append(header)
                            if data:
                                parts.append(data)
                                parts.append(_PADDING[-len(data) % BLOCK_SIZE])
                            self._pending += entry_span(row[3])
                            if self._pending >= self.join_bytes:
                                chunks.append(self._join())
                        if error is not None:
                            raise error
                        break  # one run per hop
                    row = self.queue.popleft()
                    skip, stop, _ = self._window(row)
                    self._current = self._pieces(row, skip, stop)
                for piece in self._current:
                    if len(piece) >= _COALESCE_BELOW:
                        if parts:
                            chunks.append(self._join())
                        chunks.append(piece)
                    else:
                        parts.append(piece)
                        self._pending += len(piece)
                        if self._pending >= self.join_bytes:
                            chunks.append(self._join())
                    budget -= len(piece)
                    if budget <= 0:
                        break
                else:
                    self._current = None
        except TarIntegrityError as error:
            self.close()
            if parts:
                chunks.append(self._join())
            return chunks, error
        return chunks, None

    def _take_small_run(self, budget: int) -> list[Row]:
        """Whole small entries at the front of the queue, up to ``budget`` bytes."""
        run: list[Row] = []
        queue = self.queue
        while queue and budget > 0:
            row = queue[0]
            skip, stop, span = self._window(row)
            if not self._is_small_and_whole(row, skip, stop, span) or row[1] in self.streams:
                break
            run.append(queue.popleft())
            budget -= span
        return run

    def _read_run(
        self, rows: list[Row]
    ) -> tuple[list[tuple[bytes, bytes, str | None]], TarIntegrityError | None]:
        """Check and read small entries in order; stop at the first that fails its check.

        (A second reader thread for half of a run was tried: the two threads contend for the
        GIL between their system calls, and the run took 30% longer.)
        """
        done = []
        for row in rows:
            try:
                done.append(self._small(row))
            except TarIntegrityError as error:
                return done, error
        return done, None

    def flush(self) -> bytes:
        """The small pieces still waiting to be joined (byte mode)."""
        return self._join() if self._parts else b""

    def _join(self) -> bytes:
        joined = b"".join(self._parts)
        self._parts.clear()
        self._pending = 0
        return joined

    # ------------------------------------------------------------------ one entry

    def _small(self, row: Row) -> tuple[bytes, bytes, str | None]:
        """Header and content of a whole small entry, after its integrity check."""
        _, arc, kind, size, mode, mtime, _, link, _ = row
        header = encode_raw(arc, kind, size, mode, mtime, link)
        if kind != "file":
            self._check_other(row)
            return header, b"", None
        fd = self._open_checked(row)
        try:
            data = os.pread(fd, size + 1, 0)  # one byte more: a file that grew shows it here
            if len(data) != size:
                data = self._read(fd, row, 0, size, True)
        finally:
            os.close(fd)
        return header, data, hashlib.md5(data).hexdigest() if self.md5 else None

    def _open_checked(self, row: Row) -> int:
        """The file of a row, opened (never through a symlink) and checked against the index."""
        try:
            fd = os.open(self.resolve(row[1]), _OPEN_FLAGS)
        except OSError as exc:
            raise _open_error(row, exc) from None
        try:
            difference = _stat_error(row, os.fstat(fd))
            if difference is not None:
                raise difference
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _pieces(self, row: Row, skip: int, stop: int) -> Generator[bytes, None, str | None]:
        """The bytes ``[skip, stop)`` of one entry; returns the content MD5 when hashed whole."""
        _, arc, kind, size, mode, mtime, _, link, _ = row
        if kind != "file":
            if arc not in self.memory:
                self._check_other(row)
            yield encode_raw(arc, kind, size, mode, mtime, link)[skip:stop]
            return None
        data = self.memory.get(arc)
        if data is not None:
            return (yield from self._file_pieces(row, skip, stop, lambda lo, hi, _: data[lo:hi]))
        fd = self._open_checked(row)
        try:
            return (
                yield from self._file_pieces(
                    row, skip, stop, lambda lo, hi, to_end: self._read(fd, row, lo, hi, to_end)
                )
            )
        finally:
            os.close(fd)

    def _file_pieces(
        self, row: Row, skip: int, stop: int, read: Callable[[int, int, bool], bytes]
    ) -> Generator[bytes, None, str | None]:
        """Header, content and padding of a file's window; content in ``chunk_size`` pieces."""
        _, arc, kind, size, mode, mtime, _, link, _ = row
        head = (
            encode_raw(arc, kind, size, mode, mtime, link)[skip:stop] if skip < BLOCK_SIZE else b""
        )
        pad = bytes(max(0, stop - max(skip, BLOCK_SIZE + size)))
        lo = min(max(skip - BLOCK_SIZE, 0), size)
        hi = max(min(stop - BLOCK_SIZE, size), lo)
        digest = _PipelinedMD5() if self.md5 and skip == 0 and hi == size else None
        if head:
            yield head
        at = lo
        try:
            while at < hi:
                step = min(self.chunk_size, hi - at)
                body = read(at, at + step, at + step == size)
                if digest is not None:
                    digest.update(body)
                yield body
                at += step
            if pad:
                yield pad
            return digest.hexdigest() if digest is not None else None
        finally:
            if digest is not None:
                digest.settle()

    def _read(self, fd: int, row: Row, lo: int, hi: int, to_end: bool) -> bytes:
        """Content bytes ``[lo, hi)``; at the end of the file, one more byte to see growth."""
        want = hi - lo
        size = row[3]
        data = _pread_exact(fd, want + 1 if to_end else want, lo)
        if len(data) > want:
            raise _integrity(row, f"grew while being read (recorded {size} bytes)")
        if len(data) < want:
            raise _integrity(
                row, f"shrank while being read (recorded {size} bytes, ended at {lo + len(data)})"
            )
        return data

    def _check_other(self, row: Row) -> None:
        """Directories and symlinks: same type, same target, same directory mtime."""
        _, arc, kind, _, _, _, mtime_ns, link, _ = row
        if arc in self.memory or arc in self.streams:
            return
        path = self.resolve(arc)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise _integrity(row, f"missing (it was recorded as a {kind})") from None
        if kind == "dir":
            if not stat.S_ISDIR(st.st_mode):
                raise _integrity(row, "is no longer a directory")
            if st.st_mtime_ns != mtime_ns and arc not in self.unchecked:
                raise _integrity(
                    row,
                    "directory mtime changed since recording (entries were added or removed: "
                    f"recorded {mtime_ns} ns, now {st.st_mtime_ns})",
                )
        elif kind == "symlink":
            if not stat.S_ISLNK(st.st_mode):
                raise _integrity(row, "is no longer a symlink")
            target = os.readlink(path)
            if target != link:
                raise _integrity(row, f"symlink target changed ({link!r} -> {target!r})")


# ---------------------------------------------------------------------------- async side


async def _refill(producer: Producer, feed: Feed, exhausted: bool) -> bool:
    if exhausted or len(producer.queue) >= 256:
        return exhausted
    batch = await feed.next_batch()
    producer.queue.extend(batch)
    return not batch


def _footer(position: int, end: int, total_size: int) -> bytes:
    lo = max(position, total_size - FOOTER_SIZE)
    return bytes(max(0, end - lo))


async def _close(producer: Producer, feed: Feed) -> None:
    producer.close()
    with anyio.CancelScope(shield=True):  # closing must finish, even when cancelled
        await feed.aclose()


async def play_events(open_session: Session) -> AsyncGenerator[TarEvent, None]:
    """Events for the window of a play (the one generator between the consumer and the work)."""
    producer, feed = await open_session()
    position = producer.start
    exhausted = False
    try:
        while True:
            exhausted = await _refill(producer, feed, exhausted)
            if producer.next_is_stream():
                async with aclosing(_streamed_entry(producer, position)) as streamed:
                    async for event in streamed:
                        if event.type is TarEventType.FILE_DATA:
                            position = event.metadata.end_offset
                        yield event
                continue
            if producer.idle:
                break
            outputs, error = await anyio.to_thread.run_sync(producer.produce_events)
            for out in outputs:
                entry = out.entry
                if out.started:
                    meta = EventMetadata(entry.start_offset, entry.end_offset, out.resumed)
                    yield TarEvent(TarEventType.FILE_START, meta, entry)
                for chunk in out.chunks:
                    after = position + len(chunk)
                    yield TarEvent(
                        TarEventType.FILE_DATA, EventMetadata(position, after), entry, chunk
                    )
                    position = after
                if out.finished:
                    meta = EventMetadata(entry.start_offset, entry.end_offset, out.resumed, out.md5)
                    yield TarEvent(TarEventType.FILE_END, meta, entry)
            if error is not None:
                raise error
    finally:
        await _close(producer, feed)
    total_size = producer.total_size
    footer = _footer(position, producer.end, total_size)
    if footer:
        after = position + len(footer)
        yield TarEvent(TarEventType.FILE_DATA, EventMetadata(position, after), None, footer)
    if producer.end == total_size:
        yield TarEvent(TarEventType.TAPE_COMPLETED, EventMetadata(total_size, total_size))


async def _streamed_entry(producer: Producer, position: int) -> AsyncGenerator[TarEvent, None]:
    """A whole entry whose content comes from an async iterable; its size is a promise too."""
    row = producer.queue.popleft()
    entry = row_entry(row)
    chunks: Any = producer.streams[row[1]]
    yield TarEvent(
        TarEventType.FILE_START, EventMetadata(entry.start_offset, entry.end_offset), entry
    )
    header = entry.header()
    yield TarEvent(
        TarEventType.FILE_DATA, EventMetadata(position, position + BLOCK_SIZE), entry, header
    )
    position += BLOCK_SIZE
    digest = hashlib.md5() if producer.md5 else None
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > entry.size:
            raise _integrity(row, f"stream gave more than its declared {entry.size} bytes")
        if not chunk:
            continue
        if digest is not None:
            digest.update(chunk)
        after = position + len(chunk)
        yield TarEvent(TarEventType.FILE_DATA, EventMetadata(position, after), entry, bytes(chunk))
        position = after
    if received != entry.size:
        raise _integrity(row, f"stream ended after {received} of its declared {entry.size} bytes")
    pad = _PADDING[-entry.size % BLOCK_SIZE]
    if pad:
        yield TarEvent(
            TarEventType.FILE_DATA, EventMetadata(position, position + len(pad)), entry, pad
        )
    md5 = digest.hexdigest() if digest is not None else None
    meta = EventMetadata(entry.start_offset, entry.end_offset, False, md5)
    yield TarEvent(TarEventType.FILE_END, meta, entry)


async def play_bytes(open_session: Session) -> AsyncGenerator[bytes, None]:
    """Only the bytes of a play's window, in chunks of about ``producer.chunk_size``."""
    producer, feed = await open_session()
    position = producer.start
    exhausted = False
    try:
        while True:
            exhausted = await _refill(producer, feed, exhausted)
            if producer.idle:
                break
            chunks, error = await anyio.to_thread.run_sync(producer.produce_bytes)
            for chunk in chunks:
                position += len(chunk)
                yield chunk
            if error is not None:
                raise error
        rest = producer.flush()
    finally:
        await _close(producer, feed)
    if rest:
        position += len(rest)
        yield rest
    footer = _footer(position, producer.end, producer.total_size)
    if footer:
        yield footer
