"""Archive members: TAR headers and their PAX/GNU extensions, read into :class:`Member` values.

Pure code, no I/O and no async. A :class:`HeaderReader` is a pull parser (think h11): it says
where it is (:attr:`HeaderReader.offset`) and how many bytes it wants next
(:meth:`HeaderReader.want`); the caller reads them (fewer at the end of the archive) and passes
them to :meth:`HeaderReader.feed`, which returns a :class:`Member`, the :class:`ArchiveEnd`, or
``None`` when it needs more. The member's data is not read: the next header is at
``member.next_offset``, where the reader continues.

Formats read: v7, USTAR, old GNU and GNU (``L``/``K`` long names and links, base-256 numbers,
dump directories, volume labels, sparse files with their extension blocks), POSIX PAX (``x``
and ``g`` records; the GNU sparse encodings 0.0, 0.1 and 1.0) and star. How conflicting or
malformed extensions are resolved (see ``tests/data/archives/NOTES.md`` for the evidence):

- several ``x`` headers before one member: the last one counts, whole (GNU tar, Go);
  several ``L`` or ``K``: the last one, read up to its first NUL in whole blocks (GNU tar: a
  size field that ends before the NUL does not cut the name);
- ``g`` records hold for every later member until the next ``g`` header, which replaces the
  whole global set (GNU tar; POSIX would accumulate them per key, tarfile does); an empty
  ``path`` or ``linkpath`` value, local or global, is used as is (GNU tar and tarfile: an empty
  name), and an empty ``size`` is malformed;
- ``GNU.sparse.name`` names the member (local or global, any type), over ``path`` (GNU tar);
- a malformed ``mtime`` record is ignored (the header's mtime stays); a malformed or negative
  ``size`` is fatal; a NUL in a record key, or in a ``path``, ``linkpath`` or
  ``GNU.sparse.name`` value, is fatal; a record without its final newline is fatal when it sets
  one of those keys, and ignored otherwise;
- an ``S`` header without the old-GNU magic is a plain file (GNU tar ignores its map);
- a GNU sparse member whose real size no record gives is refused (GNU tar lists its stored
  size but extracts it to the end of its map: no answer to match);
- a file (``0`` or NUL type) whose name ends with a slash is a directory whose data, if any,
  is skipped (GNU tar);
- directories and hard links carry no data whatever their size field says; symlinks,
  devices and FIFOs have no content, but a size field is skipped as data (both as GNU tar
  reads them; tarfile skips nothing for these); a GNU dump directory (``D``) and headers of
  other types (Solaris ACLs ``A``, volume labels ``V``, multi-volume continuations ``M``...)
  are skipped by their size;
- the prefix field is joined to the name only with the POSIX magic (``ustar\\0``; 131 bytes of
  it for star headers), never in an old-GNU header, as GNU tar reads them (Go and tarfile join
  it there when the atime/ctime fields do not parse, for a bug of Go's writer before 1.8).

Malformed input raises :class:`~atartape.ArchiveFormatError` carrying the offset of the offending
header.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ..errors import ArchiveFormatError
from . import paths
from .header import BLOCK_SIZE, ZERO_BLOCK, padding
from .sparse import (
    MAX_REGIONS,
    MapReader,
    SparseError,
    SparseMap,
    check_map,
    oldgnu_entries,
    pax00_entries,
    pax01_entries,
)

__all__ = [
    "ArchiveEnd",
    "HeaderReader",
    "Member",
    "MemberType",
    "SparseMap",
    "lookup_key",
    "normalize_name",
    "parse_number",
    "parse_pax_records",
    "pax_record_list",
]

MAX_EXTENSION_SIZE = 8 * 1024 * 1024
"""The largest PAX or GNU long-name payload accepted: a guard against absurd allocations."""


class MemberType(str, enum.Enum):
    """What a member is. A ``str`` enum: ``MemberType.FILE == "file"``.

    A GNU sparse file is a ``FILE`` (its :attr:`Member.sparse` says where its data goes).
    ``OTHER`` is a header of a type that is no file system object: a Solaris ACL (``A``), a GNU
    volume label (``V``), a multi-volume continuation (``M``), or any unknown type flag
    (:attr:`Member.typeflag` says which). Its data is skipped; extraction leaves it out.
    """

    FILE = "file"
    DIRECTORY = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR_DEVICE = "chardev"
    BLOCK_DEVICE = "blockdev"
    FIFO = "fifo"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


_TYPES = {
    b"0": MemberType.FILE,
    b"\0": MemberType.FILE,
    b"7": MemberType.FILE,  # contiguous file
    b"S": MemberType.FILE,  # old-GNU sparse file
    b"1": MemberType.HARDLINK,
    b"2": MemberType.SYMLINK,
    b"3": MemberType.CHAR_DEVICE,
    b"4": MemberType.BLOCK_DEVICE,
    b"5": MemberType.DIRECTORY,
    b"D": MemberType.DIRECTORY,  # GNU dump directory: its data lists the folder, skipped
    b"6": MemberType.FIFO,
}
# Header-only types: no data, whatever the size field says (GNU tar). Symlinks, devices and
# FIFOs have no content either, but GNU tar skips as many bytes as their size field says.
_NO_DATA = frozenset({MemberType.DIRECTORY, MemberType.HARDLINK})
_NO_CONTENT = frozenset(
    {MemberType.SYMLINK, MemberType.CHAR_DEVICE, MemberType.BLOCK_DEVICE, MemberType.FIFO}
)

GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
GNU_SPARSE = b"S"
PAX_LOCAL = frozenset({b"x", b"X"})  # "X": the Solaris spelling
PAX_GLOBAL = b"g"
EXTENSION_FLAGS = frozenset({GNU_LONGNAME, GNU_LONGLINK, PAX_GLOBAL, *PAX_LOCAL})

_POSIX_MAGIC = b"ustar\0"
_GNU_MAGIC = b"ustar  \0"  # magic and version of the old GNU format
_STAR_TRAILER = b"tar\0"  # star: at offset 508, the prefix field is 131 bytes
# PAX keys whose malformed records are fatal, and whose values may hold no NUL.
_STRICT_KEYS = frozenset({"path", "linkpath", "size", "GNU.sparse.name"})
_NUL_FREE_KEYS = frozenset({"path", "linkpath", "GNU.sparse.name"})
_PAX_TIME = re.compile(rb"-?[0-9]+(?:\.[0-9]*)?")


@dataclass(frozen=True, slots=True)
class Member:
    """One member of an archive, with every extension applied.

    ``name`` is the member's path as stored, without trailing slashes, decoded from UTF-8 with
    ``surrogateescape`` (so undecodable bytes survive). ``size`` is the size of its content: for
    a file, the number of bytes :meth:`Archive.read` returns (the real size of a sparse file,
    holes included); 0 for every other type. ``mode`` is the permission bits (``& 0o7777``),
    ``mtime`` seconds since the epoch (fractional when a PAX record gives it), ``linkname`` the
    target of a symlink or hard link ("" otherwise), ``typeflag`` the header's type flag.

    ``header_offset`` is where the member's first header starts (its first PAX or GNU extension
    header, if it has one), ``data_offset`` where its stored data starts, and ``stored_size``
    how many bytes are stored there (the size field: for a sparse file, its data regions and the
    PAX 1.0 map; for a ``D`` or ``OTHER`` member, the data that is skipped). ``sparse`` is set
    for a GNU sparse file: its map.
    """

    name: str
    size: int
    type: MemberType
    mode: int
    mtime: float
    linkname: str
    header_offset: int
    data_offset: int
    stored_size: int = -1  # -1: the same as ``size``
    sparse: SparseMap | None = None
    typeflag: str = "0"

    def __post_init__(self) -> None:
        if self.stored_size < 0:
            object.__setattr__(self, "stored_size", self.size)

    @property
    def next_offset(self) -> int:
        """Offset just past the member's data and padding: where the next header starts."""
        return self.data_offset + self.stored_size + padding(self.stored_size)

    @property
    def key(self) -> str:
        """The name as lookups compare it (see :func:`lookup_key`)."""
        return lookup_key(self.name)

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
class ArchiveEnd:
    """Where the members of an archive end (``offset``), and how.

    ``marker`` is true when a zero block was found there (the end-of-archive marker, or the
    first of its blocks); false when the archive simply ended at a header boundary, so it may
    have been truncated at that point. (An archive that ends inside a block is no end: the
    reader raises.)
    """

    offset: int
    marker: bool


def normalize_name(name: str) -> str:
    """A member name as the reader reports it: without trailing slashes."""
    stripped = name.rstrip("/")
    return stripped if stripped else name


def lookup_key(name: str) -> str:
    """The form in which names are compared: ``./a//b/`` and ``a/b`` are the same member.

    Empty and ``.`` components are dropped (a leading ``/`` is kept; ``..`` is kept as is).
    Extraction writes both spellings to the same path, so the later one wins for both.
    """
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return ("/" if name.startswith("/") else "") + "/".join(parts)


# ----------------------------------------------------------------------------- numbers


def parse_number(raw: bytes) -> int:
    """A numeric header field: octal ASCII (ended by NUL or space, leading spaces allowed) or
    GNU base-256 (first byte with the 0x80 bit; two's complement when 0x40 is set too).

    Raises ``ValueError`` for anything else.
    """
    if raw and raw[0] & 0x80:
        value = int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
        if raw[0] & 0x40:
            value -= 1 << (8 * len(raw) - 1)
        return value
    end = raw.find(b"\0")
    text = (raw if end < 0 else raw[:end]).strip(b" ")
    if not text:
        return 0
    if text.strip(b"01234567"):
        raise ValueError(f"bad numeric field {raw!r}")
    return int(text, 8)


def _cstring(raw: bytes) -> bytes:
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _checksums(block: bytes) -> tuple[int, int]:
    """The unsigned and signed sums of a header with its checksum field read as spaces."""
    unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
    high = sum(1 for b in block if b >= 0x80) - sum(1 for b in block[148:156] if b >= 0x80)
    signed = unsigned - 256 * high  # each byte over 0x7f counted as a negative number
    return unsigned, signed


# ----------------------------------------------------------------------------- PAX records


def pax_record_list(
    payload: bytes, *, strict: frozenset[str] = _STRICT_KEYS
) -> list[tuple[str, bytes]]:
    """The ``key=value`` records of a PAX extended header (``"<len> <key>=<value>\\n"`` each), in
    order (a key may repeat: the GNU sparse 0.0 map does).

    Keys are decoded as UTF-8; values stay bytes. Trailing NUL padding is ignored. A record whose
    last byte is not a newline is dropped, unless its key is in ``strict``; raises
    ``ValueError`` for that and for any other malformed record, or a NUL in a key.
    """
    records: list[tuple[str, bytes]] = []
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
        if length <= len(digits) + 1 or len(record) != length:
            raise ValueError(f"PAX record at offset {pos} has a bad length ({length})")
        newline = record.endswith(b"\n")
        body = record[len(digits) + 1 : -1 if newline else None]
        raw_key, equals, value = body.partition(b"=")
        if not equals or not raw_key:
            raise ValueError(f"PAX record at offset {pos} has no key=value")
        if b"\0" in raw_key:
            raise ValueError(f"PAX record key {raw_key!r} contains a NUL byte")
        key = raw_key.decode("utf-8", "surrogateescape")
        pos += length
        if not newline:
            if key in strict:
                raise ValueError(f"the PAX record {key!r} does not end with a newline")
            continue  # a malformed record nothing here uses: dropped (libarchive warns)
        records.append((key, value))
    return records


def parse_pax_records(payload: bytes) -> dict[str, bytes]:
    """The records of a PAX extended header as a dict (the last value of a repeated key)."""
    return dict(pax_record_list(payload))


# ----------------------------------------------------------------------------- raw header


@dataclass(frozen=True, slots=True)
class _Raw:
    name: bytes
    mode: int
    size: int
    mtime: int
    typeflag: bytes
    linkname: bytes
    gnu: bool  # old-GNU magic: the sparse fields mean something
    posix: bool  # POSIX magic: PAX sparse records describe it as GNU tar reads them


def _decode(block: bytes, offset: int) -> _Raw:
    """Check the checksum and decode the fields a reader uses; lax about the others."""

    def number(start: int, width: int, what: str) -> int:
        try:
            return parse_number(block[start : start + width])
        except ValueError:
            raise ArchiveFormatError(
                f"not a valid TAR header: bad {what} field {block[start : start + width]!r}",
                offset=offset,
            ) from None

    if number(148, 8, "checksum") not in _checksums(block):
        raise ArchiveFormatError("not a valid TAR header: checksum does not match", offset=offset)
    magic = block[257:265]
    name = _cstring(block[0:100])
    prefix = b""
    if magic[:6] == _POSIX_MAGIC:
        star = block[508:512] == _STAR_TRAILER
        prefix = _cstring(block[345 : 476 if star else 500])
    if prefix:
        name = prefix + b"/" + name
    return _Raw(
        name=name,
        mode=number(100, 8, "mode"),
        size=number(124, 12, "size"),
        mtime=number(136, 12, "mtime"),
        typeflag=block[156:157],
        linkname=_cstring(block[157:257]),
        gnu=magic == _GNU_MAGIC,
        posix=magic[:6] == _POSIX_MAGIC,
    )


# ----------------------------------------------------------------------------- the reader


class _State(enum.Enum):
    HEADER = "header"
    PAYLOAD = "extension payload"
    GNU_SPARSE_EXT = "old-GNU sparse extension block"
    SPARSE_MAP = "GNU sparse 1.0 map"


@dataclass(slots=True)
class _Pending:
    """A member whose header is read but whose sparse map still needs more blocks."""

    raw: _Raw
    header_at: int  # offset of the member's own header block
    fields: dict[str, object]
    entries: list[tuple[int, int]]
    real_size: int
    map_reader: MapReader | None = None
    map_read: int = 0  # bytes of the 1.0 map fed so far


class HeaderReader:
    """Turns the bytes of an archive into members, one request at a time (see the module).

    ``start`` is the offset of the first header. PAX global records (``g``) hold for every later
    member; local ones (``x``) and GNU long names hold for the next member only.
    """

    def __init__(self, start: int = 0) -> None:
        self.offset = start
        self._state = _State.HEADER
        self._want = BLOCK_SIZE
        self._ext_flag = b""
        self._ext_at = 0
        self._global: dict[str, bytes] = {}
        self._local: list[tuple[str, bytes]] | None = None
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None
        self._first_offset: int | None = None  # first extension header of the pending member
        self._pending: _Pending | None = None
        self.end: ArchiveEnd | None = None

    @property
    def pending(self) -> bool:
        """Whether extension records are waiting for the member they describe."""
        return self._first_offset is not None

    def want(self) -> int:
        """How many bytes to read at :attr:`offset` next (0 once the archive has ended)."""
        return 0 if self.end is not None else self._want

    def feed(self, data: bytes) -> Member | ArchiveEnd | None:
        """Take the bytes asked for (fewer only where the archive ends) and move on.

        Returns a :class:`Member` (the reader then stands at its ``next_offset``), the
        :class:`ArchiveEnd`, or ``None`` when it wants more. Raises :class:`ArchiveFormatError`
        for a corrupt or truncated archive.
        """
        if self.end is not None:
            return self.end
        if self._state is _State.HEADER:
            return self._header(data)
        if len(data) < self._want and self._state is not _State.SPARSE_MAP:
            raise ArchiveFormatError(
                f"archive is truncated inside an {self._state.value} "
                f"({len(data)} of {self._want} bytes)",
                offset=self.offset,
            )
        if self._state is _State.PAYLOAD:
            self._payload(data)
            return None
        if self._state is _State.GNU_SPARSE_EXT:
            return self._gnu_extension(data)
        return self._sparse_map(data)

    # -------------------------------------------------------------- headers

    def _header(self, block: bytes) -> Member | ArchiveEnd | None:
        offset = self.offset
        if not block:
            if offset == 0:
                raise ArchiveFormatError("the archive is empty: 0 bytes, no header", offset=0)
            if self.pending:
                raise ArchiveFormatError(
                    "archive ends after an extension header, without its member", offset=offset
                )
            self.end = ArchiveEnd(offset, marker=False)  # the archive ends here, maybe cut
            return self.end
        if len(block) != BLOCK_SIZE:  # zeros too: an end marker cut short is a cut
            raise ArchiveFormatError(
                f"archive is truncated inside a header block: {len(block)} of {BLOCK_SIZE} bytes",
                offset=offset,
            )
        if block == ZERO_BLOCK:
            if self.pending:
                raise ArchiveFormatError(
                    "archive ends after an extension header, without its member", offset=offset
                )
            self.end = ArchiveEnd(offset, marker=True)
            return self.end
        raw = _decode(block, offset)
        if raw.typeflag in EXTENSION_FLAGS:
            if not 0 <= raw.size <= MAX_EXTENSION_SIZE:
                raise ArchiveFormatError(
                    f"extension header of {raw.size} bytes (allowed: 0 to {MAX_EXTENSION_SIZE})",
                    offset=offset,
                )
            if self._first_offset is None and raw.typeflag != PAX_GLOBAL:
                self._first_offset = offset
            self._ext_flag, self._ext_at = raw.typeflag, offset
            size = raw.size
            if raw.typeflag in (GNU_LONGNAME, GNU_LONGLINK):
                size += padding(size)  # GNU tar reads the name to its first NUL, blocks whole
            self._expect(_State.PAYLOAD, offset + BLOCK_SIZE, size)
            return None
        return self._member(raw, block, offset)

    def _expect(self, state: _State, offset: int, size: int) -> None:
        self._state, self.offset, self._want = state, offset, size

    def _payload(self, payload: bytes) -> None:
        flag, at = self._ext_flag, self._ext_at
        next_header = self.offset + len(payload) + padding(len(payload))
        if flag == GNU_LONGNAME:
            self._long_name = _cstring(payload)
        elif flag == GNU_LONGLINK:
            self._long_link = _cstring(payload)
        else:
            try:
                records = pax_record_list(payload)
            except ValueError as exc:
                raise ArchiveFormatError(f"bad PAX header: {exc}", offset=at) from None
            if flag == PAX_GLOBAL:
                self._global = dict(records)  # the whole set, as GNU tar reads it
            else:
                self._local = records  # the last 'x' header counts, whole
        self._expect(_State.HEADER, next_header, BLOCK_SIZE)

    def _member(self, raw: _Raw, block: bytes, offset: int) -> Member | None:
        local = dict(self._local or ())

        def record(key: str) -> bytes | None:
            """A PAX value (empty ones too): the local record, else the global one."""
            value = local[key] if key in local else self._global.get(key)
            if value and key in _NUL_FREE_KEYS and b"\0" in value:
                raise ArchiveFormatError(
                    f"PAX {key} value contains a NUL byte", offset=self._first_offset or offset
                )
            return value

        name = self._long_name if self._long_name is not None else raw.name
        path_record = record("path")
        name = name if path_record is None else path_record
        sparse_name = record("GNU.sparse.name")
        if sparse_name:  # GNU tar: it names the member, whatever its type, over ``path``
            name = sparse_name
        linkname = self._long_link if self._long_link is not None else raw.linkname
        link_record = record("linkpath")
        linkname = linkname if link_record is None else link_record
        size = raw.size
        size_record = record("size")
        if size_record is not None:
            if not size_record.isdigit():
                raise ArchiveFormatError(
                    f"bad PAX size record {size_record[:40]!r}", offset=self._first_offset
                )
            size = int(size_record)
        if size < 0:
            raise ArchiveFormatError(f"negative size field ({size})", offset=offset)
        mtime: float = raw.mtime
        mtime_record = record("mtime")
        if mtime_record is not None and _PAX_TIME.fullmatch(mtime_record):
            mtime = float(mtime_record)  # a malformed mtime is ignored: the header's stays

        text = paths.from_bytes(name)
        kind = _TYPES.get(raw.typeflag, MemberType.OTHER)
        slashed = raw.typeflag in (b"\0", b"0") and text.endswith("/")
        if slashed:  # a v7 directory: a "file" whose name ends with a slash (GNU tar: '0' too)
            kind = MemberType.DIRECTORY
        fields: dict[str, object] = {
            "name": normalize_name(text),
            "type": kind,
            "mode": raw.mode & 0o7777,
            "mtime": mtime,
            "linkname": paths.from_bytes(linkname)
            if kind in (MemberType.SYMLINK, MemberType.HARDLINK)
            else "",
            "header_offset": offset if self._first_offset is None else self._first_offset,
            "data_offset": offset + BLOCK_SIZE,
            "typeflag": raw.typeflag.decode("latin-1"),
        }
        sparse_keys = kind is MemberType.FILE and any(
            k.startswith("GNU.sparse.") and k != "GNU.sparse.name" for k in local
        )
        records = self._local or []
        self._local = None
        self._long_name = self._long_link = None
        self._first_offset = None
        if (raw.typeflag == GNU_SPARSE and raw.gnu) or sparse_keys:
            return self._sparse(raw, block, offset, fields, records, size)
        if raw.typeflag == b"D" or slashed or kind is MemberType.OTHER or kind in _NO_CONTENT:
            fields.update(size=0, stored_size=size)  # data skipped: no content
        elif kind in _NO_DATA:
            fields.update(size=0, stored_size=0)
        else:
            fields.update(size=size, stored_size=size)
        return self._emit(Member(**fields))  # type: ignore[arg-type]

    def _emit(self, member: Member) -> Member:
        self._expect(_State.HEADER, member.next_offset, BLOCK_SIZE)
        return member

    # -------------------------------------------------------------- sparse files

    def _sparse_error(self, exc: Exception, at: int) -> ArchiveFormatError:
        return ArchiveFormatError(f"bad GNU sparse member: {exc}", offset=at)

    def _sparse(
        self,
        raw: _Raw,
        block: bytes,
        offset: int,
        fields: dict[str, object],
        records: list[tuple[str, bytes]],
        stored: int,
    ) -> Member | None:
        at = int(fields["header_offset"])  # type: ignore[call-overload]
        fields["stored_size"] = stored
        local = dict(records)
        try:
            if raw.typeflag == GNU_SPARSE:
                entries, _ = oldgnu_entries(block, 386, 4, parse_number)
                real = parse_number(block[483:495])
                pending = _Pending(raw, offset, fields, entries, real)
                if block[482]:  # extension blocks follow, whatever the header's entries say
                    self._pending = pending
                    self._expect(_State.GNU_SPARSE_EXT, offset + BLOCK_SIZE, BLOCK_SIZE)
                    return None
                return self._finish_sparse(pending, "oldgnu")
            if not raw.posix:  # GNU tar loses its place there: no answer to match
                raise SparseError("PAX sparse records before a header without the POSIX magic")
            name = local.get("GNU.sparse.name")
            if name:
                fields["name"] = normalize_name(paths.from_bytes(name))
            real_raw = local.get("GNU.sparse.realsize") or local.get("GNU.sparse.size")
            major, minor = local.get("GNU.sparse.major"), local.get("GNU.sparse.minor")
            if major is not None or minor is not None:
                if (major, minor) != (b"1", b"0"):
                    raise SparseError(f"unknown GNU sparse version {major!r}.{minor!r}")
                pending = _Pending(raw, offset, fields, [], -1, MapReader(stored))
                if real_raw is not None:
                    pending.real_size = _sparse_number(real_raw, "real size")
                self._pending = pending
                reader = pending.map_reader
                assert reader is not None
                self._expect(_State.SPARSE_MAP, offset + BLOCK_SIZE, reader.want())
                return None
            if "GNU.sparse.map" in local:
                fmt, entries = "pax-0.1", pax01_entries(local["GNU.sparse.map"])
            else:
                fmt, entries = "pax-0.0", pax00_entries(records)
            real = -1 if real_raw is None else _sparse_number(real_raw, "real size")
            return self._finish_sparse(_Pending(raw, offset, fields, entries, real), fmt)
        except (SparseError, ValueError) as exc:
            raise self._sparse_error(exc, at) from None

    def _gnu_extension(self, block: bytes) -> Member | None:
        pending = self._pending
        assert pending is not None
        at = int(pending.fields["header_offset"])  # type: ignore[call-overload]
        try:
            entries, _ = oldgnu_entries(block, 0, 21, parse_number)
        except SparseError as exc:
            raise self._sparse_error(exc, at) from None
        pending.entries.extend(entries)
        if len(pending.entries) > MAX_REGIONS:
            raise self._sparse_error(SparseError(f"more than {MAX_REGIONS} map entries"), at)
        pending.fields["data_offset"] = self.offset + BLOCK_SIZE
        if block[504]:
            self._expect(_State.GNU_SPARSE_EXT, self.offset + BLOCK_SIZE, BLOCK_SIZE)
            return None
        return self._finish_sparse(pending, "oldgnu")

    def _sparse_map(self, data: bytes) -> Member | None:
        pending = self._pending
        assert pending is not None
        assert pending.map_reader is not None
        at = int(pending.fields["header_offset"])  # type: ignore[call-overload]
        try:
            entries = pending.map_reader.feed(data)
        except SparseError as exc:
            raise self._sparse_error(exc, at) from None
        if entries is None:
            if len(data) < self._want:
                raise ArchiveFormatError(
                    "archive is truncated inside a GNU sparse 1.0 map", offset=self.offset
                )
            self._expect(_State.SPARSE_MAP, self.offset + len(data), pending.map_reader.want())
            return None
        pending.entries = entries
        return self._finish_sparse(pending, "pax-1.0")

    def _finish_sparse(self, pending: _Pending, fmt: str) -> Member:
        self._pending = None
        fields = pending.fields
        at = int(fields["header_offset"])  # type: ignore[call-overload]
        stored = int(fields["stored_size"])  # type: ignore[call-overload]
        real = pending.real_size
        if real < 0:  # GNU tar lists the stored size, and extracts to the map's end: refuse
            raise self._sparse_error(SparseError("no record gives its real size"), at)
        map_size = pending.map_reader.map_size if pending.map_reader is not None else 0
        try:
            sparse = check_map(fmt, pending.entries, real, stored, map_size)
        except SparseError as exc:
            raise self._sparse_error(exc, at) from None
        fields.update(size=real, sparse=sparse, type=MemberType.FILE)
        return self._emit(Member(**fields))  # type: ignore[arg-type]


def _sparse_number(raw: bytes, what: str) -> int:
    text = raw.strip()
    if not text.isdigit():
        raise SparseError(f"the sparse {what} {raw[:40]!r} is not a decimal number")
    return int(text)
