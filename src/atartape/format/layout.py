"""The layout of a tape: which entry covers which byte range, and where a window of it starts.

Pure functions and small immutable values, no I/O. A tape is its entries in order, each taking
``512 + size`` rounded up to 512 bytes, followed by a 1024-byte zero footer. Every byte position is
therefore known from the sizes alone, before the first byte is produced.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import InvalidOffsetError
from . import paths
from .header import BLOCK_SIZE, FOOTER_SIZE, EntryKind, encode_header, entry_span, padding


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a tape, as the index promises it.

    ``mtime`` is the whole-second time written to the header; ``mtime_ns`` is the exact time
    the source had at recording, which the integrity check compares against.
    """

    arc_path: str
    kind: EntryKind
    size: int
    mode: int
    mtime: int
    start_offset: int
    linkname: str = ""
    mtime_ns: int = 0
    checksum: str | None = None

    @property
    def data_offset(self) -> int:
        """Offset of the first content byte (just past the header)."""
        return self.start_offset + BLOCK_SIZE

    @property
    def end_offset(self) -> int:
        """Offset just past the entry's padding (exclusive)."""
        return self.start_offset + entry_span(self.size)

    @property
    def span(self) -> int:
        return entry_span(self.size)

    @property
    def padding(self) -> int:
        return padding(self.size)

    @property
    def is_file(self) -> bool:
        return self.kind is EntryKind.FILE

    @property
    def is_dir(self) -> bool:
        return self.kind is EntryKind.DIRECTORY

    @property
    def is_symlink(self) -> bool:
        return self.kind is EntryKind.SYMLINK

    def header(self) -> bytes:
        """The entry's 512-byte header."""
        return encode_header(
            paths.to_bytes(self.arc_path),
            self.kind,
            self.size,
            self.mode,
            self.mtime,
            paths.to_bytes(self.linkname),
        )


def assign_offsets(sizes: Iterable[int]) -> tuple[list[int], int]:
    """Start offsets for entries of the given content sizes, and the total tape size."""
    starts: list[int] = []
    offset = 0
    for size in sizes:
        starts.append(offset)
        offset += entry_span(size)
    return starts, offset + FOOTER_SIZE


def entry_at(starts: Sequence[int], offset: int) -> int:
    """Index of the last entry starting at or before ``offset`` (binary search), -1 if none.

    The caller checks ``offset`` against that entry's end: past it, ``offset`` is in the footer.
    """
    return bisect.bisect_right(starts, offset) - 1


@dataclass(frozen=True, slots=True)
class Window:
    """The bytes ``[start, end)`` of a tape of ``total_size`` bytes: what one play produces.

    Every question about which part of an entry, or of the footer, a play covers is answered
    here, and nowhere else.
    """

    start: int
    end: int
    total_size: int

    @property
    def footer_start(self) -> int:
        """Where the 1024-byte footer starts."""
        return self.total_size - FOOTER_SIZE

    def overlaps(self, start_offset: int, span: int) -> bool:
        """Whether the entry of ``span`` bytes at ``start_offset`` has a byte in the window."""
        return start_offset < self.end and start_offset + span > self.start

    def cut(self, start_offset: int, span: int) -> tuple[int, int]:
        """The part ``[skip, stop)`` of that entry's own bytes that lies in the window."""
        return max(0, self.start - start_offset), min(span, self.end - start_offset)

    @property
    def footer_part(self) -> tuple[int, int]:
        """The part of the footer in the window: ``(offset, length)``."""
        at = max(self.start, self.footer_start)
        return at, max(0, self.end - at)


def check_window(total_size: int, start: int, end: int | None) -> Window:
    """Validate a ``[start, end)`` window of a tape; ``end=None`` means the end of the tape.

    Raises :class:`InvalidOffsetError` for an offset outside ``[0, total_size]``, a window that
    ends before it starts, or an offset that is not an integer.
    """
    if end is None:
        end = total_size
    for name, value in (("start_offset", start), ("end_offset", end)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidOffsetError(f"{name} must be an int, not {type(value).__name__}")
        if not 0 <= value <= total_size:
            raise InvalidOffsetError(
                f"{name} {value} is outside the tape (valid: 0 to {total_size} inclusive)"
            )
    if end < start:
        raise InvalidOffsetError(f"end_offset {end} is before start_offset {start}")
    return Window(start, end, total_size)


def fingerprint(entries: Iterable[Entry]) -> str:
    """The tape's identity: SHA-256 over each entry's path, type, size, mtime, mode and target.

    Offsets follow from sizes, so they need not be hashed; the order of the entries is.
    """
    digest = hashlib.sha256(b"atartape-1\n")
    for entry in entries:
        digest.update(paths.to_bytes(entry.arc_path))
        fields = (entry.kind.value.encode(), entry.size, entry.mtime, entry.mode)
        digest.update(b"\0%s\0%d\0%d\0%o\0" % fields)
        digest.update(paths.to_bytes(entry.linkname))
        digest.update(b"\n")
    return digest.hexdigest()
