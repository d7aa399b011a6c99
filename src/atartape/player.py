"""Playing a recorded tape: the TAR stream of its folder, from any byte offset."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from contextlib import aclosing

import anyio.to_thread

from . import _index, paths
from ._engine import CHUNK_SIZE, HOP_BYTES, Item, Producer, play_bytes, play_events
from ._errors import SourceNotFoundError
from ._store import IndexStore, open_store
from .events import TarEvent
from .layout import Entry, check_window
from .tape import Tape


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
        return self._play(start, end)

    def stream(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Only the bytes of :meth:`play` (``stream(a, b)`` yields exactly ``full[a:b]``).

        Small entries are joined into chunks of about ``chunk_size``; nothing is hashed.
        Raises as :meth:`play` does.
        """
        start, end = check_window(self.tape.total_size, start_offset, end_offset)
        return self._stream(start, end)

    async def _play(self, start: int, end: int) -> AsyncGenerator[TarEvent, None]:
        producer = Producer(md5=self.md5, chunk_size=self.chunk_size, hop_bytes=self.hop_bytes)
        async with (
            await self._open_index(start, end) as feed,
            aclosing(
                play_events(producer, feed.next_batch, start, end, self.tape.total_size)
            ) as events,
        ):
            async for event in events:
                yield event

    async def _stream(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        producer = Producer(md5=False, chunk_size=self.chunk_size, hop_bytes=self.hop_bytes)
        async with (
            await self._open_index(start, end) as feed,
            aclosing(
                play_bytes(producer, feed.next_batch, start, end, self.tape.total_size)
            ) as chunks,
        ):
            async for chunk in chunks:
                yield chunk

    async def _open_index(self, start: int, end: int) -> _IndexFeed:
        if not await anyio.to_thread.run_sync(os.path.isdir, self.source_root):
            raise SourceNotFoundError(
                f"the source of tape {self.tape.name!r} is not at {self.source_root!r} "
                "(pass source_root= to play it from elsewhere)"
            )
        store = await open_store(self.tape.index_path, readonly=True, must_exist=True)
        return _IndexFeed(store, self, start, end)


class _IndexFeed:
    """Batches of items for a window, read from the index: one indexed search, then ranges."""

    def __init__(self, store: IndexStore, player: TapePlayer, start: int, end: int) -> None:
        self.store = store
        self.root = player.source_root
        self.arc_root = player.tape.arc_root
        self.start = start
        self.end = end
        self._next: int | None = None  # start offset of the next entry to fetch

    async def __aenter__(self) -> _IndexFeed:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.store.__aexit__(*exc_info)

    def _item(self, entry: Entry) -> Item:
        rel = paths.relative_to_root(entry.arc_path, self.arc_root)
        return Item(
            entry,
            os.path.join(self.root, rel) if rel else self.root,
            skip=max(0, self.start - entry.start_offset),
            stop=min(entry.span, self.end - entry.start_offset),
            check_mtime=bool(rel),
        )

    async def next_batch(self) -> list[Item]:
        if self._next is None:
            # The first entry is found by one search on the start-offset key, never a scan.
            first = await _index.entry_covering(self.store, self.start)
            self._next = self.start if first is None else first.start_offset
        if self._next >= self.end:
            return []
        entries = await _index.entries_from(self.store, self._next)
        items = [
            self._item(e)
            for e in entries
            if e.start_offset < self.end and e.end_offset > self.start
        ]
        if not entries or entries[-1].start_offset >= self.end:
            self._next = self.end
        else:
            self._next = entries[-1].start_offset + 1
        if not items and self._next < self.end and entries:
            return await self.next_batch()
        return items
