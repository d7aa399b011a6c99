"""Archive members: TAR headers and their PAX/GNU extensions, and the embedded index CSV.

Pure code, no I/O and no async: a reader hands the header blocks it reads to a
:class:`HeaderReader` and gets back :class:`Member` values (or a request to read the payload of an
extension record first). The same module builds and parses the embedded index, a CSV member named
``.tarindex_<16 hex>.csv`` whose rows are ``name,size,start_block,blocks``, and finds it in the
tail of an archive (:func:`locate_index`).

Formats read: v7, USTAR, GNU (``L``/``K`` long names and links, base-256 numbers) and POSIX PAX
(``x`` and ``g`` records: ``path``, ``linkpath``, ``size``, ``mtime``). Malformed input raises
:class:`~atartape.ArchiveFormatError` carrying the offset of the offending header.
"""

from __future__ import annotations

import csv
import enum
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import paths
from ._errors import ArchiveFormatError
from .header import BLOCK_SIZE, ZERO_BLOCK, EntryKind, HeaderError, decode_header, padding
from .layout import Entry

MAX_EXTENSION_SIZE = 8 * 1024 * 1024
"""The largest PAX or GNU long-name payload accepted: a guard against absurd allocations."""


class MemberType(str, enum.Enum):
    """What a member is. A ``str`` enum: ``MemberType.FILE == "file"``."""

    FILE = "file"
    DIRECTORY = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR_DEVICE = "chardev"
    BLOCK_DEVICE = "blockdev"
    FIFO = "fifo"
    SPARSE = "sparse"  # GNU sparse file: its stored bytes are not its content

    def __str__(self) -> str:
        return self.value


# Type flags of members. Any flag not listed (and not an extension) is read as a regular file,
# as POSIX asks.
_TYPES = {
    b"0": MemberType.FILE,
    b"\0": MemberType.FILE,
    b"7": MemberType.FILE,  # contiguous file
    b"1": MemberType.HARDLINK,
    b"2": MemberType.SYMLINK,
    b"3": MemberType.CHAR_DEVICE,
    b"4": MemberType.BLOCK_DEVICE,
    b"5": MemberType.DIRECTORY,
    b"D": MemberType.DIRECTORY,  # GNU dump directory: its data lists the folder, skipped
    b"6": MemberType.FIFO,
    b"S": MemberType.SPARSE,
}
# Types whose data blocks follow the header (everything else has none, whatever its size field).
_HAS_DATA = frozenset({MemberType.FILE, MemberType.SPARSE})
_DATA_FLAGS = frozenset({b"D"})

GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
PAX_LOCAL = frozenset({b"x", b"X"})  # "X": the Solaris spelling
PAX_GLOBAL = b"g"
GNU_VOLUME = b"V"
# Headers that describe no member of their own: a volume label names the archive (its payload,
# normally empty, is skipped), a global PAX header holds for every later member.
_ARCHIVE_WIDE = frozenset({PAX_GLOBAL, GNU_VOLUME})
EXTENSION_FLAGS = frozenset({GNU_LONGNAME, GNU_LONGLINK, *_ARCHIVE_WIDE, *PAX_LOCAL})


@dataclass(frozen=True, slots=True)
class Member:
    """One member of an archive, with every extension applied.

    ``name`` is the member's path as stored, without trailing slashes, decoded from UTF-8 with
    ``surrogateescape`` (so undecodable bytes survive). ``size`` is the number of content bytes
    stored after the header (0 for members that carry none: directories, links, devices).
    ``mtime`` is in seconds since the epoch (fractional when a PAX record gives it).
    ``header_offset`` is where the member's first header starts (its first PAX or GNU extension
    header, if it has one) and ``data_offset`` where its content starts.
    """

    name: str
    size: int
    type: MemberType
    mode: int
    mtime: float
    linkname: str
    header_offset: int
    data_offset: int

    @property
    def next_offset(self) -> int:
        """Offset just past the member's content and padding: where the next header starts."""
        return self.data_offset + self.size + padding(self.size)

    @property
    def is_file(self) -> bool:
        return self.type is MemberType.FILE

    @property
    def is_dir(self) -> bool:
        return self.type is MemberType.DIRECTORY

    @property
    def is_symlink(self) -> bool:
        return self.type is MemberType.SYMLINK

    @property
    def is_hardlink(self) -> bool:
        return self.type is MemberType.HARDLINK


@dataclass(frozen=True, slots=True)
class Extension:
    """An extension header (PAX ``x``/``g``, GNU ``L``/``K``) whose payload must be read.

    The reader reads ``size`` bytes at ``data_offset`` and passes them to
    :meth:`HeaderReader.extension`; the next header is at ``next_offset``.
    """

    typeflag: bytes
    header_offset: int
    size: int

    @property
    def data_offset(self) -> int:
        return self.header_offset + BLOCK_SIZE

    @property
    def next_offset(self) -> int:
        return self.data_offset + self.size + padding(self.size)


def normalize_name(name: str) -> str:
    """A member name as the reader reports it and looks it up: without trailing slashes."""
    stripped = name.rstrip("/")
    return stripped if stripped else name


def parse_pax_records(payload: bytes) -> dict[str, bytes]:
    """The ``key=value`` records of a PAX extended header (``"<len> <key>=<value>\\n"`` each).

    Keys are decoded as UTF-8; values stay bytes (``hdrcharset=BINARY`` values need not be
    UTF-8). Trailing NUL padding is ignored. Raises ``ValueError`` for a malformed record.
    """
    records: dict[str, bytes] = {}
    pos = 0
    end = len(payload)
    while pos < end:
        if payload[pos] == 0:  # NUL padding after the last record
            if payload[pos:].strip(b"\0"):
                raise ValueError(f"bytes after NUL padding at record offset {pos}")
            break
        space = payload.find(b" ", pos, pos + 21)
        digits = payload[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise ValueError(f"PAX record at offset {pos} does not start with a length")
        length = int(digits)
        record = payload[pos : pos + length]
        if length <= len(digits) + 1 or len(record) != length or not record.endswith(b"\n"):
            raise ValueError(f"PAX record at offset {pos} has a bad length ({length})")
        key, equals, value = record[len(digits) + 1 : -1].partition(b"=")
        if not equals or not key:
            raise ValueError(f"PAX record at offset {pos} has no key=value")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return records


class HeaderReader:
    """Turns header blocks, and the payloads of extension headers, into members.

    Feed it each header block in order with :meth:`header`. It returns ``None`` at the
    end-of-archive marker (a zero block), a :class:`Member`, or an :class:`Extension` whose payload
    must be passed to :meth:`extension` before the next header. PAX global records (``g``) hold
    for every later member; local ones (``x``) and GNU long names hold for the next member only.
    """

    def __init__(self) -> None:
        self._global: dict[str, bytes] = {}
        self._local: dict[str, bytes] = {}
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None
        self._first_offset: int | None = None  # first extension header of the pending member

    @property
    def pending(self) -> bool:
        """Whether extension records are waiting for the member they describe."""
        return self._first_offset is not None

    def header(self, block: bytes, offset: int) -> Member | Extension | None:
        """Decode the header block at ``offset``.

        Raises :class:`ArchiveFormatError` for a short block, a bad checksum or number field, an
        extension that is too large, or an end-of-archive marker right after an extension.
        """
        if len(block) != BLOCK_SIZE:
            raise ArchiveFormatError(
                f"archive is truncated: {len(block)} bytes where a header was expected",
                offset=offset,
            )
        if block == ZERO_BLOCK:
            if self.pending:
                raise ArchiveFormatError(
                    "archive ends after an extension header, without its member", offset=offset
                )
            return None
        try:
            raw = decode_header(block)
        except HeaderError as exc:
            raise ArchiveFormatError(f"not a valid TAR header: {exc}", offset=offset) from None
        if raw.typeflag in EXTENSION_FLAGS:
            if not 0 <= raw.size <= MAX_EXTENSION_SIZE:
                raise ArchiveFormatError(
                    f"extension header of {raw.size} bytes (max {MAX_EXTENSION_SIZE})",
                    offset=offset,
                )
            if self._first_offset is None and raw.typeflag not in _ARCHIVE_WIDE:
                self._first_offset = offset
            return Extension(raw.typeflag, offset, raw.size)

        pax = {**self._global, **self._local}
        name = self._long_name if self._long_name is not None else raw.name
        if pax.get("path"):
            name = pax["path"]
        linkname = self._long_link if self._long_link is not None else raw.linkname
        if pax.get("linkpath"):
            linkname = pax["linkpath"]
        size = raw.size
        mtime: float = raw.mtime
        try:
            if pax.get("size"):
                size = int(pax["size"])
            if pax.get("mtime"):
                mtime = float(pax["mtime"])
        except ValueError:
            raise ArchiveFormatError("bad PAX size or mtime record", offset=offset) from None
        if size < 0:
            raise ArchiveFormatError(f"negative member size {size}", offset=offset)

        text = paths.from_bytes(name)
        kind = _TYPES.get(raw.typeflag, MemberType.FILE)
        if raw.typeflag == b"\0" and text.endswith("/"):
            kind = MemberType.DIRECTORY  # a v7 directory: a "file" whose name ends with a slash
        if any(key.startswith("GNU.sparse.") for key in pax):
            kind = MemberType.SPARSE  # PAX-encoded GNU sparse file
        has_data = kind in _HAS_DATA or raw.typeflag in _DATA_FLAGS
        first = offset if self._first_offset is None else self._first_offset
        self._local.clear()
        self._long_name = self._long_link = None
        self._first_offset = None
        return Member(
            name=normalize_name(text),
            size=size if has_data else 0,
            type=kind,
            mode=raw.mode & 0o7777,
            mtime=mtime,
            linkname=paths.from_bytes(linkname),
            header_offset=first,
            data_offset=offset + BLOCK_SIZE,
        )

    def extension(self, ext: Extension, payload: bytes) -> None:
        """Apply the payload of ``ext`` to the members that follow.

        Raises :class:`ArchiveFormatError` for a short payload or malformed PAX records.
        """
        if len(payload) != ext.size:
            raise ArchiveFormatError(
                f"archive is truncated inside an extension header's data "
                f"({len(payload)} of {ext.size} bytes)",
                offset=ext.header_offset,
            )
        if ext.typeflag == GNU_LONGNAME:
            self._long_name = payload.split(b"\0", 1)[0]
        elif ext.typeflag == GNU_LONGLINK:
            self._long_link = payload.split(b"\0", 1)[0]
        elif ext.typeflag != GNU_VOLUME:
            try:
                records = parse_pax_records(payload)
            except ValueError as exc:
                raise ArchiveFormatError(
                    f"bad PAX header: {exc}", offset=ext.header_offset
                ) from None
            (self._global if ext.typeflag == PAX_GLOBAL else self._local).update(records)


# ------------------------------------------------------------------------- embedded index

INDEX_COLUMNS = ("name", "size", "start_block", "blocks")
_INDEX_NAME = re.compile(r"\.tarindex_[^/]*\.csv")


def index_name(fingerprint: str) -> str:
    """The name of a tape's embedded index: ``.tarindex_<first 16 hex of fingerprint>.csv``."""
    return f".tarindex_{fingerprint[:16]}.csv"


def is_index_name(name: str) -> bool:
    """Whether the last component of ``name`` looks like ``.tarindex_*.csv``."""
    return _INDEX_NAME.fullmatch(name.rsplit("/", 1)[-1]) is not None


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One row of an embedded index: a member's name, content size and block span.

    ``start_block`` is the block (512 bytes) of its header; ``blocks`` counts the header block,
    the content blocks and nothing else.
    """

    name: str
    size: int
    start_block: int
    blocks: int

    @property
    def header_offset(self) -> int:
        return self.start_block * BLOCK_SIZE

    @property
    def end_offset(self) -> int:
        return (self.start_block + self.blocks) * BLOCK_SIZE


def index_row(name: str, size: int, start_offset: int) -> IndexRow:
    """The row of a plain USTAR member (one header block) of ``size`` bytes at ``start_offset``."""
    if start_offset % BLOCK_SIZE:
        raise ValueError(f"start offset {start_offset} is not on a block boundary")
    blocks = 1 + (size + padding(size)) // BLOCK_SIZE
    return IndexRow(name, size, start_offset // BLOCK_SIZE, blocks)


def build_index_csv(rows: Iterable[IndexRow]) -> bytes:
    """The CSV bytes of an embedded index: a header row, then one row per member.

    The ``csv`` module's default dialect (RFC 4180): ``\\r\\n`` line ends, and names holding
    commas, quotes or line breaks quoted. Text is UTF-8; undecodable name bytes are written back
    as they were.
    """
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(INDEX_COLUMNS)
    writer.writerows((row.name, row.size, row.start_block, row.blocks) for row in rows)
    return out.getvalue().encode("utf-8", "surrogateescape")


def parse_index_csv(data: bytes) -> list[IndexRow]:
    """The rows of an embedded index CSV (the header row is optional).

    Raises ``ValueError`` naming the line of a row that has not four fields or whose numbers
    are not non-negative integers (or ``blocks`` is 0).
    """
    text = data.decode("utf-8", "surrogateescape")
    rows: list[IndexRow] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    for number, fields in enumerate(reader, 1):
        if number == 1 and tuple(fields) == INDEX_COLUMNS:
            continue
        if not fields:
            continue
        if len(fields) != 4:
            raise ValueError(f"index line {number} has {len(fields)} fields, not 4")
        name, size, start, blocks = fields
        if not (size.isdigit() and start.isdigit() and blocks.isdigit()) or int(blocks) < 1:
            raise ValueError(f"index line {number} has bad numbers: {fields[1:]!r}")
        rows.append(IndexRow(normalize_name(name), int(size), int(start), int(blocks)))
    return rows


@dataclass(frozen=True, slots=True)
class IndexLocation:
    """Where an embedded index member is: its header block and its content."""

    name: str
    header_offset: int
    size: int
    mode: int
    mtime: float

    @property
    def data_offset(self) -> int:
        return self.header_offset + BLOCK_SIZE

    def member(self) -> Member:
        """The index as a member of the archive (a regular file)."""
        return Member(
            name=self.name,
            size=self.size,
            type=MemberType.FILE,
            mode=self.mode,
            mtime=self.mtime,
            linkname="",
            header_offset=self.header_offset,
            data_offset=self.data_offset,
        )


class NeedMore(enum.Enum):
    """:func:`locate_index` needs bytes from further back in the archive."""

    NEED_MORE = "need more"


NEED_MORE = NeedMore.NEED_MORE


def locate_index(tail: bytes, tail_offset: int) -> IndexLocation | NeedMore | None:
    """Find the embedded index in the last bytes of an archive, stepping back block by block.

    ``tail`` holds the archive's bytes from ``tail_offset`` (a multiple of 512) to its end. From
    the end: the zero blocks of the end-of-archive marker (at least one), then the index's
    content, which is text (no NUL byte except the padding of its last block), then its header:
    a regular file named ``.tarindex_*.csv`` whose content ends exactly where the zero blocks
    start. Returns the location, :data:`NEED_MORE` when the search reaches the start of
    ``tail`` without an answer (and ``tail_offset > 0``), or ``None`` when the archive has no
    index as its last member (the first non-text block is another header, or not a header).
    """
    if tail_offset % BLOCK_SIZE or len(tail) % BLOCK_SIZE:
        return None
    view = memoryview(tail)
    at = len(tail)
    while at > 0 and view[at - BLOCK_SIZE : at] == ZERO_BLOCK:
        at -= BLOCK_SIZE
    if at == len(tail):
        return None  # no end-of-archive marker: not a finished archive
    content_end = tail_offset + at
    last = True
    while at > 0:
        block = bytes(view[at - BLOCK_SIZE : at])
        at -= BLOCK_SIZE
        body = block.rstrip(b"\0") if last else block
        last = False
        if b"\0" not in body:
            continue  # CSV text
        try:
            raw = decode_header(block)
        except HeaderError:
            return None
        name = normalize_name(paths.from_bytes(raw.name))
        start = tail_offset + at
        end = start + BLOCK_SIZE + raw.size + padding(raw.size)
        if raw.typeflag in (b"0", b"\0") and is_index_name(name) and end == content_end:
            return IndexLocation(name, start, raw.size, raw.mode & 0o7777, raw.mtime)
        return None
    return NEED_MORE if tail_offset > 0 else None


def index_member(entries: Sequence[Entry], fingerprint: str, start: int) -> tuple[Entry, bytes]:
    """The embedded index member of a tape whose entries end at ``start``, and its CSV bytes.

    It sits at the top level, where the seed's readers look for it and where it cannot land
    inside the recorded folder when the tape is extracted (re-recording the extracted folder
    gives the same fingerprint). Its mtime is the newest entry's, so the tape stays
    deterministic.
    """
    name = index_name(fingerprint)
    data = build_index_csv(index_row(e.arc_path, e.size, e.start_offset) for e in entries)
    mtime = max((e.mtime for e in entries), default=0)
    member = Entry(name, EntryKind.FILE, len(data), 0o644, mtime, start, "", mtime * 10**9)
    return member, data
