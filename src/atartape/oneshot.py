"""One-shot tapes: add folders, files and bytes, then stream them; no index on disk."""

from __future__ import annotations

import itertools
import os
import stat
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, replace

import anyio.to_thread

from . import paths
from ._engine import CHUNK_SIZE, Item, Producer, play_events
from ._errors import PathConstraintError, SourceNotFoundError, TarTapeError
from ._scan import Exclude, scan
from .events import TarEvent
from .header import EntryKind
from .layout import Entry, assign_offsets


@dataclass(frozen=True)
class _Folder:
    path: str
    arcname: str | None
    exclude: Exclude


@dataclass(frozen=True)
class _File:
    path: str
    arcname: str | None


@dataclass(frozen=True)
class _Bytes:
    arc_path: str
    data: bytes
    mode: int
    mtime: int | None


class TarTape:
    """A tape built on the fly from folders, files and in-memory bytes (no index needed).

    Nothing is read when entries are added; :meth:`stream` scans, lays the entries out in the
    same deterministic order and format as a recorded tape, and plays them.
    """

    def __init__(self, *, md5: bool = True, chunk_size: int = CHUNK_SIZE) -> None:
        self.md5 = md5
        self.chunk_size = chunk_size
        self._sources: list[_Folder | _File | _Bytes] = []

    def add_folder(
        self, path: str | os.PathLike[str], arcname: str | None = None, *, exclude: Exclude = None
    ) -> None:
        """Add a folder and everything below it, under ``arcname`` (default: its name)."""
        self._sources.append(_Folder(os.fspath(path), arcname, exclude))

    def add_file(self, path: str | os.PathLike[str], arcname: str | None = None) -> None:
        """Add one file (or symlink), as ``arcname`` (default: its name)."""
        self._sources.append(_File(os.fspath(path), arcname))

    def add_bytes(
        self, arc_path: str, data: bytes, *, mode: int = 0o644, mtime: int | None = None
    ) -> None:
        """Add a file whose content is ``data``; ``mtime`` defaults to the time of streaming."""
        reason = paths.violation(arc_path)
        if reason is not None:
            raise PathConstraintError([(arc_path, reason)])
        self._sources.append(_Bytes(arc_path, bytes(data), mode, mtime))

    def stream(self) -> AsyncGenerator[TarEvent, None]:
        """Play everything added, as events (the same events as :meth:`TapePlayer.play`).

        Raises :class:`SourceNotFoundError` for a missing folder or file,
        :class:`PathConstraintError` for paths that cannot be stored (all listed), and
        :class:`TarTapeError` for two entries with one archive path.
        """
        return self._stream()

    async def _stream(self) -> AsyncGenerator[TarEvent, None]:
        items = await anyio.to_thread.run_sync(self._plan)
        total = assign_offsets(i.entry.size for i in items)[1]
        sent = False

        async def feed() -> list[Item]:
            nonlocal sent
            if sent:
                return []
            sent = True
            return items

        producer = Producer(md5=self.md5, chunk_size=self.chunk_size)
        async with aclosing(play_events(producer, feed, 0, total, total)) as events:
            async for event in events:
                yield event

    def _plan(self) -> list[Item]:
        """Scan the sources (in a worker thread) and lay out every entry in tape order."""
        now = int(time.time())
        planned: list[tuple[Entry, str, bytes | None, bool]] = []
        for source in self._sources:
            if isinstance(source, _Folder):
                root = os.path.abspath(source.path)
                arc_root = (source.arcname or os.path.basename(root)).strip("/")
                for entry in scan(root, arc_root, exclude=source.exclude).entries:
                    rel = paths.relative_to_root(entry.arc_path, arc_root)
                    planned.append(
                        (entry, os.path.join(root, rel) if rel else root, None, bool(rel))
                    )
            elif isinstance(source, _File):
                planned.append((_file_entry(source), source.path, None, True))
            else:
                entry = Entry(
                    source.arc_path,
                    EntryKind.FILE,
                    len(source.data),
                    source.mode,
                    now if source.mtime is None else source.mtime,
                    0,
                )
                planned.append((entry, "", source.data, False))
        planned.sort(key=lambda p: paths.to_bytes(p[0].arc_path))
        for before, after in itertools.pairwise(planned):
            if before[0].arc_path == after[0].arc_path:
                raise TarTapeError(f"{after[0].arc_path!r} was added twice")
        starts, _ = assign_offsets(p[0].size for p in planned)
        return [
            Item(replace(entry, start_offset=start), path, data=data, check_mtime=check)
            for start, (entry, path, data, check) in zip(starts, planned)
        ]


def _file_entry(source: _File) -> Entry:
    arc_path = (source.arcname or os.path.basename(os.path.abspath(source.path))).strip("/")
    try:
        st = os.lstat(source.path)
    except FileNotFoundError:
        raise SourceNotFoundError(f"file {source.path!r} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        kind, size, link = EntryKind.SYMLINK, 0, os.readlink(source.path)
    elif stat.S_ISREG(st.st_mode):
        kind, size, link = EntryKind.FILE, st.st_size, ""
    else:
        raise SourceNotFoundError(f"{source.path!r} is not a regular file or symlink")
    reason = paths.violation(arc_path, linkname=link or None)
    if reason is not None:
        raise PathConstraintError([(arc_path, reason)])
    return Entry(
        arc_path,
        kind,
        size,
        stat.S_IMODE(st.st_mode),
        st.st_mtime_ns // 1_000_000_000,
        0,
        link,
        st.st_mtime_ns,
    )
