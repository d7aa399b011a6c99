"""Windows of a tape: volumes, ranges cut at volume boundaries, and where a file's bytes lie.

Pure functions and small immutable values, no I/O. Volume ``i`` of size ``s`` is the bytes
``[i * s, min((i + 1) * s, total_size))`` of the tape, and every volume but the last is exactly
``s`` bytes: nothing else is needed to produce one, so any subset of a tape's volumes can be
produced at once, in one process or many.

A :class:`Location` is computed from an index entry alone (:func:`locate_entry`), so it works in
an offline catalog, without the source folder. Its ``fragments`` say which byte ranges to fetch
from which volume to get the file back. An HTTP ``Range`` header cannot express an empty range,
so an entry without content (an empty file, a folder, a symlink) has ``range_header = None`` and
no fragments: there is nothing to fetch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidOffsetError
from .header import EntryKind
from .layout import Entry
from .units import parse_size

__all__ = [
    "DEFAULT_NAME_TEMPLATE",
    "Fragment",
    "Location",
    "locate_entry",
    "range_header",
    "split_range",
    "volume_count",
    "volume_name",
    "volume_window",
]

DEFAULT_NAME_TEMPLATE = "{name}.tar.{index:04d}"
"""Volume names: ``dataset.tar.0000``. Fields: ``name`` (the tape's), ``index``, ``count``."""


def _check_total(total_size: int) -> None:
    if isinstance(total_size, bool) or not isinstance(total_size, int) or total_size < 0:
        raise ValueError(f"total_size must be a non-negative int, not {total_size!r}")


def volume_count(total_size: int, size: int | str) -> int:
    """How many volumes of ``size`` bytes a tape of ``total_size`` bytes makes (rounded up).

    ``size`` is an int or a string such as ``"64MiB"`` (see :func:`~atartape.units.parse_size`).
    Raises :class:`ValueError` for a bad size or a negative ``total_size``.
    """
    _check_total(total_size)
    step = parse_size(size, what="volume size")
    return -(-total_size // step)


def volume_window(total_size: int, size: int | str, index: int) -> tuple[int, int]:
    """The ``[start, end)`` tape offsets of volume ``index``.

    Raises :class:`ValueError` for a bad size and :class:`InvalidOffsetError` for an index that
    is not an int or lies outside ``[0, volume_count)``.
    """
    count = volume_count(total_size, size)
    step = parse_size(size, what="volume size")
    if isinstance(index, bool) or not isinstance(index, int):
        raise InvalidOffsetError(f"volume index must be an int, not {type(index).__name__}")
    if not 0 <= index < count:
        raise InvalidOffsetError(
            f"volume index {index} is outside the tape: {total_size} bytes in volumes of "
            f"{step} bytes make {count} volume{'s' if count != 1 else ''} "
            f"(valid indexes: 0 to {count - 1})"
        )
    start = index * step
    return start, min(start + step, total_size)


def split_range(start: int, end: int, size: int) -> list[tuple[int, int, int]]:
    """Cut the tape range ``[start, end)`` at volume boundaries.

    Returns ``(volume_index, offset_in_volume, length)`` for each volume of ``size`` bytes that
    the range touches, in order; an empty range touches none (``[]``). Raises
    :class:`ValueError` for ``size < 1``, a negative ``start`` or ``end < start``.
    """
    if size < 1 or start < 0 or end < start:
        raise ValueError(f"bad range [{start}, {end}) or volume size {size}")
    pieces: list[tuple[int, int, int]] = []
    at = start
    while at < end:
        index, offset = divmod(at, size)
        length = min(size - offset, end - at)
        pieces.append((index, offset, length))
        at += length
    return pieces


def volume_name(template: str, *, name: str, index: int, count: int) -> str:
    """A volume's name from ``template`` (``str.format`` fields ``name``, ``index``, ``count``).

    Raises :class:`ValueError` naming the template when it uses another field or a bad format.
    """
    try:
        return template.format(name=name, index=index, count=count)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"bad volume name_template {template!r} ({exc!r}); it may use the fields "
            "{name}, {index} and {count}, as in '{name}.part{index:04d}'"
        ) from None


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
