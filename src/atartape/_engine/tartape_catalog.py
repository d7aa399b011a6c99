"""A tartape 3 catalog read as a tape index: the same queries as :class:`~.index.Index`.

tartape 3, atartape's synchronous predecessor, keeps its catalog in SQLite too, in other tables:
``track`` (one row per entry, the root folder included: ``arc_path``, ``rel_path``, ``size``,
whole-second ``mtime``, ``mode``, owners, ``start_offset``/``end_offset``...), ``tapemetadata``
(nine keys, all text), ``layouts`` and ``volumes``. :class:`TartapeCatalog` serves the queries a
play, a listing, a location or a check makes from those tables, never writing to them, so a
tartape catalog opens with ``Tape.open``, lists, locates, restores offline and plays.

What differs from an atartape index, and what it means:

- The headers are tartape's (:class:`TartapeRow`, header profile ``"tartape3"``: names
  ``root``, normalised modes, device fields left NUL), so the tape plays tartape's bytes, at
  tartape's offsets: an upload or a download begun with tartape can be finished here.
- mtimes are whole seconds (tartape stored ``int(st_mtime)``), so the source is compared in whole
  seconds: a file rewritten within the second of its recorded mtime, to the same size, is not
  noticed before it is read (a rewrite *while* it is read still is). Re-record with atartape
  for the nanosecond promise.
- There are no folder listings: a folder whose mtime moved is refused (the root folder is
  exempt, as in a version 1 index).
- The identity, and its tree of block digests, are computed from the rows when the catalog is
  opened (once per state of the file in this process: it is cached); a play checks each block
  of rows it reads again against that tree, so a catalog edited after it was opened never plays
  (edited before, it is another recording: its identity differs from the one planned with).
  Names and sources are checked as in an atartape index (no absolute path, no ``..``).
- There is no index on offsets: rows are read in path order, which is tartape's offset order
  (checked when the catalog is opened; a catalog where it is not is read by offset, by scans).

A catalog in WAL mode (tartape leaves it so once it was opened) is read through a read-write
connection that cannot write (``query_only``), so that SQLite removes the ``-wal`` and ``-shm``
files it creates beside the catalog when the connection closes; where that connection cannot be
opened, a read-only one is used, and on a read-only place, where SQLite cannot create those files
at all, the file is opened as immutable (it cannot change there).
"""

from __future__ import annotations

import bisect
import json
import os
import sqlite3
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import anyio
import anyio.to_thread

from ..errors import TapeFormatError
from ..format import paths
from ..format.header import FOOTER_SIZE, EntryKind, encode_raw
from ..format.layout import Entry, blocks_of, fingerprint, tree_identity
from ..format.windows import Checksum, Layout, volume_count, volume_name
from .index import BATCH_ROWS, Index, Row, RowTree, add_reader, check_names
from .store import IndexStore, open_store

FORMAT = "tartape-3"
_TABLES = ("track", "tapemetadata")
_COLUMNS = (
    "start_offset, arc_path, is_dir, is_symlink, size, mode, mtime, linkname, checksum, "
    "rel_path, uid, gid, uname, gname, end_offset"
)
_BATCH = 4096
_SAMPLE = 1024  # one arc path kept per this many rows: where a read by offset starts
_TEMPLATE = "{name}_{fingerprint:.8}.tar.{pindex}"  # tartape's default volume names


class TartapeRow(Row):
    """A row of a tartape 3 catalog: tartape's headers, whole-second mtimes."""

    __slots__ = ()

    @property
    def whole_second_mtime(self) -> bool:
        return True

    @property
    def header_profile(self) -> str:
        return "tartape3"

    def header(self) -> bytes:
        return encode_raw(
            self.arc_path,
            self.kind,
            self.size,
            self.mode,
            self.mtime,
            self.linkname,
            self.owner,
            "tartape3",
        )

    def entry(self) -> Entry:
        return replace(super().entry(), header_profile="tartape3")


@dataclass(frozen=True)
class _State:
    """What opening a catalog learns from all its rows (cached per state of the file)."""

    meta: dict[str, Any]
    starts: array[int]  # every row's start offset, in stream order
    samples: list[str]  # the arc path of every _SAMPLE-th row, in stream order
    path_ordered: bool  # whether path order is stream order (so the path index serves reads)
    tree: RowTree  # the identity's tree, computed from the rows


_CACHE: dict[tuple[str, int, int, int, int], _State] = {}
_CACHE_SIZE = 16


async def open_if_catalog(
    store: IndexStore, where: str, expected: str | None
) -> TartapeCatalog | None:
    """The catalog behind ``store`` if it is a tartape 3 catalog, else ``None`` (an
    :data:`~.index.IndexReader`, registered with :func:`~.index.add_reader`)."""
    try:
        found = await is_tartape_catalog(store)
    except PermissionError:
        with anyio.CancelScope(shield=True):
            await store.aclose()
        if not await anyio.to_thread.run_sync(_in_wal_mode, where):
            raise
        store = await _immutable_store(where)  # WAL mode on a read-only place
        found = await is_tartape_catalog(store)
        if not found:
            with anyio.CancelScope(shield=True):
                await store.aclose()
            raise
    except BaseException:
        with anyio.CancelScope(shield=True):
            await store.aclose()
        raise
    return await open_catalog(store, where, expected) if found else None


async def is_tartape_catalog(store: IndexStore) -> bool:
    """Whether the SQLite file behind ``store`` is a tartape 3 catalog (not an atartape index).

    A file that is not SQLite at all is not one (the caller says what it is instead).
    """
    try:
        found = await store.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?)",
            ("meta", *_TABLES),
        )
    except TapeFormatError:
        return False
    names = {name for (name,) in found}
    return "meta" not in names and names.issuperset(_TABLES)


async def open_catalog(store: IndexStore, where: str, expected: str | None) -> TartapeCatalog:
    """The catalog at ``where``, whose read-only ``store`` was opened; owns ``store`` from now
    on (closed on failure). Raises :class:`TapeFormatError` for a damaged catalog and
    :class:`~atartape.TapeChangedError` when ``expected`` is not its identity."""
    try:
        store = await _quiet_store(store, where)
        state = await _state(store, where)
        catalog = TartapeCatalog(store, state, where)
        if expected is not None:
            catalog.require(expected)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await store.aclose()
        raise
    return catalog


async def _quiet_store(store: IndexStore, where: str) -> IndexStore:
    """A connection that leaves no ``-wal``/``-shm`` files beside a WAL-mode catalog."""
    mode = await store.fetchone("PRAGMA journal_mode")
    if mode is None or str(mode[0]).lower() != "wal":
        return store
    try:
        quiet = await open_store(where, must_exist=True)
    except (OSError, TapeFormatError):  # a read-only place: read as it is
        return store
    try:
        await quiet.execute("PRAGMA query_only = ON")
    except BaseException:
        with anyio.CancelScope(shield=True):
            await quiet.aclose()
        raise
    with anyio.CancelScope(shield=True):
        await store.aclose()
    return quiet


def _in_wal_mode(where: str) -> bool:
    """Whether the SQLite file at ``where`` says it is in WAL mode (header bytes 18 and 19)."""
    try:
        with open(where, "rb") as file:
            head = file.read(20)
    except OSError:
        return False
    return head[:16] == b"SQLite format 3\0" and head[18:20] == b"\2\2"


class _ImmutableStore(IndexStore):
    """A SQLite file read as immutable (it lies on a read-only place), in worker threads."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = anyio.Lock()

    async def _fetchall(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._lock:
            return await anyio.to_thread.run_sync(
                lambda: self._conn.execute(sql, params).fetchall()
            )

    async def _execute(self, sql: str, params: Sequence[Any]) -> None:
        await self._fetchall(sql, params)

    async def aclose(self) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self._conn.close)


def _connect_immutable(where: str) -> sqlite3.Connection:
    from urllib.parse import quote

    uri = "file:" + quote(os.fsencode(os.path.abspath(where))) + "?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)


async def _immutable_store(where: str) -> IndexStore:
    try:
        conn = await anyio.to_thread.run_sync(_connect_immutable, where)
    except sqlite3.Error as exc:
        raise TapeFormatError(f"the tartape catalog {where} cannot be read ({exc})") from None
    store = _ImmutableStore(conn)
    store.path = where
    return store


def _stamp(where: str) -> tuple[str, int, int, int, int]:
    st = os.stat(where)
    return os.path.realpath(where), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


async def _state(store: IndexStore, where: str) -> _State:
    stamp = await anyio.to_thread.run_sync(_stamp, where)
    state = _CACHE.get(stamp)
    if state is None:
        state = await _read_state(store, where)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[stamp] = state
    return state


def _damaged(where: str, what: str) -> TapeFormatError:
    return TapeFormatError(f"the tartape catalog {where} is damaged: {what}")


async def _read_state(store: IndexStore, where: str) -> _State:
    found = await store.fetchall("SELECT key, value FROM tapemetadata")
    values = {str(key): value for key, value in found}
    try:
        total_size = int(values["total_size"])
        created_at = float(values.get("created_at") or 0)
    except (KeyError, TypeError, ValueError):
        raise _damaged(where, "its metadata lacks a total size") from None
    root = await store.fetchone(f"SELECT {_COLUMNS} FROM track WHERE rel_path = ''")
    if root is None:
        raise _damaged(where, "it has no root entry")
    arc_root = str(root[1])
    rows, path_ordered = await _all_rows(store, where, arc_root, by_path=True)
    if not path_ordered:
        rows, back_to_back = await _all_rows(store, where, arc_root, by_path=False)
        if not back_to_back:
            raise _damaged(where, "its entries do not lie back to back")
    end = rows[-1].end_offset if rows else 0
    if end + FOOTER_SIZE != total_size:
        raise _damaged(where, f"its entries end at {end}, its total size is {total_size}")
    entries = [row.entry() for row in rows]
    algorithm = str(values.get("checksum_algorithm") or "none").lower()
    exclude = _patterns(values.get("exclude_patterns"))
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,  # no folder listings: folders are checked by mtime, the root exempt
        "fingerprint": fingerprint(entries),
        "tartape_fingerprint": str(values.get("fingerprint") or ""),
        "total_size": total_size,
        "entry_count": len(entries),
        "file_count": sum(1 for e in entries if e.kind is EntryKind.FILE),
        "arc_root": arc_root,
        "source_root": _source_root(where, arc_root),
        "recorded_at": created_at,
        "checksum": None if algorithm == "none" else algorithm,
        "data_size": sum(e.size for e in entries),
        "anonymized": str(values.get("is_anonymized", "true")).lower() == "true",
        "auto_truncated": sum(1 for e in entries if e.source_path is not None),
        "noise": [],
        "exclude": exclude,
    }
    rules = json.dumps({"format": FORMAT, "exclude": exclude, "root": arc_root}, sort_keys=True)
    blocks = blocks_of(row.values() for row in rows)
    meta["identity"] = tree_identity(blocks, [rules.encode()])
    starts = array("q", (row.start_offset for row in rows))
    samples = [row.path for row in rows[::_SAMPLE]]
    return _State(meta, starts, samples, path_ordered, RowTree(blocks))


async def _all_rows(
    store: IndexStore, where: str, arc_root: str, *, by_path: bool
) -> tuple[list[TartapeRow], bool]:
    """Every row, in path order (``by_path``, through the path index) or in offset order (a
    sort), and whether they lie back to back in that order."""
    rows: list[TartapeRow] = []
    if by_path:
        after: str | None = None
        while True:
            sql = f"SELECT {_COLUMNS} FROM track"
            params: tuple[Any, ...] = (_BATCH,)
            if after is not None:
                sql += " WHERE arc_path > ?"
                params = (after, _BATCH)
            found = await store.fetchall(sql + " ORDER BY arc_path LIMIT ?", params)
            rows.extend(_row(values, arc_root, where) for values in found)
            if len(found) < _BATCH:
                break
            after = str(found[-1][1])
    else:
        found = await store.fetchall(f"SELECT {_COLUMNS} FROM track ORDER BY start_offset")
        rows = [_row(values, arc_root, where) for values in found]
    expected = 0
    for row in rows:
        if row.start_offset != expected:
            return rows, False
        expected = row.end_offset
    return rows, True


def _row(values: Sequence[Any], arc_root: str, where: str) -> TartapeRow:
    """A ``track`` row as an index row; raises :class:`TapeFormatError` for bad values."""
    (start, arc, is_dir, is_symlink, size, mode, mtime, link) = values[:8]
    (checksum, rel, uid, gid, uname, gname, end) = values[8:]
    try:
        kind = "dir" if is_dir else "symlink" if is_symlink else "file"
        arc_path, rel_path = paths.to_bytes(arc), paths.to_bytes(rel)
        root = paths.to_bytes(arc_root)
        source = None
        if rel_path and arc_path != root + b"/" + rel_path:
            source = rel_path  # its header carries a shortened path (auto_truncate)
        row = TartapeRow(
            int(start),
            arc_path,
            kind,
            int(size),
            int(mode),
            int(mtime),
            int(mtime) * 10**9,
            paths.to_bytes(link or ""),
            None if checksum is None else str(checksum),
            None,
            source,
            int(uid),
            int(gid),
            paths.to_bytes(uname or ""),
            paths.to_bytes(gname or ""),
        )
    except (TypeError, ValueError, AttributeError):
        raise _damaged(where, f"a row has bad values: {tuple(values)!r}") from None
    if type(start) is not int or row.end_offset != end or (row.size and kind != "file"):
        raise _damaged(where, f"the row of {arc!r} has bad values: {tuple(values)!r}")
    check_names(row, where, paths.to_bytes(arc_root))
    return row


def _patterns(value: Any) -> list[str]:
    """tartape's stored exclude patterns (JSON), as a list; a predicate's text gives ``[]``."""
    try:
        found = json.loads(value) if isinstance(value, str) else []
    except ValueError:
        return []
    if isinstance(found, str):
        return [found]
    return [str(p) for p in found] if isinstance(found, list) else []


def _source_root(where: str, arc_root: str) -> str:
    """Where tartape's folder is, by its catalog: ``<folder>.tartape`` beside it, or its legacy
    ``<folder>/.tartape/index.db``; otherwise a folder named like the root beside the catalog."""
    folder, name = os.path.split(where)
    if name == "index.db" and os.path.basename(folder) == ".tartape":
        return os.path.dirname(folder)
    if name.endswith(".tartape") and len(name) > len(".tartape"):
        return os.path.join(folder, name[: -len(".tartape")])
    return os.path.join(folder, arc_root.rsplit("/", 1)[-1])


class TartapeCatalog(Index):
    """A tartape 3 catalog opened as a tape index (read-only); see the module docstring."""

    def __init__(self, store: IndexStore, state: _State, where: str) -> None:
        super().__init__(store, state.meta, where)
        self.state = state

    def share(self, release: Any) -> TartapeCatalog:
        handle = TartapeCatalog(self.store, self.state, self.where)
        handle._release = release
        return handle

    async def _query(self, where_sql: str, params: Sequence[Any]) -> list[TartapeRow]:
        found = await self.store.fetchall(f"SELECT {_COLUMNS} FROM track {where_sql}", params)
        return [_row(values, self.meta["arc_root"], self.where) for values in found]

    async def tree(self) -> RowTree:
        return self.state.tree

    async def stored_tree(self) -> RowTree:
        return self.state.tree  # a catalog keeps none: computed from its rows when opened

    async def start_covering(self, offset: int) -> int | None:
        at = bisect.bisect_right(self.state.starts, offset) - 1
        return None if at < 0 else self.state.starts[at]

    async def rows_from(self, offset: int, limit: int = BATCH_ROWS) -> list[Row]:
        state = self.state
        first = bisect.bisect_left(state.starts, offset)
        if first >= len(state.starts):
            return []
        if not state.path_ordered:
            return list(
                await self._query(
                    "WHERE start_offset >= ? ORDER BY start_offset LIMIT ?", (offset, limit)
                )
            )
        # Start from the sampled path before it: the path index then serves the read.
        sample, skip = divmod(first, _SAMPLE)
        found = await self._query(
            "WHERE arc_path >= ? ORDER BY arc_path LIMIT ?",
            (state.samples[sample], skip + limit),
        )
        return list(found[skip:])

    async def row_by_path(self, arc_path: bytes) -> Row | None:
        found = await self._query("WHERE arc_path = ?", (paths.from_bytes(arc_path),))
        return found[0] if found else None

    async def row_by_source(self, source: bytes) -> Row | None:
        found = await self._query("WHERE rel_path = ?", (paths.from_bytes(source),))
        return found[0] if found and found[0].source is not None else None

    async def bytes_after(self, row: Row) -> bytes:
        found = await self.rows_from(row.end_offset, 1)
        if found and found[0].start_offset == row.end_offset:
            return (await self.checked(found[0])).header()
        return bytes(FOOTER_SIZE)

    async def child_names(self, folder: bytes) -> list[bytes]:
        prefix = folder + b"/"
        found = await self.store.fetchall(
            "SELECT arc_path FROM track WHERE arc_path > ? AND arc_path < ?",
            (paths.from_bytes(prefix), paths.from_bytes(folder + b"0")),
        )
        cut = len(prefix)
        names = (paths.to_bytes(str(arc))[cut:] for (arc,) in found)
        return [name for name in names if b"/" not in name]

    async def embedded_rows(self) -> list[Row]:
        return []

    async def embedded_data(self, start_offset: int) -> bytes:
        raise TapeFormatError(f"the tartape catalog {self.where} has no embedded member")

    async def read_layouts(self) -> list[Layout]:
        """tartape's registered layouts, with the volume names and checksums it stored.

        A layout whose rows contradict its size keeps its arithmetic and drops what it cannot
        trust (the names and checksums of those rows); rows past its last volume (tartape
        keeps them when a tag is registered again with fewer volumes) are ignored.
        """
        tables = await self.store.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('layouts', 'volumes')"
        )
        if len(tables) < 2:
            return []
        meta = self.meta
        total = meta["total_size"]
        name = _catalog_stem(self.where)
        found = await self.store.fetchall(
            "SELECT tag, volume_size, created_at, is_default FROM layouts ORDER BY created_at, tag"
        )
        layouts: list[Layout] = []
        for tag, size, created, is_default in found:
            if type(size) is not int or size <= 0:
                continue
            count = volume_count(total, size)
            names = [
                volume_name(
                    _TEMPLATE,
                    name=name,
                    index=i,
                    count=count,
                    fingerprint=meta["tartape_fingerprint"],
                )
                for i in range(count)
            ]
            checksums: list[Checksum] = []
            volumes = await self.store.fetchall(
                "SELECT volume_index, name, start_offset, end_offset, checksum, "
                "checksum_algorithm FROM volumes WHERE layout_tag = ?",
                (tag,),
            )
            for index, volume, start, end, checksum, algorithm in volumes:
                if type(index) is not int or not 0 <= index < count:
                    continue
                if (start, end) != (index * size, min((index + 1) * size, total)):
                    continue
                names[index] = str(volume)
                if checksum:
                    kind = str(algorithm or "sha256").lower()
                    checksums.append((index, kind, str(checksum).lower()))
            layouts.append(
                Layout(
                    str(tag),
                    size,
                    total,
                    name,
                    _TEMPLATE,
                    meta["tartape_fingerprint"],
                    tuple(names),
                    tuple(checksums),
                    is_default=bool(is_default),
                    registered=True,
                    created_at=_moment(created),
                )
            )
        return layouts


def _catalog_stem(where: str) -> str:
    """What tartape calls a catalog in its volume names: the file name without its suffix."""
    return os.path.splitext(os.path.basename(where))[0]


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


add_reader(open_if_catalog)
