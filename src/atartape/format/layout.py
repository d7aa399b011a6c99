"""The layout of a tape: which entry covers which byte range, and where a window of it starts.

Pure functions and small immutable values, no I/O. A tape is its entries in order, each taking
``512 + size`` rounded up to 512 bytes, followed by a 1024-byte zero footer. Every byte position is
therefore known from the sizes alone, before the first byte is produced.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import InvalidOffsetError
from . import paths
from .header import (
    BLOCK_SIZE,
    FOOTER_SIZE,
    EntryKind,
    HeaderProfile,
    Owner,
    encode_raw,
    entry_span,
    padding,
)

__all__ = [
    "BLOCK_ROWS",
    "Block",
    "Entry",
    "Window",
    "assign_offsets",
    "block_digest",
    "blocks_of",
    "check_window",
    "entry_at",
    "entry_values",
    "fingerprint",
    "identity",
    "tree_identity",
]


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a tape, as the index promises it.

    ``mtime`` is the whole-second time written to the header; ``mtime_ns`` is the exact time
    the source had at recording, which the integrity check compares against. ``checksum`` is
    the content digest recorded with ``record(..., checksum=...)``; ``listing`` (folders) the
    digest of the names the folder held (see :mod:`atartape.format.folders`).
    ``source_path`` is the entry's path in the recorded folder when the header carries a
    shortened one (``record(..., auto_truncate=True)``); ``owner`` who owns it, when the tape
    keeps owners (``record(..., anonymize=False)``). ``header_profile`` is how its header is
    written: ``"tartape3"`` for the entries of a tartape 3 catalog, whose bytes are tartape's.
    """

    arc_path: str
    kind: EntryKind
    size: int
    mode: int
    mtime: int
    start_offset: int
    linkname: str = ""
    mtime_ns: int = 0
    checksum: str | None = None
    listing: str | None = None
    source_path: str | None = None
    owner: Owner | None = None
    header_profile: HeaderProfile = "atartape"

    @property
    def data_offset(self) -> int:
        """Offset of the first content byte (just past the header)."""
        return self.start_offset + BLOCK_SIZE

    @property
    def end_offset(self) -> int:
        """Offset just past the entry's padding (exclusive)."""
        return self.start_offset + entry_span(self.size)

    @property
    def span(self) -> int:
        return entry_span(self.size)

    @property
    def padding(self) -> int:
        return padding(self.size)

    @property
    def is_file(self) -> bool:
        return self.kind is EntryKind.FILE

    @property
    def is_dir(self) -> bool:
        return self.kind is EntryKind.DIRECTORY

    @property
    def is_symlink(self) -> bool:
        return self.kind is EntryKind.SYMLINK

    def header(self) -> bytes:
        """The entry's 512-byte header."""
        return encode_raw(
            paths.to_bytes(self.arc_path),
            self.kind.value,
            self.size,
            self.mode,
            self.mtime,
            paths.to_bytes(self.linkname),
            self.owner,
            self.header_profile,
        )


def assign_offsets(sizes: Iterable[int]) -> tuple[list[int], int]:
    """Start offsets for entries of the given content sizes, and the total tape size."""
    starts: list[int] = []
    offset = 0
    for size in sizes:
        starts.append(offset)
        offset += entry_span(size)
    return starts, offset + FOOTER_SIZE


def entry_at(starts: Sequence[int], offset: int) -> int:
    """Index of the last entry starting at or before ``offset`` (binary search), -1 if none.

    The caller checks ``offset`` against that entry's end: past it, ``offset`` is in the footer.
    """
    return bisect.bisect_right(starts, offset) - 1


@dataclass(frozen=True, slots=True)
class Window:
    """The bytes ``[start, end)`` of a tape of ``total_size`` bytes: what one play produces.

    Every question about which part of an entry, or of the footer, a play covers is answered
    here, and nowhere else.
    """

    start: int
    end: int
    total_size: int

    @property
    def footer_start(self) -> int:
        """Where the 1024-byte footer starts."""
        return self.total_size - FOOTER_SIZE

    def overlaps(self, start_offset: int, span: int) -> bool:
        """Whether the entry of ``span`` bytes at ``start_offset`` has a byte in the window."""
        return start_offset < self.end and start_offset + span > self.start

    def cut(self, start_offset: int, span: int) -> tuple[int, int]:
        """The part ``[skip, stop)`` of that entry's own bytes that lies in the window."""
        return max(0, self.start - start_offset), min(span, self.end - start_offset)

    @property
    def footer_part(self) -> tuple[int, int]:
        """The part of the footer in the window: ``(offset, length)``."""
        at = max(self.start, self.footer_start)
        return at, max(0, self.end - at)


def check_window(total_size: int, start: int, end: int | None) -> Window:
    """Validate a ``[start, end)`` window of a tape; ``end=None`` means the end of the tape.

    Raises :class:`InvalidOffsetError` for an offset outside ``[0, total_size]``, a window that
    ends before it starts, or an offset that is not an integer.
    """
    if end is None:
        end = total_size
    for name, value in (("start_offset", start), ("end_offset", end)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidOffsetError(f"{name} must be an int, not {type(value).__name__}")
        if not 0 <= value <= total_size:
            raise InvalidOffsetError(
                f"{name} {value} is outside the tape (valid: 0 to {total_size} inclusive)"
            )
    if end < start:
        raise InvalidOffsetError(f"end_offset {end} is before start_offset {start}")
    return Window(start, end, total_size)


def fingerprint(entries: Iterable[Entry]) -> str:
    """The tape's layout: SHA-256 over each entry's path, type, size, mtime, mode, target (and
    owner, when the tape keeps owners): what its headers say.

    Same tree, same fingerprint, same bytes. Offsets follow from sizes, so they need not be
    hashed; the order of the entries is.
    """
    digest = hashlib.sha256(b"atartape-1\n")
    for entry in entries:
        digest.update(paths.to_bytes(entry.arc_path))
        fields = (entry.kind.value.encode(), entry.size, entry.mtime, entry.mode)
        digest.update(b"\0%s\0%d\0%d\0%o\0" % fields)
        digest.update(paths.to_bytes(entry.linkname))
        if entry.owner is not None:  # it is in the header too
            owner = entry.owner
            ids = (owner.uid, owner.gid, owner.uname, owner.gname)
            digest.update(b"\0owner\0%d\0%d\0%s\0%s" % ids)
        if entry.header_profile != "atartape":  # other header bytes for the same fields
            digest.update(b"\0profile\0" + entry.header_profile.encode())
        digest.update(b"\n")
    return digest.hexdigest()


BLOCK_ROWS = 1024
"""How many consecutive rows one digest of the identity's tree covers (the last block may hold
fewer): a window checks the blocks it plays, so its cost is bounded by this, not by the tape."""

IDENTITY_TAG = b"atartape-identity-2\n"


class Block(NamedTuple):
    """A block of consecutive rows of a tape: where its first row starts, how many rows it
    holds and the digest of their values (:func:`block_digest`)."""

    first_offset: int
    rows: int
    digest: bytes


def entry_values(entry: Entry) -> tuple[object, ...]:
    """What the index promises of ``entry``, as a tuple of plain values (ints, bytes, text,
    ``None``): start offset, path, kind, size, mode, mtime, nanosecond mtime, link target,
    digest, folder listing, source path, uid, gid, user and group names, header profile.

    It is the index's row of the entry, as SQLite stores it, followed by the header profile;
    :func:`block_digest` hashes these tuples.
    """
    owner = entry.owner
    return (
        entry.start_offset,
        paths.to_bytes(entry.arc_path),
        entry.kind.value,
        entry.size,
        entry.mode,
        entry.mtime,
        entry.mtime_ns,
        paths.to_bytes(entry.linkname),
        entry.checksum,
        entry.listing,
        None if entry.source_path is None else paths.to_bytes(entry.source_path),
        None if owner is None else owner.uid,
        None if owner is None else owner.gid,
        None if owner is None else owner.uname,
        None if owner is None else owner.gname,
        entry.header_profile,
    )


def block_digest(values: Iterable[tuple[object, ...]]) -> bytes:
    """SHA-256 over the values of consecutive rows (see :func:`entry_values`).

    Each tuple is written as Python writes it (``repr``: ints, bytes, text and ``None`` have
    one spelling each, unchanged since Python 3.0, and the value can be read back from it), one
    per line: two lists of rows with one digest are the same rows. Fast, because it is done in
    C: a window near the end of a tape hashes its block in about a millisecond.
    """
    return hashlib.sha256("\n".join(map(repr, values)).encode("utf-8", "surrogatepass")).digest()


def blocks_of(values: Iterable[tuple[object, ...]], block_rows: int = BLOCK_ROWS) -> list[Block]:
    """The blocks of ``block_rows`` consecutive rows (given by their values, in stream order)."""
    blocks: list[Block] = []
    chunk: list[tuple[object, ...]] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == block_rows:
            blocks.append(_block(chunk))
            chunk = []
    if chunk:
        blocks.append(_block(chunk))
    return blocks


def _block(chunk: list[tuple[object, ...]]) -> Block:
    first = chunk[0][0]
    assert isinstance(first, int)
    return Block(first, len(chunk), block_digest(chunk))


def tree_identity(blocks: Iterable[Block], promises: Iterable[bytes] = ()) -> str:
    """The identity of a tape whose rows make ``blocks`` and whose other commitments are
    ``promises`` (see :func:`identity`): SHA-256 over each block's first offset, row count and
    digest, then each promise (length-prefixed)."""
    digest = hashlib.sha256(IDENTITY_TAG)
    tree = [b"%d %d %s" % block for block in blocks]
    digest.update(b"".join(tree))
    digest.update(b"\n%d blocks\n" % len(tree))
    for promise in promises:
        digest.update(b"%d\0" % len(promise))
        digest.update(promise)
    return digest.hexdigest()


def identity(entries: Iterable[Entry], *, promises: Iterable[bytes] = ()) -> str:
    """The recording's identity: a digest over everything the index promises.

    It covers every value of every entry (:func:`entry_values`: beside what the fingerprint
    covers, its offset, nanosecond mtime, recorded digest, folder listing, source path and
    owner) and ``promises``: the tape's other commitments (its size, its folder rules, its
    embedded members). Any change to what the index promises changes it, so it is the strong
    validator of a recording (the HTTP ETag): two recordings with one identity produce the same
    bytes from the same source.

    It is a tree: the digests of blocks of :data:`BLOCK_ROWS` consecutive entries
    (:func:`blocks_of`), then :func:`tree_identity` over them, so that a play checks only the
    blocks it plays against the identity, whatever the size of the tape.
    """
    return tree_identity(blocks_of(map(entry_values, entries)), promises)
