"""Playing a recorded tape: the TAR stream of its folder, from any byte offset."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from functools import partial
from typing import Any

from . import layouts, transforms, views
from ._engine import play
from ._engine.feed import IndexFeed
from ._engine.index import FORMAT, Index, open_index
from ._engine.producer import CHUNK_SIZE, READ_AHEAD, Producer
from ._engine.session import Recording, open_recorded
from ._engine.sinks import JOIN_BYTES, ByteSink, EventSink, FdSink
from .errors import InvalidArgumentError
from .format.events import Progress, TarEvent
from .format.layout import Window, check_window
from .format.windows import Layout, volume_name
from .syncio import TapeReader
from .tape import Tape
from .verify import VerifyReport, verify
from .volumes import Volume

__all__ = ["TapePlayer"]

# Written straight to a descriptor, nothing read is held for the consumer: a hop may read more.
DIRECT_READ_AHEAD = 16 * 1024 * 1024


class TapePlayer:
    """Plays a tape: reads the index and the source folder, produces the TAR stream.

    ``source_root`` is the folder to read (by default, where the tape was recorded). With
    ``md5`` on, :meth:`play` hashes each file whole in the worker thread and reports the digest
    in its ``file_end`` event. ``chunk_size`` is the size of the bytes objects produced (large
    files are read in pieces of that size) and ``read_ahead`` how many bytes one worker-thread
    hop reads: the most that is ever read ahead of the consumer.

    ``view`` is what the bytes are: ``"plain"`` (the tar), ``"zstd"``, ``"age"`` or
    ``"zstd+age"`` (see :mod:`atartape.views`); by default the view the tape was recorded with,
    so a sealed tape never plays unsealed unless asked. A sealed view needs its key: the key
    file beside the index, or ``age_identity`` (an ``AGE-SECRET-KEY-1…`` identity, or the
    passphrase). :attr:`size`, :attr:`identity`, :attr:`filename` and :attr:`content_type`
    describe the bytes of the view.
    """

    def __init__(
        self,
        tape: Tape,
        *,
        source_root: str | os.PathLike[str] | None = None,
        md5: bool = True,
        chunk_size: int = CHUNK_SIZE,
        read_ahead: int = READ_AHEAD,
        view: str | None = None,
        age_identity: str | bytes | None = None,
    ) -> None:
        if chunk_size < 512 or read_ahead < 1:
            raise InvalidArgumentError("chunk_size must be at least 512 and read_ahead positive")
        self.tape = tape
        self.source_root = os.fspath(source_root) if source_root is not None else tape.source_root
        self.md5 = md5
        self.chunk_size = chunk_size
        self.read_ahead = read_ahead
        self.view = view or tape.view
        if self.view not in views.VIEWS:
            raise InvalidArgumentError(
                f"view must be one of {', '.join(views.VIEWS)}, not {view!r}"
            )
        self.size = tape.view_size(self.view)  # raises ValueError for a view the tape lacks
        self.age_identity = age_identity
        self._file_key: bytes | None = None

    @property
    def identity(self) -> str:
        """The identity of the bytes this player gives (its view's): the strong validator."""
        return views.identity_of(self.tape.identity, self.view)

    @property
    def filename(self) -> str:
        """What the bytes are called: ``<tape name>.tar``, ``.tar.zst``, ``.tar.age``..."""
        return self.tape.name + views.suffix(self.view)

    @property
    def content_type(self) -> str:
        return views.content_type(self.view)

    def play(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[TarEvent, None]:
        """Events for the bytes ``[start_offset, end_offset)`` of the tape (``None``: the end).

        Events describe the tar: the player's view must be ``"plain"`` (``ValueError``
        otherwise). The offsets are checked at once: :class:`InvalidOffsetError` for one outside
        ``[0, total_size]``. While playing, :class:`SourceNotFoundError` if the source folder
        is gone, :class:`TarIntegrityError` if an entry differs from the index (no byte of it
        is sent), and :class:`TapeFormatError` if the index is damaged. Close the generator
        (``aclose()``, or leave an ``aclosing`` block) to release the open file at once.
        """
        if self.view != "plain":
            raise InvalidArgumentError(
                f"events describe the tar: this player gives the {self.view!r} view (make one "
                "with view='plain' for events)"
            )
        window = check_window(self.tape.total_size, start_offset, end_offset)
        return play.run(partial(self._session, window, self.md5), EventSink(window.start))

    def chunks(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The bytes of the player's view: ``chunks(a, b)`` yields exactly ``full[a:b]``.

        For the tar, small entries are joined into chunks of about 256 KiB, large files come in
        pieces of ``chunk_size``; nothing is hashed. Offsets count in the view (``[0, size]``).
        Raises as :meth:`play` does, and :class:`ViewError` when a compressed or sealed view
        cannot give the bytes it promised (another zstd build, a missing key).
        """
        window = check_window(self.size, start_offset, end_offset)
        if self.view == "plain":
            return self._plain(window.start, window.end)
        return self._view_chunks(window.start, window.end)

    def _plain(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        window = check_window(self.tape.total_size, start, end)
        sink = ByteSink(min(self.chunk_size, JOIN_BYTES))
        return play.run(partial(self._session, window, False), sink)

    async def _view_chunks(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        meta = self.tape.meta
        file_key = None
        if self.view.endswith("age"):
            if self._file_key is None:
                self._file_key = await transforms.unseal_key(
                    meta, self.tape.index_path, self.age_identity
                )
            file_key = self._file_key

        async def opener() -> Index:
            return await open_index(self.tape.index_path, expected=self.tape.identity, shared=True)

        source = transforms.view_source(opener, meta, self.view, self._plain, file_key)
        async with aclosing(source(start, end)) as chunks:
            async for chunk in chunks:
                yield chunk

    stream = chunks
    """The same as :meth:`chunks` (its name before version 0.2)."""

    async def write_to(
        self,
        fd: int,
        start_offset: int = 0,
        end_offset: int | None = None,
        *,
        progress: Progress | None = None,
    ) -> int:
        """Write the bytes ``[start_offset, end_offset)`` to the file descriptor ``fd`` (a file,
        a pipe, a socket) and return how many were written.

        The bytes go from the worker threads that read them straight to ``fd``, never through
        the event loop, each piece written only once it was read and checked, exactly as
        :meth:`chunks` would hand it out. ``fd`` is neither closed nor flushed to disk.
        ``progress`` counts the bytes written and the entries begun. Raises as :meth:`play`
        does, and ``OSError`` when writing fails (a closed pipe: ``BrokenPipeError``).
        """
        if self.view != "plain":
            window = check_window(self.size, start_offset, end_offset)
            written = await transforms.write_chunks(self.chunks(window.start, window.end), fd)
            if progress is not None:
                progress.bytes += written
            return written
        window = check_window(self.tape.total_size, start_offset, end_offset)
        sink = FdSink(fd, progress)
        session = partial(self._session, window, False, DIRECT_READ_AHEAD)
        async with aclosing(play.run(session, sink)) as items:
            async for _ in items:
                pass  # pragma: no cover - an FdSink hands nothing out
        return sink.written

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
        window = check_window(self.size, start_offset, end_offset)
        return TapeReader(
            self.chunks,
            window.start,
            window.end,
            name=self.filename,
            backend=backend,
            portal=portal,
        )

    def _layout(self, size: Layout | int | str | None, layout: Layout | str | None) -> Layout:
        tape = self.tape
        if size is not None and layout is not None:
            raise InvalidArgumentError("pass a size or a layout, not both")
        if self.view != "plain":
            return self._view_layout(size, layout)
        if layout is not None:
            return layouts.tagged_layout(tape.layouts, layout, total_size=tape.total_size)
        if size is None:
            return tape.default_layout
        return tape.get_layout(size)

    def _view_layout(self, size: Layout | int | str | None, layout: Layout | str | None) -> Layout:
        """Volumes of a compressed or sealed view: cut at a volume size (a layout's, when one
        is named), counted in the view's bytes; the layouts kept in the index cut the tar."""
        tape = self.tape
        chosen = size if size is not None else layout
        if chosen is None:
            volume_size = tape.default_layout.volume_size
        elif isinstance(chosen, Layout):
            volume_size = chosen.volume_size
        else:
            volume_size = tape.get_layout(chosen).volume_size
        return Layout.plan(
            self.size,
            volume_size,
            tape_name=tape.name,
            fingerprint=tape.fingerprint,
            suffix=views.suffix(self.view),
        )

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
                suffix=views.suffix(self.view),
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
        Raises :class:`SourceNotFoundError` without the source,
        :class:`~atartape.ChecksumsNotRecordedError` (a ``ValueError``) for ``content`` on a tape
        without checksums, :class:`TapeChangedError` when the index was
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

    async def _session(
        self, window: Window, md5: bool, read_ahead: int | None = None
    ) -> tuple[Producer, IndexFeed]:
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
            recording,
            window,
            md5=md5,
            chunk_size=self.chunk_size,
            read_ahead=read_ahead or self.read_ahead,
        )
