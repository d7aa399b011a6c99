"""The tape index: its SQLite schema, its rows, and the queries the engine makes of it.

Entries are keyed by their start offset (the rowid), which grows with stream order: the entry that
covers a byte is found by one B-tree search, and rows are read in batches from there on. A
:class:`Row` is one entry as the index stores it, with named columns; the column order of every
query is :data:`COLUMNS`, taken from :class:`Row` itself. :class:`Index` is an opened index:
its meta (with the recording's identity) and its queries.

The index is input, like an archive from outside: every row read from it has its name and
source checked (:func:`check_names`: no absolute path, no empty, ``.`` or ``..`` component, no
NUL), so no consumer sees a row that could name a path outside the folder; and a play checks the
rows it sends against the recording's identity, block by block (:meth:`Index.block`), at a cost
bounded by its window: the identity is a tree of digests over blocks of
:data:`~atartape.format.layout.BLOCK_ROWS` rows, kept in the ``row_blocks`` table.

Version 3 added that table; version 2 (folder listings, a flat identity) and version 1 indexes
are refused with a message that says how to record the folder again (only the recorder reads
them, for the digests it can reuse). A tartape 3 catalog opens too, read-only, through
:mod:`atartape._engine.tartape_catalog`; its tree is computed when it is opened.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import operator
import os
from array import array
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple

import anyio
import anyio.to_thread

from ..errors import TapeChangedError, TapeFormatError, TapeNotFoundError
from ..format import paths
from ..format.folders import DEFAULT_NOISE
from ..format.header import FOOTER_SIZE, EntryKind, Owner, encode_raw, entry_span
from ..format.layout import (
    BLOCK_ROWS,
    Block,
    Entry,
    block_digest,
    blocks_of,
    tree_identity,
)
from .store import IndexStore, loop_token, open_store

FORMAT = "atartape-index"
VERSION = 3
READABLE = (3,)
LEGACY = (1, 2)  # read by the recorder alone (the digests it can reuse): see _legacy_refusal
BATCH_ROWS = 2048
INT64_MAX = 2**63 - 1

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
    listing: str | None
    source: bytes | None  # the path in the recorded folder, when the header carries another
    uid: int | None  # the owner, when the tape was recorded with anonymize=False
    gid: int | None
    uname: bytes | None
    gname: bytes | None

    @property
    def end_offset(self) -> int:
        """Offset just past the entry's padding."""
        return self.start_offset + entry_span(self.size)

    @property
    def path(self) -> str:
        """The archive path as text (undecodable bytes kept through ``surrogateescape``)."""
        return paths.from_bytes(self.arc_path)

    @property
    def whole_second_mtime(self) -> bool:
        """Whether the promise holds the mtime to the second only (a tartape 3 catalog's rows):
        ``mtime_ns`` is then ``mtime`` seconds, and the source is compared in whole seconds."""
        return False

    @property
    def header_profile(self) -> str:
        """How the entry's header is written (see :class:`~atartape.format.layout.Entry`)."""
        return "atartape"

    def values(self) -> tuple[object, ...]:
        """The row's values and its header profile: what a block digest of the identity
        covers (the same as :func:`~atartape.format.layout.entry_values` of its entry)."""
        return (*self, self.header_profile)

    @property
    def owner(self) -> Owner | None:
        if self.uid is None or self.gid is None:
            return None
        return Owner(self.uid, self.gid, self.uname or b"", self.gname or b"")

    def header(self) -> bytes:
        """The entry's 512-byte header."""
        owner = None if self.uid is None else self.owner
        return encode_raw(
            self.arc_path, self.kind, self.size, self.mode, self.mtime, self.linkname, owner
        )

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
            listing=self.listing,
            source_path=None if self.source is None else paths.from_bytes(self.source),
            owner=self.owner,
        )

    @classmethod
    def of(cls, entry: Entry) -> Row:
        owner = entry.owner
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
            entry.listing,
            None if entry.source_path is None else paths.to_bytes(entry.source_path),
            None if owner is None else owner.uid,
            None if owner is None else owner.gid,
            None if owner is None else owner.uname,
            None if owner is None else owner.gname,
        )


COLUMNS = ", ".join(Row._fields)
_NO_OWNER = (None, None, None, None, None)  # source, uid, gid, uname, gname
_NO_ROW_EXTRAS = (None, None, *_NO_OWNER)  # checksum, listing, and the above
_COLUMNS_V1 = COLUMNS.split(", listing")[0] + ", NULL" * 6

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE entries (
    start_offset INTEGER PRIMARY KEY,
    arc_path BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    mtime_ns NOT NULL,
    linkname BLOB NOT NULL,
    checksum TEXT,
    listing TEXT,
    source BLOB,
    uid INTEGER,
    gid INTEGER,
    uname BLOB,
    gname BLOB
);
CREATE INDEX entries_source ON entries (source) WHERE source IS NOT NULL;
CREATE TABLE row_blocks (
    block INTEGER PRIMARY KEY,
    first_offset INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    digest BLOB NOT NULL
);
"""
INSERT_BLOCK = "INSERT INTO row_blocks (block, first_offset, rows, digest) VALUES (?, ?, ?, ?)"
INSERT_ENTRY = f"INSERT INTO entries ({COLUMNS}) VALUES ({', '.join('?' * len(Row._fields))})"
INSERT_META = "INSERT INTO meta (key, value) VALUES (?, ?)"

EMBEDDED_SCHEMA = """
CREATE TABLE embedded (
    start_offset INTEGER PRIMARY KEY,
    arc_path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    data BLOB NOT NULL,
    digest BLOB NOT NULL
);
"""
"""A tape recorded with ``embed_index=True`` ends with an index member (a CSV, see
:mod:`atartape.format.embedded`) that exists only in the index: its row and its bytes live in the
``embedded`` table (with the SHA-256 of its bytes), created only for such tapes. The
fingerprint, entry_count and file_count cover the real entries, while total_size includes it.
Its bytes are kept, not made again when the tape plays, so a play that ends before it never pays
for them."""


def stored(row: Row) -> tuple[Any, ...]:
    """The values of a row as SQLite stores them: a nanosecond mtime past 2262, which no 64-bit
    integer holds, is kept exactly as text."""
    if row.mtime_ns > INT64_MAX or row.mtime_ns < -INT64_MAX:
        return (*row[:6], str(row.mtime_ns), *row[7:])
    return row


def check_names(row: Row, where: str, root: bytes | None) -> Row:
    """``row``, once its name and source are known to name paths beneath the folder.

    Read from an index (input, like an archive from outside), a name or a source must be a
    relative path with no empty, ``.`` or ``..`` component and no NUL (a source may be empty:
    the folder itself); a row without a source is found by its name, which must then lie in the
    tape's ``root`` (``None`` for an embedded member, which lies beside it). Link targets are
    data, never followed, and are not checked. Raises :class:`TapeFormatError` naming the index
    and the row.
    """
    name, source = row.arc_path, row.source
    what, value = "name", name
    why = "not a byte string" if type(name) is not bytes else paths.unsafe(name)
    if why is None and source is not None:
        what, value = "source", source
        if type(source) is not bytes:
            why = "not a byte string"
        elif source:
            why = paths.unsafe(source)
    elif why is None and root is not None and name != root and not name.startswith(root + b"/"):
        why = "outside the tape's root folder"
    if why is not None:
        shown = paths.from_bytes(value) if type(value) is bytes else value
        raise TapeFormatError(
            f"the index {where} is damaged: the entry at offset {row.start_offset} has the "
            f"{what} {shown!r}, which does not name a path in the folder ({why})"
        )
    return row


def meta_promises(
    meta: dict[str, Any], embedded: Iterable[tuple[Entry, bytes]] = ()
) -> list[bytes]:
    """What a tape promises beside its entries, as :func:`~atartape.format.layout.identity`
    hashes it: its size, its folder rules, its views (each with the digest of all its frames
    or blocks) and its embedded members (``(entry, bytes)``: their rows and the digest of
    their bytes)."""
    return _promises(
        meta,
        [
            embedded_promise(
                e.start_offset,
                paths.to_bytes(e.arc_path),
                len(data),
                e.mode,
                e.mtime,
                hashlib.sha256(data).digest(),
            )
            for e, data in embedded
        ],
    )


def _promises(meta: dict[str, Any], embedded: list[bytes]) -> list[bytes]:
    rules = json.dumps(
        {
            "noise": meta.get("noise"),
            "exclude": meta.get("exclude"),
            "root": meta["arc_root"],
            "views": meta.get("views"),
            "total_size": meta["total_size"],
        },
        sort_keys=True,
    ).encode()
    return [rules, *embedded]


def embedded_promise(
    start_offset: int, arc_path: bytes, size: int, mode: int, mtime: int, digest: bytes
) -> bytes:
    """What the identity holds of an embedded member: its row and the digest of its bytes."""
    return b"embedded " + repr((start_offset, arc_path, size, mode, mtime, digest)).encode()


_SUSPECT = (b"\0", b"//", b"/.", b"\n/", b"\n.", b"/\n", b"\n\n")


def _suspect(paths: list[bytes]) -> bool:
    """Whether ``paths`` may hold an unsafe one (see :meth:`Index._rows`); raises
    ``TypeError`` for one that is not bytes."""
    if not paths:
        return False
    framed = b"\n" + b"\n".join(paths) + b"\n"
    return any(pattern in framed for pattern in _SUSPECT)


class RowTree:
    """The identity's tree of an index: its blocks of rows, where each starts, their digests;
    and its embedded members as the identity holds them: ``(start_offset, arc_path, size,
    mode, mtime, digest)``."""

    def __init__(self, blocks: Sequence[Block], embedded: Sequence[tuple[Any, ...]] = ()) -> None:
        self.blocks = list(blocks)
        self.starts = array("q", (block.first_offset for block in self.blocks))
        self.embedded = [tuple(values) for values in embedded]

    def __len__(self) -> int:
        return len(self.blocks)

    def block_at(self, offset: int) -> int:
        """The block whose first row starts last at or before ``offset`` (-1 if none)."""
        return bisect.bisect_right(self.starts, offset) - 1


_TREES: dict[tuple[str, tuple[bytes, ...]], RowTree] = {}
"""The trees checked in this process, by the identity and the promises they gave: a tree that
gives an identity is that identity's tree (SHA-256), whichever file claims it, so a play of a
tape already played here loads no block digests."""
_TREES_KEPT = 16


def _digest_rows(rows: Sequence[Row]) -> bytes:
    return block_digest(row.values() for row in rows)


def _blocks(found: Sequence[Sequence[Any]]) -> list[Block] | None:
    """The blocks of the ``row_blocks`` table's rows, or ``None`` when they are not numbered
    0, 1, 2..., do not start at increasing offsets, or hold a bad count or digest (checked a
    column at a time: a play of a big tape loads them all)."""
    if not found:
        return []
    numbers, firsts, counts, digests = zip(*found)
    if list(numbers) != list(range(len(found))):
        return None
    try:
        starts, sizes = array("q", firsts), array("q", counts)
    except (TypeError, OverflowError):  # not integers
        return None
    if (
        any(type(value) is not int for value in (*firsts, *counts))
        or min(sizes) <= 0
        or max(sizes) > BLOCK_ROWS
        or not all(map(operator.lt, starts, starts[1:]))
        or any(type(digest) is not bytes for digest in digests)
        or set(map(len, digests)) != {hashlib.sha256().digest_size}
    ):
        return None
    return list(map(Block._make, zip(firsts, counts, digests)))


class Index:
    """An opened tape index: its meta, and the queries a play, a listing or a check makes.

    Open it with :func:`open_index`; close it with :meth:`aclose` (or ``async with``).
    """

    def __init__(self, store: IndexStore, meta: dict[str, Any], where: str) -> None:
        self.store = store
        self.meta = meta
        self.where = where
        self.version: int = meta["version"]
        self._select = COLUMNS if self.version >= 2 else _COLUMNS_V1
        self._root = paths.to_bytes(meta["arc_root"])
        self._release: Callable[[], Awaitable[None]] = store.aclose
        self._trees: list[RowTree] = []  # the tree, once loaded (shared by every handle)

    def share(self, release: Callable[[], Awaitable[None]]) -> Index:
        """Another handle on this opened index, whose :meth:`aclose` calls ``release``."""
        handle = Index(self.store, self.meta, self.where)
        handle._release = release
        handle._trees = self._trees
        return handle

    def _row(self, values: Sequence[Any]) -> Row:
        row = Row._make(values)
        if type(row.mtime_ns) is not int:  # stored as text (see stored())
            try:
                row = row._replace(mtime_ns=int(row.mtime_ns))
            except (TypeError, ValueError):
                raise self._damaged(
                    f"the entry at offset {row.start_offset} has bad values"
                ) from None
        return check_names(row, self.where, self._root)

    def _rows(self, found: Sequence[Sequence[Any]]) -> list[Row]:
        """Many rows, checked as :meth:`_row` checks one, but at once where that is quick:
        when no name nor source holds a pattern that any unsafe path holds (joined with
        newlines: a NUL, ``//``, ``/.``, a component that starts with ``.`` or a path that
        starts or ends with ``/``), and every row without a source lies in the root."""
        rows = list(map(Row._make, found))
        try:
            names = _suspect([row.arc_path for row in rows])
            sources = _suspect([row.source for row in rows if row.source is not None])
        except TypeError:  # something that is not bytes: the slow path says which row
            return [self._row(values) for values in found]
        root, inside = self._root, self._root + b"/"
        if (
            not names
            and not sources
            and all(type(row.mtime_ns) is int for row in rows)
            and all(
                row.arc_path.startswith(inside) or row.arc_path == root
                for row in rows
                if row.source is None
            )
        ):
            return rows
        return [self._row(values) for values in found]

    def _damaged(self, what: str) -> TapeFormatError:
        return TapeFormatError(f"the index {self.where} is damaged: {what}")

    async def tree(self) -> RowTree:
        """The identity's tree: the digests of the blocks of rows, checked once (per opened
        connection, or per process for one identity and set of promises) to give the identity
        the index records with its other promises. Small: one row per
        :data:`~atartape.format.layout.BLOCK_ROWS` entries. Raises :class:`TapeFormatError`
        when they do not give it."""
        if not self._trees:
            tree = await self._load_tree()
            if not self._trees:
                self._trees.append(tree)
        return self._trees[0]

    async def stored_tree(self) -> RowTree:
        """The tree as the ``row_blocks`` table holds it now, read and checked again (never
        from the cache): what a deep verification compares with the rows."""
        return await self._load_tree(cached=False)

    async def _load_tree(self, cached: bool = True) -> RowTree:
        embedded: list[tuple[Any, ...]] = []
        if await self._has_embedded():
            embedded = await self.store.fetchall(
                "SELECT start_offset, arc_path, size, mode, mtime, digest FROM embedded "
                "ORDER BY start_offset"
            )
        promises = _promises(self.meta, [embedded_promise(*values) for values in embedded])
        key = (self.identity, tuple(promises))
        known = _TREES.get(key) if cached else None
        if known is not None:  # this identity's tree, checked before: the same whatever holds it
            return known
        found = await self.store.fetchall(
            "SELECT block, first_offset, rows, digest FROM row_blocks ORDER BY block"
        )
        blocks = _blocks(found)
        if blocks is None:
            raise self._damaged("its block digests have bad values")
        if tree_identity(blocks, promises) != self.identity:
            raise self._damaged(
                "its block digests and its other promises do not give the identity it records"
            )
        tree = RowTree(blocks, embedded)
        if len(_TREES) >= _TREES_KEPT:
            _TREES.pop(next(iter(_TREES)))
        _TREES[key] = tree
        return tree

    async def block(self, number: int) -> list[Row]:
        """The rows of block ``number`` of the tree, in stream order, once they give its
        digest: what a play hands on. Raises :class:`TapeFormatError` when they do not (a row
        edited, added, removed or moved since the recording)."""
        tree = await self.tree()
        block = tree.blocks[number]
        rows = await self.rows_from(block.first_offset, block.rows)
        # On the event loop: about a millisecond for a whole block, less than a thread hop.
        if len(rows) != block.rows or _digest_rows(rows) != block.digest:
            for row in rows:  # say which row, where its values alone show it
                if not well_formed(row):
                    raise self._damaged(f"the entry {row.path!r} has bad values: {tuple(row)!r}")
            raise self._damaged(
                f"its rows from offset {block.first_offset} (block {number}) are not the ones "
                "its identity was recorded with"
            )
        return rows

    async def checked(self, row: Row) -> Row:
        """``row``, once the block that holds it gives its digest (one block read): for what
        hands on one row alone (a location, an entry). Raises :class:`TapeFormatError`."""
        number = (await self.tree()).block_at(row.start_offset)
        if number >= 0 and row in await self.block(number):
            return row
        raise self._damaged(
            f"the entry {row.path!r} at offset {row.start_offset} is not among the rows its "
            "identity was recorded with"
        )

    @property
    def identity(self) -> str:
        value: str = self.meta["identity"]
        return value

    async def __aenter__(self) -> Index:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._release()

    def require(self, expected: str) -> None:
        """Raise :class:`TapeChangedError` unless this index is the recording ``expected``."""
        if self.identity != expected:
            raise TapeChangedError(
                f"the index {self.where} was re-recorded: it now holds recording "
                f"{self.identity[:16]}..., not {expected[:16]}... (open the tape again)"
            )

    async def start_covering(self, offset: int) -> int | None:
        """Start of the last entry that starts at or before ``offset`` (one indexed search)."""
        found = await self.store.fetchone(
            "SELECT start_offset FROM entries WHERE start_offset <= ? "
            "ORDER BY start_offset DESC LIMIT 1",
            (offset,),
        )
        return None if found is None else int(found[0])

    async def rows_from(self, offset: int, limit: int = BATCH_ROWS) -> list[Row]:
        """Up to ``limit`` rows of entries starting at or after ``offset``, in stream order."""
        found = await self.store.fetchall(
            f"SELECT {self._select} FROM entries WHERE start_offset >= ? "
            "ORDER BY start_offset LIMIT ?",
            (offset, limit),
        )
        return self._rows(found)

    async def rows(self, offset: int = 0, batch: int = BATCH_ROWS) -> AsyncGenerator[Row, None]:
        """Every row from ``offset`` on, in stream order, read ``batch`` rows at a time."""
        while True:
            found = await self.rows_from(offset, batch)
            for row in found:
                yield row
            if len(found) < batch:
                return
            offset = found[-1].start_offset + 1

    async def row_by_path(self, arc_path: bytes) -> Row | None:
        found = await self.store.fetchone(
            f"SELECT {self._select} FROM entries WHERE arc_path = ?", (arc_path,)
        )
        return None if found is None else self._row(found)

    async def row_by_source(self, source: bytes) -> Row | None:
        """The entry whose path in the recorded folder is ``source``, when its header carries
        a shortened one (``auto_truncate``)."""
        if self.version < 2:
            return None
        found = await self.store.fetchone(
            f"SELECT {self._select} FROM entries WHERE source = ?", (source,)
        )
        return None if found is None else self._row(found)

    async def find(self, path: bytes) -> Row | None:
        """The entry with archive path ``path``, or the one recorded from it when its header
        carries a shortened path."""
        row = await self.row_by_path(path)
        if row is None:
            root = paths.to_bytes(self.meta["arc_root"])
            if path == root:
                row = await self.row_by_source(b"")
            elif path.startswith(root + b"/"):
                row = await self.row_by_source(path[len(root) + 1 :])
        return row

    async def bytes_after(self, row: Row) -> bytes:
        """The tape's bytes just past ``row``: the next header, or the footer."""
        found = await self.store.fetchone(
            f"SELECT {self._select} FROM entries WHERE start_offset = ?", (row.end_offset,)
        )
        if found is not None:
            return (await self.checked(self._row(found))).entry().header()
        for embedded in await self.embedded_rows():
            if embedded.start_offset == row.end_offset:
                return embedded.entry().header()
        return bytes(FOOTER_SIZE)

    async def child_names(self, folder: bytes) -> list[bytes]:
        """The names of the entries directly inside ``folder`` (one range search on paths)."""
        prefix = folder + b"/"
        found = await self.store.fetchall(
            "SELECT arc_path FROM entries WHERE arc_path > ? AND arc_path < ?",
            (prefix, folder + b"0"),  # "0" follows "/": the range holds the whole subtree
        )
        cut = len(prefix)
        return [arc[cut:] for (arc,) in found if b"/" not in arc[cut:]]

    async def frames_from(self, offset: int, limit: int = BATCH_ROWS) -> list[tuple[Any, ...]]:
        """Rows ``(frame, offset, size, checksum, digest)`` of the compressed view, from the
        frame that holds compressed byte ``offset`` on (one indexed search)."""
        first = await self.store.fetchone(
            "SELECT frame FROM zstd_frames WHERE offset <= ? ORDER BY offset DESC LIMIT 1",
            (offset,),
        )
        start = 0 if first is None else int(first[0])
        return await self.store.fetchall(
            "SELECT frame, offset, size, checksum, digest FROM zstd_frames WHERE frame >= ? "
            "ORDER BY frame LIMIT ?",
            (start, limit),
        )

    async def frames(self, first: int, stop: int) -> list[tuple[Any, ...]]:
        """Rows of frames ``first`` to ``stop - 1`` of the compressed view."""
        return await self.store.fetchall(
            "SELECT frame, offset, size, checksum, digest FROM zstd_frames "
            "WHERE frame >= ? AND frame < ? ORDER BY frame",
            (first, stop),
        )

    async def block_digests(self, first: int, stop: int) -> dict[int, bytes]:
        """The recorded digests of sealed blocks ``first`` to ``stop - 1``."""
        found = await self.store.fetchall(
            "SELECT block, digest FROM sealed_blocks WHERE block >= ? AND block < ?",
            (first, stop),
        )
        return {int(block): bytes(digest) for block, digest in found}

    async def _has_embedded(self) -> bool:
        table = await self.store.fetchone(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'embedded'"
        )
        return table is not None

    async def checked_embedded(self) -> list[Row]:
        """:meth:`embedded_rows`, once they are those the identity holds (read with the tree,
        checked against it). Raises :class:`TapeFormatError` otherwise."""
        rows = await self.embedded_rows()  # their names first: the clearer refusal
        tree = await self.tree()
        promised = [values[:5] for values in tree.embedded]
        if [(r.start_offset, r.arc_path, r.size, r.mode, r.mtime) for r in rows] != promised:
            raise self._damaged(
                "its embedded members are not the ones its identity was recorded with"
            )
        return rows

    async def embedded_rows(self) -> list[Row]:
        """The rows of the tape's embedded members, shaped like entry rows; ``[]`` if none.
        Their names are checked (:func:`check_names`); they lie beside the tape's root."""
        if not await self._has_embedded():
            return []
        found = await self.store.fetchall(
            "SELECT start_offset, arc_path, size, mode, mtime FROM embedded ORDER BY start_offset"
        )
        return [
            check_names(
                Row(start, arc, "file", size, mode, mtime, mtime * 10**9, b"", *_NO_ROW_EXTRAS),
                self.where,
                None,
            )
            for start, arc, size, mode, mtime in found
        ]

    async def embedded_data(self, start_offset: int) -> bytes:
        """The bytes of the embedded member starting at ``start_offset``, once they give the
        digest the identity holds (:class:`TapeFormatError` otherwise)."""
        sql = "SELECT data FROM embedded WHERE start_offset = ?"
        found = await self.store.fetchone(sql, (start_offset,))
        if found is None:
            raise TapeFormatError(f"the index has no embedded member at offset {start_offset}")
        data = bytes(found[0])
        digest = await anyio.to_thread.run_sync(lambda: hashlib.sha256(data).digest())
        promised = [v[5] for v in (await self.tree()).embedded if v[0] == start_offset]
        if promised != [digest]:
            raise self._damaged(
                f"the bytes of its embedded member at offset {start_offset} "
                "are not the ones its identity was recorded with"
            )
        return data


def _stored_meta(value: Any) -> Any:
    """A meta value as SQLite stores it: lists as JSON, text that is not UTF-8 (a folder name
    kept through ``surrogateescape``) as its exact bytes."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, str):
        raw = paths.to_bytes(value)
        return value if raw.isascii() or _is_utf8(raw) else raw
    return value


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


VIEWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS zstd_frames (
    frame INTEGER PRIMARY KEY,
    offset INTEGER NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    checksum INTEGER,
    digest BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sealed_blocks (block INTEGER PRIMARY KEY, digest BLOB NOT NULL);
"""
"""The views a tape was recorded with (see :mod:`atartape.views`): each frame of the compressed
view (its offset, size, content checksum and digest) and a digest of each 1 MiB block sealed."""


async def write_views(
    path: str,
    meta: dict[str, Any],
    frames: Iterable[tuple[int, int, int, int | None, bytes]],
    blocks: Iterable[tuple[int, bytes]],
) -> None:
    """Add the rows of a tape's views to the unpublished index at ``path`` and set ``meta``."""
    async with await open_store(path) as store:
        await store.executescript(VIEWS_SCHEMA)
        await store.execute("BEGIN")
        await store.executemany(
            "INSERT INTO zstd_frames (frame, offset, size, checksum, digest) "
            "VALUES (?, ?, ?, ?, ?)",
            frames,
        )
        await store.executemany("INSERT INTO sealed_blocks (block, digest) VALUES (?, ?)", blocks)
        values = [(k, _stored_meta(v)) for k, v in meta.items()]
        await store.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values)
        await store.commit()


async def _read_meta(store: IndexStore, where: str, legacy: bool = False) -> dict[str, Any]:
    try:
        found = await store.fetchall("SELECT key, value FROM meta")
    except TapeFormatError as exc:
        raise TapeFormatError(f"{where} is not a tape index ({exc.__cause__ or exc})") from None
    meta: dict[str, Any] = {
        key: paths.from_bytes(value) if isinstance(value, bytes) else value for key, value in found
    }
    if meta.get("format") != FORMAT:
        raise TapeFormatError(f"{where} is not a tape index (no format marker)")
    if meta.get("version") in LEGACY and not legacy:
        raise _legacy_refusal(where, meta)
    if meta.get("version") not in (*READABLE, *(LEGACY if legacy else ())):
        raise TapeFormatError(
            f"{where} is a tape index of version {meta.get('version')}; "
            f"this library reads versions {', '.join(map(str, READABLE))}"
        )
    required = ("total_size", "fingerprint", "entry_count", "file_count", "arc_root")
    missing = [key for key in (*required, "recorded_at", "source_root") if key not in meta]
    if missing:
        raise TapeFormatError(f"{where} is damaged: its meta lacks {', '.join(missing)}")
    for key in ("total_size", "entry_count", "file_count"):
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TapeFormatError(f"{where} is damaged: its {key} is {value!r}")
    for key in ("noise", "exclude", "views"):
        if isinstance(meta.get(key), str):
            try:
                meta[key] = json.loads(meta[key])
            except ValueError:
                raise TapeFormatError(f"{where} is damaged: its {key} is not JSON") from None
    meta.setdefault("noise", [] if meta["version"] == 1 else list(DEFAULT_NOISE))
    if not isinstance(meta["arc_root"], str) or paths.unsafe(paths.to_bytes(meta["arc_root"])):
        raise TapeFormatError(f"{where} is damaged: its root {meta['arc_root']!r} is not a name")
    return meta


def _legacy_refusal(where: str, meta: dict[str, Any]) -> TapeFormatError:
    """Why an index of an earlier version does not play, and what to run instead."""
    source = meta.get("source_root")
    folder = source if isinstance(source, str) else "SRC"
    return TapeFormatError(
        f"{where} is a tape index of version {meta.get('version')}, written by an earlier "
        "atartape: it lacks the block digests a play checks its rows against; record the "
        f"folder again to upgrade it: atartape record {folder} --index {where} --overwrite"
    )


async def open_index(
    path: str | os.PathLike[str],
    *,
    expected: str | None = None,
    shared: bool = False,
    legacy: bool = False,
) -> Index:
    """Open the tape index at ``path`` read-only.

    ``expected`` pins the recording: :class:`TapeChangedError` if the index holds another one.
    ``shared``: every play of one index file in this event loop shares one connection (on
    asyncio, one aiosqlite thread), opened by the first and closed by the last; a file that a
    new recording replaced is another file, with a connection of its own. Raises
    :class:`~atartape.TapeNotFoundError` when there is no file and :class:`TapeFormatError`
    when it is not a tape index (or a damaged one), or one of an earlier version (whose message
    names the command that records it again). ``legacy`` opens an index of an earlier version
    too, for its rows alone (never to play: it has no tree; its identity is ``""``).
    """
    if shared:
        index = await _SHARED.open(os.fspath(path))
        if expected is not None:
            try:
                index.require(expected)
            except BaseException:
                await index.aclose()
                raise
        return index
    return await _open_index(os.fspath(path), expected, legacy)


IndexReader = Callable[[IndexStore, str, "str | None"], Awaitable["Index | None"]]
"""``reader(store, where, expected)`` opens the file behind ``store`` as an index of another
format, pinned to ``expected``, or returns ``None`` when it is not one (leaving ``store`` open);
once it answers with an index, that index owns ``store``; if it raises, it closed ``store``."""

_READERS: list[IndexReader] = []


def add_reader(reader: IndexReader) -> None:
    """Let :func:`open_index` open another format of index too (tartape 3's catalogs: see
    :mod:`atartape._engine.tartape_catalog`, which the engine package registers)."""
    _READERS.append(reader)


async def _open_index(where: str, expected: str | None, legacy: bool = False) -> Index:
    store = await open_store(where, readonly=True, must_exist=True)
    for reader in _READERS:
        found = await reader(store, where, expected)
        if found is not None:
            return found
    try:
        meta = await _read_meta(store, where, legacy)
        index = Index(store, meta, where)
        if meta["version"] in LEGACY:  # read for its rows alone: it has no tree
            meta["identity"] = ""
        if expected is not None:
            index.require(expected)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await store.aclose()
        raise
    return index


class _SharedIndexes:
    """The indexes opened for sharing, per event loop and per file (device and inode)."""

    def __init__(self) -> None:
        self._open: dict[tuple[object, int, int], tuple[Index, list[int]]] = {}
        self._locks: dict[object, anyio.Lock] = {}

    async def open(self, where: str) -> Index:
        st = await anyio.to_thread.run_sync(_stat_index, where)
        key = (loop_token(), st.st_dev, st.st_ino)
        lock = self._locks.setdefault(key[0], anyio.Lock())
        async with lock:
            found = self._open.get(key)
            if found is None:
                found = (await _open_index(where, None), [0])
                self._open[key] = found
            index, users = found
            users[0] += 1

        async def release() -> None:
            users[0] -= 1
            if users[0] == 0 and self._open.get(key) is found:
                del self._open[key]
                lock = self._locks.get(key[0])
                if (  # never drop a lock someone holds or waits for: both would open anew
                    lock is not None
                    and not lock.locked()
                    and not lock.statistics().tasks_waiting
                    and not any(k[0] == key[0] for k in self._open)
                ):
                    del self._locks[key[0]]
                await index.store.aclose()

        return index.share(release)


def _stat_index(where: str) -> os.stat_result:
    try:
        return os.stat(where)
    except OSError:
        raise TapeNotFoundError(f"no tape index at {where!r}") from None


_SHARED = _SharedIndexes()


async def write_index(
    path: str,
    meta: dict[str, Any],
    entries: Iterable[Entry],
    embedded: Sequence[tuple[Entry, bytes]] = (),
) -> None:
    """Write a new index file at ``path`` (which must not exist) in one transaction: its
    meta, its entries, the digests of their blocks (the identity's tree) and its embedded
    members."""
    rows = [Row.of(e) for e in entries]
    blocks = await anyio.to_thread.run_sync(row_blocks, rows)
    async with await open_store(path) as store:
        await store.executescript(SCHEMA + (EMBEDDED_SCHEMA if embedded else ""))
        await store.execute("BEGIN")
        values = {k: _stored_meta(v) for k, v in meta.items()}
        await store.executemany(INSERT_META, list(values.items()))
        await store.executemany(INSERT_ENTRY, map(stored, rows))
        await store.executemany(INSERT_BLOCK, ((n, *block) for n, block in enumerate(blocks)))
        for entry, data in embedded:
            await store.execute(
                "INSERT INTO embedded (start_offset, arc_path, size, mode, mtime, data, digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.start_offset,
                    paths.to_bytes(entry.arc_path),
                    len(data),
                    entry.mode,
                    entry.mtime,
                    data,
                    hashlib.sha256(data).digest(),
                ),
            )
        await store.commit()


def row_blocks(rows: Iterable[Row]) -> list[Block]:
    """The blocks of the identity's tree over ``rows`` (in stream order), as the
    ``row_blocks`` table keeps them (synchronous, CPU-bound)."""
    return blocks_of(row.values() for row in rows)


_ROW_KINDS = frozenset({"file", "dir", "symlink"})


def well_formed(row: Row) -> bool:
    """The values of a row have the types and ranges every row has."""
    return (
        type(row.start_offset) is int
        and type(row.size) is int
        and type(row.mode) is int
        and type(row.mtime) is int
        and type(row.mtime_ns) is int
        and type(row.arc_path) is bytes
        and type(row.linkname) is bytes
        and row.kind in _ROW_KINDS
        and row.size >= 0
        and row.start_offset % 512 == 0
        and (row.size == 0 or row.kind == "file")
    )
