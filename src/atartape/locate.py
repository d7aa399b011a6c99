"""Where a file's bytes lie in a tape, and in which volumes: pure computation, no I/O.

A :class:`Location` is computed from an index entry alone (:func:`locate_entry`), so it works in
an offline catalog, months after the upload, without the source folder. Its ``fragments`` say
which byte ranges to fetch from which volume to get the file back (see
:func:`atartape.restore.restore_file`).

Empty content: an HTTP ``Range`` header cannot express an empty range (``bytes=a-b`` always
covers at least one byte), so an entry without content (an empty file, a directory, a symlink)
has ``range_header = None`` and ``fragments = []``: there is nothing to fetch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .header import EntryKind
from .layout import Entry
from .units import parse_size
from .volumes import split_range

__all__ = ["Fragment", "Location", "locate_entry", "range_header"]


def range_header(first: int, length: int) -> dict[str, str]:
    """The HTTP header asking for ``length`` bytes from offset ``first`` (``length >= 1``).

    ``range_header(512, 100) == {"Range": "bytes=512-611"}`` (the last byte is inclusive).
    Raises :class:`ValueError` for an empty or negative range, which HTTP cannot express.
    """
    if first < 0 or length < 1:
        raise ValueError(f"no HTTP Range expresses {length} bytes at offset {first}")
    return {"Range": f"bytes={first}-{first + length - 1}"}


@dataclass(frozen=True, slots=True)
class Fragment:
    """A piece of a file's content inside one volume: ``length`` bytes at ``offset_in_volume``.

    Offsets are relative to the volume (to the whole tape when the location was made without a
    volume size: a single "volume" 0).
    """

    volume_index: int
    offset_in_volume: int
    length: int

    @property
    def end_in_volume(self) -> int:
        """Offset in the volume just past the fragment (exclusive)."""
        return self.offset_in_volume + self.length

    @property
    def range_header(self) -> dict[str, str]:
        """``{"Range": "bytes=<first>-<last>"}`` for this fragment inside its volume."""
        return range_header(self.offset_in_volume, self.length)


@dataclass(frozen=True, slots=True)
class Location:
    """Where one entry lies in a tape.

    ``start_offset`` is its header, ``data_offset`` its first content byte, ``size`` the
    content length and ``end_offset`` the offset just past its padding. ``range_header`` asks
    for the content in the whole tape (``None`` when ``size`` is 0). ``fragments`` lists, in
    order, the pieces of content per volume of ``volume_size`` bytes (one fragment in volume 0
    when ``volume_size`` is ``None``; none when ``size`` is 0). ``checksum`` is the digest
    recorded for the file with ``checksum_algorithm``, if the tape was recorded with one;
    ``mode`` and ``mtime`` are the permission bits and whole-second mtime of the header.
    """

    arc_path: str
    kind: EntryKind
    start_offset: int
    data_offset: int
    size: int
    end_offset: int
    volume_size: int | None
    fragments: list[Fragment] = field(hash=False)
    checksum: str | None = None
    checksum_algorithm: str | None = None
    mode: int = 0o644
    mtime: int = 0

    @property
    def range_header(self) -> dict[str, str] | None:
        """``{"Range": "bytes=<first>-<last>"}`` for the content in the tape; ``None`` if empty."""
        return range_header(self.data_offset, self.size) if self.size else None

    @property
    def volume_indexes(self) -> list[int]:
        """The volumes holding some of the content, in order."""
        return [fragment.volume_index for fragment in self.fragments]


def locate_entry(
    entry: Entry, volume_size: int | str | None = None, *, checksum_algorithm: str | None = None
) -> Location:
    """The :class:`Location` of ``entry`` in a tape cut into volumes of ``volume_size`` bytes.

    ``volume_size`` is an int or a string such as ``"5MiB"``; ``None`` means the tape is one
    piece. Raises :class:`ValueError` for a bad volume size.
    """
    start, end = entry.data_offset, entry.data_offset + entry.size
    if volume_size is None:
        size = None
        pieces = [(0, start, entry.size)] if entry.size else []
    else:
        size = parse_size(volume_size, what="volume size")
        pieces = split_range(start, end, size)
    return Location(
        arc_path=entry.arc_path,
        kind=entry.kind,
        start_offset=entry.start_offset,
        data_offset=entry.data_offset,
        size=entry.size,
        end_offset=entry.end_offset,
        volume_size=size,
        fragments=[Fragment(index, offset, length) for index, offset, length in pieces],
        checksum=entry.checksum,
        checksum_algorithm=checksum_algorithm if entry.checksum else None,
        mode=entry.mode,
        mtime=entry.mtime,
    )
