"""A recorded tape: the index of a folder frozen at one moment, readable with or without it."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from . import layouts
from ._engine.index import FORMAT, open_index
from ._engine.source import INDEX_DIR
from .errors import EntryNotFoundError, InvalidArgumentError, ReadOnlyIndexError, TapeNotFoundError
from .format import paths
from .format.layout import Entry, check_window
from .format.units import parse_size
from .format.windows import Layout, Location, locate_entry, volume_count
from .views import available, recorded_view, size_of

if TYPE_CHECKING:
    from .syncio import TapeReader

__all__ = ["Tape", "default_index_path", "tartape_catalog_path"]

INDEX_NAME = "index.db"


def default_index_path(source: str | os.PathLike[str]) -> str:
    """Where a tape of ``source`` keeps its index unless told otherwise."""
    return os.path.join(os.fspath(source), INDEX_DIR, INDEX_NAME)


def tartape_catalog_path(source: str | os.PathLike[str]) -> str:
    """Where tartape 3 keeps the catalog of ``source``: ``<parent>/<name>.tartape`` beside the
    folder (its real path), as tartape's ``discover`` looks for it."""
    real = os.path.realpath(os.fspath(source))
    return os.path.join(os.path.dirname(real), os.path.basename(real) + ".tartape")


@dataclass(frozen=True)
class Tape:
    """A recorded tape, opened from its index. Cheap to hold: no connection stays open.

    Every figure is known without reading the source: ``total_size`` (bytes of the TAR
    stream), ``fingerprint`` (the layout: same tree, same bytes), ``identity`` (the recording:
    it changes whenever anything the index promises changes, to the nanosecond; the strong
    validator that every play, volume, HTTP response and transfer made from this value checks
    again before its first byte), ``entry_count`` (every entry) and ``file_count`` (regular
    files). ``source_root`` is where the folder is read from when the tape plays.
    ``index_format`` is ``"atartape-index"``, or ``"tartape-3"`` for a tartape 3 catalog (read
    only, played with tartape's bytes: see :mod:`atartape._engine.tartape_catalog`).

    Its layouts (named ways of cutting it into volumes, see :meth:`register_layout`) are read
    when it is opened; :attr:`layouts`, :attr:`default_layout` and :meth:`get_layout` answer
    from them without I/O, and see those registered through this object (or a copy of it) and
    the volume checksums kept through it since.
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
    index_format: str = FORMAT
    _layouts: layouts.LayoutBook = field(
        default_factory=layouts.LayoutBook, compare=False, repr=False
    )

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
        return layouts.tape_name(self.arc_root)

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
            tape._layouts.reset(await layouts.read_layouts(index))
        if source_root is not None:
            tape = replace(tape, source_root=os.fspath(source_root))
        return tape

    @classmethod
    async def discover(cls, source: str | os.PathLike[str]) -> Tape:
        """Open the tape of the folder ``source``, to play from there: the one recorded in it
        (``.tartape/index.db``), or else tartape 3's catalog beside it
        (``<parent>/<name>.tartape``, see :func:`tartape_catalog_path`).

        Raises :class:`TapeNotFoundError` when there is neither.
        """
        own = default_index_path(source)
        sidecar = await anyio.to_thread.run_sync(tartape_catalog_path, source)
        for index_path in (own, sidecar):
            if await anyio.to_thread.run_sync(os.path.isfile, index_path):
                root = await anyio.to_thread.run_sync(os.path.abspath, os.fspath(source))
                return await cls.open(index_path, source_root=root)
        raise TapeNotFoundError(
            f"no tape recorded in {os.fspath(source)!r} ({own}, or tartape's {sidecar})"
        )

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
            index_format=str(meta.get("format", FORMAT)),
        )

    async def entries(self, start_offset: int = 0) -> AsyncGenerator[Entry, None]:
        """Every entry in stream order, from the one starting at or after ``start_offset``.

        Raises :class:`TapeChangedError` if the index was re-recorded since this tape was
        opened, and :class:`TapeFormatError` at a row whose name or source does not name a path
        in the folder (an absolute path, a ``..`` component...: see the README's "The index").
        """
        index = await open_index(self.index_path, expected=self.identity, shared=True)
        async with index, aclosing(index.rows(start_offset)) as rows:
            async for row in rows:
                yield row.entry()

    async def entry(self, arc_path: str) -> Entry:
        """The entry with this archive path (or, for a path shortened to fit a header, its
        original path); :class:`EntryNotFoundError` if there is none.

        Raises :class:`TapeChangedError` if the index was re-recorded since this tape was
        opened, and :class:`TapeFormatError` for a row that is unsafe or not the one recorded
        (its block of rows is checked against the identity).
        """
        async with await open_index(self.index_path, expected=self.identity, shared=True) as index:
            row = await index.find(paths.to_bytes(arc_path))
            if row is not None:
                row = await index.checked(row)
        if row is None:
            raise EntryNotFoundError(f"{arc_path!r} is not in the tape {self.name!r}")
        return row.entry()

    async def locate(
        self,
        arc_path: str,
        volume_size: Layout | int | str | None = None,
        *,
        layout: Layout | str | None = None,
    ) -> Location:
        """Where ``arc_path`` lies in the tape, and in its volumes.

        ``volume_size`` is a size (``4096``, ``"64MiB"``), a layout's tag or a :class:`Layout`
        (see :meth:`get_layout`); ``layout`` names a registered layout by its tag only (never
        read as a size). Neither: the tape as one piece. Needs only the index (works offline);
        layouts registered elsewhere since the tape was opened count. See
        :class:`~atartape.Location`. Raises :class:`EntryNotFoundError` for an unknown path,
        what :meth:`get_layout` raises, and :class:`ValueError` for a bad size.
        """
        if volume_size is not None and layout is not None:
            raise InvalidArgumentError("pass volume_size or layout, not both")
        if isinstance(volume_size, int):
            parse_size(volume_size, what="volume size")  # fail before the index is opened
        async with await open_index(self.index_path, expected=self.identity, shared=True) as index:
            if volume_size is not None or layout is not None:
                self._layouts.reset(await layouts.read_layouts(index))
            row = await index.find(paths.to_bytes(arc_path))
            if row is None:
                raise EntryNotFoundError(f"{arc_path!r} is not in the tape {self.name!r}")
            row = await index.checked(row)
            after = await index.bytes_after(row)
        entry = row.entry()
        if volume_size is None and layout is None:
            return locate_entry(
                entry, None, checksum_algorithm=self.checksum_algorithm, after=after
            )
        if volume_size is not None:
            chosen = self.get_layout(volume_size)
        else:
            assert layout is not None
            chosen = self._tagged(layout)
        located = chosen.locate(entry, checksum_algorithm=self.checksum_algorithm, after=after)
        return located if chosen.registered else replace(located, layout_tag=None)

    def volume_count(self, size: int | str) -> int:
        """How many volumes of ``size`` bytes (``"64MiB"``) the tape makes (the last may be
        shorter). Raises :class:`ValueError` for a bad size.
        """
        return volume_count(self.total_size, size)

    # ------------------------------------------------------------------ layouts

    @property
    def layouts(self) -> tuple[Layout, ...]:
        """The tape's registered layouts, oldest first."""
        return self._layouts.layouts

    @property
    def default_layout(self) -> Layout:
        """The layout meant when none is named: the only one, or the one registered with
        ``is_default``; with none registered, one volume of the whole tape (a virtual layout
        tagged ``"monolithic"``). Raises :class:`AmbiguousLayoutError` when there are several
        and none is the default."""
        return layouts.default_layout(
            self._layouts.layouts,
            total_size=self.total_size,
            name=self.name,
            fingerprint=self.fingerprint,
        )

    def get_layout(self, tag_or_size: Layout | int | str) -> Layout:
        """The layout ``tag_or_size`` means: a registered tag (``"s3-parts"``, ``"64MiB"``);
        else a size, and then the registered layout of that size (the default one first) or a
        virtual one (the same volumes, no checksums kept). A :class:`Layout` is itself.

        A size string whose other reading names a layout is refused: ``"64KB"`` is 64 000
        bytes here, so beside a layout of 65 536-byte volumes it raises
        :class:`AmbiguousLayoutError` naming that layout's tag. Raises
        :class:`LayoutNotFoundError` for a string that is neither a tag nor a size, and
        :class:`ValueError` for a bad size.
        """
        return layouts.find_layout(
            self._layouts.layouts,
            tag_or_size,
            total_size=self.total_size,
            name=self.name,
            fingerprint=self.fingerprint,
        )

    def _tagged(self, tag: Layout | str) -> Layout:
        return layouts.tagged_layout(self._layouts.layouts, tag, total_size=self.total_size)

    async def register_layout(
        self,
        size: int | str,
        tag: str | None = None,
        is_default: bool = False,
        name_template: str | None = None,
    ) -> Layout:
        """Keep a layout of this tape in its index: volumes of ``size`` bytes (an int, or a
        string such as ``"64MiB"``), found by ``tag`` from now on (by default the size written
        exactly: ``"64MiB"``), named by ``name_template`` (fields ``{name}``, ``{index}``,
        ``{count}``, and tartape's ``{part}``, ``{total}``, ``{pindex}``, ``{fingerprint}``;
        default ``"{name}.tar.{index:04d}"``). ``is_default`` makes it :attr:`default_layout`.

        Registering a tag again replaces that layout; the checksums of its volumes are kept
        when the volumes stay the same. The recording, its identity and its bytes do not
        change. Returns the :class:`Layout`. Raises :class:`ValueError` for a bad size, tag or
        template, :class:`TapeChangedError` when the index holds another recording, and
        :class:`ReadOnlyIndexError` when it cannot be written (or is a tartape 3 catalog).
        """
        if self.index_format != FORMAT:
            raise ReadOnlyIndexError(
                f"{self.index_path} is a {self.index_format} catalog: atartape reads it but "
                "never writes it (record the folder with atartape to keep layouts of your own)"
            )
        layout = await layouts.register_layout(
            self, size, tag=tag, is_default=is_default, name_template=name_template
        )
        self._layouts.put(layout)
        return layout

    async def keep_volume_checksum(
        self, layout: Layout, volume_index: int, algorithm: str, hexdigest: str
    ) -> bool:
        """Keep the checksum of a volume of a registered layout in the index (a
        :class:`~atartape.Volume` of that layout does it when it has been read whole). Returns
        whether it was kept: not when the index cannot be written, holds another recording or
        no longer has that layout. Never raises but cancellation."""
        kept = await layouts.store_checksum(self, layout, volume_index, algorithm, hexdigest)
        if kept:
            self._layouts.note_checksum(layout, volume_index, algorithm, hexdigest)
        return kept

    async def reload_layouts(self) -> tuple[Layout, ...]:
        """Read the layouts again from the index (with the volume checksums other processes
        kept since the tape was opened) and return them. Raises :class:`TapeChangedError`
        when the index holds another recording."""
        async with await open_index(self.index_path, expected=self.identity, shared=True) as index:
            self._layouts.reset(await layouts.read_layouts(index))
        return self.layouts

    async def verify_volume(
        self,
        downloaded_file: str | os.PathLike[str],
        volume_index: int | None = None,
        *,
        tag: Layout | int | str | None = None,
    ) -> bool:
        """Whether ``downloaded_file`` is exactly that volume; see
        :func:`~atartape.verify_volume`."""
        return await layouts.verify_volume(self, downloaded_file, volume_index, tag=tag)

    # ------------------------------------------------------------------ as a file

    def as_file(
        self,
        start_offset: int = 0,
        end_offset: int | None = None,
        *,
        source_root: str | os.PathLike[str] | None = None,
        backend: str = "asyncio",
        portal: Any = None,
    ) -> TapeReader:
        """The tape's bytes ``[start_offset, end_offset)`` as a synchronous, seekable file,
        for blocking code (``requests.put(url, data=tape.as_file())``); see
        :mod:`atartape.syncio`. Played from ``source_root`` (by default where it was
        recorded). Nothing is read before the first ``read``; close it (or use ``with``).
        Raises :class:`InvalidOffsetError` for a window outside the tape.
        """
        from ._engine.session import Recording, recorded_chunks  # a play: only when asked for
        from .syncio import TapeReader

        end = self.total_size if end_offset is None else end_offset
        recording = Recording(
            self.index_path,
            self.identity,
            self.arc_root,
            self.name,
            self.total_size,
            os.fspath(source_root) if source_root is not None else self.source_root,
        )
        window = check_window(self.total_size, start_offset, end)
        return TapeReader(
            partial(recorded_chunks, recording),
            window.start,
            window.end,
            name=f"{self.name}.tar",
            backend=backend,
            portal=portal,
        )
