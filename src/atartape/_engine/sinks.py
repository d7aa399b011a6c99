"""What a play hands its consumer: events (:class:`EventSink`), plain bytes (:class:`ByteSink`),
or nothing at all, its bytes written straight to a file descriptor (:class:`FdSink`).

The producer describes a play the same way for both: whole small entries, or the pieces of an
entry between its start and its end, then the footer. A sink turns that into the items the
consumer receives. Both sinks run in the producer's worker thread during a hop, so building events
or joining small pieces costs the event loop nothing; the loop only collects :meth:`take`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
from typing import Protocol, TypeVar

from ..format.events import EventMetadata, Progress, TarEvent, TarEventType
from ..format.layout import Entry
from .index import Row

T = TypeVar("T")

JOIN_BYTES = 256 * 1024
"""Byte mode joins small pieces into chunks of this size: many small objects held at once cost
memory (a 2 MiB run joined into 1 MiB chunks peaked 5 MiB higher, for no gain in time)."""
_COALESCE_BELOW = 64 * 1024  # pieces at least this large pass through unjoined


class Sink(Protocol[T]):
    def whole(self, row: Row, header: bytes, data: bytes, pad: bytes, md5: str | None) -> None:
        """A whole small entry: its header, content and padding."""

    def start(self, row: Row, resumed: bool) -> None:
        """The first bytes of an entry follow (``resumed``: the play began inside it)."""

    def piece(self, data: bytes) -> None:
        """The next bytes of the current entry."""

    def end(self, row: Row, md5: str | None) -> None:
        """The current entry's last byte was produced."""

    def footer(self, at: int, data: bytes) -> None:
        """The footer's bytes from offset ``at``."""

    def complete(self, total_size: int) -> None:
        """The whole tape has been produced."""

    def take(self) -> list[T]:
        """The items ready for the consumer (each is handed out once)."""

    def flush(self) -> list[T]:
        """Everything still held, at the end of the play."""


class EventSink:
    """Makes :class:`TarEvent` values; offsets in their metadata count from the tape's start."""

    def __init__(self, position: int) -> None:
        self.position = position
        self._out: list[TarEvent] = []
        self._entry: Entry | None = None
        self._resumed = False

    def whole(self, row: Row, header: bytes, data: bytes, pad: bytes, md5: str | None) -> None:
        entry = row.entry()
        start, end = row.start_offset, row.end_offset
        piece = b"".join((header, data, pad)) if data else header
        out = self._out
        out.append(TarEvent(TarEventType.FILE_START, EventMetadata(start, end), entry))
        out.append(TarEvent(TarEventType.FILE_DATA, EventMetadata(start, end), entry, piece))
        out.append(TarEvent(TarEventType.FILE_END, EventMetadata(start, end, False, md5), entry))
        self.position = end

    def start(self, row: Row, resumed: bool) -> None:
        entry = self._entry = row.entry()
        self._resumed = resumed
        meta = EventMetadata(row.start_offset, row.end_offset, resumed)
        self._out.append(TarEvent(TarEventType.FILE_START, meta, entry))

    def piece(self, data: bytes) -> None:
        after = self.position + len(data)
        meta = EventMetadata(self.position, after)
        self._out.append(TarEvent(TarEventType.FILE_DATA, meta, self._entry, data))
        self.position = after

    def end(self, row: Row, md5: str | None) -> None:
        meta = EventMetadata(row.start_offset, row.end_offset, self._resumed, md5)
        self._out.append(TarEvent(TarEventType.FILE_END, meta, self._entry))
        self._entry = None

    def footer(self, at: int, data: bytes) -> None:
        self._entry = None
        self.position = at
        self.piece(data)

    def complete(self, total_size: int) -> None:
        meta = EventMetadata(total_size, total_size)
        self._out.append(TarEvent(TarEventType.TAPE_COMPLETED, meta))

    def take(self) -> list[TarEvent]:
        out, self._out = self._out, []
        return out

    def flush(self) -> list[TarEvent]:
        return self.take()


class ByteSink:
    """Hands out bytes: large pieces as they are, small ones joined into about ``join`` bytes."""

    def __init__(self, join: int = JOIN_BYTES) -> None:
        self.join = join
        self._out: list[bytes] = []
        self._parts: list[bytes] = []
        self._pending = 0

    def _add(self, data: bytes) -> None:
        if len(data) >= _COALESCE_BELOW:
            if self._parts:
                self._join()
            self._out.append(data)
            return
        self._parts.append(data)
        self._pending += len(data)
        if self._pending >= self.join:
            self._join()

    def _join(self) -> None:
        self._out.append(b"".join(self._parts))
        self._parts.clear()
        self._pending = 0

    def whole(self, row: Row, header: bytes, data: bytes, pad: bytes, md5: str | None) -> None:
        parts = self._parts
        parts.append(header)
        if data:
            parts.append(data)
            parts.append(pad)
        self._pending += row.end_offset - row.start_offset
        if self._pending >= self.join:
            self._join()

    def start(self, row: Row, resumed: bool) -> None:
        pass

    def piece(self, data: bytes) -> None:
        self._add(data)

    def end(self, row: Row, md5: str | None) -> None:
        pass

    def footer(self, at: int, data: bytes) -> None:
        self._add(data)

    def complete(self, total_size: int) -> None:
        pass

    def take(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def flush(self) -> list[bytes]:
        if self._parts:
            self._join()
        return self.take()


class FdSink(ByteSink):
    """Writes the play straight to a file descriptor, from the producer's worker thread.

    Nothing goes through the event loop: the pieces a :class:`ByteSink` would hand out (small
    ones joined into about ``join`` bytes, so that writes stay few) are written as soon as they
    are ready, each read and checked before. A descriptor in non-blocking mode (a socket of an
    event loop) is waited on with ``poll``. ``progress`` counts the bytes written and the
    entries begun, and names the large entry being written.

    To a regular file the content of large files is copied in the kernel (:meth:`copy`,
    ``copy_file_range``): the producer checks the source after each copy and, when it changed,
    :meth:`rollback` cuts the output back to before that piece, so the file never keeps a byte
    that was not checked. Pipes and sockets get no such copy: ``splice`` and ``sendfile`` pass
    references to the page cache, so a write to the source after the check would still change
    bytes on their way out.
    """

    writes = True  # play.run writes the footer from a worker thread too

    def __init__(self, fd: int, progress: Progress | None = None, join: int = JOIN_BYTES) -> None:
        super().__init__(join)
        self.fd = fd
        self.progress = progress if progress is not None else Progress()
        self.written = 0
        self.copies = _copyable(fd)

    def mark(self) -> int:
        """Write out what is held; return the output's position (for :meth:`rollback`)."""
        if self._parts:
            self._join()
        self._write_out()
        return self.written

    def copy(self, source: int, offset: int, length: int) -> int | None:
        """Copy ``length`` bytes of ``source`` from ``offset`` to the output in the kernel;
        return how many were copied (fewer: the source ended), or ``None`` when the kernel
        refuses this pair of files (then :attr:`copies` turns off and the caller reads)."""
        done = 0
        while done < length:
            try:
                step = os.copy_file_range(source, self.fd, length - done, offset + done)
            except OSError as exc:
                if done or exc.errno not in _COPY_REFUSED:
                    raise
                self.copies = False
                return None
            if not step:
                break
            done += step
            self.written += step
            self.progress.bytes += step
        return done

    def rollback(self, position: int) -> None:
        """Cut the output back to ``position`` (bytes written by this sink): what was copied
        after it is dropped, and the next write goes there."""
        cut = self.written - position
        if cut <= 0:
            return
        at = os.lseek(self.fd, 0, os.SEEK_CUR) - cut
        os.ftruncate(self.fd, at)
        os.lseek(self.fd, at, os.SEEK_SET)
        self.written -= cut
        self.progress.bytes -= cut

    def _write_out(self) -> None:
        for data in ByteSink.take(self):
            view = memoryview(data)
            while view:
                try:
                    done = os.write(self.fd, view)
                except BlockingIOError:
                    _wait_writable(self.fd)
                    continue
                view = view[done:]
                self.written += done
                self.progress.bytes += done

    def whole(self, row: Row, header: bytes, data: bytes, pad: bytes, md5: str | None) -> None:
        self.progress.entries += 1
        super().whole(row, header, data, pad, md5)
        self._write_out()

    def start(self, row: Row, resumed: bool) -> None:
        self.progress.entries += 1
        self.progress.name = row.path

    def piece(self, data: bytes) -> None:
        super().piece(data)
        self._write_out()

    def take(self) -> list[bytes]:
        return []  # everything is written, never handed out

    def flush(self) -> list[bytes]:
        """Write what is still held (the play's end); nothing is handed out."""
        super().flush()
        self._write_out()
        return []


_COPY_REFUSED = frozenset(
    getattr(errno, name)
    for name in ("EXDEV", "EINVAL", "ENOSYS", "EOPNOTSUPP", "EBADF", "ETXTBSY", "EPERM")
    if hasattr(errno, name)
)


def _copyable(fd: int) -> bool:
    """Whether the kernel may copy into ``fd``: a regular file, not opened to append (where
    ``copy_file_range`` is refused and a rollback could not cut back)."""
    if not hasattr(os, "copy_file_range"):
        return False
    try:
        st = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and not flags & os.O_APPEND


def _wait_writable(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll()
