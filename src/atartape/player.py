"""Playing a recorded tape: the TAR stream of its folder, from any byte offset."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from functools import partial
from typing import Any

from . import layouts
from ._engine import play
from ._engine.feed import IndexFeed
from ._engine.index import FORMAT
from ._engine.producer import CHUNK_SIZE, READ_AHEAD, Producer
from ._engine.session import Recording, open_recorded
from ._engine.sinks import JOIN_BYTES, ByteSink, EventSink
from .format.events import Progress, TarEvent
from .format.layout import Window, check_window
from .format.windows import Layout, volume_name
from .syncio import TapeReader
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

    def volumes(
        self,
        size: Layout | int | str | None = None,
        *,
        layout: Layout | str | None = None,
        name_template: str | None = None,
    ) -> list[Volume]:
        """The tape cut into volumes: of ``size`` bytes (an int or ``"64MiB"``, ``"1GB"``), or
        as a layout says (``size`` may be a layout's tag or a :class:`~atartape.Layout`, see
        :meth:`Tape.get_layout`; ``layout`` names one by its tag only). With neither, the
        tape's :attr:`~Tape.default_layout`.

        Nothing is read here: each :class:`~atartape.Volume` reads its bytes when it is
        consumed, independently of the others. Every volume but the last has the layout's
        volume size; their concatenation is the full stream. The volumes of a registered
        layout keep their MD5 in the tape's index once they have been read whole (see
        :func:`~atartape.verify_volume`). ``name_template`` names them (fields ``name``,
        ``index``, ``count``...; by default the layout's names, ``"{name}.tar.{index:04d}"``).
        Raises :class:`ValueError` for a bad size or template, and what
        :meth:`Tape.get_layout` raises.
        """
        chosen = self._layout(size, layout)
        return [self._volume(chosen, i, name_template) for i in range(chosen.count)]

    def volume(
        self,
        index: int,
        size: Layout | int | str | None = None,
        *,
        layout: Layout | str | None = None,
        name_template: str | None = None,
    ) -> Volume:
        """Volume ``index`` (from 0) of :meth:`volumes`, computed alone.

        Raises :class:`InvalidOffsetError` (a :class:`VolumeNotFoundError`) for an index past
        the last volume (or negative), and what :meth:`volumes` raises.
        """
        return self._volume(self._layout(size, layout), index, name_template)

    def as_file(
        self,
        start_offset: int = 0,
        end_offset: int | None = None,
        *,
        backend: str = "asyncio",
        portal: Any = None,
    ) -> TapeReader:
        """The bytes ``[start_offset, end_offset)`` of :meth:`chunks` as a synchronous,
        seekable file, for blocking code (see :mod:`atartape.syncio`). Close it (or use
        ``with``). Raises :class:`InvalidOffsetError` for a window outside the tape.
        """
        window = check_window(self.tape.total_size, start_offset, end_offset)
        return TapeReader(
            self.chunks,
            window.start,
            window.end,
            name=f"{self.tape.name}.tar",
            backend=backend,
            portal=portal,
        )

    def _layout(self, size: Layout | int | str | None, layout: Layout | str | None) -> Layout:
        tape = self.tape
        if size is not None and layout is not None:
            raise ValueError("pass a size or a layout, not both")
        if layout is not None:
            return layouts.tagged_layout(tape.layouts, layout, total_size=tape.total_size)
        if size is None:
            return tape.default_layout
        return tape.get_layout(size)

    def _volume(self, layout: Layout, index: int, name_template: str | None) -> Volume:
        start, end = layout.window(index)
        name = layout.name(index)
        if name_template is not None:
            name = volume_name(
                name_template,
                name=self.tape.name,
                index=index,
                count=layout.count,
                fingerprint=self.tape.fingerprint,
            )
        keeps = layout.registered and self.tape.index_format == FORMAT
        return Volume(
            self.chunks,
            index,
            start,
            end,
            name,
            layout_tag=layout.tag if layout.registered else None,
            keep_checksum=partial(self._keep_checksum, layout) if keeps else None,
        )

    async def _keep_checksum(self, layout: Layout, volume: Volume) -> None:
        if volume.md5 is not None:
            await self.tape.keep_volume_checksum(layout, volume.index, "md5", volume.md5)

    async def verify(
        self,
        deep: bool = True,
        *,
        content: bool = False,
        sample: int = 16,
        seed: int | str | None = None,
        progress: Progress | None = None,
    ) -> VerifyReport:
        """Check the source against the index, without producing the stream.

        ``deep`` checks every entry (it exists, has the recorded type, size and mtime; a
        folder's mtime says whether names were added or removed; a symlink has its target);
        otherwise only canaries are checked: the first and last entries, the largest file, the
        most recently modified entry and ``sample`` entries picked at random (``seed`` makes
        the pick repeatable). ``content`` also re-hashes each checked file against the digest
        recorded by ``record(..., checksum=...)``. Returns a :class:`VerifyReport`, truthy when
        all holds; differences are listed, never raised. ``progress`` (a
        :class:`~atartape.Progress`) counts the entries checked and the bytes re-hashed.
        Raises :class:`SourceNotFoundError` without the source, :class:`ValueError` for
        ``content`` on a tape without checksums, :class:`TapeChangedError` when the index was
        re-recorded and :class:`TapeFormatError` when it is damaged.
        """
        return await verify(
            self.tape,
            self.source_root,
            deep=deep,
            content=content,
            sample=sample,
            seed=seed,
            progress=progress,
        )

    async def _session(self, window: Window, md5: bool) -> tuple[Producer, IndexFeed]:
        """Open a play: check the source is there, open the index (pinned to the recording
        this player was made from), load embedded members."""
        tape = self.tape
        recording = Recording(
            tape.index_path,
            tape.identity,
            tape.arc_root,
            tape.name,
            tape.total_size,
            self.source_root,
        )
        return await open_recorded(
            recording, window, md5=md5, chunk_size=self.chunk_size, read_ahead=self.read_ahead
        )
