"""The Zstandard seekable format for the compressed view of a tape: pure arithmetic and frames.

A seekable zstd file is a run of independent zstd frames followed by a *seek table*: a skippable
frame (magic ``0x184D2A5E``) that lists, per frame, its compressed size, its decompressed size and,
when the descriptor says so, a checksum (the low 32 bits of XXH64 of the decompressed data), then a
footer: the number of frames, the descriptor byte and the seekable magic ``0x8F92EAB1``
(facebook/zstd, ``contrib/seekable_format/zstd_seekable_compression_format.md``, v0.1.0). Every
zstd decoder reads it as one stream (skippable frames are skipped), so ``zstd -d`` and
``tar --zstd`` read a compressed tape as they read any ``.tar.zst``.

The tape view cuts the plain tape (``N`` bytes) into frames of a fixed plain size ``F``::

    m                     = max(1, ceil(N / F))     (an empty plain stream is one empty frame)
    plain range of frame k = [k * F, min((k + 1) * F, N))
    seek table size       = 8 + E * m + 9 = E * m + 17, E = 12 with checksums, 8 without
    compressed size Z     = sum(c_k) + E * m + 17
    frame k starts at     = sum(c_j for j < k)

The compressed sizes ``c_k`` are known only after compressing, so they are recorded once (with a
digest of each compressed frame, :func:`frame_digest`) and every later production of frame ``k``
is checked against them (:func:`check_frame`). A frame is deterministic for one zstd build and one
set of parameters (:class:`FrameParams`); a different build refuses to compress
(:class:`ZstdBuildError`) rather than send bytes that may differ.

Nothing here does I/O. Compression uses the ``zstandard`` package, imported when first needed, so
the arithmetic and the seek table work without it.

Errors: every error raised on purpose is a :class:`SeekableError` (a ``ValueError``);
:class:`SeekTableError` for a malformed seek table, :class:`FrameError` for a zstd frame that does
not decompress or does not match what was recorded, :class:`ZstdBuildError` when the running zstd
build or parameters differ from the recorded ones.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType

from .._extras import require
from ..errors import ViewError

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "DEFAULT_LEVEL",
    "FOOTER_SIZE",
    "MAX_FRAME_SIZE",
    "SEEKABLE_MAGIC",
    "SKIPPABLE_HEADER_SIZE",
    "SKIPPABLE_MAGIC",
    "ZSTD_MAGIC",
    "FrameError",
    "FrameParams",
    "Position",
    "SeekEntry",
    "SeekTable",
    "SeekTableError",
    "SeekTableField",
    "SeekableError",
    "ZstdBuildError",
    "check_frame",
    "compress_frame",
    "compressed_size",
    "compressed_window",
    "decompress_frame",
    "encode_seek_table",
    "encode_seek_table_range",
    "entry_size",
    "frame_checksum",
    "frame_count",
    "frame_digest",
    "frame_plain_range",
    "frame_tag",
    "frame_tag_key",
    "parse_seek_table",
    "read_plain_range",
    "seek_table_field",
    "seek_table_size",
    "seek_table_size_from_footer",
]

SKIPPABLE_MAGIC = 0x184D2A5E
"""Magic number of the skippable frame that holds the seek table."""
SEEKABLE_MAGIC = 0x8F92EAB1
"""Magic number that ends a seekable file (the last 4 bytes, little-endian)."""
ZSTD_MAGIC = 0xFD2FB528
"""Magic number of a zstd frame."""
SKIPPABLE_HEADER_SIZE = 8
"""Skippable magic (4) and frame size (4)."""
FOOTER_SIZE = 9
"""Number of frames (4), descriptor (1), seekable magic (4)."""
DEFAULT_FRAME_SIZE = 1 << 20
"""The plain frame size the tape view uses unless told otherwise (1 MiB)."""
DEFAULT_LEVEL = 3
"""zstd's default compression level."""
MAX_FRAME_SIZE = 1 << 31
"""Largest plain frame size: its worst-case compressed size still fits the table's u32 field."""

_U32 = 0xFFFFFFFF
_CHECKSUM_FLAG = 0x80
_RESERVED_BITS = 0x7C
_ENTRY = struct.Struct("<II")
_ENTRY_WITH_CHECKSUM = struct.Struct("<III")
_FOOTER = struct.Struct("<IBI")
_SKIPPABLE = struct.Struct("<II")


class SeekableError(ViewError, ValueError):
    """Bad input to the seekable-format functions: sizes, offsets, ranges or arguments."""


class SeekTableError(SeekableError):
    """A seek table is malformed, truncated, or does not fit the file it was read from."""


class FrameError(SeekableError):
    """A zstd frame does not decompress, or differs from its recorded size, digest or checksum."""


class ZstdBuildError(SeekableError):
    """The running zstd build or parameters differ from the recorded ones: frames may differ."""


# --------------------------------------------------------------------------- fixed-size layout


def frame_count(plain_size: int, frame_size: int) -> int:
    """Frames of a plain stream of ``plain_size`` bytes: ``max(1, ceil(N / F))``.

    An empty stream has one empty frame, so that every compressed view holds at least one zstd
    frame. Raises :class:`SeekableError` for a negative size or ``F`` outside 1..``MAX_FRAME_SIZE``.
    """
    if plain_size < 0:
        raise SeekableError(f"negative plain size {plain_size}")
    if not 1 <= frame_size <= MAX_FRAME_SIZE:
        raise SeekableError(f"frame size {frame_size} is outside 1..{MAX_FRAME_SIZE}")
    return max(1, -(-plain_size // frame_size))


def frame_plain_range(index: int, plain_size: int, frame_size: int) -> tuple[int, int]:
    """Plain bytes of frame ``index``: ``[k*F, min((k+1)*F, N))``.

    Raises :class:`SeekableError` when the index is outside the frames of the stream.
    """
    count = frame_count(plain_size, frame_size)
    if not 0 <= index < count:
        raise SeekableError(f"frame {index} is outside 0..{count - 1}")
    start = index * frame_size
    return start, min(start + frame_size, plain_size)


def entry_size(with_checksums: bool) -> int:
    """Bytes of one seek table entry: 12 with checksums, 8 without."""
    return _ENTRY_WITH_CHECKSUM.size if with_checksums else _ENTRY.size


def seek_table_size(frames: int, with_checksums: bool) -> int:
    """Bytes of the seek table frame for ``frames`` frames: ``E * m + 17``.

    Raises :class:`SeekableError` when ``frames`` is negative or does not fit a u32.
    """
    if not 0 <= frames <= _U32:
        raise SeekableError(f"{frames} frames do not fit a seek table")
    return SKIPPABLE_HEADER_SIZE + entry_size(with_checksums) * frames + FOOTER_SIZE


def compressed_size(compressed_sizes: Iterable[int], with_checksums: bool) -> int:
    """Size of the whole seekable file: ``sum(c_k) + E * m + 17``.

    Raises :class:`SeekableError` when a size is negative.
    """
    total = 0
    count = 0
    for size in compressed_sizes:
        if size < 0:
            raise SeekableError(f"negative compressed size {size}")
        total += size
        count += 1
    return total + seek_table_size(count, with_checksums)


# --------------------------------------------------------------------------- the seek table


@dataclass(frozen=True)
class SeekEntry:
    """One seek table entry: sizes of a frame, and the checksum when the table has them."""

    compressed_size: int
    decompressed_size: int
    checksum: int | None = None

    def __post_init__(self) -> None:
        for name in ("compressed_size", "decompressed_size"):
            value = getattr(self, name)
            if not 0 <= value <= _U32:
                raise SeekableError(f"{name} {value} does not fit a u32")
        if self.checksum is not None and not 0 <= self.checksum <= _U32:
            raise SeekableError(f"checksum {self.checksum} does not fit a u32")


@dataclass(frozen=True)
class Position:
    """Where a compressed offset lies: in frame ``frame`` at ``within``, or in the seek table.

    ``frame`` is ``None`` for an offset inside the seek table; ``within`` is then the offset from
    the start of the seek table frame (see :func:`seek_table_field`).
    """

    frame: int | None
    within: int

    @property
    def in_seek_table(self) -> bool:
        """Whether the offset lies in the seek table."""
        return self.frame is None


@dataclass(frozen=True)
class SeekTableField:
    """One field of the seek table: its name, its entry index (``None`` outside the entries),
    and the offset inside the field.

    Names: ``skippable_magic``, ``frame_size``, ``compressed_size``, ``decompressed_size``,
    ``checksum``, ``number_of_frames``, ``descriptor``, ``seekable_magic``.
    """

    name: str
    entry: int | None
    within: int


def seek_table_field(offset: int, frames: int, with_checksums: bool) -> SeekTableField:
    """Which field of the seek table holds byte ``offset`` (counted from the table's start).

    Raises :class:`SeekableError` when the offset is outside the table.
    """
    size = seek_table_size(frames, with_checksums)
    if not 0 <= offset < size:
        raise SeekableError(f"seek table offset {offset} is outside [0, {size})")
    if offset < 4:
        return SeekTableField("skippable_magic", None, offset)
    if offset < SKIPPABLE_HEADER_SIZE:
        return SeekTableField("frame_size", None, offset - 4)
    footer = size - FOOTER_SIZE
    if offset >= footer:
        rel = offset - footer
        if rel < 4:
            return SeekTableField("number_of_frames", None, rel)
        if rel == 4:
            return SeekTableField("descriptor", None, 0)
        return SeekTableField("seekable_magic", None, rel - 5)
    entry, rel = divmod(offset - SKIPPABLE_HEADER_SIZE, entry_size(with_checksums))
    names = ("compressed_size", "decompressed_size", "checksum")
    return SeekTableField(names[rel // 4], entry, rel % 4)


def _encode_entry(entry: SeekEntry, with_checksums: bool) -> bytes:
    if with_checksums:
        if entry.checksum is None:
            raise SeekableError("a table with checksums needs a checksum in every entry")
        return _ENTRY_WITH_CHECKSUM.pack(
            entry.compressed_size, entry.decompressed_size, entry.checksum
        )
    return _ENTRY.pack(entry.compressed_size, entry.decompressed_size)


def encode_seek_table(entries: Sequence[SeekEntry], with_checksums: bool) -> bytes:
    """The whole seek table frame for ``entries``, ``seek_table_size(len(entries), ...)`` bytes.

    Raises :class:`SeekableError` when there are more than 2**32-1 entries, or checksums are asked
    for and an entry lacks one (an entry's checksum is ignored when they are not).
    """
    size = seek_table_size(len(entries), with_checksums)
    return b"".join(
        [
            _SKIPPABLE.pack(SKIPPABLE_MAGIC, size - SKIPPABLE_HEADER_SIZE),
            *(_encode_entry(entry, with_checksums) for entry in entries),
            _FOOTER.pack(len(entries), _CHECKSUM_FLAG if with_checksums else 0, SEEKABLE_MAGIC),
        ]
    )


def seek_table_entries_for_range(start: int, end: int, frames: int, with_checksums: bool) -> range:
    """The entries whose bytes lie in seek table bytes ``[start, end)`` (table-relative offsets).

    Raises :class:`SeekableError` when the range is outside the table.
    """
    size = seek_table_size(frames, with_checksums)
    if not 0 <= start <= end <= size:
        raise SeekableError(f"seek table range [{start}, {end}) is outside [0, {size}]")
    width = entry_size(with_checksums)
    first = max(start - SKIPPABLE_HEADER_SIZE, 0) // width
    stop = -(-max(min(end, size - FOOTER_SIZE) - SKIPPABLE_HEADER_SIZE, 0) // width)
    return range(min(first, frames), max(min(stop, frames), min(first, frames)))


def encode_seek_table_range(
    start: int,
    end: int,
    frames: int,
    with_checksums: bool,
    entries: Sequence[SeekEntry],
) -> bytes:
    """Seek table bytes ``[start, end)`` from only the entries they touch.

    ``entries`` are the entries ``seek_table_entries_for_range(start, end, frames, ...)``, in
    order: a player of a tape with millions of frames produces any window of the table from a
    few index rows. Raises :class:`SeekableError` when the range is outside the table, the number
    of entries is wrong, or checksums are asked for and an entry lacks one.
    """
    wanted = seek_table_entries_for_range(start, end, frames, with_checksums)
    if len(entries) != len(wanted):
        raise SeekableError(
            f"seek table bytes [{start}, {end}) need entries {wanted.start}..{wanted.stop - 1},"
            f" got {len(entries)}"
        )
    size = seek_table_size(frames, with_checksums)
    width = entry_size(with_checksums)
    out = []
    head = _SKIPPABLE.pack(SKIPPABLE_MAGIC, size - SKIPPABLE_HEADER_SIZE)
    out.append(head[start:end])
    base = SKIPPABLE_HEADER_SIZE + wanted.start * width
    body = b"".join(_encode_entry(entry, with_checksums) for entry in entries)
    out.append(body[max(start - base, 0) : max(end - base, 0)])
    footer_start = size - FOOTER_SIZE
    footer = _FOOTER.pack(frames, _CHECKSUM_FLAG if with_checksums else 0, SEEKABLE_MAGIC)
    out.append(footer[max(start - footer_start, 0) : max(end - footer_start, 0)])
    return b"".join(out)


def seek_table_size_from_footer(footer: bytes) -> int:
    """Size of the seek table frame, from the last 9 (or more) bytes of a seekable file.

    A reader reads the last 9 bytes, asks this, then reads that many bytes from the end.
    Raises :class:`SeekTableError` when the bytes do not end with a seekable footer, or the
    descriptor has reserved bits set.
    """
    if len(footer) < FOOTER_SIZE:
        raise SeekTableError(f"a seek table footer has {FOOTER_SIZE} bytes, got {len(footer)}")
    frames, descriptor, magic = _FOOTER.unpack(footer[-FOOTER_SIZE:])
    if magic != SEEKABLE_MAGIC:
        raise SeekTableError("no seekable zstd footer (magic 0x8F92EAB1) at the end")
    if descriptor & _RESERVED_BITS:
        raise SeekTableError(f"seek table descriptor 0x{descriptor:02x} has reserved bits set")
    return seek_table_size(frames, bool(descriptor & _CHECKSUM_FLAG))


@dataclass(frozen=True)
class SeekTable:
    """A seek table and the layout of the seekable file it ends: where every byte lies.

    Offsets are those of the compressed file (frames first, then the table) or of the plain
    stream; ranges are half-open ``(start, end)``. Construction raises :class:`SeekableError`
    when checksums are asked for and an entry lacks one, or there are more than 2**32-1 frames;
    the methods raise :class:`SeekableError` for offsets and indexes outside the file.
    """

    entries: tuple[SeekEntry, ...]
    with_checksums: bool

    def __post_init__(self) -> None:
        seek_table_size(len(self.entries), self.with_checksums)
        if self.with_checksums and any(entry.checksum is None for entry in self.entries):
            raise SeekableError("a table with checksums needs a checksum in every entry")

    @classmethod
    def for_frames(
        cls,
        plain_size: int,
        frame_size: int,
        compressed_sizes: Sequence[int],
        checksums: Sequence[int] | None = None,
    ) -> SeekTable:
        """The table of a plain stream cut into frames of ``frame_size`` plain bytes.

        Raises :class:`SeekableError` when the number of sizes (or checksums) differs from
        :func:`frame_count`.
        """
        count = frame_count(plain_size, frame_size)
        if len(compressed_sizes) != count or (checksums is not None and len(checksums) != count):
            raise SeekableError(
                f"{plain_size} bytes in frames of {frame_size} make {count} frames,"
                f" got {len(compressed_sizes)} sizes"
            )
        entries = []
        for index, size in enumerate(compressed_sizes):
            start, end = frame_plain_range(index, plain_size, frame_size)
            checksum = None if checksums is None else checksums[index]
            entries.append(SeekEntry(size, end - start, checksum))
        return cls(tuple(entries), checksums is not None)

    @property
    def frame_count(self) -> int:
        """``m``, the number of frames."""
        return len(self.entries)

    @cached_property
    def compressed_offsets(self) -> tuple[int, ...]:
        """Start of each frame in the compressed file, and the seek table's start last (m + 1)."""
        offsets = [0]
        for entry in self.entries:
            offsets.append(offsets[-1] + entry.compressed_size)
        return tuple(offsets)

    @cached_property
    def plain_offsets(self) -> tuple[int, ...]:
        """Start of each frame in the plain stream, and the plain size last (m + 1)."""
        offsets = [0]
        for entry in self.entries:
            offsets.append(offsets[-1] + entry.decompressed_size)
        return tuple(offsets)

    @property
    def table_size(self) -> int:
        """Bytes of the seek table frame, ``E * m + 17``."""
        return seek_table_size(self.frame_count, self.with_checksums)

    @property
    def table_offset(self) -> int:
        """Where the seek table starts: ``sum(c_k)``."""
        return self.compressed_offsets[-1]

    @property
    def size(self) -> int:
        """Size of the whole seekable file, ``sum(c_k) + E * m + 17``."""
        return self.table_offset + self.table_size

    @property
    def plain_size(self) -> int:
        """Size of the plain stream, ``sum(d_k)``."""
        return self.plain_offsets[-1]

    def encode(self) -> bytes:
        """The seek table frame's bytes."""
        return encode_seek_table(self.entries, self.with_checksums)

    def _check_frame(self, index: int) -> None:
        if not 0 <= index < self.frame_count:
            raise SeekableError(f"frame {index} is outside 0..{self.frame_count - 1}")

    def frame_compressed_range(self, index: int) -> tuple[int, int]:
        """Compressed bytes of frame ``index``."""
        self._check_frame(index)
        return self.compressed_offsets[index], self.compressed_offsets[index + 1]

    def frame_plain_range(self, index: int) -> tuple[int, int]:
        """Plain bytes of frame ``index``."""
        self._check_frame(index)
        return self.plain_offsets[index], self.plain_offsets[index + 1]

    def locate(self, offset: int) -> Position:
        """What lies at compressed ``offset``: a frame and the offset in it, or the seek table."""
        if not 0 <= offset < self.size:
            raise SeekableError(f"compressed offset {offset} is outside [0, {self.size})")
        if offset >= self.table_offset:
            return Position(None, offset - self.table_offset)
        index = bisect.bisect_right(self.compressed_offsets, offset) - 1
        return Position(index, offset - self.compressed_offsets[index])

    def frame_of(self, offset: int) -> int | None:
        """The frame holding compressed byte ``offset``, ``None`` in the seek table."""
        return self.locate(offset).frame

    def frame_of_plain(self, offset: int) -> int:
        """The frame holding plain byte ``offset`` (frames of no plain bytes hold none)."""
        if not 0 <= offset < self.plain_size:
            raise SeekableError(f"plain offset {offset} is outside [0, {self.plain_size})")
        return bisect.bisect_right(self.plain_offsets, offset) - 1

    def frames_for_compressed_range(self, start: int, end: int) -> range:
        """The frames with compressed bytes in ``[start, end)`` (the seek table is not a frame)."""
        if not 0 <= start <= end <= self.size:
            raise SeekableError(f"compressed range [{start}, {end}) is outside [0, {self.size}]")
        stop = min(end, self.table_offset)
        if start >= stop:
            return range(0)
        first = bisect.bisect_right(self.compressed_offsets, start) - 1
        last = bisect.bisect_right(self.compressed_offsets, stop - 1) - 1
        return range(first, last + 1)

    def plain_range_for_compressed_range(self, start: int, end: int) -> tuple[int, int]:
        """The plain bytes to compress to produce compressed ``[start, end)``: whole frames.

        ``(p, p)`` when only the seek table (or only empty frames) is in the range.
        """
        frames = self.frames_for_compressed_range(start, end)
        if not frames:
            return self.plain_size, self.plain_size
        return self.plain_offsets[frames[0]], self.plain_offsets[frames[-1] + 1]

    def compressed_range_for_plain_range(self, start: int, end: int) -> tuple[int, int]:
        """The compressed bytes that hold plain ``[start, end)``: the whole frames to fetch.

        An empty plain range gives an empty compressed range where its frame starts (the seek
        table's start when ``start`` is the plain size).
        """
        if not 0 <= start <= end <= self.plain_size:
            raise SeekableError(f"plain range [{start}, {end}) is outside [0, {self.plain_size}]")
        if start == end:
            if start == self.plain_size:
                return self.table_offset, self.table_offset
            pos = self.compressed_offsets[self.frame_of_plain(start)]
            return pos, pos
        first = self.frame_of_plain(start)
        last = self.frame_of_plain(end - 1)
        return self.compressed_offsets[first], self.compressed_offsets[last + 1]


def parse_seek_table(tail: bytes, *, file_size: int | None = None) -> SeekTable:
    """Parse the seek table at the end of ``tail`` (the last bytes of a seekable file).

    ``tail`` must hold at least the whole table (see :func:`seek_table_size_from_footer`). With
    ``file_size``, the table must also account for the whole file (``sum(c_k) + table size``).
    Raises :class:`SeekTableError` when the footer, the skippable frame header or the sizes do
    not fit, or ``tail`` is too short.
    """
    size = seek_table_size_from_footer(tail)
    if len(tail) < size:
        raise SeekTableError(f"the seek table has {size} bytes, only {len(tail)} were given")
    table = tail[len(tail) - size :]
    magic, frame_size = _SKIPPABLE.unpack_from(table)
    if magic != SKIPPABLE_MAGIC or frame_size != size - SKIPPABLE_HEADER_SIZE:
        raise SeekTableError("the seek table does not start with its skippable frame header")
    frames, descriptor, _ = _FOOTER.unpack_from(table, size - FOOTER_SIZE)
    with_checksums = bool(descriptor & _CHECKSUM_FLAG)
    layout = _ENTRY_WITH_CHECKSUM if with_checksums else _ENTRY
    entries = []
    for index in range(frames):
        fields = layout.unpack_from(table, SKIPPABLE_HEADER_SIZE + index * layout.size)
        entries.append(SeekEntry(fields[0], fields[1], fields[2] if with_checksums else None))
    parsed = SeekTable(tuple(entries), with_checksums)
    if file_size is not None and parsed.size != file_size:
        raise SeekTableError(
            f"the seek table describes {parsed.size} bytes, the file has {file_size}"
        )
    return parsed


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class FrameParams:
    """How frames are compressed, and by which build: stored with a tape, checked before use.

    ``level`` is the zstd level; ``checksum`` whether each frame ends with its content checksum
    (the low 32 bits of XXH64, which is also the seek table's checksum). Every frame is one
    complete zstd frame with its content size written, no dictionary id, compressed
    single-threaded. ``binding`` and ``zstd_version`` name the build (``zstandard 0.25.0``,
    ``1.5.7``): frames are byte-for-byte reproducible only with the same build and parameters.
    """

    level: int
    checksum: bool
    binding: str
    zstd_version: str

    @classmethod
    def current(cls, level: int = DEFAULT_LEVEL, *, checksum: bool = True) -> FrameParams:
        """These parameters with the running build. Raises
        :class:`~atartape.MissingDependencyError` when the ``zstandard`` package is missing;
        :class:`SeekableError` for a level outside zstd's.
        """
        zstandard = _zstandard()
        if not -(1 << 17) <= level <= zstandard.MAX_COMPRESSION_LEVEL or level == 0:
            raise SeekableError(f"zstd level {level} is outside its range")
        return cls(
            level,
            checksum,
            f"zstandard {zstandard.__version__}",
            ".".join(str(part) for part in zstandard.ZSTD_VERSION),
        )

    def encode(self) -> str:
        """One line to store: ``zstd=1.5.7;binding=zstandard 0.25.0;level=3;checksum=1``."""
        return (
            f"zstd={self.zstd_version};binding={self.binding};level={self.level};"
            f"checksum={int(self.checksum)}"
        )

    @classmethod
    def parse(cls, text: str) -> FrameParams:
        """The reverse of :meth:`encode`. Raises :class:`SeekableError` for another text."""
        try:
            fields = dict(part.split("=", 1) for part in text.split(";"))
            return cls(
                int(fields["level"]),
                fields["checksum"] == "1",
                fields["binding"],
                fields["zstd"],
            )
        except (KeyError, ValueError):
            raise SeekableError(f"not a frame parameters text: {text!r}") from None

    def check_current(self) -> None:
        """Raise :class:`ZstdBuildError` unless the running build is the recorded one."""
        running = FrameParams.current(self.level, checksum=self.checksum)
        if running != self:
            raise ZstdBuildError(
                f"frames were recorded with {self.binding}, zstd {self.zstd_version};"
                f" this is {running.binding}, zstd {running.zstd_version}: they may differ"
            )


def _zstandard() -> ModuleType:
    """The ``zstandard`` module; raises :class:`~atartape.MissingDependencyError` when it is not
    installed."""
    return require("zstandard", "zstd", "a zstd view")


def compress_frame(data: bytes, params: FrameParams) -> bytes:
    """Compress ``data`` into one complete zstd frame, deterministically for ``params``.

    Content size written, checksum as ``params.checksum``, no dictionary, single-threaded: the
    same bytes for the same data, parameters and build. Raises :class:`ZstdBuildError` when the
    running build differs from ``params``; :class:`SeekableError` when ``data`` is longer than
    ``MAX_FRAME_SIZE``.
    """
    if len(data) > MAX_FRAME_SIZE:
        raise SeekableError(f"a frame holds at most {MAX_FRAME_SIZE} bytes, not {len(data)}")
    params.check_current()
    zstandard = _zstandard()
    compressor = zstandard.ZstdCompressor(
        level=params.level,
        write_checksum=params.checksum,
        write_content_size=True,
        write_dict_id=False,
        threads=0,
    )
    frame: bytes = compressor.compress(data)
    return frame


def decompress_frame(frame: bytes, expected_size: int | None = None) -> bytes:
    """Decompress exactly one zstd frame (its checksum, when present, is verified).

    With ``expected_size``, the frame must hold exactly that many bytes. Raises
    :class:`FrameError` when ``frame`` is not one whole frame, does not decompress, lacks a
    content size while no ``expected_size`` is given, or holds another size.
    """
    zstandard = _zstandard()
    if len(frame) < 4 or int.from_bytes(frame[:4], "little") != ZSTD_MAGIC:
        raise FrameError("not a zstd frame (bad magic)")
    try:
        data: bytes = zstandard.ZstdDecompressor().decompress(
            frame, max_output_size=expected_size or 0, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise FrameError(f"the zstd frame does not decompress: {exc}") from None
    if expected_size is not None and len(data) != expected_size:
        raise FrameError(f"the frame holds {len(data)} bytes, {expected_size} were expected")
    return data


def frame_checksum(frame: bytes) -> int:
    """The content checksum at the end of a zstd frame written with one (``params.checksum``).

    It is the low 32 bits of XXH64 of the decompressed data: the seek table's checksum field.
    Raises :class:`FrameError` when ``frame`` is not a zstd frame with the checksum flag set.
    """
    if len(frame) < 9 or int.from_bytes(frame[:4], "little") != ZSTD_MAGIC:
        raise FrameError("not a zstd frame (bad magic)")
    if not frame[4] & 0x04:
        raise FrameError("the zstd frame has no content checksum")
    return int.from_bytes(frame[-4:], "little")


def frame_digest(frame: bytes) -> bytes:
    """BLAKE2b-128 of a compressed frame: what tapes recorded before :func:`frame_tag` kept."""
    return hashlib.blake2b(frame, digest_size=16).digest()


def frame_tag_key(fingerprint: str) -> bytes:
    """The key of a tape's frame tags, made from its fingerprint: the same folder recorded again
    gets the same tags, so the same recording identity."""
    return hashlib.blake2b(fingerprint.encode(), digest_size=32, person=b"atartape zstd").digest()


def frame_tag(tag_key: bytes, index: int, frame: bytes) -> bytes:
    """Poly1305 of compressed frame ``index``, under a key of its own made from the tape's
    ``tag_key`` (see :func:`frame_tag_key`): recorded per frame, compared before a frame made
    again goes out.

    What it tells apart: any frame that differs without knowledge of the key (another zstd
    build, bytes of a file changed since the recording) has the recorded tag with a chance of
    at most ``8 * ceil(L / 16) / 2**106`` for ``L`` bytes (below ``2**-78`` for the largest
    frames). The key is no secret (it is in the index), so a frame crafted by someone who reads
    the index and rewrites the source is not told apart; such a person can make a plain tar
    (GNU tar's too) carry their bytes anyway. It costs a tenth of a cryptographic hash. Raises
    :class:`FrameError` when the key is not 32 bytes.
    """
    require("cryptography", "zstd", "a zstd view (its frame tags)")
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    if len(tag_key) != 32:
        raise FrameError("a frame tag key has 32 bytes")
    key = hashlib.blake2b(index.to_bytes(8, "big"), digest_size=32, key=tag_key).digest()
    return Poly1305.generate_tag(key, frame)


def check_frame(frame: bytes, entry: SeekEntry, digest: bytes) -> None:
    """Check a freshly compressed frame against what was recorded for it.

    Raises :class:`FrameError` when its size, digest or (when the entry has one) checksum differ:
    the frame must not be sent, since the promised offsets would no longer hold.
    """
    if len(frame) != entry.compressed_size:
        raise FrameError(
            f"the frame compressed to {len(frame)} bytes, {entry.compressed_size} were recorded"
        )
    if frame_digest(frame) != digest:
        raise FrameError("the frame's digest differs from the recorded one")
    if entry.checksum is not None and frame_checksum(frame) != entry.checksum:
        raise FrameError("the frame's checksum differs from the recorded one")


def compressed_window(
    table: SeekTable, start: int, end: int, frames: Sequence[bytes], first: int | None = None
) -> bytes:
    """Produce exactly the compressed bytes ``[start, end)`` of a seekable file.

    ``frames`` are the compressed frames ``table.frames_for_compressed_range(start, end)``, in
    order (``first`` may name the first one's index as a check); the seek table's bytes come from
    ``table``. Raises :class:`SeekableError` when the range is outside the file, or the frames'
    number or sizes differ from the table.
    """
    wanted = table.frames_for_compressed_range(start, end)
    if len(frames) != len(wanted) or (first is not None and wanted and first != wanted.start):
        raise SeekableError(
            f"compressed [{start}, {end}) needs frames {wanted.start}..{wanted.stop - 1},"
            f" got {len(frames)}"
        )
    out = []
    for index, frame in zip(wanted, frames):
        frame_start, frame_end = table.frame_compressed_range(index)
        if len(frame) != frame_end - frame_start:
            raise SeekableError(
                f"frame {index} has {len(frame)} bytes, the table says {frame_end - frame_start}"
            )
        out.append(frame[max(start - frame_start, 0) : end - frame_start])
    if end > table.table_offset:
        table_start = max(start, table.table_offset) - table.table_offset
        table_end = end - table.table_offset
        frames_count, checks = table.frame_count, table.with_checksums
        entries = seek_table_entries_for_range(table_start, table_end, frames_count, checks)
        out.append(
            encode_seek_table_range(
                table_start,
                table_end,
                frames_count,
                checks,
                table.entries[entries.start : entries.stop],
            )
        )
    return b"".join(out)


def read_plain_range(table: SeekTable, start: int, end: int, compressed: bytes) -> bytes:
    """Recover plain bytes ``[start, end)`` from the whole frames that hold them.

    ``compressed`` holds the compressed bytes ``table.compressed_range_for_plain_range(start,
    end)`` (fetched by range from the seekable file). Each frame is decompressed alone, and must
    hold its table size (and, when the table has checksums and the frame one, the same checksum).
    Raises :class:`SeekableError` when the range is outside the stream or ``compressed`` has the
    wrong length; :class:`FrameError` when a frame is bad.
    """
    comp_start, comp_end = table.compressed_range_for_plain_range(start, end)
    if len(compressed) != comp_end - comp_start:
        raise SeekableError(
            f"plain [{start}, {end}) needs compressed [{comp_start}, {comp_end}),"
            f" got {len(compressed)} bytes"
        )
    if start == end:
        return b""
    first, last = table.frame_of_plain(start), table.frame_of_plain(end - 1)
    out = []
    for index in range(first, last + 1):
        entry = table.entries[index]
        frame_start, frame_end = table.frame_compressed_range(index)
        frame = compressed[frame_start - comp_start : frame_end - comp_start]
        has_checksum = len(frame) > 4 and frame[4] & 0x04
        if entry.checksum is not None and has_checksum and frame_checksum(frame) != entry.checksum:
            raise FrameError(f"frame {index}: checksum differs from the seek table")
        out.append(decompress_frame(frame, entry.decompressed_size))
    plain = b"".join(out)
    skip = start - table.plain_offsets[first]
    return plain[skip : skip + end - start]
