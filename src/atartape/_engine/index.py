"""The tape index: its SQLite schema, its rows, and the queries the engine makes of it.

Entries are keyed by their start offset (the rowid), which grows with stream order: the entry that
covers a byte is found by one B-tree search, and rows are read in batches from there on. A
:class:`Row` is one entry as the index stores it, with named columns; the column order of every
query is :data:`COLUMNS`, taken from :class:`Row` itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable
from typing import Any, NamedTuple

from ..errors import TapeFormatError
from ..format import paths
from ..format.header import EntryKind, entry_span
from ..format.layout import Entry
from .store import IndexStore

FORMAT = "atartape-index"
VERSION = 1
BATCH_ROWS = 2048

_KINDS = {kind.value: kind for kind in EntryKind}


class Row(NamedTuple):
    """One entry as the index stores it: paths and link targets as bytes, the kind as text."""

    start_offset: int
    arc_path: bytes
    kind: str
    size: int
    mode: int
    mtime: int
    mtime_ns: int
    linkname: bytes
    checksum: str | None

    @property
    def end_offset(self) -> int:
        """Offset just past the entry's padding."""
        return self.start_offset + entry_span(self.size)

    @property
    def path(self) -> str:
        """The archive path as text (undecodable bytes kept through ``surrogateescape``)."""
        return paths.from_bytes(self.arc_path)

    def entry(self) -> Entry:
        return Entry(
            arc_path=paths.from_bytes(self.arc_path),
            kind=_KINDS[self.kind],
            size=self.size,
            mode=self.mode,
            mtime=self.mtime,
            start_offset=self.start_offset,
            linkname=paths.from_bytes(self.linkname),
            mtime_ns=self.mtime_ns,
            checksum=self.checksum,
        )

    @classmethod
    def of(cls, entry: Entry) -> Row:
        return cls(
            entry.start_offset,
            paths.to_bytes(entry.arc_path),
            entry.kind.value,
            entry.size,
            entry.mode,
            entry.mtime,
            entry.mtime_ns,
            paths.to_bytes(entry.linkname),
            entry.checksum,
        )


COLUMNS = ", ".join(Row._fields)

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE entries (
    start_offset INTEGER PRIMARY KEY,
    arc_path BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    linkname BLOB NOT NULL,
    checksum TEXT
);
"""
INSERT_ENTRY = f"INSERT INTO entries ({COLUMNS}) VALUES ({', '.join('?' * len(Row._fields))})"
INSERT_META = "INSERT INTO meta (key, value) VALUES (?, ?)"


def rows(raw: Iterable[tuple[Any, ...]]) -> list[Row]:
    return [Row._make(values) for values in raw]


async def read_meta(store: IndexStore, where: str) -> dict[str, Any]:
    """The meta table as a dict; :class:`TapeFormatError` if ``where`` is not a tape index."""
    try:
        found = await store.fetchall("SELECT key, value FROM meta")
    except sqlite3.DatabaseError as exc:
        raise TapeFormatError(f"{where} is not a tape index ({exc})") from None
    meta: dict[str, Any] = dict(found)
    if meta.get("format") != FORMAT:
        raise TapeFormatError(f"{where} is not a tape index (no format marker)")
    if meta.get("version") != VERSION:
        raise TapeFormatError(
            f"{where} is a tape index of version {meta.get('version')}; "
            f"this library reads version {VERSION}"
        )
    return meta


async def write_entries(store: IndexStore, entries: Iterable[Entry]) -> None:
    await store.executemany(INSERT_ENTRY, (Row.of(e) for e in entries))


async def start_covering(store: IndexStore, offset: int) -> int | None:
    """Start of the last entry that starts at or before ``offset`` (one indexed search)."""
    found = await store.fetchone(
        "SELECT start_offset FROM entries WHERE start_offset <= ? "
        "ORDER BY start_offset DESC LIMIT 1",
        (offset,),
    )
    return None if found is None else int(found[0])


async def rows_from(store: IndexStore, offset: int, limit: int = BATCH_ROWS) -> list[Row]:
    """Up to ``limit`` rows of entries starting at or after ``offset``, in stream order."""
    return rows(
        await store.fetchall(
            f"SELECT {COLUMNS} FROM entries WHERE start_offset >= ? ORDER BY start_offset LIMIT ?",
            (offset, limit),
        )
    )


async def iter_entries(
    store: IndexStore, offset: int = 0, batch: int = BATCH_ROWS
) -> AsyncIterator[Entry]:
    """Every entry from ``offset`` on, in stream order, read ``batch`` rows at a time."""
    while True:
        found = await rows_from(store, offset, batch)
        for row in found:
            yield row.entry()
        if len(found) < batch:
            return
        offset = found[-1].start_offset + 1


async def entry_by_path(store: IndexStore, arc_path: str) -> Entry | None:
    found = await store.fetchone(
        f"SELECT {COLUMNS} FROM entries WHERE arc_path = ?", (paths.to_bytes(arc_path),)
    )
    return None if found is None else Row._make(found).entry()


# ------------------------------------------------------------------ embedded members
#
# A tape recorded with ``embed_index=True`` ends with an index member (a CSV, see
# :mod:`atartape.format.embedded`) that exists only in the index: its row and its bytes live in
# the ``embedded`` table, created only for such tapes. Its row is not in ``entries``: the
# fingerprint, entry_count and file_count cover the real entries, while total_size includes it.
# The bytes are kept, not regenerated at play time, so a play that ends before it never pays for
# it, and a play that reaches it reads one row.

EMBEDDED_SCHEMA = """
CREATE TABLE embedded (
    start_offset INTEGER PRIMARY KEY,
    arc_path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    data BLOB NOT NULL
);
"""


async def write_embedded(store: IndexStore, entry: Entry, data: bytes) -> None:
    """Store an in-memory member (its table must exist: :data:`EMBEDDED_SCHEMA`)."""
    arc_path = paths.to_bytes(entry.arc_path)
    await store.execute(
        "INSERT INTO embedded (start_offset, arc_path, size, mode, mtime, data) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (entry.start_offset, arc_path, len(data), entry.mode, entry.mtime, data),
    )


async def embedded_rows(store: IndexStore) -> list[Row]:
    """The rows of the tape's embedded members, shaped like ``entries`` rows; ``[]`` if none."""
    table = await store.fetchone(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'embedded'"
    )
    if table is None:
        return []
    found = await store.fetchall(
        "SELECT start_offset, arc_path, size, mode, mtime FROM embedded ORDER BY start_offset"
    )
    return [
        Row(start, arc, EntryKind.FILE.value, size, mode, mtime, mtime * 10**9, b"", None)
        for start, arc, size, mode, mtime in found
    ]


async def embedded_data(store: IndexStore, start_offset: int) -> bytes:
    """The bytes of the embedded member starting at ``start_offset``."""
    found = await store.fetchone(
        "SELECT data FROM embedded WHERE start_offset = ?", (start_offset,)
    )
    if found is None:
        raise TapeFormatError(f"the index has no embedded member at offset {start_offset}")
    return bytes(found[0])
