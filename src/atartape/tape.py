"""A recorded tape: the index of a folder frozen at one moment, readable with or without it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import anyio.to_thread

from ._engine import index
from ._engine.scan import INDEX_DIR
from ._engine.store import open_store
from .errors import EntryNotFoundError, TapeNotFoundError
from .format.layout import Entry
from .format.units import parse_size
from .format.windows import Location, locate_entry, volume_count

__all__ = ["Tape", "default_index_path"]

INDEX_NAME = "index.db"


def default_index_path(source: str | os.PathLike[str]) -> str:
    """Where a tape of ``source`` keeps its index unless told otherwise."""
    return os.path.join(os.fspath(source), INDEX_DIR, INDEX_NAME)


@dataclass(frozen=True)
class Tape:
    """A recorded tape, opened from its index. Cheap to hold: no connection stays open.

    Every figure is known without reading the source: ``total_size`` (bytes of the TAR stream),
    ``fingerprint`` (SHA-256 of the layout), ``entry_count`` (every entry) and ``file_count``
    (regular files). ``source_root`` is where the folder is read from when the tape plays.
    """

    index_path: str
    source_root: str
    arc_root: str
    total_size: int
    fingerprint: str
    entry_count: int
    file_count: int
    recorded_at: datetime
    checksum_algorithm: str | None

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
        it is not a tape index.
        """
        where = os.fspath(index_path)
        async with await open_store(where, readonly=True, must_exist=True) as store:
            meta = await index.read_meta(store, where)
        return cls._from_meta(where, meta, source_root)

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
    def _from_meta(
        cls, where: str, meta: dict[str, Any], source_root: str | os.PathLike[str] | None
    ) -> Tape:
        return cls(
            index_path=where,
            source_root=os.fspath(source_root) if source_root is not None else meta["source_root"],
            arc_root=meta["arc_root"],
            total_size=meta["total_size"],
            fingerprint=meta["fingerprint"],
            entry_count=meta["entry_count"],
            file_count=meta["file_count"],
            recorded_at=datetime.fromtimestamp(meta["recorded_at"], tz=timezone.utc),
            checksum_algorithm=meta.get("checksum"),
        )

    async def entries(self, start_offset: int = 0) -> AsyncIterator[Entry]:
        """Every entry in stream order, from the one starting at or after ``start_offset``."""
        async with await open_store(self.index_path, readonly=True, must_exist=True) as store:
            async for entry in index.iter_entries(store, start_offset):
                yield entry

    async def entry(self, arc_path: str) -> Entry:
        """The entry with this archive path; :class:`EntryNotFoundError` if there is none."""
        async with await open_store(self.index_path, readonly=True, must_exist=True) as store:
            entry = await index.entry_by_path(store, arc_path)
        if entry is None:
            raise EntryNotFoundError(f"{arc_path!r} is not in the tape {self.name!r}")
        return entry

    async def locate(self, arc_path: str, volume_size: int | str | None = None) -> Location:
        """Where ``arc_path`` lies in the tape, and in its volumes of ``volume_size`` bytes.

        Needs only the index (works offline). See :class:`~atartape.locate.Location`. Raises
        :class:`EntryNotFoundError` for an unknown path and :class:`ValueError` for a bad size.
        """
        if volume_size is not None:
            parse_size(volume_size, what="volume size")  # fail before the index is opened
        entry = await self.entry(arc_path)
        return locate_entry(entry, volume_size, checksum_algorithm=self.checksum_algorithm)

    def volume_count(self, size: int | str) -> int:
        """How many volumes of ``size`` bytes (``"64MiB"``) the tape makes (the last may be
        shorter). Raises :class:`ValueError` for a bad size.
        """
        return volume_count(self.total_size, size)
