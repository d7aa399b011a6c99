"""TAR header blocks: encoding the 512-byte USTAR headers of a tape, and decoding any header.

Pure functions and small immutable values, no I/O. A tape's headers are plain USTAR; a size (or
mtime) that does not fit 11 octal digits is written in GNU base-256, which every common reader
accepts. Identity is scrubbed: uid and gid are 0, user and group names are empty.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import paths

BLOCK_SIZE = 512
FOOTER_SIZE = 2 * BLOCK_SIZE
FOOTER = bytes(FOOTER_SIZE)
ZERO_BLOCK = bytes(BLOCK_SIZE)

# Field (offset, width) pairs of the USTAR header.
NAME = (0, 100)
MODE = (100, 8)
UID = (108, 8)
GID = (116, 8)
SIZE = (124, 12)
MTIME = (136, 12)
CHKSUM = (148, 8)
TYPEFLAG = (156, 1)
LINKNAME = (157, 100)
MAGIC = (257, 6)
VERSION = (263, 2)
UNAME = (265, 32)
GNAME = (297, 32)
DEVMAJOR = (329, 8)
DEVMINOR = (337, 8)
PREFIX = (345, 155)

_OCTAL_LIMIT_12 = 8**11  # 11 octal digits + NUL in a 12-byte field: sizes below 8 GiB


class EntryKind(str, enum.Enum):
    """What an entry of a tape is."""

    FILE = "file"
    DIRECTORY = "dir"
    SYMLINK = "symlink"

    @property
    def typeflag(self) -> bytes:
        return _TYPEFLAGS[self]


_TYPEFLAGS = {EntryKind.FILE: b"0", EntryKind.DIRECTORY: b"5", EntryKind.SYMLINK: b"2"}


class HeaderError(ValueError):
    """A block is not a valid TAR header (bad checksum, bad number field)."""


def padding(size: int) -> int:
    """Zero bytes after ``size`` bytes of content, up to the next 512-byte boundary."""
    return -size % BLOCK_SIZE


def _put(buf: bytearray, field: tuple[int, int], value: bytes) -> None:
    offset, width = field
    buf[offset : offset + len(value)] = value[:width]


def _octal(value: int, width: int) -> bytes:
    """``width - 1`` zero-padded octal digits and a NUL."""
    digits: bytes = b"%0*o\0" % (width - 1, value)
    return digits


def encode_number(value: int, width: int) -> bytes:
    """A numeric field: octal when it fits ``width - 1`` digits, GNU base-256 otherwise."""
    if 0 <= value < 8 ** (width - 1):
        return _octal(value, width)
    limit = 1 << (8 * (width - 1))
    if not -limit <= value < limit:
        raise ValueError(f"{value} does not fit a {width}-byte numeric field")
    if value >= 0:
        return b"\x80" + value.to_bytes(width - 1, "big")
    # Negative values: two's complement over the whole field, whose first byte is then 0xff.
    return ((1 << (8 * width)) + value).to_bytes(width, "big")


def _template() -> bytearray:
    buf = bytearray(BLOCK_SIZE)
    _put(buf, UID, _octal(0, 8))
    _put(buf, GID, _octal(0, 8))
    _put(buf, CHKSUM, b" " * 8)  # the checksum is computed with its own field as spaces
    _put(buf, MAGIC, b"ustar\0")
    _put(buf, VERSION, b"00")
    _put(buf, DEVMAJOR, _octal(0, 8))
    _put(buf, DEVMINOR, _octal(0, 8))
    return buf


_TEMPLATE = bytes(_template())


def encode_header(
    path: bytes, kind: EntryKind, size: int, mode: int, mtime: int, linkname: bytes = b""
) -> bytes:
    """The 512-byte header of one tape entry.

    ``path`` is the archive path as bytes, without a trailing slash. ``size`` is the content
    size (0 for directories and symlinks). Raises ``ValueError`` if the path or link target does
    not fit a USTAR header (see :mod:`atartape.paths`).
    """
    split = paths.header_name(path, is_dir=kind is EntryKind.DIRECTORY)
    if split is None:
        raise ValueError(f"path {path!r} does not fit a USTAR header")
    if len(linkname) > paths.MAX_LINKNAME:
        raise ValueError(f"symlink target {linkname!r} does not fit a USTAR header")
    prefix, name = split
    buf = bytearray(_TEMPLATE)
    buf[0 : len(name)] = name
    buf[100:108] = b"%07o\0" % (mode & 0o7777)
    buf[124:136] = _octal(size, 12) if size < _OCTAL_LIMIT_12 else encode_number(size, 12)
    buf[136:148] = _octal(mtime, 12) if 0 <= mtime < _OCTAL_LIMIT_12 else encode_number(mtime, 12)
    buf[156] = _TYPEFLAGS[kind][0]
    buf[157 : 157 + len(linkname)] = linkname
    buf[345 : 345 + len(prefix)] = prefix
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf)


def entry_span(size: int) -> int:
    """Bytes one entry takes on tape: its header plus its content rounded up to 512."""
    return BLOCK_SIZE + size + padding(size)


# ----------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class RawHeader:
    """The fields of one decoded header block, before any PAX or GNU extension is applied.

    ``name`` already joins the USTAR prefix. Strings are raw bytes: the reader decides how to
    decode them (PAX records may replace them).
    """

    name: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    typeflag: bytes
    linkname: bytes
    magic: bytes
    uname: bytes
    gname: bytes
    devmajor: int
    devminor: int


def _field(block: bytes, field: tuple[int, int]) -> bytes:
    offset, width = field
    return block[offset : offset + width]


def _cstring(raw: bytes) -> bytes:
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def decode_number(raw: bytes) -> int:
    """A numeric field: octal (space or NUL terminated) or GNU base-256 (positive or negative).

    Raises :class:`HeaderError` for anything else.
    """
    if raw and raw[0] & 0x80:
        value = int.from_bytes(raw[1:], "big")
        if raw[0] == 0xFF:
            return int.from_bytes(raw, "big") - (1 << (8 * len(raw)))
        return value
    text = _cstring(raw).strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise HeaderError(f"bad numeric field {raw!r}") from None


def header_checksums(block: bytes) -> tuple[int, int]:
    """The unsigned and signed sums of a header with its checksum field read as spaces."""
    unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
    signed = unsigned - 2 * sum(b for b in block if b >= 0x80)
    return unsigned, signed


def is_zero_block(block: bytes) -> bool:
    return block == ZERO_BLOCK


def decode_header(block: bytes) -> RawHeader:
    """Decode one 512-byte header (v7, USTAR, GNU or POSIX) and check its checksum.

    Raises :class:`HeaderError` when the block is short, the checksum is wrong or a number field
    is malformed.
    """
    if len(block) != BLOCK_SIZE:
        raise HeaderError(f"header block is {len(block)} bytes, not {BLOCK_SIZE}")
    stored = decode_number(_field(block, CHKSUM))
    if stored not in header_checksums(block):
        raise HeaderError("header checksum does not match")
    magic = _field(block, MAGIC)
    name = _cstring(_field(block, NAME))
    if magic == b"ustar\0":  # POSIX ustar: the prefix field holds the leading directories
        prefix = _cstring(_field(block, PREFIX))
        if prefix:
            name = prefix + b"/" + name
    return RawHeader(
        name=name,
        mode=decode_number(_field(block, MODE)),
        uid=decode_number(_field(block, UID)),
        gid=decode_number(_field(block, GID)),
        size=decode_number(_field(block, SIZE)),
        mtime=decode_number(_field(block, MTIME)),
        typeflag=_field(block, TYPEFLAG),
        linkname=_cstring(_field(block, LINKNAME)),
        magic=magic,
        uname=_cstring(_field(block, UNAME)),
        gname=_cstring(_field(block, GNAME)),
        devmajor=decode_number(_field(block, DEVMAJOR)),
        devminor=decode_number(_field(block, DEVMINOR)),
    )
