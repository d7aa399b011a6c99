"""The archive reader: list members, read them and extract them, from any range source.

``async with open_archive(source) as archive`` where ``source`` is a local path or a
:class:`~atartape.archive.sources.RangeSource`. Members are found by scanning the
headers from the start, or, when the archive carries an embedded index as its last member (a
tape recorded with ``embed_index=True``), by reading the tail of the archive, the index and
then only the wanted member.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.to_thread

from ..errors import ArchiveFormatError, EntryNotFoundError, NotAFileError
from ..format.embedded import NEED_MORE, IndexLocation, IndexRow, locate_index, parse_index_csv
from ..format.header import BLOCK_SIZE
from ..format.members import Extension, HeaderReader, Member, MemberType, normalize_name
from . import extract as _extract
from .sources import LocalFileSource, RangeSource

__all__ = ["Archive", "open_archive"]

CHUNK_SIZE = 256 * 1024  # chunks yielded by Archive.chunks
DEFAULT_MAX_INDEX_SIZE = 256 * 1024 * 1024  # about 5 million rows of short names
_TAIL_FIRST = 16 * 1024  # first read of the tail when looking for an embedded index
_TAIL_SLACK = 64 * 1024  # room for the end-of-archive zero blocks beyond the index
_SCAN_WINDOW = 64 * 1024  # read-ahead of the sequential header scan
_SMALL_FILE = 1024 * 1024  # files up to this size are extracted in one thread hop
_MAX_LINK_HOPS = 8


@dataclass(frozen=True)
class _Embedded:
    member: Member  # the index member itself
    rows: dict[str, IndexRow]
    ordered: list[IndexRow]


class _Window:
    """Read-ahead for the sequential scan: one range read serves many small headers."""

    def __init__(self, archive: Archive, size: int = _SCAN_WINDOW) -> None:
        self.archive = archive
        self.size = size
        self.start = 0
        self.data = b""

    async def read(self, start: int, end: int) -> bytes:
        if self.start <= start and end <= self.start + len(self.data):
            return self.data[start - self.start : end - self.start]
        if end - start >= self.size or end > self.archive.size:
            return await self.archive._read_exact(start, end)
        stop = min(start + self.size, self.archive.size)
        self.data = await self.archive._read_exact(start, stop)
        self.start = start
        return self.data[: end - start]


class Archive:
    """An archive opened by :func:`open_archive`: list, read and extract its members.

    Names are looked up without trailing slashes; when a name occurs twice the later member
    wins, as with tar. Every method may raise :class:`ArchiveFormatError` (with the offset) for a
    truncated or corrupt archive and :class:`EntryNotFoundError` for a name that is not in it.
    """

    def __init__(
        self,
        source: RangeSource,
        *,
        use_index: bool = True,
        max_index_size: int = DEFAULT_MAX_INDEX_SIZE,
    ) -> None:
        self.source = source
        self.size = source.size
        self.use_index = use_index
        self.max_index_size = max_index_size
        self._embedded: _Embedded | None = None
        self._embedded_looked = False
        self._by_name: dict[str, Member] | None = None

    # ------------------------------------------------------------------ raw reads

    async def _read_exact(self, start: int, end: int) -> bytes:
        if end > self.size:
            raise ArchiveFormatError(
                f"archive is truncated: {end - start} bytes are needed at {start}, "
                f"but the archive ends at {self.size}",
                offset=start,
            )
        data = await self.source.read_range(start, end)
        if len(data) != end - start:
            raise ArchiveFormatError(
                f"the source returned {len(data)} bytes instead of {end - start}", offset=start
            )
        return data

    # ------------------------------------------------------------------ listing

    def members(self) -> AsyncGenerator[Member, None]:
        """Every member in archive order, from a scan of the headers (the index member too).

        Raises :class:`ArchiveFormatError` when the archive is truncated or a header is corrupt,
        after yielding the members before it.
        """
        return self._scan()

    async def _scan(self, window: _Window | None = None) -> AsyncGenerator[Member, None]:
        reader = HeaderReader()
        window = window or _Window(self)
        offset = 0
        while True:
            if offset + BLOCK_SIZE > self.size:
                raise ArchiveFormatError(
                    "archive is truncated: it ends where a header or the end-of-archive "
                    "marker was expected",
                    offset=offset,
                )
            got = reader.header(await window.read(offset, offset + BLOCK_SIZE), offset)
            if got is None:
                return
            if isinstance(got, Extension):
                self._check_extent(
                    got.data_offset + got.size, got.header_offset, "an extension header"
                )
                payload = await window.read(got.data_offset, got.data_offset + got.size)
                reader.extension(got, payload)
                offset = got.next_offset
                continue
            self._check_extent(got.data_offset + got.size, got.header_offset, repr(got.name))
            yield got
            offset = got.next_offset

    def _check_extent(self, end: int, offset: int, what: str) -> None:
        if end > self.size:
            raise ArchiveFormatError(
                f"archive is truncated: the data of {what} ends at {end}, "
                f"past the end of the archive ({self.size})",
                offset=offset,
            )

    # ------------------------------------------------------------------ embedded index

    async def embedded_index(self) -> list[IndexRow] | None:
        """The rows of the archive's embedded index, or ``None`` when it has none.

        The index is looked for once, at the end of the archive (see
        :func:`atartape.members.locate_index`), reading back at most about ``max_index_size``
        bytes. Raises :class:`ArchiveFormatError` when the index is found but malformed.
        """
        embedded = await self._index()
        return None if embedded is None else list(embedded.ordered)

    async def _index(self) -> _Embedded | None:
        if not self._embedded_looked:
            self._embedded = await self._find_index() if self.use_index else None
            self._embedded_looked = True
        return self._embedded

    async def _find_index(self) -> _Embedded | None:
        size = self.size
        if size % BLOCK_SIZE or size < 2 * BLOCK_SIZE:
            return None
        limit = min(size, (self.max_index_size + _TAIL_SLACK) // BLOCK_SIZE * BLOCK_SIZE)
        window = min(size, _TAIL_FIRST)
        tail = await self._read_exact(size - window, size)
        found = locate_index(tail, size - window)
        while found is NEED_MORE and window < limit:
            wider = min(window * 4, limit)
            tail = await self._read_exact(size - wider, size - window) + tail
            window = wider
            found = locate_index(tail, size - window)
        if not isinstance(found, IndexLocation):
            return None
        start = found.data_offset - (size - window)
        try:
            rows = parse_index_csv(tail[start : start + found.size])
        except ValueError as exc:
            raise ArchiveFormatError(
                f"the embedded index {found.name!r} is malformed: {exc}",
                offset=found.header_offset,
            ) from None
        for row in rows:
            if row.end_offset > found.header_offset:
                raise ArchiveFormatError(
                    f"the embedded index {found.name!r} places {row.name!r} past its own start",
                    offset=found.header_offset,
                )
        return _Embedded(found.member(), {row.name: row for row in rows}, rows)

    async def _member_at(self, row: IndexRow, index_member: Member) -> Member:
        """The member an index row points at, read and checked against the row."""
        reader = HeaderReader()
        offset = row.header_offset
        while offset < row.end_offset:
            got = reader.header(await self._read_exact(offset, offset + BLOCK_SIZE), offset)
            if isinstance(got, Extension):
                payload = await self._read_exact(got.data_offset, got.data_offset + got.size)
                reader.extension(got, payload)
                offset = got.next_offset
                continue
            if (
                got is not None
                and got.name == row.name
                and got.next_offset <= index_member.header_offset
                and (got.size == row.size or not got.is_file)
            ):
                return got
            break
        raise ArchiveFormatError(
            f"the embedded index {index_member.name!r} disagrees with the archive about "
            f"{row.name!r} (open the archive with use_index=False to scan it instead)",
            offset=row.header_offset,
        )

    # ------------------------------------------------------------------ lookups

    async def member(self, name: str) -> Member:
        """The member called ``name``.

        With an embedded index: reads the tail, the index and the member's header only.
        Without: scans every header once (the result is kept for later lookups). Raises
        :class:`EntryNotFoundError` when there is no such member.
        """
        key = normalize_name(name)
        embedded = await self._index()
        if embedded is not None:
            if key == embedded.member.name:
                return embedded.member
            row = embedded.rows.get(key)
            if row is None:
                raise EntryNotFoundError(f"{name!r} is not in the archive (per its index)")
            return await self._member_at(row, embedded.member)
        if self._by_name is None:
            async with aclosing(self._scan()) as scan:
                self._by_name = {m.name: m async for m in scan}
        try:
            return self._by_name[key]
        except KeyError:
            raise EntryNotFoundError(f"{name!r} is not in the archive") from None

    async def _content_member(self, name: str) -> Member:
        """The member holding ``name``'s content: itself, or the target of its hard link."""
        member = await self.member(name)
        for _ in range(_MAX_LINK_HOPS):
            if not member.is_hardlink:
                break
            target = await self.member(member.linkname)
            if target.header_offset >= member.header_offset:
                raise ArchiveFormatError(
                    f"hard link {member.name!r} points at {member.linkname!r}, "
                    "which does not come before it",
                    offset=member.header_offset,
                )
            member = target
        if member.type is MemberType.SPARSE:
            raise ArchiveFormatError(
                f"{member.name!r} is a GNU sparse file, which this reader does not read",
                offset=member.header_offset,
            )
        if not member.is_file:
            raise NotAFileError(f"{name!r} is a {member.type.value}, not a file: it has no content")
        return member

    # ------------------------------------------------------------------ content

    async def read(self, name: str) -> bytes:
        """The whole content of the file ``name`` (a hard link reads its target).

        Raises :class:`EntryNotFoundError` for a missing name and :class:`NotAFileError` for a
        member that is not a file (folder, symlink, device).
        """
        member = await self._content_member(name)
        async with aclosing(self._chunks(member, 4 * CHUNK_SIZE)) as chunks:
            return b"".join([chunk async for chunk in chunks])

    def chunks(self, name: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncGenerator[bytes, None]:
        """The content of the file ``name``, as chunks of at most ``chunk_size`` bytes.

        The lookup happens at the first iteration, which raises as :meth:`read` does.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        return self._member_chunks(name, chunk_size)

    async def _member_chunks(self, name: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        member = await self._content_member(name)
        async with aclosing(self._chunks(member, chunk_size)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _chunks(self, member: Member, chunk_size: int) -> AsyncGenerator[bytes, None]:
        at, end = member.data_offset, member.data_offset + member.size
        while at < end:
            step = min(chunk_size, end - at)
            yield await self._read_exact(at, at + step)
            at += step

    # ------------------------------------------------------------------ extraction

    async def extract(self, name: str, dest: str | os.PathLike[str]) -> str:
        """Extract the member ``name`` under the folder ``dest`` (created if needed).

        Parent folders are created as plain folders. A hard link whose target is not in
        ``dest`` is written as a copy of the target. Returns the path written. Raises
        :class:`UnsafeMemberError` when the member is refused (see :mod:`atartape._extract`),
        and as :meth:`read` does.
        """
        member = await self.member(name)
        extractor = await anyio.to_thread.run_sync(_extract.Extractor.open, os.fspath(dest))
        return await self._extract_one(extractor, member, defer_folders=False)

    async def extract_all(self, dest: str | os.PathLike[str]) -> None:
        """Extract every member, in archive order, under the folder ``dest`` (created if needed).

        Stops at the first refused member with :class:`UnsafeMemberError`; what was extracted
        before it stays (always inside ``dest``). Folders get their mode and mtime at the end.
        """
        extractor = await anyio.to_thread.run_sync(_extract.Extractor.open, os.fspath(dest))
        window = _Window(self)  # small files come from the read-ahead of the header scan
        async with aclosing(self._scan(window)) as members:
            async for member in members:
                await self._extract_one(extractor, member, defer_folders=True, window=window)
        await anyio.to_thread.run_sync(extractor.finish)

    async def _extract_one(
        self,
        extractor: _extract.Extractor,
        member: Member,
        *,
        defer_folders: bool,
        window: _Window | None = None,
    ) -> str:
        parts = _extract.member_parts(member)
        if member.is_dir:
            return await anyio.to_thread.run_sync(
                lambda: extractor.make_dir(member, parts, defer=defer_folders)
            )
        if member.is_symlink:
            return await anyio.to_thread.run_sync(extractor.make_symlink, member, parts)
        source = member
        if member.is_hardlink:
            made = await anyio.to_thread.run_sync(extractor.make_hardlink, member, parts)
            if made is not None:
                return made
            source = await self._content_member(member.name)  # not extracted: copy its data
        return await self._write_file(extractor, member, parts, source, window)

    async def _write_file(
        self,
        extractor: _extract.Extractor,
        member: Member,
        parts: list[str],
        source: Member,
        window: _Window | None,
    ) -> str:
        if source.size <= _SMALL_FILE:
            start, end = source.data_offset, source.data_offset + source.size
            data = await (window.read(start, end) if window else self._read_exact(start, end))
            return await anyio.to_thread.run_sync(
                extractor.write_file, member, parts, data, source.mode, source.mtime
            )
        part = await anyio.to_thread.run_sync(extractor.begin_file, member, parts)
        try:
            async with aclosing(self._chunks(source, _SMALL_FILE)) as chunks:
                async for chunk in chunks:
                    await anyio.to_thread.run_sync(part.write, chunk)
            return await anyio.to_thread.run_sync(part.commit, source.mode, source.mtime)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(part.discard)
            raise


@asynccontextmanager
async def open_archive(
    source: str | os.PathLike[str] | RangeSource,
    *,
    use_index: bool = True,
    max_index_size: int = DEFAULT_MAX_INDEX_SIZE,
) -> AsyncIterator[Archive]:
    """Open an archive for reading: ``async with open_archive(source) as archive``.

    ``source`` is a path (read through a :class:`LocalFileSource`, closed on exit) or a
    :class:`RangeSource`, whose ``prepare()`` is awaited first when it has one (the caller keeps
    ownership: it is not closed). ``use_index=False`` ignores an embedded index;
    ``max_index_size`` bounds how far back from the end the index is looked for. Raises
    :class:`SourceNotFoundError` for a missing file; format errors surface when members are read.
    """
    if isinstance(source, (str, os.PathLike)):
        async with LocalFileSource(source) as local:
            yield Archive(local, use_index=use_index, max_index_size=max_index_size)
        return
    prepare = getattr(source, "prepare", None)
    if callable(prepare):
        await prepare()
    size = source.size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise TypeError(f"the range source's size must be a non-negative int, not {size!r}")
    yield Archive(source, use_index=use_index, max_index_size=max_index_size)
