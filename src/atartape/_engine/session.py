"""Opening a play of a recorded tape: its producer and its feed of index rows.

One code path for :class:`~atartape.TapePlayer` and for what plays a tape without one
(:meth:`Tape.as_file <atartape.Tape.as_file>`): the source folder must be there, the index is
opened pinned to the recording the caller planned with, and embedded members are loaded.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from functools import partial

import anyio.to_thread

from ..format.layout import Window, check_window
from . import play
from .feed import IndexFeed
from .index import open_index
from .producer import CHUNK_SIZE, READ_AHEAD, Producer
from .sinks import JOIN_BYTES, ByteSink
from .source import FolderSource, folders_for, open_root


@dataclass(frozen=True)
class Recording:
    """Where a recorded tape's index and source are, and which recording it is."""

    index_path: str
    identity: str
    arc_root: str
    name: str
    total_size: int
    source_root: str


async def open_recorded(
    recording: Recording,
    window: Window,
    *,
    md5: bool,
    chunk_size: int = CHUNK_SIZE,
    read_ahead: int = READ_AHEAD,
) -> tuple[Producer, IndexFeed]:
    """Open a play of ``window``: one handle on the source folder, beneath which every source
    is opened (the producer owns it). Raises :class:`~atartape.SourceNotFoundError` without the
    source folder and :class:`~atartape.TapeChangedError` when the index holds another
    recording."""
    root = await anyio.to_thread.run_sync(open_root, recording.source_root, recording.name)
    sources = FolderSource(root, recording.arc_root)
    try:
        index = await open_index(recording.index_path, expected=recording.identity, shared=True)
        feed = IndexFeed(index, window)
        try:
            await feed.load_embedded()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await feed.aclose()
            raise
        producer = Producer(
            window,
            sources=sources,
            md5=md5,
            chunk_size=chunk_size,
            read_ahead=read_ahead,
            memory=feed.memory,
            folders=folders_for(index, root.root),
        )
    except BaseException:
        sources.close()
        raise
    return producer, feed


def recorded_chunks(
    recording: Recording,
    start_offset: int = 0,
    end_offset: int | None = None,
    *,
    chunk_size: int = CHUNK_SIZE,
    read_ahead: int = READ_AHEAD,
) -> AsyncGenerator[bytes, None]:
    """The bytes ``[start_offset, end_offset)`` of the tape, exactly (as ``TapePlayer.chunks``).

    Raises :class:`~atartape.InvalidOffsetError` at once for a window outside the tape.
    """
    window = check_window(recording.total_size, start_offset, end_offset)
    session = partial(
        open_recorded, recording, window, md5=False, chunk_size=chunk_size, read_ahead=read_ahead
    )
    return play.run(session, ByteSink(min(chunk_size, JOIN_BYTES)))
