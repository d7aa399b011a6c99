"""The playing engine: turn planned entries into tape bytes, a bounded amount per thread hop.

The synchronous half (:class:`Producer`) runs in a worker thread: per hop it checks and reads
many small files, or several chunks of a large one, up to a byte budget. The async half pulls one
hop at a time, so nothing is read ahead of the consumer beyond one hop, and turns the result into
events or coalesced bytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass, field

import anyio.to_thread

from ._errors import TarIntegrityError
from .events import EventMetadata, TarEvent, TarEventType
from .header import BLOCK_SIZE, FOOTER_SIZE, EntryKind
from .layout import Entry

CHUNK_SIZE = 256 * 1024  # bytes objects handed to the consumer: large enough, cache-friendly
HOP_BYTES = 1024 * 1024  # bytes read per thread hop: amortises the hop, bounds read-ahead
_COALESCE_BELOW = 64 * 1024  # in byte mode, smaller pieces are joined up to CHUNK_SIZE
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_FLAGS |= getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in for a file must not hang us


@dataclass(slots=True)
class Item:
    """One entry to produce, and which of its bytes: ``[skip, stop)`` of its span.

    ``path`` is where its content lives on disk; ``data`` holds in-memory content instead.
    ``check_mtime`` asks for the directory mtime check (not done for the source root).
    """

    entry: Entry
    path: str
    skip: int = 0
    stop: int = -1
    data: bytes | None = None
    check_mtime: bool = True

    def __post_init__(self) -> None:
        if self.stop < 0:
            self.stop = self.entry.span

    @property
    def whole(self) -> bool:
        return self.skip == 0 and self.stop == self.entry.span


@dataclass(slots=True)
class Output:
    """What one hop produced for one item."""

    item: Item
    started: bool
    chunks: list[bytes] = field(default_factory=list)
    finished: bool = False
    md5: str | None = None


def _integrity(entry: Entry, what: str) -> TarIntegrityError:
    return TarIntegrityError(f"{entry.arc_path!r}: {what}", arc_path=entry.arc_path)


def _stat_differs(entry: Entry, st: os.stat_result) -> str | None:
    if st.st_size != entry.size:
        return f"size changed since recording (recorded {entry.size} bytes, now {st.st_size})"
    if st.st_mtime_ns != entry.mtime_ns:
        return f"mtime changed since recording (recorded {entry.mtime_ns} ns, now {st.st_mtime_ns})"
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
    """Produces the bytes of queued items, one bounded hop at a time (runs in a worker thread)."""

    def __init__(self, *, md5: bool, chunk_size: int = CHUNK_SIZE, hop_bytes: int = HOP_BYTES):
        self.md5 = md5
        self.chunk_size = chunk_size
        self.hop_bytes = hop_bytes
        self.queue: deque[Item] = deque()
        self._current: tuple[Generator[bytes, None, str | None], Item] | None = None

    @property
    def idle(self) -> bool:
        return self._current is None and not self.queue

    def close(self) -> None:
        """Close the file being read, if any (safe to call from any thread, between hops)."""
        if self._current is not None:
            self._current[0].close()
            self._current = None

    def hop(self) -> tuple[list[Output], TarIntegrityError | None]:
        """Produce up to ``hop_bytes``; stop early at an integrity error, returned last.

        The output of the entry that failed is dropped: no byte of it past the point where the
        difference was seen leaves this hop.
        """
        outputs: list[Output] = []
        budget = self.hop_bytes
        while budget > 0:
            if self._current is None:
                if not self.queue:
                    break
                item = self.queue.popleft()
                self._current = (self._entry_bytes(item), item)
                out = Output(item, started=True)
            else:  # a large file carried over from the previous hop
                out = Output(self._current[1], started=False)
            chunks, item_bytes = self._current
            try:
                while budget > 0:
                    chunk = next(chunks)
                    out.chunks.append(chunk)
                    budget -= len(chunk)
            except StopIteration as done:
                out.finished = item_bytes.stop == item_bytes.entry.span
                out.md5 = done.value
                self._current = None
            except TarIntegrityError as error:
                self.close()
                return outputs, error
            outputs.append(out)
        return outputs, None

    def hop_bytes_only(self) -> tuple[list[bytes], TarIntegrityError | None]:
        """Like :meth:`hop`, with the pieces joined into chunks of about ``chunk_size``."""
        outputs, error = self.hop()
        chunks: list[bytes] = []
        parts: list[bytes] = []
        pending = 0
        for out in outputs:
            for piece in out.chunks:
                if len(piece) >= _COALESCE_BELOW:
                    if parts:
                        chunks.append(b"".join(parts))
                        parts, pending = [], 0
                    chunks.append(piece)
                    continue
                parts.append(piece)
                pending += len(piece)
                if pending >= self.chunk_size:
                    chunks.append(b"".join(parts))
                    parts, pending = [], 0
        if parts:
            chunks.append(b"".join(parts))
        return chunks, error

    # ------------------------------------------------------------------ one entry's bytes

    def _entry_bytes(self, item: Item) -> Generator[bytes, None, str | None]:
        """The bytes of ``item``'s window; returns the content MD5 when hashed whole."""
        entry = item.entry
        if entry.kind is not EntryKind.FILE:
            if item.path:
                self._check_other(item)
            yield entry.header()[item.skip : item.stop]
            return None
        if item.data is not None:
            data = item.data
            return (yield from self._file_bytes(item, lambda lo, hi, to_end: data[lo:hi]))
        fd = self._open_checked(item)
        try:
            return (
                yield from self._file_bytes(
                    item, lambda lo, hi, to_end: self._read(fd, entry, lo, hi, to_end)
                )
            )
        finally:
            os.close(fd)

    def _file_bytes(
        self, item: Item, read: Callable[[int, int, bool], bytes]
    ) -> Generator[bytes, None, str | None]:
        """Header, content and padding of a file's window: small files as one piece."""
        entry = item.entry
        head = entry.header()[item.skip : item.stop] if item.skip < BLOCK_SIZE else b""
        pad = bytes(max(0, item.stop - max(item.skip, BLOCK_SIZE + entry.size)))
        lo = min(max(item.skip - BLOCK_SIZE, 0), entry.size)
        hi = max(min(item.stop - BLOCK_SIZE, entry.size), lo)
        to_end = hi == entry.size
        digest = hashlib.md5() if self.md5 and item.whole else None
        if hi - lo < self.chunk_size:
            # One read (plus one byte, to see growth) and one piece for the whole entry.
            body = read(lo, hi, to_end)
            if digest is not None:
                digest.update(body)
            yield head + body + pad
        else:
            if head:
                yield head
            at = lo
            while at < hi:
                step = min(self.chunk_size, hi - at)
                body = read(at, at + step, to_end and at + step == hi)
                if digest is not None:
                    digest.update(body)
                yield body
                at += step
            if pad:
                yield pad
        return digest.hexdigest() if digest is not None else None

    def _open_checked(self, item: Item) -> int:
        entry = item.entry
        try:
            fd = os.open(item.path, _OPEN_FLAGS)
        except FileNotFoundError:
            raise _integrity(entry, "missing (it was recorded as a file)") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise _integrity(entry, "is now a symlink (it was recorded as a file)") from None
            raise _integrity(entry, f"cannot be opened ({exc.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _integrity(entry, "is no longer a regular file")
            difference = _stat_differs(entry, st)
            if difference:
                raise _integrity(entry, difference)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _read(self, fd: int, entry: Entry, lo: int, hi: int, to_end: bool) -> bytes:
        want = hi - lo
        data = _pread_exact(fd, want + 1 if to_end else want, lo)
        if len(data) > want:
            raise _integrity(entry, f"grew while being read (recorded {entry.size} bytes)")
        if len(data) < want:
            raise _integrity(
                entry,
                f"shrank while being read (recorded {entry.size} bytes, ended at {lo + len(data)})",
            )
        return data

    def _check_other(self, item: Item) -> None:
        """Directories and symlinks: same type, same target, same directory mtime."""
        entry = item.entry
        try:
            st = os.lstat(item.path)
        except FileNotFoundError:
            raise _integrity(entry, f"missing (it was recorded as a {entry.kind.value})") from None
        if entry.kind is EntryKind.DIRECTORY:
            if not stat.S_ISDIR(st.st_mode):
                raise _integrity(entry, "is no longer a directory")
            if item.check_mtime and st.st_mtime_ns != entry.mtime_ns:
                raise _integrity(
                    entry,
                    "directory mtime changed since recording (entries were added or removed: "
                    f"recorded {entry.mtime_ns} ns, now {st.st_mtime_ns})",
                )
        elif entry.kind is EntryKind.SYMLINK:
            if not stat.S_ISLNK(st.st_mode):
                raise _integrity(entry, "is no longer a symlink")
            target = os.readlink(item.path)
            if target != entry.linkname:
                raise _integrity(
                    entry, f"symlink target changed ({entry.linkname!r} -> {target!r})"
                )


# ---------------------------------------------------------------------------- async side

Feed = Callable[[], Awaitable[list[Item]]]
"""Returns the next batch of items to produce, or ``[]`` when there are no more."""


async def _refill(producer: Producer, feed: Feed, low_water: int, exhausted: bool) -> bool:
    if exhausted or len(producer.queue) >= low_water:
        return exhausted
    batch = await feed()
    producer.queue.extend(batch)
    return not batch


def _footer_window(start: int, end: int, total_size: int) -> bytes:
    lo = max(start, total_size - FOOTER_SIZE)
    return bytes(max(0, end - lo))


async def play_events(
    producer: Producer, feed: Feed, start: int, end: int, total_size: int
) -> AsyncGenerator[TarEvent, None]:
    """Events for ``[start, end)`` of a tape whose entries come from ``feed``."""
    position = start
    exhausted = False
    try:
        while True:
            exhausted = await _refill(producer, feed, 256, exhausted)
            if producer.idle:
                break
            outputs, error = await anyio.to_thread.run_sync(producer.hop)
            for out in outputs:
                entry = out.item.entry
                resumed = out.item.skip > 0
                if out.started:
                    meta = EventMetadata(entry.start_offset, entry.end_offset, resumed)
                    yield TarEvent(TarEventType.FILE_START, meta, entry)
                for chunk in out.chunks:
                    after = position + len(chunk)
                    yield TarEvent(
                        TarEventType.FILE_DATA, EventMetadata(position, after), entry, chunk
                    )
                    position = after
                if out.finished:
                    meta = EventMetadata(entry.start_offset, entry.end_offset, resumed, out.md5)
                    yield TarEvent(TarEventType.FILE_END, meta, entry)
            if error is not None:
                raise error
    finally:
        producer.close()
    footer = _footer_window(position, end, total_size)
    if footer:
        yield TarEvent(
            TarEventType.FILE_DATA, EventMetadata(position, position + len(footer)), None, footer
        )
        position += len(footer)
    if end == total_size:
        yield TarEvent(TarEventType.TAPE_COMPLETED, EventMetadata(total_size, total_size))


async def play_bytes(
    producer: Producer, feed: Feed, start: int, end: int, total_size: int
) -> AsyncGenerator[bytes, None]:
    """Only the bytes of ``[start, end)``, in chunks of about ``producer.chunk_size``."""
    position = start
    exhausted = False
    try:
        while True:
            exhausted = await _refill(producer, feed, 256, exhausted)
            if producer.idle:
                break
            chunks, error = await anyio.to_thread.run_sync(producer.hop_bytes_only)
            for chunk in chunks:
                position += len(chunk)
                yield chunk
            if error is not None:
                raise error
    finally:
        producer.close()
    footer = _footer_window(position, end, total_size)
    if footer:
        yield footer
