"""Playing a recorded tape: the TAR stream of its folder, from any byte offset."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from functools import partial
from typing import TYPE_CHECKING

import anyio.to_thread

from . import _index, paths
from ._engine import CHUNK_SIZE, HOP_BYTES, Producer, play_bytes, play_events
from ._errors import SourceNotFoundError
from ._store import IndexStore, Row, open_store
from .events import TarEvent
from .header import entry_span
from .layout import check_window
from .tape import Tape

if TYPE_CHECKING:
    from .verify import VerifyReport
    from .volumes import Volume


class TapePlayer:
    """Plays a tape: reads the index and the source folder, produces the TAR stream.

    ``source_root`` is the folder to read (by default, where the tape was recorded). With
    ``md5`` on, :meth:`play` hashes each file whole in the worker thread and reports the digest
    in its ``file_end`` event. ``chunk_size`` is the size of the bytes objects produced (large
    files are read in pieces of that size) and ``hop_bytes`` how much one worker-thread hop
    reads: the most that is ever read ahead of the consumer.
    """

    def __init__(
        self,
        tape: Tape,
        source_root: str | os.PathLike[str] | None = None,
        *,
        md5: bool = True,
        chunk_size: int = CHUNK_SIZE,
        hop_bytes: int = HOP_BYTES,
    ) -> None:
        if chunk_size < 512 or hop_bytes < 1:
            raise ValueError("chunk_size must be at least 512 and hop_bytes positive")
        self.tape = tape
        self.source_root = os.fspath(source_root) if source_root is not None else tape.source_root
        self.md5 = md5
        self.chunk_size = chunk_size
        self.hop_bytes = hop_bytes

    def play(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[TarEvent, None]:
        """Events for the bytes ``[start_offset, end_offset)`` of the tape (``None``: the end).

        The offsets are checked at once: :class:`InvalidOffsetError` for one outside
        ``[0, total_size]``. While playing, :class:`SourceNotFoundError` if the source folder
        is gone and :class:`TarIntegrityError` if a file differs from the index (no byte of
        that entry is sent). Close the generator (``aclose()``, or leave an ``aclosing``
        block) to release the open file at once.
        """
        start, end = check_window(self.tape.total_size, start_offset, end_offset)
        return play_events(partial(self._session, start, end, self.md5))

    def stream(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Only the bytes of :meth:`play` (``stream(a, b)`` yields exactly ``full[a:b]``).

        Small entries are joined into chunks of about ``chunk_size``; nothing is hashed.
        Raises as :meth:`play` does.
        """
        start, end = check_window(self.tape.total_size, start_offset, end_offset)
        return play_bytes(partial(self._session, start, end, False))

    def _producer(
        self, start: int, end: int, *, md5: bool, memory: dict[bytes, bytes] | None = None
    ) -> Producer:
        root = os.fsencode(self.source_root)
        arc_root = paths.to_bytes(self.tape.arc_root)
        cut = len(arc_root)

        def resolve(arc: bytes) -> bytes:
            # "<arc_root>/a/b" lives at "<source_root>/a/b"; the root entry is the folder.
            return root + arc[cut:]

        return Producer(
            start=start,
            end=end,
            total_size=self.tape.total_size,
            resolve=resolve,
            md5=md5,
            chunk_size=self.chunk_size,
            hop_bytes=self.hop_bytes,
            unchecked=frozenset({arc_root}),
            memory=memory,
        )

    async def _session(self, start: int, end: int, md5: bool) -> tuple[Producer, _IndexFeed]:
        """Open a play: check the source is there, open the index, load embedded members."""
        if not await anyio.to_thread.run_sync(os.path.isdir, self.source_root):
            raise SourceNotFoundError(
                f"the source of tape {self.tape.name!r} is not at {self.source_root!r} "
                "(pass source_root= to play it from elsewhere)"
            )
        store = await open_store(self.tape.index_path, readonly=True, must_exist=True)
        feed = _IndexFeed(store, start, end)
        try:
            await feed.load_embedded()
        except BaseException:
            await feed.aclose()
            raise
        return self._producer(start, end, md5=md5, memory=feed.memory), feed

    def volumes(self, size: int | str, *, name_template: str | None = None) -> list[Volume]:
        """The tape cut into volumes of ``size`` bytes (an int or ``"64MiB"``, ``"1GB"``).

        Nothing is read here: each :class:`~atartape.volumes.Volume` reads its bytes when it
        is consumed, independently of the others. Every volume but the last has ``size`` bytes;
        their concatenation is the full stream. ``name_template`` names them (fields ``name``,
        ``index``, ``count``; default ``"{name}.tar.{index:04d}"``). Raises :class:`ValueError`
        for a bad size or template.
        """
        from .volumes import make_volumes

        return make_volumes(self, size, name_template=name_template)

    def volume(self, index: int, size: int | str, *, name_template: str | None = None) -> Volume:
        """Volume ``index`` (from 0) of :meth:`volumes`, computed alone.

        Raises :class:`InvalidOffsetError` for an index past the last volume (or negative) and
        :class:`ValueError` for a bad size or template.
        """
        from .volumes import make_volume

        return make_volume(self, index, size, name_template=name_template)

    async def verify(
        self,
        deep: bool = True,
        *,
        content: bool = False,
        sample: int = 16,
        seed: int | str | None = None,
    ) -> VerifyReport:
        """Check the source against the index; see :func:`atartape.verify.verify_tape`.

        ``deep`` checks every entry, else a canary set (first, last, largest, newest and
        ``sample`` random entries); ``content`` re-hashes files against the recorded digests.
        Returns a report, truthy when all holds. Raises :class:`SourceNotFoundError` without
        the source and :class:`ValueError` for ``content`` on a tape without checksums.
        """
        from .verify import verify_tape

        return await verify_tape(
            self.tape, self.source_root, deep=deep, content=content, sample=sample, seed=seed
        )


class _IndexFeed:
    """Batches of index rows for a window: one indexed search, then ranges of the key."""

    def __init__(self, store: IndexStore, start: int, end: int) -> None:
        self.store = store
        self.start = start
        self.end = end
        self._next: int | None = None  # start offset of the next row to fetch
        self.memory: dict[bytes, bytes] = {}  # content of the embedded members in the window
        self._embedded: list[Row] = []

    async def load_embedded(self) -> None:
        """Embedded members (the index of a tape recorded with embed_index) follow every entry;
        when the window reaches them, their bytes are loaded now, before the producer exists."""
        for row in await _index.embedded_rows(self.store):
            if row[0] < self.end and row[0] + entry_span(row[3]) > self.start:
                self.memory[row[1]] = await _index.embedded_data(self.store, row[0])
                self._embedded.append(row)

    async def aclose(self) -> None:
        await self.store.aclose()

    async def next_batch(self) -> list[Row]:
        rows = await self._entry_rows()
        if not rows and self._embedded:
            rows, self._embedded = self._embedded, []
        return rows

    async def _entry_rows(self) -> list[Row]:
        if self._next is None:
            # The first entry is found by one search on the start-offset key, never a scan.
            first = await _index.start_covering(self.store, self.start)
            self._next = 0 if first is None else first
        if self._next >= self.end:
            return []
        rows = await _index.rows_from(self.store, self._next)
        if len(rows) < _index.BATCH_ROWS:
            self._next = self.end  # the last batch
        else:
            self._next = rows[-1][0] + 1
        # Trim rows past the window's end, and a first row that ends where the window starts
        # (it starts in the footer).
        while rows and rows[-1][0] >= self.end:
            rows.pop()
        if rows and rows[0][0] + entry_span(rows[0][3]) <= self.start:
            rows = rows[1:]
        return rows
