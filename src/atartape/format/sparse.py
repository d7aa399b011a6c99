"""GNU sparse files: their maps, read from any of the four encodings, and their content laid out.

Pure code, no I/O. A sparse member stores only its data regions, back to back in map order; the
holes between them read as zero bytes, up to the member's real size. The four encodings of the
map (see ``tests/data/archives/NOTES.md``):

- old GNU (typeflag ``S``): up to 4 entries in the header, more in 512-byte extension blocks
  that follow it (:func:`oldgnu_entries`);
- PAX ``GNU.sparse`` 0.0: repeated ``GNU.sparse.offset``/``GNU.sparse.numbytes`` records
  (:func:`pax00_entries`);
- PAX 0.1: one ``GNU.sparse.map`` record (:func:`pax01_entries`);
- PAX 1.0: decimal lines at the start of the member's data, padded to a block
  (:class:`MapReader`).

:func:`check_map` turns raw entries into a :class:`SparseMap` (refusing overlaps, regions past the
real size, and stored sizes that do not add up); :func:`layout` says, for a window of the expanded
content, which stored bytes go where.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..errors import ArchiveFormatError

__all__ = [
    "MAX_REGIONS",
    "MapReader",
    "SparseError",
    "SparseMap",
    "check_map",
    "layout",
    "oldgnu_entries",
    "pax00_entries",
    "pax01_entries",
]

MAX_REGIONS = 1_000_000
"""The most map entries accepted for one member: a guard against absurd allocations."""

BLOCK = 512
_NUMBER_WIDTH = 12  # an old-GNU map entry: offset (12 bytes), then numbytes (12 bytes)
_MAX_DIGITS = 20  # a decimal number of the PAX maps: up to 2**64


class SparseError(ArchiveFormatError, ValueError):
    """A sparse map is malformed (the reader turns this into an ``ArchiveFormatError``)."""


@dataclass(frozen=True, slots=True)
class SparseMap:
    """Where the data of a sparse member goes in the expanded file.

    ``format`` is ``"oldgnu"``, ``"pax-0.0"``, ``"pax-0.1"`` or ``"pax-1.0"``. ``regions`` are the
    ``(offset, length)`` pairs of the data in the expanded file, ascending, non-overlapping and
    non-empty (empty map entries are dropped). ``map_size`` is the number of bytes the map takes at
    the start of the stored data (PAX 1.0 only; 0 otherwise): the regions' bytes start there, back
    to back.
    """

    format: str
    regions: tuple[tuple[int, int], ...]
    map_size: int = 0

    @property
    def data_size(self) -> int:
        """Bytes of data stored (the sum of the regions' lengths)."""
        return sum(length for _, length in self.regions)


def _decimal(raw: bytes, what: str) -> int:
    text = raw.strip()
    if not text.isdigit() or len(text) > _MAX_DIGITS:
        raise SparseError(f"malformed GNU sparse {what}: {raw[:40]!r} is not a decimal number")
    return int(text)


def oldgnu_entries(
    block: bytes, start: int, count: int, parse: Callable[[bytes], int]
) -> tuple[list[tuple[int, int]], bool]:
    """The map entries of an old-GNU header (``start=386, count=4``) or extension block
    (``start=0, count=21``), and whether the list ended inside this block.

    An entry whose ``numbytes`` field starts with a NUL ends the list (as GNU tar reads it).
    ``parse`` decodes one numeric field (octal or base-256) and raises ``ValueError``.
    """
    entries: list[tuple[int, int]] = []
    for index in range(count):
        at = start + index * 2 * _NUMBER_WIDTH
        offset_field = block[at : at + _NUMBER_WIDTH]
        numbytes_field = block[at + _NUMBER_WIDTH : at + 2 * _NUMBER_WIDTH]
        if numbytes_field[:1] == b"\0":
            return entries, True
        try:
            entries.append((parse(offset_field), parse(numbytes_field)))
        except ValueError as exc:
            raise SparseError(f"malformed old-GNU sparse map entry: {exc}") from None
    return entries, False


def pax00_entries(records: Iterable[tuple[str, bytes]]) -> list[tuple[int, int]]:
    """The map of a PAX 0.0 sparse member: its ``GNU.sparse.offset`` and ``GNU.sparse.numbytes``
    records, in order, each offset paired with the numbytes that follows it."""
    entries: list[tuple[int, int]] = []
    pending: int | None = None
    for key, value in records:
        if key == "GNU.sparse.offset":
            if pending is not None:
                raise SparseError("GNU.sparse.offset without its GNU.sparse.numbytes")
            pending = _decimal(value, "offset")
        elif key == "GNU.sparse.numbytes":
            if pending is None:
                raise SparseError("GNU.sparse.numbytes without a GNU.sparse.offset before it")
            entries.append((pending, _decimal(value, "numbytes")))
            pending = None
            if len(entries) > MAX_REGIONS:
                raise SparseError(f"more than {MAX_REGIONS} sparse map entries")
    if pending is not None:
        raise SparseError("GNU.sparse.offset without its GNU.sparse.numbytes")
    return entries


def pax01_entries(value: bytes) -> list[tuple[int, int]]:
    """The map of a PAX 0.1 sparse member: ``GNU.sparse.map=o1,n1,o2,n2,...``."""
    if not value.strip():
        return []
    fields = value.split(b",")
    if len(fields) % 2:
        raise SparseError("GNU.sparse.map has an odd number of fields")
    if len(fields) // 2 > MAX_REGIONS:
        raise SparseError(f"more than {MAX_REGIONS} sparse map entries")
    numbers = [_decimal(field, "map field") for field in fields]
    return list(zip(numbers[::2], numbers[1::2]))


class MapReader:
    """Reads the map at the start of a PAX 1.0 sparse member's data, a few blocks at a time.

    Feed it the stored data from its start with :meth:`feed` (whole blocks, in order) until it
    returns the entries; :attr:`map_size` is then the number of bytes the map takes (whole
    blocks). ``stored_size`` bounds it: a map that does not end within the stored data is
    malformed.
    """

    def __init__(self, stored_size: int) -> None:
        if stored_size < BLOCK:
            raise SparseError("a GNU sparse 1.0 member stores no room for its map")
        self.stored_size = stored_size
        self.map_size = 0
        self._text = bytearray()
        self._pos = 0  # parsed up to here in _text
        self._numbers: list[int] = []
        self._count: int | None = None

    def want(self) -> int:
        """How many bytes to feed next (whole blocks; at least one)."""
        left = self.stored_size - len(self._text)
        return max(BLOCK, min(32 * BLOCK, left + (-left % BLOCK)))

    def feed(self, data: bytes) -> list[tuple[int, int]] | None:
        """Parse more of the map; returns its entries once complete, ``None`` for more."""
        if not data:
            raise SparseError("the sparse map runs past the end of the archive")
        self._text += data
        while True:
            end = self._text.find(b"\n", self._pos)
            if end < 0:
                if len(self._text) - self._pos > _MAX_DIGITS:
                    raise SparseError("malformed GNU sparse 1.0 map: a line is not a number")
                if len(self._text) >= self.stored_size:
                    raise SparseError("the sparse map runs past the member's stored data")
                return None
            line = bytes(self._text[self._pos : end])
            if not line.isdigit() or len(line) > _MAX_DIGITS:
                raise SparseError(
                    f"malformed GNU sparse 1.0 map: the line {line[:40]!r} is not a decimal number"
                )
            self._pos = end + 1
            if self._count is None:
                self._count = int(line)
                if self._count > MAX_REGIONS:
                    raise SparseError(f"more than {MAX_REGIONS} sparse map entries")
            else:
                self._numbers.append(int(line))
            if self._count is not None and len(self._numbers) == 2 * self._count:
                self.map_size = self._pos + (-self._pos % BLOCK)
                if self.map_size > self.stored_size:
                    raise SparseError("the sparse map is larger than the member's stored data")
                return list(zip(self._numbers[::2], self._numbers[1::2]))


def check_map(
    fmt: str,
    entries: Sequence[tuple[int, int]],
    real_size: int,
    stored_size: int,
    map_size: int = 0,
) -> SparseMap:
    """A checked :class:`SparseMap`: regions ascending and apart, within ``real_size``, and
    their lengths (plus ``map_size``) within ``stored_size`` (GNU tar reads archives with a few
    stored bytes to spare, e.g. libarchive's sparse_skip_entry). Empty entries are dropped.
    Raises :class:`SparseError` otherwise."""
    if real_size < 0:
        raise SparseError(f"negative sparse real size {real_size}")
    if len(entries) > MAX_REGIONS:
        raise SparseError(f"more than {MAX_REGIONS} sparse map entries")
    regions: list[tuple[int, int]] = []
    end = 0
    total = 0
    for offset, length in entries:
        if offset < 0 or length < 0:
            raise SparseError(f"negative sparse map entry ({offset}, {length})")
        if length == 0:
            continue
        if offset < end:
            raise SparseError(f"sparse region at {offset} overlaps or precedes the one before it")
        end = offset + length
        if end > real_size:
            raise SparseError(f"sparse region ({offset}, {length}) ends past the real size")
        regions.append((offset, length))
        total += length
    if total + map_size > stored_size:
        raise SparseError(
            f"the sparse map describes {total + map_size} stored bytes, "
            f"but the member stores {stored_size}"
        )
    return SparseMap(fmt, tuple(regions), map_size)


def real_size_default(entries: Sequence[tuple[int, int]]) -> int:
    """The real size a map implies when no record gives it: the end of its last entry."""
    return max((offset + length for offset, length in entries), default=0)


@dataclass(frozen=True, slots=True)
class Layout:
    """Which stored bytes fill a window of the expanded content (see :func:`layout`).

    The window's bytes are zeros except ``pieces``: ``(window_offset, stored_offset, length)``,
    stored offsets counted from the first region's first byte. ``stored_start``/``stored_end``
    span every piece: one read covers the window.
    """

    stored_start: int
    stored_end: int
    pieces: tuple[tuple[int, int, int], ...]


def stored_starts(regions: Sequence[tuple[int, int]]) -> list[int]:
    """Where each region's bytes start in the stored data (running sums of the lengths)."""
    starts = []
    total = 0
    for _, length in regions:
        starts.append(total)
        total += length
    return starts


def layout(
    regions: Sequence[tuple[int, int]], starts: Sequence[int], begin: int, end: int
) -> Layout:
    """The stored bytes of the expanded window ``[begin, end)`` and where they go.

    ``starts`` comes from :func:`stored_starts`. Holes are not listed: they are zeros.
    """
    pieces: list[tuple[int, int, int]] = []
    index = max(0, bisect.bisect_right(regions, (begin, -1)) - 1)
    while index < len(regions):
        offset, length = regions[index]
        if offset >= end:
            break
        lo, hi = max(offset, begin), min(offset + length, end)
        if lo < hi:
            pieces.append((lo - begin, starts[index] + lo - offset, hi - lo))
        index += 1
    if not pieces:
        return Layout(0, 0, ())
    first, last = pieces[0], pieces[-1]
    return Layout(first[1], last[1] + last[2], tuple(pieces))
