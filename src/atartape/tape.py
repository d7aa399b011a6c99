"""A recorded tape: the index of a folder frozen at one moment, readable with or without it."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import anyio.to_thread

from ._engine.index import open_index
from ._engine.source import INDEX_DIR
from .errors import EntryNotFoundError, TapeNotFoundError
from .format import paths
from .format.layout import Entry
from .format.units import parse_size
from .format.windows import Location, locate_entry, volume_count
from .views import available, recorded_view, size_of

__all__ = ["Tape", "default_index_path"]

INDEX_NAME = "index.db"


def default_index_path(source: str | os.PathLike[str]) -> str:
    """Where a tape of ``source`` keeps its index unless told otherwise."""
    return os.path.join(os.fspath(source), INDEX_DIR, INDEX_NAME)


@dataclass(frozen=True)
class Tape:
    """A recorded tape, opened from its index. Cheap to hold: no connection stays open.

    Every figure is known without reading the source: ``total_size`` (bytes of the TAR
    stream), ``fingerprint`` (the layout: same tree, same bytes), ``identity`` (the recording:
    it changes whenever anything the index promises changes, to the nanosecond; the strong
    validator that every play, volume, HTTP response and transfer made from this value checks
    again before its first byte), ``entry_count`` (every entry) and ``file_count`` (regular
    files). ``source_root`` is where the folder is read from when the tape plays.
    """

    index_path: str
    source_root: str
    arc_root: str
    total_size: int
    fingerprint: str
    identity: str
    entry_count: int
    file_count: int
    recorded_at: datetime
    checksum_algorithm: str | None = None
    noise: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    data_size: int = 0
    anonymized: bool = True
    auto_truncated: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def view(self) -> str:
        """The view the tape was recorded with, which it plays and is served as by default:
        ``"plain"`` (the tar), ``"zstd"``, ``"age"`` or ``"zstd+age"`` (see
        :mod:`atartape.views`)."""
        return recorded_view(self.meta)

    @property
    def views(self) -> tuple[str, ...]:
        """Every view the tape can be played as."""
        return available(self.meta)

    def view_size(self, view: str | None = None) -> int:
        """The bytes of ``view`` (default: :attr:`view`); ``ValueError`` for a view it lacks."""
        return size_of(self.meta, view or self.view)

    @property
    def has_file_checksums(self) -> bool:
        """Whether every file's digest was recorded (``record(..., checksum=...)``)."""
        return self.checksum_algorithm is not None

    @property
    def overhead_size(self) -> int:
        """The bytes of the tape that are not file content: headers, padding, the footer."""
        return self.total_size - self.data_size

    @property
    def name(self) -> str:
        """The tape's name: the last component of its root entry (``dataset``)."""
        return self.arc_root.rsplit("/", 1)[-1] or "tape"

    @classmethod
    async def open(
        cls,
        index_path: str | os.PathLike[str],
        *,
        source_root: str | os.PathLike[str] | None = None,
    ) -> Tape:
        """Open a tape by its index file; works without the source tree (an offline catalog).

        ``source_root`` overrides where the tape plays from (by default: where it was recorded).
        Raises :class:`TapeNotFoundError` if there is no file and :class:`TapeFormatError` if
        it is not a tape index, or a damaged one.
        """
        where = await anyio.to_thread.run_sync(os.path.abspath, os.fspath(index_path))
        async with await open_index(where, shared=True) as index:
            tape = cls.from_meta(index.where, index.meta)
        if source_root is not None:
            tape = replace(tape, source_root=os.fspath(source_root))
        return tape

    @classmethod
    async def discover(cls, source: str | os.PathLike[str]) -> Tape:
        """Open the tape recorded in ``source`` (its ``.tartape/index.db``), to play from there.

        Raises :class:`TapeNotFoundError` when the folder holds no tape.
        """
        index_path = default_index_path(source)
        if not await anyio.to_thread.run_sync(os.path.isfile, index_path):
            raise TapeNotFoundError(f"no tape recorded in {os.fspath(source)!r} ({index_path})")
        root = await anyio.to_thread.run_sync(os.path.abspath, os.fspath(source))
        return await cls.open(index_path, source_root=root)

    @classmethod
    def from_meta(cls, where: str, meta: dict[str, Any]) -> Tape:
        """The tape an index's meta describes (the index at ``where``)."""
        return cls(
            index_path=where,
            source_root=meta["source_root"],
            arc_root=meta["arc_root"],
            total_size=meta["total_size"],
            fingerprint=meta["fingerprint"],
            identity=meta["identity"],
            entry_count=meta["entry_count"],
            file_count=meta["file_count"],
            recorded_at=datetime.fromtimestamp(meta["recorded_at"], tz=timezone.utc),
            checksum_algorithm=meta.get("checksum"),
            noise=tuple(meta.get("noise") or ()),
            exclude_patterns=tuple(meta.get("exclude") or ()),
            data_size=int(meta.get("data_size", 0)),
            anonymized=bool(meta.get("anonymized", True)),
            auto_truncated=int(meta.get("auto_truncated", 0)),
            meta=dict(meta),
        )

    async def entries(self, start_offset: int = 0) -> AsyncGenerator[Entry, None]:
        """Every entry in stream order, from the one starting at or after ``start_offset``.

        Raises :class:`TapeChangedError` if the index was re-recorded since this tape was
        opened.
        """
        index = await open_index(self.index_path, expected=self.identity, shared=True)
        async with index, aclosing(index.rows(start_offset)) as rows:
            async for row in rows:
                yield row.entry()

    async def entry(self, arc_path: str) -> Entry:
        """The entry with this archive path (or, for a path shortened to fit a header, its
        original path); :class:`EntryNotFoundError` if there is none.

        Raises :class:`TapeChangedError` if the index was re-recorded since this tape was
        opened.
        """
        async with await open_index(self.index_path, expected=self.identity, shared=True) as index:
            row = await index.find(paths.to_bytes(arc_path))
        if row is None:
            raise EntryNotFoundError(f"{arc_path!r} is not in the tape {self.name!r}")
        return row.entry()

    async def locate(self, arc_path: str, volume_size: int | str | None = None) -> Location:
        """Where ``arc_path`` lies in the tape, and in its volumes of ``volume_size`` bytes.

        Needs only the index (works offline). See :class:`~atartape.Location`. Raises
        :class:`EntryNotFoundError` for an unknown path and :class:`ValueError` for a bad size.
        """
        if volume_size is not None:
            parse_size(volume_size, what="volume size")  # fail before the index is opened
        async with await open_index(self.index_path, expected=self.identity, shared=True) as index:
            row = await index.find(paths.to_bytes(arc_path))
            if row is None:
                raise EntryNotFoundError(f"{arc_path!r} is not in the tape {self.name!r}")
            after = await index.bytes_after(row)
        entry = row.entry()
        return locate_entry(
            entry, volume_size, checksum_algorithm=self.checksum_algorithm, after=after
        )

    def volume_count(self, size: int | str) -> int:
        """How many volumes of ``size`` bytes (``"64MiB"``) the tape makes (the last may be
        shorter). Raises :class:`ValueError` for a bad size.
        """
        return volume_count(self.total_size, size)
