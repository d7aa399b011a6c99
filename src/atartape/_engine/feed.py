"""Where the rows of a play come from: the index (:class:`IndexFeed`) or a one-shot plan.

The index feed reads the rows of a window block by block: the blocks of the identity's tree
(:meth:`Index.tree <atartape._engine.index.Index.tree>`, small, checked against the recording's
identity once), from the one holding the window's first byte, each read whole and checked against
its digest before any of its rows is handed on (:meth:`Index.block
<atartape._engine.index.Index.block>`). A window thus checks what it plays, and a little before
(at most one block), never the rest of the index. Every row is also checked against its
neighbours: each starts where the previous one ended, the row a play begins in covers its first
byte, and the last row ends where the footer begins. A damaged or edited index is refused with
:class:`~atartape.TapeFormatError` before the bytes it would change go out.
"""

from __future__ import annotations

import bisect
from typing import Protocol

from ..errors import TapeFormatError
from ..format.layout import Window
from .index import Index, Row, RowTree, well_formed


class Feed(Protocol):
    async def next_batch(self) -> list[Row]:
        """The next rows to produce, in stream order; ``[]`` when there are none."""
        ...

    async def aclose(self) -> None: ...


class PlanFeed:
    """The rows of a one-shot plan, handed over in one batch."""

    def __init__(self, rows: list[Row]) -> None:
        self._rows: list[Row] | None = rows

    async def next_batch(self) -> list[Row]:
        rows, self._rows = self._rows or [], None
        return rows

    async def aclose(self) -> None:
        self._rows = None


class IndexFeed:
    """Batches of index rows for ``window``, checked against each other as they stream."""

    def __init__(self, index: Index, window: Window) -> None:
        self.index = index
        self.window = window
        self.where = index.where
        self.memory: dict[bytes, bytes] = {}  # content of the embedded members in the window
        self._embedded: list[Row] = []  # every embedded member (they follow every entry)
        self._pending_embedded: list[Row] = []  # those in the window, handed out last
        self._tree: RowTree | None = None
        self._block = 0  # the next block of the tree to read
        self._expected: int | None = None  # where the next row must start
        self._entries_done = False

    async def load_embedded(self) -> None:
        """Embedded members (the index of a tape recorded with ``embed_index``) follow every
        entry; when the window reaches them, their bytes are loaded now. Both are checked
        against the identity (which loads its tree of block digests, checked too)."""
        self._embedded = await self.index.checked_embedded()
        for row in self._embedded:
            if self.window.overlaps(row.start_offset, row.end_offset - row.start_offset):
                self.memory[row.arc_path] = await self.index.embedded_data(row.start_offset)
                self._pending_embedded.append(row)

    async def aclose(self) -> None:
        await self.index.aclose()

    def _damaged(self, what: str) -> TapeFormatError:
        return TapeFormatError(f"the index {self.where} is damaged: {what}")

    async def next_batch(self) -> list[Row]:
        while not self._entries_done:
            rows = await self._entry_rows()
            if rows:
                return rows
        rows, self._pending_embedded = self._pending_embedded, []
        return rows

    async def _entry_rows(self) -> list[Row]:
        window = self.window
        tree = self._tree
        if tree is None:
            # The first block is found in the tree (in memory), never by a scan of the rows.
            tree = self._tree = await self.index.tree()
            self._block = max(0, tree.block_at(window.start))
        if self._block >= len(tree):
            self._entries_done = True
            if self._expected is None:
                self._check([], True)  # no row at all: is one missing?
            return []
        if tree.starts[self._block] >= window.end:
            self._entries_done = True
            return []
        rows = await self.index.block(self._block)
        self._block += 1
        last_batch = self._block == len(tree)
        if self._expected is None:  # the first block: from the row that covers the start on
            starts = [row.start_offset for row in rows]
            rows = rows[max(0, bisect.bisect_right(starts, window.start) - 1) :]
        self._check(rows, last_batch)
        if last_batch:
            self._entries_done = True
        # Keep the rows in the window: the first may end where the window starts.
        while rows and rows[-1].start_offset >= window.end:
            rows.pop()
            self._entries_done = True
        if rows and rows[0].end_offset <= window.start:
            rows = rows[1:]
        return rows

    def _check(self, rows: list[Row], last_batch: bool) -> None:
        """Each row starts where the one before ended, from the row that covers the window's
        start; the last row ends where the embedded index or the footer begins."""
        expected = self._expected
        end = self._embedded[0].start_offset if self._embedded else self.window.footer_start
        if (
            expected is None
            and self.window.start < end
            and (not rows or rows[0].start_offset > self.window.start)
        ):
            raise self._damaged(f"no entry covers offset {self.window.start}")
        for row in rows:
            if expected is not None and row.start_offset != expected:
                raise self._damaged(
                    f"the entry {row.path!r} starts at {row.start_offset}, "
                    f"where the entry before it ends at {expected}"
                )
            if not well_formed(row):
                raise self._damaged(f"the entry {row.path!r} has bad values: {tuple(row)!r}")
            expected = row.end_offset
        self._expected = expected
        if last_batch and expected is not None and expected != end:
            raise self._damaged(f"the entries end at {expected}, but the footer begins at {end}")
        if self._embedded and self._embedded[-1].end_offset != self.window.footer_start:
            raise self._damaged("the embedded index does not end where the footer begins")
