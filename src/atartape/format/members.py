"""Archive members: TAR headers and their PAX/GNU extensions, read into :class:`Member` values.

Pure code, no I/O and no async: a reader hands the header blocks it reads to a
:class:`HeaderReader` and gets back :class:`Member` values (or a request to read the payload of an
extension record first).

Formats read: v7, USTAR, GNU (``L``/``K`` long names and links, base-256 numbers) and POSIX PAX
(``x`` and ``g`` records: ``path``, ``linkpath``, ``size``, ``mtime``). Malformed input raises
:class:`~atartape.ArchiveFormatError` carrying the offset of the offending header.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Extension",
    "HeaderReader",
    "Member",
    "MemberType",
    "normalize_name",
    "parse_pax_records",
]

from ..errors import ArchiveFormatError
from . import paths
from .header import BLOCK_SIZE, ZERO_BLOCK, HeaderError, decode_header, padding

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
