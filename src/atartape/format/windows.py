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

A :class:`Layout` is a named way of cutting one tape into volumes (``"s3-parts"``: volumes of
64 MiB, named ``dataset.tar.0000``...), with the checksum of each volume once it is known. It is
kept in the tape's index (see :mod:`atartape.layouts`) so that a volume size is written once, when
the layout is registered, and referred to by its tag from then on.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from datetime import datetime

from ..errors import InvalidArgumentError, InvalidOffsetError, VolumeNotFoundError
from .header import EntryKind
from .layout import Entry
from .units import format_size, parse_size

__all__ = [
    "DEFAULT_NAME_TEMPLATE",
    "Fragment",
    "Layout",
    "LayoutVolume",
    "Location",
    "locate_entry",
    "range_header",
    "split_range",
    "volume_count",
    "volume_name",
    "volume_window",
]

DEFAULT_NAME_TEMPLATE = "{name}{suffix}.{index:04d}"
"""Volume names: ``dataset.tar.0000`` (``dataset.tar.zst.0000`` for a compressed view). Fields:
``name`` (the tape's), ``suffix`` (``.tar``, ``.tar.zst``...), ``index`` (from 0), ``count``;
and tartape 3's: ``part`` (from 1), ``total`` (= ``count``), ``pindex`` (``part`` zero-padded to
at least 3 digits) and ``fingerprint``."""


def _check_total(total_size: int) -> None:
    if isinstance(total_size, bool) or not isinstance(total_size, int) or total_size < 0:
        raise InvalidArgumentError(f"total_size must be a non-negative int, not {total_size!r}")


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
        raise InvalidArgumentError(f"bad range [{start}, {end}) or volume size {size}")
    pieces: list[tuple[int, int, int]] = []
    at = start
    while at < end:
        index, offset = divmod(at, size)
        length = min(size - offset, end - at)
        pieces.append((index, offset, length))
        at += length
    return pieces


def volume_name(
    template: str,
    *,
    name: str,
    index: int,
    count: int,
    fingerprint: str = "",
    suffix: str = ".tar",
) -> str:
    """A volume's name from ``template`` (``str.format`` fields: see
    :data:`DEFAULT_NAME_TEMPLATE`).

    Raises :class:`ValueError` naming the template when it uses another field or a bad format.
    """
    part = index + 1
    try:
        return template.format(
            name=name,
            index=index,
            count=count,
            part=part,
            total=count,
            pindex=f"{part:0{max(3, len(str(count)))}d}",
            fingerprint=fingerprint,
            suffix=suffix,
        )
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise InvalidArgumentError(
            f"bad volume name_template {template!r} ({exc!r}); it may use the fields "
            "{name}, {suffix}, {index}, {count}, {part}, {total}, {pindex} and {fingerprint}, "
            "as in '{name}.part{index:04d}'"
        ) from None


def range_header(first: int, length: int) -> dict[str, str]:
    """The HTTP header asking for ``length`` bytes from offset ``first`` (``length >= 1``).

    ``range_header(512, 100) == {"Range": "bytes=512-611"}`` (the last byte is inclusive).
    Raises :class:`ValueError` for an empty or negative range, which HTTP cannot express.
    """
    if first < 0 or length < 1:
        raise InvalidArgumentError(f"no HTTP Range expresses {length} bytes at offset {first}")
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
    ``header`` is the entry's 512-byte header and ``after`` the tape's bytes just past the
    entry (the next header, or the footer): :meth:`proofs` uses them. ``layout_tag`` names the
    layout the volumes belong to, when the location was asked for with one.
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
    header: bytes | None = field(default=None, repr=False)
    after: bytes | None = field(default=None, repr=False)
    layout_tag: str | None = None

    @property
    def range_header(self) -> dict[str, str] | None:
        """``{"Range": "bytes=<first>-<last>"}`` for the content in the tape; ``None`` if empty."""
        return range_header(self.data_offset, self.size) if self.size else None

    @property
    def volume_indexes(self) -> list[int]:
        """The volumes holding some of the content, in order."""
        return [fragment.volume_index for fragment in self.fragments]

    def proofs(self) -> list[tuple[int, bytes]]:
        """The tape bytes that prove a store holds this tape, cut as the location says:
        ``(tape offset, bytes)`` pairs, each to be found exactly where the volume size puts it.

        The entry's own header proves the object; when the content reaches past the first
        volume, the bytes just after it (the next header, or the footer) prove the volume size
        too: a wrong size moves every piece of a volume ``i > 0``, so the bytes found there are
        another part of the tape. An empty file needs no proof: nothing is fetched for it.
        """
        found: list[tuple[int, bytes]] = []
        if not self.size:
            return found  # nothing to fetch, nothing that could be wrong
        if self.header is not None:
            found.append((self.start_offset, self.header))
        reaches_on = any(f.volume_index > 0 for f in self.fragments)
        if self.after is not None and (reaches_on or self.header is None):
            found.append((self.end_offset, self.after))
        return found

    def fragments_of(self, start: int, length: int) -> list[Fragment]:
        """Where the tape bytes ``[start, start + length)`` lie, cut at volume boundaries."""
        if self.volume_size is None:
            return [Fragment(0, start, length)]
        pieces = split_range(start, start + length, self.volume_size)
        return [Fragment(index, offset, size) for index, offset, size in pieces]


def locate_entry(
    entry: Entry,
    volume_size: int | str | None = None,
    *,
    checksum_algorithm: str | None = None,
    after: bytes | None = None,
    layout_tag: str | None = None,
) -> Location:
    """The :class:`Location` of ``entry`` in a tape cut into volumes of ``volume_size`` bytes.

    ``volume_size`` is an int or a string such as ``"5MiB"``; ``None`` means the tape is one
    piece. ``after`` is the tape's bytes just past the entry (see :meth:`Location.proofs`).
    Raises :class:`ValueError` for a bad volume size.
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
        header=entry.header(),
        after=after,
        layout_tag=layout_tag,
    )


@dataclass(frozen=True, slots=True)
class LayoutVolume:
    """One volume of a :class:`Layout`: its window ``[start_offset, end_offset)`` of the tape,
    its name, and the checksum of its bytes once one is known (hex, with its algorithm)."""

    layout_tag: str
    index: int
    name: str
    start_offset: int
    end_offset: int
    checksum: str | None = None
    checksum_algorithm: str | None = None

    @property
    def size(self) -> int:
        return self.end_offset - self.start_offset

    @property
    def volume_index(self) -> int:
        """The same as :attr:`index` (tartape's name)."""
        return self.index


Checksum = tuple[int, str, str]
"""``(volume index, algorithm, hex digest)``: what is known of one volume's bytes."""


@dataclass(frozen=True, slots=True)
class Layout:
    """A named way of cutting a tape of ``total_size`` bytes into volumes of ``volume_size``.

    ``tag`` names it (by default the size written exactly, ``"64MiB"``). Volume names come from
    ``name_template`` (see :func:`volume_name`, with ``tape_name`` and ``fingerprint``), or are
    ``stored_names`` when an index keeps them (a tartape catalog does); :meth:`name` makes one,
    :attr:`names` all of them. ``checksums`` holds what is known of the volumes' bytes, only for
    the volumes that have one (:meth:`checksum`). A layout is ``registered`` when the tape's
    index keeps it (see :meth:`Tape.register_layout <atartape.Tape.register_layout>`); one made
    from a bare size is virtual (``is_virtual``): the same volumes, no checksums kept.
    ``is_default`` marks the one :attr:`Tape.default_layout <atartape.Tape.default_layout>`
    gives. Nothing here grows with the number of volumes but what is known of them.
    """

    tag: str
    volume_size: int
    total_size: int
    tape_name: str = "tape"
    name_template: str = DEFAULT_NAME_TEMPLATE
    fingerprint: str = field(default="", repr=False)
    stored_names: tuple[str, ...] | None = field(default=None, repr=False)
    checksums: tuple[Checksum, ...] = field(default=(), repr=False)
    is_default: bool = False
    registered: bool = False
    created_at: datetime | None = None
    suffix: str = ".tar"

    def __post_init__(self) -> None:
        count = volume_count(self.total_size, self.volume_size)
        if self.stored_names is not None and len(self.stored_names) != count:
            named = len(self.stored_names)
            raise InvalidArgumentError(f"layout {self.tag!r} names {named} of {count} volumes")
        known = tuple(sorted(self.checksums))
        if any(not 0 <= index < count for index, _, _ in known):
            raise InvalidArgumentError(
                f"layout {self.tag!r} has a checksum of a volume it does not have"
            )
        object.__setattr__(self, "checksums", known)

    @classmethod
    def plan(
        cls,
        total_size: int,
        volume_size: int | str,
        *,
        tape_name: str,
        tag: str | None = None,
        name_template: str | None = None,
        fingerprint: str = "",
        is_default: bool = False,
        registered: bool = False,
        created_at: datetime | None = None,
        suffix: str = ".tar",
    ) -> Layout:
        """The layout cutting a tape of ``total_size`` bytes into ``volume_size`` volumes,
        named by ``name_template`` (see :func:`volume_name`; ``fingerprint`` fills its field).

        Raises :class:`ValueError` for a bad size, tag or template.
        """
        size = parse_size(volume_size, what="volume size")
        template = name_template or DEFAULT_NAME_TEMPLATE
        count = volume_count(total_size, size)
        volume_name(
            template, name=tape_name, index=0, count=count, fingerprint=fingerprint, suffix=suffix
        )
        tag = format_size(size) if tag is None else tag
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidArgumentError(f"a layout tag must be a non-empty string, not {tag!r}")
        return cls(
            tag,
            size,
            total_size,
            tape_name,
            template,
            fingerprint,
            is_default=is_default,
            registered=registered,
            created_at=created_at,
            suffix=suffix,
        )

    @property
    def count(self) -> int:
        """How many volumes the layout makes (the last may be shorter)."""
        return volume_count(self.total_size, self.volume_size)

    @property
    def total_volumes(self) -> int:
        """The same as :attr:`count` (tartape's name)."""
        return self.count

    @property
    def is_virtual(self) -> bool:
        """Whether no index keeps this layout (it was made from a bare size)."""
        return not self.registered

    def window(self, index: int) -> tuple[int, int]:
        """The ``[start, end)`` tape offsets of volume ``index``.

        Raises :class:`VolumeNotFoundError` (an :class:`InvalidOffsetError` and a ``KeyError``)
        for an index that is not a volume of the layout.
        """
        count = self.count
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise VolumeNotFoundError(
                f"volume index {index!r} is outside the layout {self.tag!r}: "
                f"{self.total_size} bytes in volumes of {self.volume_size} bytes make "
                f"{count} volume{'s' if count != 1 else ''} (valid indexes: 0 to {count - 1})"
            )
        start = index * self.volume_size
        return start, min(start + self.volume_size, self.total_size)

    def name(self, index: int) -> str:
        """The name of volume ``index``; raises as :meth:`window` does."""
        self.window(index)
        if self.stored_names is not None:
            return self.stored_names[index]
        return volume_name(
            self.name_template,
            name=self.tape_name,
            index=index,
            count=self.count,
            fingerprint=self.fingerprint,
            suffix=self.suffix,
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Every volume's name, in order."""
        if self.stored_names is not None:
            return self.stored_names
        return tuple(self.name(i) for i in range(self.count))

    def _known(self, index: int) -> Checksum | None:
        at = bisect.bisect_left(self.checksums, (index,))
        if at < len(self.checksums) and self.checksums[at][0] == index:
            return self.checksums[at]
        return None

    def volume(self, index: int) -> LayoutVolume:
        """Volume ``index`` (from 0); raises as :meth:`window` does."""
        start, end = self.window(index)
        known = self._known(index)
        return LayoutVolume(
            self.tag,
            index,
            self.name(index),
            start,
            end,
            None if known is None else known[2],
            None if known is None else known[1],
        )

    @property
    def volumes(self) -> tuple[LayoutVolume, ...]:
        """Every volume, in order."""
        return tuple(self.volume(i) for i in range(self.count))

    def checksum(self, index: int) -> str | None:
        """The hex checksum known for volume ``index``, or ``None``; raises as :meth:`window`."""
        self.window(index)
        known = self._known(index)
        return None if known is None else known[2]

    def index_of(self, name: str) -> int | None:
        """The index of the volume called ``name``, or ``None``."""
        if self.stored_names is not None:
            return self.stored_names.index(name) if name in self.stored_names else None
        return next((i for i in range(self.count) if self.name(i) == name), None)

    def with_checksum(self, index: int, algorithm: str, hexdigest: str) -> Layout:
        """This layout, with the checksum of volume ``index`` known."""
        self.window(index)
        others = tuple(known for known in self.checksums if known[0] != index)
        return replace(self, checksums=(*others, (index, algorithm, hexdigest)))

    def locate(
        self, entry: Entry, *, checksum_algorithm: str | None = None, after: bytes | None = None
    ) -> Location:
        """Where ``entry`` lies in this layout's volumes (see :func:`locate_entry`)."""
        return locate_entry(
            entry,
            self.volume_size,
            checksum_algorithm=checksum_algorithm,
            after=after,
            layout_tag=self.tag,
        )
