"""What a play hands its consumer: events (:class:`EventSink`) or plain bytes (:class:`ByteSink`).

The producer describes a play the same way for both: whole small entries, or the pieces of an
entry between its start and its end, then the footer. A sink turns that into the items the
consumer receives. Both sinks run in the producer's worker thread during a hop, so building events
or joining small pieces costs the event loop nothing; the loop only collects :meth:`take`.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from ..format.events import EventMetadata, TarEvent, TarEventType
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
