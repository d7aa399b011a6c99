"""Playing a recorded tape: the TAR stream of its folder, from any byte offset."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from functools import partial

import anyio.to_thread

from . import views
from ._engine import play
from ._engine.feed import IndexFeed
from ._engine.index import Index, open_index
from ._engine.producer import CHUNK_SIZE, READ_AHEAD, Producer
from ._engine.sinks import JOIN_BYTES, ByteSink, EventSink, FdSink
from ._engine.source import folders_for, require_folder, source_locator
from .format.events import Progress, TarEvent
from .format.layout import Window, check_window
from .format.windows import DEFAULT_NAME_TEMPLATE, volume_count, volume_name, volume_window
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
            raise ValueError("chunk_size must be at least 512 and read_ahead positive")
        self.tape = tape
        self.source_root = os.fspath(source_root) if source_root is not None else tape.source_root
        self.md5 = md5
        self.chunk_size = chunk_size
        self.read_ahead = read_ahead
        self.view = view or tape.view
        if self.view not in views.VIEWS:
            raise ValueError(f"view must be one of {', '.join(views.VIEWS)}, not {view!r}")
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
            raise ValueError(
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
                self._file_key = await views.unseal_key(
                    meta, self.tape.index_path, self.age_identity
                )
            file_key = self._file_key

        async def opener() -> Index:
            return await open_index(self.tape.index_path, expected=self.tape.identity, shared=True)

        source = views.view_source(opener, meta, self.view, self._plain, file_key)
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
            written = await views.write_chunks(self.chunks(window.start, window.end), fd)
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

    def volumes(self, size: int | str, *, name_template: str | None = None) -> list[Volume]:
        """The tape cut into volumes of ``size`` bytes (an int or ``"64MiB"``, ``"1GB"``).

        Nothing is read here: each :class:`~atartape.Volume` reads its bytes when it is
        consumed, independently of the others. Every volume but the last has ``size`` bytes;
        their concatenation is the full stream. ``name_template`` names them (fields ``name``,
        ``index``, ``count``; default ``"{name}.tar.{index:04d}"``). Raises :class:`ValueError`
        for a bad size or template.
        """
        count = volume_count(self.size, size)
        return [self.volume(i, size, name_template=name_template) for i in range(count)]

    def volume(self, index: int, size: int | str, *, name_template: str | None = None) -> Volume:
        """Volume ``index`` (from 0) of :meth:`volumes`, computed alone.

        Raises :class:`InvalidOffsetError` for an index past the last volume (or negative) and
        :class:`ValueError` for a bad size or template.
        """
        total = self.size
        start, end = volume_window(total, size, index)
        name = volume_name(
            name_template or DEFAULT_NAME_TEMPLATE,
            name=self.tape.name,
            index=index,
            count=volume_count(total, size),
            suffix=views.suffix(self.view),
        )
        return Volume(self.chunks, index, start, end, name)

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

    async def _session(
        self, window: Window, md5: bool, read_ahead: int | None = None
    ) -> tuple[Producer, IndexFeed]:
        """Open a play: check the source is there, open the index (pinned to the recording
        this player was made from), load embedded members."""
        tape = self.tape
        root = await anyio.to_thread.run_sync(_absolute_folder, self.source_root, tape.name)
        index = await open_index(tape.index_path, expected=tape.identity, shared=True)
        feed = IndexFeed(index, window)
        try:
            await feed.load_embedded()
        except BaseException:
            await feed.aclose()
            raise
        producer = Producer(
            window,
            locate=source_locator(root, tape.arc_root),
            md5=md5,
            chunk_size=self.chunk_size,
            read_ahead=read_ahead or self.read_ahead,
            memory=feed.memory,
            folders=folders_for(index, root),
        )
        return producer, feed


def _absolute_folder(root: str, tape_name: str) -> str:
    require_folder(root, tape_name)
    return os.path.abspath(root)
