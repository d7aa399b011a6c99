"""TAR header blocks: encoding the 512-byte USTAR headers of a tape, and decoding any header.

Pure functions and small immutable values, no I/O. A tape's headers are plain USTAR; a size (or
mtime) that does not fit 11 octal digits is written in GNU base-256, which every common reader
accepts. Identity is scrubbed: uid and gid are 0, user and group names are empty.

A tape played from a tartape 3 catalog keeps tartape's header profile (``profile="tartape3"``),
so that its bytes are tartape's: the device fields are left NUL, and a folder whose path does not
fit the name field whole is cut at the last ``/`` before its own name (tartape keeps the trailing
slash where atartape drops it).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Literal

from ..errors import ArchiveFormatError, InvalidArgumentError
from . import paths

__all__ = [
    "BLOCK_SIZE",
    "CHKSUM",
    "DEVMAJOR",
    "DEVMINOR",
    "FOOTER",
    "FOOTER_SIZE",
    "GID",
    "GNAME",
    "HEADER_PROFILES",
    "LINKNAME",
    "MAGIC",
    "MODE",
    "MTIME",
    "NAME",
    "PREFIX",
    "SIZE",
    "TYPEFLAG",
    "UID",
    "UNAME",
    "VERSION",
    "ZERO_BLOCK",
    "EntryKind",
    "HeaderError",
    "HeaderProfile",
    "Owner",
    "RawHeader",
    "decode_header",
    "decode_number",
    "encode_header",
    "encode_number",
    "encode_raw",
    "entry_span",
    "header_checksums",
    "padding",
]

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

HeaderProfile = Literal["atartape", "tartape3"]
"""How headers are written: atartape's own, or tartape 3's (see the module docstring)."""
HEADER_PROFILES: tuple[HeaderProfile, ...] = ("atartape", "tartape3")

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
_RAW_TYPEFLAGS = {kind.value: flag for kind, flag in _TYPEFLAGS.items()}


class HeaderError(ArchiveFormatError, ValueError):
    """A block is not a valid TAR header (bad checksum, bad number field)."""


def padding(size: int) -> int:
    """Zero bytes after ``size`` bytes of content, up to the next 512-byte boundary."""
    return -size % BLOCK_SIZE


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
        raise InvalidArgumentError(f"{value} does not fit a {width}-byte numeric field")
    if value >= 0:
        return b"\x80" + value.to_bytes(width - 1, "big")
    # Negative values: two's complement over the whole field, whose first byte is then 0xff.
    return ((1 << (8 * width)) + value).to_bytes(width, "big")


_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_ZERO_ID = b"0000000\0"  # uid, gid, devmajor and devminor: scrubbed to 0
_NUL_ID = bytes(8)  # devmajor and devminor as tartape 3 leaves them
_MAGIC = b"ustar\0"
_VERSION = b"00"
# The checksum counts its own field as 8 spaces; the constant fields add the same every time.
_CONSTANT_SUM = 4 * sum(_ZERO_ID) + sum(_MAGIC) + sum(_VERSION) + 8 * 0x20


def encode_header(
    path: bytes, kind: EntryKind, size: int, mode: int, mtime: int, linkname: bytes = b""
) -> bytes:
    """The 512-byte header of one tape entry.

    ``path`` is the archive path as bytes, without a trailing slash. ``size`` is the content
    size (0 for directories and symlinks). Raises ``ValueError`` if the path or link target does
    not fit a USTAR header (see :mod:`atartape.paths`).
    """
    return encode_raw(path, kind.value, size, mode, mtime, linkname)


@dataclass(frozen=True, slots=True)
class Owner:
    """Who owns an entry, as a header can say it (``record(..., anonymize=False)``).

    ``uname`` and ``gname`` are at most 32 bytes; ids of 8 octal digits or more are written in
    GNU base-256.
    """

    uid: int
    gid: int
    uname: bytes = b""
    gname: bytes = b""

    def problem(self) -> str | None:
        """Why this owner does not fit a header, or ``None``."""
        if len(self.uname) > 32 or len(self.gname) > 32:
            return "user or group name is longer than 32 bytes"
        if not (0 <= self.uid < 1 << 56 and 0 <= self.gid < 1 << 56):
            return f"uid {self.uid} or gid {self.gid} does not fit a header"
        return None


def encode_raw(
    path: bytes,
    kind: str,
    size: int,
    mode: int,
    mtime: int,
    linkname: bytes,
    owner: Owner | None = None,
    profile: HeaderProfile = "atartape",
) -> bytes:
    """:func:`encode_header` with the kind as its string value: the form index rows carry.

    ``owner`` (``None``: scrubbed, uid and gid 0 and no names) fills the ownership fields.
    ``profile="tartape3"`` writes the header tartape 3 writes for the same fields (see the
    module docstring).
    """
    is_dir = kind == "dir"
    tartape = profile == "tartape3"
    if len(path) < paths.NAME_FIELD:  # the common case: no split, and room for a dir's slash
        prefix, name = b"", path + b"/" if is_dir else path
    else:
        split = (
            _tartape_folder_name(path)
            if tartape and is_dir
            else paths.header_name(path, is_dir=is_dir)
        )
        if split is None:
            raise InvalidArgumentError(f"path {path!r} does not fit a USTAR header")
        prefix, name = split
    if len(linkname) > paths.MAX_LINKNAME:
        raise InvalidArgumentError(f"symlink target {linkname!r} does not fit a USTAR header")
    typeflag = _RAW_TYPEFLAGS[kind]
    mode_field = b"%07o\0" % (mode & 0o7777)
    size_field = b"%011o\0" % size if size < _OCTAL_LIMIT_12 else encode_number(size, 12)
    mtime_field = b"%011o\0" % mtime if 0 <= mtime < _OCTAL_LIMIT_12 else encode_number(mtime, 12)
    checksum = (
        _CONSTANT_SUM
        + sum(name)
        + sum(prefix)
        + sum(linkname)
        + sum(mode_field)
        + sum(size_field)
        + sum(mtime_field)
        + typeflag[0]
    )
    uid = gid = _ZERO_ID
    uname = gname = b""
    if owner is not None:
        uid, gid = encode_number(owner.uid, 8), encode_number(owner.gid, 8)
        uname, gname = owner.uname, owner.gname
        checksum += sum(uid) + sum(gid) - 2 * sum(_ZERO_ID) + sum(uname) + sum(gname)
    devices = _ZERO_ID
    if tartape:
        devices = _NUL_ID
        checksum -= 2 * sum(_ZERO_ID)
    return _HEADER.pack(
        name,
        mode_field,
        uid,
        gid,
        size_field,
        mtime_field,
        b"%06o\0 " % checksum,
        typeflag,
        linkname,
        _MAGIC,
        _VERSION,
        uname,
        gname,
        devices,
        devices,
        prefix,
    )


def _tartape_folder_name(path: bytes) -> tuple[bytes, bytes] | None:
    """A folder's ``(prefix, name)`` as tartape 3 cuts it: its path with a trailing slash, at
    the last ``/`` before that slash leaving at most 155 bytes of prefix and 100 of name."""
    slashed = path + b"/"
    if len(slashed) > paths.MAX_PATH:
        return None
    cut = slashed.rfind(b"/", 0, min(paths.PREFIX_FIELD + 1, len(slashed) - 1))
    if cut <= 0 or len(slashed) - cut - 1 > paths.NAME_FIELD:
        return None
    return slashed[:cut], slashed[cut + 1 :]


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
    # Read as signed chars, each byte of 0x80 and more counts 256 less (the checksum field is
    # read as spaces, which are not).
    high = sum(1 for b in block[:148] if b >= 0x80) + sum(1 for b in block[156:] if b >= 0x80)
    signed = unsigned - 256 * high
    return unsigned, signed


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
