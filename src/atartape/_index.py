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
BATCH_ROWS = 1024

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


async def entry_covering(store: IndexStore, offset: int) -> Entry | None:
    """The last entry that starts at or before ``offset`` (one indexed search, not a scan)."""
    row = await store.fetchone(
        f"SELECT {_COLUMNS} FROM entries WHERE start_offset <= ? "
        "ORDER BY start_offset DESC LIMIT 1",
        (offset,),
    )
    return None if row is None else row_entry(row)


async def entries_from(store: IndexStore, offset: int, limit: int = BATCH_ROWS) -> list[Entry]:
    """Up to ``limit`` entries starting at or after ``offset``, in stream order."""
    rows = await store.fetchall(
        f"SELECT {_COLUMNS} FROM entries WHERE start_offset >= ? ORDER BY start_offset LIMIT ?",
        (offset, limit),
    )
    return [row_entry(row) for row in rows]


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
