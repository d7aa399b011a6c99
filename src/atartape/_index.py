"""The tape index: its SQLite schema and the queries the engine makes of it.

Entries are keyed by their start offset (the rowid), which grows with stream order: the entry that
covers a byte is found by one B-tree search, and rows are read in batches from there on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from . import paths
from ._errors import TapeFormatError
from ._store import IndexStore, Row
from .header import EntryKind
from .layout import Entry

FORMAT = "atartape-index"
VERSION = 1
BATCH_ROWS = 2048

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

_COLUMNS = "start_offset, arc_path, kind, size, mode, mtime, mtime_ns, linkname, checksum"
INSERT_ENTRY = f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_META = "INSERT INTO meta (key, value) VALUES (?, ?)"

_KINDS = {kind.value: kind for kind in EntryKind}


def entry_row(entry: Entry) -> tuple[Any, ...]:
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
    )


def row_entry(row: Row) -> Entry:
    start, arc, kind, size, mode, mtime, mtime_ns, link, checksum = row
    return Entry(
        arc_path=paths.from_bytes(arc),
        kind=_KINDS[kind],
        size=size,
        mode=mode,
        mtime=mtime,
        start_offset=start,
        linkname=paths.from_bytes(link),
        mtime_ns=mtime_ns,
        checksum=checksum,
    )


async def read_meta(store: IndexStore, where: str) -> dict[str, Any]:
    """The meta table as a dict; :class:`TapeFormatError` if ``where`` is not a tape index."""
    import sqlite3

    try:
        rows = await store.fetchall("SELECT key, value FROM meta")
    except sqlite3.DatabaseError as exc:
        raise TapeFormatError(f"{where} is not a tape index ({exc})") from None
    meta: dict[str, Any] = dict(rows)
    if meta.get("format") != FORMAT:
        raise TapeFormatError(f"{where} is not a tape index (no format marker)")
    if meta.get("version") != VERSION:
        raise TapeFormatError(
            f"{where} is a tape index of version {meta.get('version')}; "
            f"this library reads version {VERSION}"
        )
    return meta


async def write_entries(store: IndexStore, entries: Iterable[Entry]) -> None:
    await store.executemany(INSERT_ENTRY, (entry_row(e) for e in entries))


async def start_covering(store: IndexStore, offset: int) -> int | None:
    """Start of the last entry that starts at or before ``offset`` (one indexed search)."""
    row = await store.fetchone(
        "SELECT start_offset FROM entries WHERE start_offset <= ? "
        "ORDER BY start_offset DESC LIMIT 1",
        (offset,),
    )
    return None if row is None else int(row[0])


async def entry_covering(store: IndexStore, offset: int) -> Entry | None:
    """The last entry that starts at or before ``offset`` (one indexed search, not a scan)."""
    row = await store.fetchone(
        f"SELECT {_COLUMNS} FROM entries WHERE start_offset <= ? "
        "ORDER BY start_offset DESC LIMIT 1",
        (offset,),
    )
    return None if row is None else row_entry(row)


async def rows_from(store: IndexStore, offset: int, limit: int = BATCH_ROWS) -> list[Row]:
    """Up to ``limit`` raw rows of entries starting at or after ``offset``, in stream order."""
    return await store.fetchall(
        f"SELECT {_COLUMNS} FROM entries WHERE start_offset >= ? ORDER BY start_offset LIMIT ?",
        (offset, limit),
    )


async def entries_from(store: IndexStore, offset: int, limit: int = BATCH_ROWS) -> list[Entry]:
    """Up to ``limit`` entries starting at or after ``offset``, in stream order."""
    return [row_entry(row) for row in await rows_from(store, offset, limit)]


async def iter_entries(
    store: IndexStore, offset: int = 0, batch: int = BATCH_ROWS
) -> AsyncIterator[Entry]:
    """Every entry from ``offset`` on, in stream order, read ``batch`` rows at a time."""
    while True:
        entries = await entries_from(store, offset, batch)
        for entry in entries:
            yield entry
        if len(entries) < batch:
            return
        offset = entries[-1].start_offset + 1


async def entry_by_path(store: IndexStore, arc_path: str) -> Entry | None:
    row = await store.fetchone(
        f"SELECT {_COLUMNS} FROM entries WHERE arc_path = ?", (paths.to_bytes(arc_path),)
    )
    return None if row is None else row_entry(row)


# ------------------------------------------------------------------ embedded members
#
# A tape recorded with ``embed_index=True`` ends with an index member (a CSV, see
# :mod:`atartape.members`) that exists only in the index: its row and its bytes live in the
# ``embedded`` table, created only for such tapes (an index without it has no embedded member).
# Its row is not in ``entries``: the fingerprint, entry_count and file_count cover the real
# entries, while total_size includes it. The bytes are kept, not regenerated at play time, so a
# play that ends before it never pays for it, and a play that reaches it reads one row.

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
    rows = await store.fetchall(
        "SELECT start_offset, arc_path, size, mode, mtime FROM embedded ORDER BY start_offset"
    )
    return [
        (start, arc, EntryKind.FILE.value, size, mode, mtime, mtime * 10**9, b"", None)
        for start, arc, size, mode, mtime in rows
    ]


async def embedded_data(store: IndexStore, start_offset: int) -> bytes:
    """The bytes of the embedded member starting at ``start_offset``."""
    row = await store.fetchone("SELECT data FROM embedded WHERE start_offset = ?", (start_offset,))
    if row is None:
        raise TapeFormatError(f"the index has no embedded member at offset {start_offset}")
    return bytes(row[0])
