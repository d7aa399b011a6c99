"""One-shot tapes: folders, files, bytes, remote objects and async streams, planned once, then
played whole or from any range; no index on disk.

A :class:`TarTape` is built from members whose sizes are known up front: files and folders on
disk (stat-ed and scanned when the tape is prepared), bytes in memory, objects read by ranges
from elsewhere (:meth:`TarTape.add_remote`: an S3 ranged GET, an HTTP ``Range`` request) and async
streams of a declared size. ``await tape.prepare()`` freezes the plan, in a worker thread: from
then on :attr:`~TarTape.total_size`, :attr:`~TarTape.identity` and every byte position are
known, and ``tape.chunks(a, b)`` is exactly ``full[a:b]``, from any offset, as many times as
wanted. Playing an unprepared tape prepares it first.

The promise is a recorded tape's: a file from disk must still have the size and nanosecond mtime
it had when the tape was prepared (else :class:`~atartape.TarIntegrityError`, before any byte of
it); a remote object and a stream must give exactly their declared size (else the same error,
before any byte past or short of it). A stream is read once, as it plays, from its first byte: a
tape with streams plays whole, once, and cannot serve ranges (:attr:`~TarTape.ranges` is false).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ._engine import play
from ._engine.feed import PlanFeed
from ._engine.index import Row
from ._engine.producer import CHUNK_SIZE, Producer, md5
from ._engine.scan import scan
from ._engine.sinks import JOIN_BYTES, ByteSink, EventSink, Sink
from ._engine.source import ListedFolders, PlacedSources, StrictFolders, mismatch
from .errors import (
    DuplicateEntryError,
    InvalidArgumentError,
    InvalidOffsetError,
    PathConstraintError,
    SourceNotFoundError,
)
from .format import paths
from .format.embedded import index_member
from .format.events import TarEvent
from .format.folders import Exclude, Selection
from .format.header import BLOCK_SIZE, FOOTER_SIZE, EntryKind, entry_span
from .format.layout import Entry, Window, assign_offsets, check_window, fingerprint, identity
from .syncio import TapeReader

__all__ = ["ReadRange", "TarTape"]

T = TypeVar("T")

ReadRange = Callable[[int, int], Awaitable["bytes | bytearray | memoryview"]]
"""``read_range(start, end)``: the bytes ``[start, end)`` of a remote object."""


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


@dataclass(frozen=True)
class _Remote:
    arc_path: str
    size: int
    read_range: ReadRange
    mode: int
    mtime: int
    version: str | None


@dataclass
class _Plan:
    """Rows in tape order, where each row's content comes from, and what the tape promises."""

    rows: list[Row]
    total_size: int
    fingerprint: str
    identity: str = ""
    entry_count: int = 0
    file_count: int = 0
    data_size: int = 0
    newest: int | None = None  # the newest mtime of the members
    # arc path -> the folder it lies beneath (added whole, or holding a file added alone), and
    # its path there: played beneath that folder, never through a symlink (see PlacedSources)
    disk: dict[bytes, tuple[str, bytes]] = field(default_factory=dict)
    memory: dict[bytes, bytes] = field(default_factory=dict)
    streams: dict[bytes, AsyncIterable[bytes]] = field(default_factory=dict)
    remote: dict[bytes, _Remote] = field(default_factory=dict)
    roots: frozenset[bytes] = frozenset()


class TarTape:
    """A tape built from folders, files, in-memory bytes, remote objects and async streams.

    Add members, then ``await tape.prepare()`` (or just play it: that prepares it) to freeze the
    plan; see the module docstring. ``name`` names the tape (``<name>.tar`` for a download; by
    default the folder's name when a single folder was added, else ``"tape"``);
    ``recorded_at`` fixes the moment the tape stands for (by default the newest mtime of its
    members, so the same members give the same validators). With ``md5`` on, :meth:`play`
    reports each file's MD5 in its ``file_end`` event. With ``embed_index``, the tape ends
    (before its footer) with an index member, ``.tarindex_<16 hex of the fingerprint>.csv``,
    listing every entry before it (see :mod:`atartape.format.embedded`).

    For an HTTP response (``TapeResponse(tape, request)`` once prepared) it offers what a
    recorded tape offers: :attr:`total_size`, :attr:`identity` (the strong validator),
    :attr:`fingerprint`, :attr:`name`, :attr:`recorded_at` and ``chunks(start, end)``; and
    :attr:`ranges`, false when a stream makes ranges impossible.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        md5: bool = True,
        chunk_size: int = CHUNK_SIZE,
        embed_index: bool = False,
        recorded_at: datetime | None = None,
    ) -> None:
        if chunk_size < BLOCK_SIZE:
            raise InvalidArgumentError(f"chunk_size must be at least {BLOCK_SIZE}")
        self.md5 = md5
        self.chunk_size = chunk_size
        self.embed_index = embed_index
        self._name = name
        self._recorded_at = recorded_at
        self._sources: list[_Folder | _File | _Bytes | _Stream | _Remote] = []
        self._plan: _Plan | None = None
        self._planning: anyio.Lock | None = None
        self._streams_played = False

    # ------------------------------------------------------------------ adding

    def _check_open(self) -> None:
        if self._plan is not None:
            raise RuntimeError("the tape is prepared: its plan is frozen (make another TarTape)")

    def add_folder(
        self, path: str | os.PathLike[str], arcname: str | None = None, *, exclude: Exclude = None
    ) -> None:
        """Add a folder and everything below it, under ``arcname`` (default: its name)."""
        self._check_open()
        self._sources.append(_Folder(os.fspath(path), arcname, exclude))

    def add_file(self, path: str | os.PathLike[str], arcname: str | None = None) -> None:
        """Add one file (or symlink), as ``arcname`` (default: its name)."""
        self._check_open()
        self._sources.append(_File(os.fspath(path), arcname))

    def add_bytes(
        self, arc_path: str, data: bytes, *, mode: int = 0o644, mtime: int | None = None
    ) -> None:
        """Add a file whose content is ``data``; ``mtime`` defaults to the time the tape is
        prepared.

        Raises :class:`PathConstraintError` when ``arc_path`` cannot be stored in a tape.
        """
        self._check_open()
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
        plays, from its first byte: a tape with a stream plays whole and once (it cannot serve
        ranges or resume; :meth:`add_remote` can). Raises :class:`PathConstraintError` for a
        path that cannot be stored and ``ValueError`` for a negative or non-int size.
        """
        self._check_open()
        _check_size(size)
        _check_path(arc_path)
        self._sources.append(_Stream(arc_path, size, chunks, mode, mtime))

    def add_remote(
        self,
        arc_path: str,
        size: int,
        *,
        mtime: int,
        read_range: ReadRange,
        mode: int = 0o644,
        version: str | None = None,
    ) -> None:
        """Add a file of ``size`` bytes read from elsewhere by ranges, as it plays.

        ``read_range(start, end)`` is an async callable returning the bytes ``[start, end)``
        of the object (an S3 ranged GET, an HTTP ``Range`` request); only the ranges a play
        needs are asked for, in pieces of at most ``chunk_size`` bytes, so a resumed or ranged
        download reads only its part of each object. ``size`` is a promise: a range answered
        with more or fewer bytes than asked stops the tape with :class:`TarIntegrityError`
        before those bytes go out. ``version`` (an ETag, a version id) goes into the tape's
        identity, so that a changed object changes it; the bytes themselves cannot be checked
        here, so let ``read_range`` ask for that version (``If-Match``, ``VersionId``).

        Raises :class:`PathConstraintError` for a path that cannot be stored and
        ``ValueError`` for a negative or non-int size, a non-int mtime or a ``read_range``
        that is not callable.
        """
        self._check_open()
        _check_size(size)
        if isinstance(mtime, bool) or not isinstance(mtime, int):
            raise InvalidArgumentError(f"mtime must be an int of seconds, not {mtime!r}")
        if not callable(read_range):
            raise InvalidArgumentError(f"read_range must be an async callable, not {read_range!r}")
        _check_path(arc_path)
        self._sources.append(_Remote(arc_path, size, read_range, mode, mtime, version))

    # ------------------------------------------------------------------ the plan

    async def prepare(self) -> TarTape:
        """Freeze the plan: scan the folders, stat the files (in a worker thread), lay every
        member out. Returns the tape; preparing again does nothing. From now on members cannot
        be added, and :attr:`total_size`, :attr:`identity`... are known.

        Raises :class:`SourceNotFoundError` for a missing folder or file,
        :class:`PathConstraintError` for paths that cannot be stored (all listed) and
        :class:`DuplicateEntryError` for two members with one archive path.
        """
        if self._plan is None:
            if self._planning is None:
                self._planning = anyio.Lock()
            async with self._planning:
                if self._plan is None:
                    self._plan = await anyio.to_thread.run_sync(self._make_plan)
        return self

    @property
    def prepared(self) -> bool:
        """Whether :meth:`prepare` has frozen the plan."""
        return self._plan is not None

    def _frozen(self) -> _Plan:
        if self._plan is None:
            raise RuntimeError("the tape is not prepared yet: `await tape.prepare()` first")
        return self._plan

    @property
    def name(self) -> str:
        """The tape's name (a download is ``<name>.tar``)."""
        if self._name:
            return self._name
        folders = [s for s in self._sources if isinstance(s, _Folder)]
        if len(folders) == 1:
            folder = folders[0]
            arc_root = folder.arcname or os.path.basename(os.path.abspath(folder.path))
            return arc_root.strip("/").rsplit("/", 1)[-1] or "tape"
        return "tape"

    @property
    def total_size(self) -> int:
        """Bytes of the whole tape (prepared tapes only; ``RuntimeError`` before)."""
        return self._frozen().total_size

    @property
    def fingerprint(self) -> str:
        """The layout: what the headers say, in order (prepared tapes only)."""
        return self._frozen().fingerprint

    @property
    def identity(self) -> str:
        """What the tape promises, the strong validator of its bytes (prepared tapes only):
        every member's path, size, mode and mtime (to the nanosecond for files on disk), the
        digest of in-memory bytes and the ``version`` of remote objects."""
        return self._frozen().identity

    @property
    def recorded_at(self) -> datetime:
        """The moment the tape stands for (prepared tapes only): ``recorded_at`` as given, else
        the newest mtime of its members (the epoch for an empty tape)."""
        plan = self._frozen()
        if self._recorded_at is not None:
            return self._recorded_at
        return datetime.fromtimestamp(plan.newest or 0, tz=timezone.utc)

    @property
    def entry_count(self) -> int:
        """Every entry (prepared tapes only), the embedded index aside."""
        return self._frozen().entry_count

    @property
    def file_count(self) -> int:
        """The regular files among the entries (prepared tapes only)."""
        return self._frozen().file_count

    @property
    def data_size(self) -> int:
        """The bytes of file content (prepared tapes only)."""
        return self._frozen().data_size

    @property
    def ranges(self) -> bool:
        """Whether any range of the tape can be played (prepared tapes only): false when a
        stream (:meth:`add_stream`) is in it, which plays whole, once."""
        return not self._frozen().streams

    # ------------------------------------------------------------------ playing

    def play(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[TarEvent, None]:
        """Events for the bytes ``[start_offset, end_offset)`` (``None``: the end), the same
        events as :meth:`TapePlayer.play`; prepares the tape first if needed.

        Raises :class:`InvalidOffsetError` for a window outside the tape, or other than the
        whole tape when it holds a stream (at once when the tape is prepared); what
        :meth:`prepare` raises; and while playing :class:`TarIntegrityError` for a file that
        changed, or a stream or remote object that broke its size.
        """
        self._check_window(start_offset, end_offset)
        return self._run(start_offset, end_offset, EventSink, self.md5)

    def chunks(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Only the bytes of :meth:`play`: ``chunks(a, b)`` yields exactly ``full[a:b]``;
        raises as :meth:`play` does."""
        self._check_window(start_offset, end_offset)
        join = min(self.chunk_size, JOIN_BYTES)
        return self._run(start_offset, end_offset, lambda _: ByteSink(join), False)

    stream = play
    """The same as :meth:`play` (the first TarTape's name for it: it yields events)."""

    def as_file(
        self,
        start_offset: int = 0,
        end_offset: int | None = None,
        *,
        backend: str = "asyncio",
        portal: Any = None,
    ) -> TapeReader:
        """The bytes ``[start_offset, end_offset)`` as a synchronous, seekable file (see
        :mod:`atartape.syncio`); the tape must be prepared (``RuntimeError`` otherwise) and
        able to serve ranges. Raises :class:`InvalidOffsetError` for a bad window."""
        plan = self._frozen()
        if plan.streams:
            raise InvalidOffsetError("a tape with streams plays whole, once: it is no file")
        window = check_window(plan.total_size, start_offset, end_offset)
        return TapeReader(
            self.chunks,
            window.start,
            window.end,
            name=f"{self.name}.tar",
            backend=backend,
            portal=portal,
        )

    def _check_window(self, start: int, end: int | None) -> Window | None:
        """The window, checked when the plan is known (else when the play begins)."""
        plan = self._plan
        if plan is None:
            return None
        window = check_window(plan.total_size, start, end)
        if plan.streams and (window.start, window.end) != (0, plan.total_size):
            raise InvalidOffsetError(
                f"this tape holds streams, read once from their first byte: it plays whole "
                f"(0 to {plan.total_size}), not [{window.start}, {window.end})"
            )
        return window

    async def _run(
        self,
        start: int,
        end: int | None,
        make_sink: Callable[[int], Sink[T]],
        md5: bool,
    ) -> AsyncGenerator[T, None]:
        await self.prepare()
        plan = self._frozen()
        window = self._check_window(start, end)
        assert window is not None
        if plan.streams:
            if self._streams_played:
                raise RuntimeError(
                    "this tape's streams were played already (a stream is read once)"
                )
            self._streams_played = True
        sink = make_sink(window.start)
        rows = [
            r for r in plan.rows if window.overlaps(r.start_offset, r.end_offset - r.start_offset)
        ]
        if not plan.remote:  # one play of it all
            async with aclosing(play.run(partial(self._session, window, rows, md5), sink)) as items:
                async for item in items:
                    yield item
            return
        at = window.start
        for group in _groups(rows, plan.remote):
            if isinstance(group, list):
                last = group[-1]
                part = Window(at, min(window.end, last.end_offset), window.total_size)
                produced = play.run(partial(self._session, part, group, md5), sink)
            else:
                last = group
                remote = plan.remote[group.arc_path]
                produced = _remote_entry(group, remote, window, sink, md5, self.chunk_size)
            async with aclosing(produced) as items:
                async for item in items:
                    yield item
            at = min(window.end, last.end_offset)
        # The footer (and the tape's completion), after the last entry.
        tail = Window(at, window.end, window.total_size)
        async with aclosing(play.run(partial(self._session, tail, [], md5), sink)) as items:
            async for item in items:
                yield item

    async def _session(
        self, window: Window, rows: list[Row], md5: bool
    ) -> tuple[Producer, PlanFeed]:
        plan = self._frozen()
        producer = Producer(
            window,
            sources=PlacedSources(plan.disk),
            md5=md5,
            chunk_size=self.chunk_size,
            memory=plan.memory,
            streams=plan.streams,
            folders=StrictFolders(plan.roots),
        )
        return producer, PlanFeed(rows)

    def _make_plan(self) -> _Plan:
        """Scan the sources (in a worker thread) and lay out every entry in tape order."""
        now = int(time.time())
        planned: list[tuple[Entry, tuple[str, bytes] | bytes | AsyncIterable[bytes] | _Remote]] = []
        roots: set[bytes] = set()
        for source in self._sources:
            if isinstance(source, _Folder):
                root = os.path.abspath(source.path)
                arc_root = (source.arcname or os.path.basename(root)).strip("/")
                roots.add(paths.to_bytes(arc_root))
                folders = ListedFolders(root, arc_root, Selection.of(source.exclude), None)
                for entry in scan(root, arc_root, folders).entries:
                    rel = paths.relative_to_root(entry.arc_path, arc_root)
                    planned.append((entry, (root, paths.to_bytes(rel))))
            elif isinstance(source, _File):
                folder, name = os.path.split(os.path.abspath(source.path))
                planned.append((_file_entry(source), (folder, os.fsencode(name))))
            else:
                size = len(source.data) if isinstance(source, _Bytes) else source.size
                mtime = now if source.mtime is None else source.mtime
                entry = Entry(
                    source.arc_path, EntryKind.FILE, size, source.mode, mtime, 0, "", mtime * 10**9
                )
                content: bytes | AsyncIterable[bytes] | _Remote = (
                    source.data
                    if isinstance(source, _Bytes)
                    else source
                    if isinstance(source, _Remote)
                    else source.chunks
                )
                planned.append((entry, content))
        planned.sort(key=lambda p: paths.sort_key(paths.to_bytes(p[0].arc_path)))
        for before, after in itertools.pairwise(planned):
            if before[0].arc_path == after[0].arc_path:
                raise DuplicateEntryError(f"{after[0].arc_path!r} was added twice")
        starts, total = assign_offsets(p[0].size for p in planned)
        entries = [replace(p[0], start_offset=s) for s, p in zip(starts, planned)]
        plan = _Plan([], total, fingerprint(entries), roots=frozenset(roots))
        promises: list[bytes] = []
        for entry, (_, where) in zip(entries, planned):
            arc = paths.to_bytes(entry.arc_path)
            plan.rows.append(Row.of(entry))
            if isinstance(where, tuple):
                plan.disk[arc] = where
            elif isinstance(where, bytes):
                plan.memory[arc] = where
                promises.append(b"bytes\0" + arc + b"\0" + hashlib.sha256(where).digest())
            elif isinstance(where, _Remote):
                plan.remote[arc] = where
                promises.append(b"remote\0" + arc + b"\0" + (where.version or "").encode())
            else:
                plan.streams[arc] = where
                promises.append(b"stream\0" + arc)
        plan.entry_count = len(entries)
        plan.file_count = sum(1 for e in entries if e.kind is EntryKind.FILE)
        plan.data_size = sum(e.size for e in entries)
        plan.newest = max((e.mtime for e in entries), default=None)
        if self.embed_index:
            promises.append(self._append_index(plan, entries))
        rules = json.dumps({"one-shot": sorted(paths.from_bytes(r) for r in roots)})
        plan.identity = identity(entries, promises=[rules.encode(), *promises])
        return plan

    def _append_index(self, plan: _Plan, entries: list[Entry]) -> bytes:
        """The index member, last (after every sorted entry), served from memory."""
        entry, data = index_member(entries, plan.fingerprint, plan.total_size - FOOTER_SIZE)
        if any(e.arc_path == entry.arc_path for e in entries):
            raise DuplicateEntryError(
                f"{entry.arc_path!r} was added, but it is the embedded index's name"
            )
        plan.rows.append(Row.of(entry))
        plan.memory[paths.to_bytes(entry.arc_path)] = data
        plan.total_size = entry.end_offset + FOOTER_SIZE
        return data


def _groups(rows: list[Row], remote: dict[bytes, _Remote]) -> list[list[Row] | Row]:
    """The rows cut into runs the engine plays and remote rows played here, in order."""
    groups: list[list[Row] | Row] = []
    run: list[Row] = []
    for row in rows:
        if row.arc_path in remote:
            if run:
                groups.append(run)
                run = []
            groups.append(row)
        else:
            run.append(row)
    if run:
        groups.append(run)
    return groups


async def _remote_entry(
    row: Row, member: _Remote, window: Window, sink: Sink[T], hashing: bool, step: int
) -> AsyncGenerator[T, None]:
    """The part of a remote member's entry in ``window``: its header, the ranges of content
    it needs (each checked to be exactly the bytes asked for) and its padding."""
    span = entry_span(row.size)
    skip, stop = window.cut(row.start_offset, span)
    sink.start(row, skip > 0)
    if skip < BLOCK_SIZE:
        sink.piece(row.header()[skip : min(stop, BLOCK_SIZE)])
    lo = min(max(skip - BLOCK_SIZE, 0), row.size)
    hi = max(min(stop - BLOCK_SIZE, row.size), lo)
    digest = md5() if hashing and lo == 0 and hi == row.size else None
    at = lo
    while at < hi:
        end = min(at + step, hi)
        data = await member.read_range(at, end)
        if len(data) != end - at:
            raise mismatch(
                row,
                "size",
                f"read_range({at}, {end}) returned {len(data)} bytes, not {end - at} "
                f"(its declared size is {row.size})",
            )
        piece = bytes(data)
        if digest is not None:
            digest.update(piece)
        sink.piece(piece)
        for item in sink.take():
            yield item
        at = end
    pad = stop - max(skip, BLOCK_SIZE + row.size)
    if pad > 0:
        sink.piece(bytes(pad))
    if stop == span:
        sink.end(row, digest.hexdigest() if digest is not None else None)
    for item in sink.take():
        yield item


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidArgumentError(f"size must be a non-negative int, not {size!r}")


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
