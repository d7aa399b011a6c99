"""Playing a recorded tape: the TAR stream of its folder, from any byte offset."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from functools import partial

import anyio.to_thread

from ._engine import play
from ._engine.feed import IndexFeed
from ._engine.producer import CHUNK_SIZE, READ_AHEAD, Producer
from ._engine.sinks import JOIN_BYTES, ByteSink, EventSink
from ._engine.source import require_folder
from ._engine.store import open_store
from .format import paths
from .format.events import TarEvent
from .format.layout import Window, check_window
from .format.windows import DEFAULT_NAME_TEMPLATE, volume_count, volume_name, volume_window
from .tape import Tape
from .verify import VerifyReport, verify
from .volumes import Volume

__all__ = ["TapePlayer"]


class TapePlayer:
    """Plays a tape: reads the index and the source folder, produces the TAR stream.

    ``source_root`` is the folder to read (by default, where the tape was recorded). With
    ``md5`` on, :meth:`play` hashes each file whole in the worker thread and reports the digest
    in its ``file_end`` event. ``chunk_size`` is the size of the bytes objects produced (large
    files are read in pieces of that size) and ``read_ahead`` how many bytes one worker-thread
    hop reads: the most that is ever read ahead of the consumer.
    """

    def __init__(
        self,
        tape: Tape,
        *,
        source_root: str | os.PathLike[str] | None = None,
        md5: bool = True,
        chunk_size: int = CHUNK_SIZE,
        read_ahead: int = READ_AHEAD,
    ) -> None:
        if chunk_size < 512 or read_ahead < 1:
            raise ValueError("chunk_size must be at least 512 and read_ahead positive")
        self.tape = tape
        self.source_root = os.fspath(source_root) if source_root is not None else tape.source_root
        self.md5 = md5
        self.chunk_size = chunk_size
        self.read_ahead = read_ahead

    def play(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[TarEvent, None]:
        """Events for the bytes ``[start_offset, end_offset)`` of the tape (``None``: the end).

        The offsets are checked at once: :class:`InvalidOffsetError` for one outside
        ``[0, total_size]``. While playing, :class:`SourceNotFoundError` if the source folder
        is gone, :class:`TarIntegrityError` if an entry differs from the index (no byte of it
        is sent), and :class:`TapeFormatError` if the index is damaged. Close the generator
        (``aclose()``, or leave an ``aclosing`` block) to release the open file at once.
        """
        window = check_window(self.tape.total_size, start_offset, end_offset)
        return play.run(partial(self._session, window, self.md5), EventSink(window.start))

    def chunks(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Only the bytes of :meth:`play`: ``chunks(a, b)`` yields exactly ``full[a:b]``.

        Small entries are joined into chunks of about 256 KiB, large files come in pieces of
        ``chunk_size``; nothing is hashed. Raises as :meth:`play` does.
        """
        window = check_window(self.tape.total_size, start_offset, end_offset)
        sink = ByteSink(min(self.chunk_size, JOIN_BYTES))
        return play.run(partial(self._session, window, False), sink)

    stream = chunks
    """The same as :meth:`chunks` (its name before version 0.2)."""

    def volumes(self, size: int | str, *, name_template: str | None = None) -> list[Volume]:
        """The tape cut into volumes of ``size`` bytes (an int or ``"64MiB"``, ``"1GB"``).

        Nothing is read here: each :class:`~atartape.Volume` reads its bytes when it is
        consumed, independently of the others. Every volume but the last has ``size`` bytes;
        their concatenation is the full stream. ``name_template`` names them (fields ``name``,
        ``index``, ``count``; default ``"{name}.tar.{index:04d}"``). Raises :class:`ValueError`
        for a bad size or template.
        """
        count = volume_count(self.tape.total_size, size)
        return [self.volume(i, size, name_template=name_template) for i in range(count)]

    def volume(self, index: int, size: int | str, *, name_template: str | None = None) -> Volume:
        """Volume ``index`` (from 0) of :meth:`volumes`, computed alone.

        Raises :class:`InvalidOffsetError` for an index past the last volume (or negative) and
        :class:`ValueError` for a bad size or template.
        """
        total = self.tape.total_size
        start, end = volume_window(total, size, index)
        name = volume_name(
            name_template or DEFAULT_NAME_TEMPLATE,
            name=self.tape.name,
            index=index,
            count=volume_count(total, size),
        )
        return Volume(self.chunks, index, start, end, name)

    async def verify(
        self,
        deep: bool = True,
        *,
        content: bool = False,
        sample: int = 16,
        seed: int | str | None = None,
    ) -> VerifyReport:
        """Check the source against the index, without producing the stream.

        ``deep`` checks every entry (it exists, has the recorded type, size and mtime; a
        folder's mtime says whether names were added or removed; a symlink has its target);
        otherwise only canaries are checked: the first and last entries, the largest file, the
        most recently modified entry and ``sample`` entries picked at random (``seed`` makes
        the pick repeatable). ``content`` also re-hashes each checked file against the digest
        recorded by ``record(..., checksum=...)``. Returns a :class:`VerifyReport`, truthy when
        all holds; differences are listed, never raised. Raises :class:`SourceNotFoundError`
        without the source and :class:`ValueError` for ``content`` on a tape without checksums.
        """
        return await verify(
            self.tape, self.source_root, deep=deep, content=content, sample=sample, seed=seed
        )

    async def _session(self, window: Window, md5: bool) -> tuple[Producer, IndexFeed]:
        """Open a play: check the source is there, open the index, load embedded members."""
        tape = self.tape
        await anyio.to_thread.run_sync(require_folder, self.source_root, tape.name)
        store = await open_store(tape.index_path, readonly=True, must_exist=True)
        feed = IndexFeed(store, window, tape.index_path)
        try:
            await feed.load_embedded()
        except BaseException:
            await feed.aclose()
            raise
        root = os.fsencode(self.source_root)
        arc_root = paths.to_bytes(tape.arc_root)
        cut = len(arc_root)

        def locate(arc: bytes) -> bytes:
            # "<arc_root>/a/b" lives at "<source_root>/a/b"; the root entry is the folder.
            return root + arc[cut:]

        producer = Producer(
            window,
            locate=locate,
            md5=md5,
            chunk_size=self.chunk_size,
            read_ahead=self.read_ahead,
            memory=feed.memory,
            unchecked_folders=frozenset({arc_root}),
        )
        return producer, feed
