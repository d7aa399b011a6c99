"""One-shot tapes: add folders, files, bytes and async streams, then play them; no index on disk."""

from __future__ import annotations

import itertools
import os
import stat
import time
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass, field, replace

import anyio.to_thread

from ._engine import play
from ._engine.feed import PlanFeed
from ._engine.index import Row
from ._engine.producer import CHUNK_SIZE, Producer
from ._engine.scan import Exclude, scan
from ._engine.sinks import ByteSink, EventSink
from .errors import DuplicateEntryError, PathConstraintError, SourceNotFoundError
from .format import paths
from .format.embedded import index_member
from .format.events import TarEvent
from .format.header import FOOTER_SIZE, EntryKind
from .format.layout import Entry, Window, assign_offsets, fingerprint

__all__ = ["TarTape"]


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


@dataclass(frozen=True)
class _Stream:
    arc_path: str
    size: int
    chunks: AsyncIterable[bytes]
    mode: int
    mtime: int | None


@dataclass
class _Plan:
    """Rows in tape order and where each row's content comes from."""

    rows: list[Row]
    total_size: int
    fingerprint: str
    disk: dict[bytes, bytes] = field(default_factory=dict)  # arc path -> file path
    memory: dict[bytes, bytes] = field(default_factory=dict)
    streams: dict[bytes, AsyncIterable[bytes]] = field(default_factory=dict)
    roots: frozenset[bytes] = frozenset()


class TarTape:
    """A tape built on the fly from folders, files, in-memory bytes and async streams.

    Nothing is read when entries are added; :meth:`play` (events) and :meth:`chunks` (bytes)
    scan, lay the entries out in the same deterministic order and format as a recorded tape,
    and play them. With
    ``embed_index``, the tape ends (before its footer) with an index member,
    ``.tarindex_<16 hex of the fingerprint>.csv``, listing every entry before it (see
    :mod:`atartape.members`).
    """

    def __init__(
        self, *, md5: bool = True, chunk_size: int = CHUNK_SIZE, embed_index: bool = False
    ) -> None:
        self.md5 = md5
        self.chunk_size = chunk_size
        self.embed_index = embed_index
        self._sources: list[_Folder | _File | _Bytes | _Stream] = []

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
        """Add a file whose content is ``data``; ``mtime`` defaults to the time of streaming.

        Raises :class:`PathConstraintError` when ``arc_path`` cannot be stored in a tape.
        """
        _check_path(arc_path)
        self._sources.append(_Bytes(arc_path, bytes(data), mode, mtime))

    def add_stream(
        self,
        arc_path: str,
        size: int,
        chunks: AsyncIterable[bytes],
        *,
        mode: int = 0o644,
        mtime: int | None = None,
    ) -> None:
        """Add a file of ``size`` bytes whose content ``chunks`` yields while the tape plays.

        ``size`` is a promise, as a recorded file's size is: when ``chunks`` yields more, the
        tape stops with :class:`TarIntegrityError` before any byte past ``size`` is sent; when
        it ends short, before the entry's padding. ``chunks`` is iterated once, when the entry
        plays (an async generator can be played only once). Raises :class:`PathConstraintError`
        for a path that cannot be stored and ``ValueError`` for a negative or non-int size.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be a non-negative int, not {size!r}")
        _check_path(arc_path)
        self._sources.append(_Stream(arc_path, size, chunks, mode, mtime))

    def play(self) -> AsyncGenerator[TarEvent, None]:
        """Play everything added, as events (the same events as :meth:`TapePlayer.play`).

        Raises :class:`SourceNotFoundError` for a missing folder or file,
        :class:`PathConstraintError` for paths that cannot be stored (all listed),
        :class:`DuplicateEntryError` for two entries with one archive path, and
        :class:`TarIntegrityError` for a file that changed or a stream that broke its size.
        """
        return play.run(self._session, EventSink(0))

    def chunks(self) -> AsyncGenerator[bytes, None]:
        """Only the bytes of :meth:`play`; raises as :meth:`play` does."""
        return play.run(self._session, ByteSink())

    stream = play
    """The same as :meth:`play` (the first TarTape's name for it: it yields events)."""

    async def _session(self) -> tuple[Producer, PlanFeed]:
        plan = await anyio.to_thread.run_sync(self._plan)
        producer = Producer(
            Window(0, plan.total_size, plan.total_size),
            locate=plan.disk.__getitem__,
            md5=self.md5,
            chunk_size=self.chunk_size,
            memory=plan.memory,
            streams=plan.streams,
            unchecked_folders=plan.roots,
        )
        return producer, PlanFeed(plan.rows)

    def _plan(self) -> _Plan:
        """Scan the sources (in a worker thread) and lay out every entry in tape order."""
        now = int(time.time())
        planned: list[tuple[Entry, str | bytes | AsyncIterable[bytes]]] = []
        roots: set[bytes] = set()
        for source in self._sources:
            if isinstance(source, _Folder):
                root = os.path.abspath(source.path)
                arc_root = (source.arcname or os.path.basename(root)).strip("/")
                roots.add(paths.to_bytes(arc_root))
                for entry in scan(root, arc_root, exclude=source.exclude).entries:
                    rel = paths.relative_to_root(entry.arc_path, arc_root)
                    planned.append((entry, os.path.join(root, rel) if rel else root))
            elif isinstance(source, _File):
                planned.append((_file_entry(source), source.path))
            else:
                size = len(source.data) if isinstance(source, _Bytes) else source.size
                mtime = now if source.mtime is None else source.mtime
                entry = Entry(
                    source.arc_path, EntryKind.FILE, size, source.mode, mtime, 0, "", mtime * 10**9
                )
                content = source.data if isinstance(source, _Bytes) else source.chunks
                planned.append((entry, content))
        planned.sort(key=lambda p: paths.sort_key(paths.to_bytes(p[0].arc_path)))
        for before, after in itertools.pairwise(planned):
            if before[0].arc_path == after[0].arc_path:
                raise DuplicateEntryError(f"{after[0].arc_path!r} was added twice")
        starts, total = assign_offsets(p[0].size for p in planned)
        entries = [replace(p[0], start_offset=s) for s, p in zip(starts, planned)]
        plan = _Plan([], total, fingerprint(entries), roots=frozenset(roots))
        for entry, (_, where) in zip(entries, planned):
            arc = paths.to_bytes(entry.arc_path)
            plan.rows.append(Row.of(entry))
            if isinstance(where, str):
                plan.disk[arc] = os.fsencode(where)
            elif isinstance(where, bytes):
                plan.memory[arc] = where
            else:
                plan.streams[arc] = where
        if self.embed_index:
            self._append_index(plan, entries)
        return plan

    def _append_index(self, plan: _Plan, entries: list[Entry]) -> None:
        """The index member, last (after every sorted entry), served from memory."""
        entry, data = index_member(entries, plan.fingerprint, plan.total_size - FOOTER_SIZE)
        if any(e.arc_path == entry.arc_path for e in entries):
            raise DuplicateEntryError(
                f"{entry.arc_path!r} was added, but it is the embedded index's name"
            )
        plan.rows.append(Row.of(entry))
        plan.memory[paths.to_bytes(entry.arc_path)] = data
        plan.total_size = entry.end_offset + FOOTER_SIZE


def _check_path(arc_path: str) -> None:
    reason = paths.violation(arc_path)
    if reason is not None:
        raise PathConstraintError([(arc_path, reason)])


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
