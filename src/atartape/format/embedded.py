"""The embedded index: a CSV member that lets a reader fetch one file without a scan.

A tape recorded with ``embed_index=True`` ends, before its footer, with a member named
``.tarindex_<first 16 hex of the fingerprint>.csv`` whose rows are ``name,size,start_block,blocks``
(512-byte blocks, the header included). Pure code, no I/O: this module builds the member
(:func:`index_member`), parses it (:func:`parse_index_csv`) and finds it in the tail of an archive,
stepping back block by block from the end (:func:`locate_index`).
"""

from __future__ import annotations

import csv
import enum
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import paths
from .header import BLOCK_SIZE, ZERO_BLOCK, EntryKind, HeaderError, decode_header, padding
from .layout import Entry
from .members import Member, MemberType, normalize_name

__all__ = [
    "INDEX_COLUMNS",
    "NEED_MORE",
    "IndexLocation",
    "IndexRow",
    "NeedMore",
    "build_index_csv",
    "index_member",
    "index_name",
    "index_row",
    "is_index_name",
    "locate_index",
    "parse_index_csv",
]

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
