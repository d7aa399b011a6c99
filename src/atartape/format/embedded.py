"""The embedded index: a CSV member that lets a reader fetch one file without a scan.

A tape recorded with ``embed_index=True`` ends, before its footer, with a member named
``.tarindex_<first 16 hex of the fingerprint>.csv`` whose rows are ``name,size,start_block,blocks``
(512-byte blocks, the header included). Pure code, no I/O: this module builds the member
(:func:`index_member`), parses it (:func:`parse_index_csv`), finds it from the tail of an archive
(:func:`locate_index`: the last row says where the index's header must be, so the search costs
the same whatever the last member is) and checks its rows against the archive's layout
(:func:`check_rows`). An index is only a claim: a reader confirms each row with the header found
at its offset.
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
    "IndexCandidate",
    "IndexLocation",
    "IndexRow",
    "NeedMore",
    "build_index_csv",
    "check_index_header",
    "check_rows",
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
    are not non-negative integers (or ``blocks`` is 0), and for text that is not CSV.
    """
    text = data.decode("utf-8", "surrogateescape")
    rows: list[IndexRow] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    number = 0
    try:
        for number, fields in enumerate(reader, 1):
            if number == 1 and tuple(fields) == INDEX_COLUMNS:
                continue
            if not fields:
                continue
            if len(fields) != 4:
                raise ValueError(f"index line {number} has {len(fields)} fields, not 4")
            name, size, start, blocks = fields
            if not (_is_number(size) and _is_number(start) and _is_number(blocks)):
                raise ValueError(f"index line {number} has bad numbers: {fields[1:]!r}")
            if int(blocks) < 1:
                raise ValueError(f"index line {number} spans no block")
            rows.append(IndexRow(normalize_name(name), int(size), int(start), int(blocks)))
    except csv.Error as exc:  # a NUL, a field over the csv module's limit (128 KiB), ...
        raise ValueError(f"index line {number + 1} is not CSV: {exc}") from None
    return rows


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 20


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


@dataclass(frozen=True, slots=True)
class IndexCandidate:
    """What the tail of an archive says about an index it may end with: the index's header
    must be the block at ``header_offset`` (:func:`check_index_header` decides), and its content
    must end at ``text_end``, in the block that ends at ``content_end``."""

    header_offset: int
    text_end: int
    content_end: int


class NeedMore(enum.Enum):
    """:func:`locate_index` needs bytes from further back in the archive."""

    NEED_MORE = "need more"


NEED_MORE = NeedMore.NEED_MORE

# The end of an index's last row: ``,size,start_block,blocks`` and its line end.
_LAST_ROW = re.compile(rb",([0-9]{1,20}),([0-9]{1,20}),([0-9]{1,20})\r?\n\Z")
_COLUMNS_LINE = (",".join(INDEX_COLUMNS) + "\r\n").encode()
_LAST_ROW_BYTES = 3 * 21 + 2  # the most bytes _LAST_ROW can match


def locate_index(tail: bytes, tail_offset: int) -> IndexLocation | IndexCandidate | NeedMore | None:
    """Find where an embedded index would be, from the last bytes of an archive.

    ``tail`` holds the archive's bytes from ``tail_offset`` (a multiple of 512) to its end. From
    the end: the end-of-archive zero blocks (at least one), then the index's last block: text
    (no NUL but its padding) ending with a row ``...,size,start_block,blocks\r\n``. That row
    names the last member before the index, so the index's header is the block right after
    that member: the search never walks back through the text (a large text member last costs
    nothing more than a small one).

    Returns the :class:`IndexLocation` when the header is in ``tail`` and checks out, an
    :class:`IndexCandidate` when it lies before ``tail`` (read that block and pass it to
    :func:`check_index_header`), :data:`NEED_MORE` when ``tail`` holds nothing but zero blocks
    (or too little of the last row) and ``tail_offset > 0``, and ``None`` when the archive does
    not end with an index.
    """
    if tail_offset % BLOCK_SIZE or len(tail) % BLOCK_SIZE:
        return None
    view = memoryview(tail)
    at = len(tail)
    while at > 0 and view[at - BLOCK_SIZE : at] == ZERO_BLOCK:
        at -= BLOCK_SIZE
    if at == 0:
        return NEED_MORE if tail_offset > 0 else None
    if at == len(tail):
        return None  # no end-of-archive marker: not a finished archive
    last = bytes(view[at - BLOCK_SIZE : at]).rstrip(b"\0")
    if b"\0" in last:
        return None  # the last block before the marker is not text
    content_end = tail_offset + at
    text_end = content_end - BLOCK_SIZE + len(last)
    text = bytes(view[max(0, at - BLOCK_SIZE - _LAST_ROW_BYTES) : at - BLOCK_SIZE]) + last
    match = _LAST_ROW.search(text)
    if match is not None:
        header_offset = (int(match[2]) + int(match[3])) * BLOCK_SIZE
    elif text.endswith(_COLUMNS_LINE):  # an index without rows: one block of content
        header_offset = content_end - 2 * BLOCK_SIZE
    elif len(text) < _LAST_ROW_BYTES and tail_offset > 0 and at == BLOCK_SIZE:
        return NEED_MORE  # the last row may start before the tail
    else:
        return None
    if not 0 <= header_offset < text_end - BLOCK_SIZE:
        return None
    candidate = IndexCandidate(header_offset, text_end, content_end)
    if header_offset < tail_offset:
        return candidate
    start = header_offset - tail_offset
    return check_index_header(bytes(view[start : start + BLOCK_SIZE]), candidate)


def check_index_header(block: bytes, candidate: IndexCandidate) -> IndexLocation | None:
    """The index's location if ``block`` (read at ``candidate.header_offset``) is the header of
    a regular file named ``.tarindex_*.csv`` whose content ends exactly at
    ``candidate.text_end``; ``None`` otherwise."""
    if len(block) != BLOCK_SIZE or block == ZERO_BLOCK:
        return None
    try:
        raw = decode_header(block)
    except HeaderError:
        return None
    name = normalize_name(paths.from_bytes(raw.name))
    start = candidate.header_offset
    if raw.typeflag not in (b"0", b"\0") or not is_index_name(name):
        return None
    if start + BLOCK_SIZE + raw.size != candidate.text_end:
        return None
    return IndexLocation(name, start, raw.size, raw.mode & 0o7777, raw.mtime)


def check_rows(rows: Sequence[IndexRow], index_offset: int) -> str | None:
    """Why ``rows`` cannot be the index of the archive whose index starts at ``index_offset``,
    or ``None`` when they can: the rows must cover the archive from its first byte to the index,
    each starting where the one before ends, each spanning its header and its content."""
    expected = 0
    for number, row in enumerate(rows, 1):
        if row.start_block * BLOCK_SIZE != expected:
            return (
                f"row {number} ({row.name!r}) starts at block {row.start_block}, not at "
                f"{expected // BLOCK_SIZE}"
            )
        if row.blocks < 1 + (row.size + padding(row.size)) // BLOCK_SIZE:
            return f"row {number} ({row.name!r}) has fewer blocks than its size needs"
        expected = row.end_offset
    if expected != index_offset:
        return f"the rows end at byte {expected}, but the index starts at {index_offset}"
    return None


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
