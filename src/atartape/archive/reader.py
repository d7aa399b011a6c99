"""The archive reader: list members, read them and extract them, from any range source.

``async with open_archive(source) as archive`` where ``source`` is a local path or a
:class:`~atartape.archive.sources.RangeSource`.

What it holds is told from its first bytes, not its name (see
:func:`~atartape.archive.decoded.unwrap`): a plain tar, an age file (opened with
``age_identity``), a seekable zstd file (read by range through its seek table: reading one
member fetches the frames that hold it), or a gzip, bzip2, xz or zstd stream without a seek
table, which has no random access and is read from its start (see "Streams" below).

What a name means. A name stands for the **last** member of that name (compared without ``./``,
doubled and trailing slashes: :func:`~atartape.format.members.lookup_key`), as it does for
``tar -x``, which writes every member in turn; a hard link stands for the last member of its
target's name **before** the link. Lookups therefore know the whole listing: the archive is
scanned once (headers only) and the listing kept. If the scan stops at a corrupt or truncated
part, the members before it can still be read (what ``tar -x`` would have left on disk); a name
not found before the fault raises the fault. An archive that ends without its end-of-archive
marker is read like any other (:attr:`Archive.possibly_truncated` says so).

The embedded index. A tape recorded with ``embed_index=True`` ends with a CSV member listing
every member's name and blocks. It is found from the tail at a bounded cost (the last row says
where its header must be), then used only as a claim: its rows must tile the archive up to the
index, and the scan checks every row against the header found at its offset (the rows tell the
scan where the headers are, so it reads them in a few large ranges instead of block by block).
An index that is absent, malformed, not last or wrong about any header is dropped and the plain
scan's answer stands; nothing an index says can change what a name reads. With
``trust_index=True`` (for an archive you made yourself) a lookup reads the tail, the index and
the member's own header only, checking that header against its row.

Streams. A gzip, bzip2, xz or zstd stream without a seek table is decompressed from its start,
in worker threads, keeping a bounded window of plain bytes (memory stays bounded whatever the
stream expands to; see :mod:`~atartape.archive.streams`). :meth:`Archive.members` and
:meth:`Archive.extract_all` make one pass; inside ``async for member in archive.members()``,
reading that member (``archive.read(member)``, ``archive.chunks(member)``) continues the same
pass. A lookup by name (``member("x")``, ``read("x")``, ``extract("x", ...)``) costs a whole
pass to learn the listing (kept afterwards), then a pass from the start to the member; reading
anything before the current position starts a new pass (:attr:`Archive.passes`). On a stream,
``members()`` yields a member as soon as its header is read: data cut short raises at the
next step. The stream's checksums are checked when a pass reaches its end: the listing a
lookup needs does (also past a fault in the tar, to tell the tar's faults from the stream's),
and a stream that fails them answers no lookup at all, since any byte of it may be wrong.
``extract_all`` writes members as they come and raises at the end if a checksum fails, as
``tar -x`` does; list first to refuse a damaged stream before writing. The embedded index is
not used to look up on a stream (it needs the end first); :meth:`Archive.embedded_index`
returns it once a pass has confirmed it.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from ..errors import (
    ArchiveFormatError,
    EntryNotFoundError,
    InvalidArgumentError,
    NotAFileError,
    UnsafeMemberError,
)
from ..format.embedded import (
    NEED_MORE,
    IndexCandidate,
    IndexLocation,
    IndexRow,
    check_index_header,
    check_rows,
    is_index_name,
    locate_index,
    parse_index_csv,
)
from ..format.header import BLOCK_SIZE
from ..format.members import ArchiveEnd, HeaderReader, Member, MemberType, lookup_key
from ..format.sparse import layout, stored_starts
from . import extract as _extract
from .decoded import AgeIdentity, sniff_bytes, unwrap
from .extract import shown
from .sources import LocalFileSource, RangeSource
from .streams import StreamedSource

__all__ = ["Archive", "open_archive"]

CHUNK_SIZE = 256 * 1024  # chunks yielded by Archive.chunks
DEFAULT_MAX_INDEX_SIZE = 256 * 1024 * 1024  # about 5 million rows of short names
_TAIL_FIRST = 16 * 1024  # first read of the tail when looking for an embedded index
_TAIL_ZEROS = 1024 * 1024  # the most end-of-archive zero blocks looked through for an index
_SCAN_WINDOW = 64 * 1024  # read-ahead of the sequential header scan
_GROUP_GAP = 16 * 1024  # headers closer than this are read in one range (index-guided scan)
_GROUP_MAX = 1024 * 1024  # the largest such range
_SMALL_FILE = 1024 * 1024  # files up to this size are extracted in one thread hop

MemberRef = str | Member


class _Unlisted(enum.Enum):
    """With ``trust_index``: the index lists no member of that name (a definite answer)."""

    UNLISTED = "unlisted"


_UNLISTED = _Unlisted.UNLISTED


@dataclass(frozen=True)
class _Embedded:
    member: Member  # the index member itself
    rows: list[IndexRow]
    starts: list[int] = field(default_factory=list)  # row header offsets, for bisect
    keys: dict[str, list[int]] = field(default_factory=dict)  # name -> its rows, in order

    def __post_init__(self) -> None:
        self.starts.extend(row.header_offset for row in self.rows)
        for number, row in enumerate(self.rows):
            self.keys.setdefault(lookup_key(row.name), []).append(number)


class _Fetcher:
    """The reads of one pass over the archive.

    Without hints: a read-ahead window, so that one range read serves many small headers.
    With ``hints`` (header offsets known in advance, from an index): a read starting at a hint
    also covers the hints that follow within :data:`_GROUP_GAP`, up to :data:`_GROUP_MAX`.
    """

    def __init__(self, archive: Archive, hints: Sequence[int] = ()) -> None:
        self.archive = archive
        self.hints = hints
        self.start = 0
        self.data = b""

    async def read(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)``; fewer only where the archive ends."""
        if self.start <= start and end <= self.start + len(self.data):
            return self.data[start - self.start : end - self.start]
        if self.hints:
            stop = max(end, start + BLOCK_SIZE)
            at = bisect.bisect_left(self.hints, start)
            while at < len(self.hints):
                hint = self.hints[at]
                if hint > stop + _GROUP_GAP or hint + BLOCK_SIZE - start > _GROUP_MAX:
                    break
                stop = max(stop, hint + BLOCK_SIZE)
                at += 1
        elif end - start >= _SCAN_WINDOW:
            return await self.archive._read_upto(start, end)
        else:
            stop = start + _SCAN_WINDOW
        if stop <= end:
            return await self.archive._read_upto(start, end)
        self.data = await self.archive._read_upto(start, stop)
        self.start = start
        return self.data[: end - start]

    async def read_exact(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)``, all of them (else the archive is truncated)."""
        data = await self.read(start, end)
        if len(data) != end - start:
            raise _truncated(start, end, start + len(data))
        return data


@dataclass
class _Catalog:
    """The whole listing, from one scan: members in order, and where each name occurs."""

    members: list[Member] = field(default_factory=list)
    positions: dict[str, list[int]] = field(default_factory=dict)
    error: ArchiveFormatError | None = None  # what stopped the scan, after ``members``
    damaged: bool = False  # a stream whose checksums failed: no member can be trusted
    index: _Embedded | None = None  # the embedded index, once every row is confirmed

    def add(self, member: Member) -> None:
        self.positions.setdefault(member.key, []).append(len(self.members))
        self.members.append(member)

    def last(self, key: str) -> Member | None:
        found = self.positions.get(key)
        return self.members[found[-1]] if found else None

    def last_before(self, key: str, offset: int) -> Member | None:
        found = self.positions.get(key, [])
        offsets = [self.members[i].header_offset for i in found]
        at = bisect.bisect_left(offsets, offset)
        return self.members[found[at - 1]] if at else None


class Archive:
    """An archive opened by :func:`open_archive`: list, read and extract its members.

    A member is named by its name (the last member of that name, as ``tar -x`` leaves it) or
    by a :class:`Member` from :meth:`members` (that very member, even when its name occurs
    again later). Every method may raise :class:`ArchiveFormatError` (with the offset) for a
    truncated or corrupt archive and :class:`EntryNotFoundError` for a name that is not in it.
    """

    def __init__(
        self,
        source: RangeSource | StreamedSource,
        *,
        use_index: bool = True,
        trust_index: bool = False,
        max_index_size: int = DEFAULT_MAX_INDEX_SIZE,
        sealed: bool = False,
        compression: str | None = None,
    ) -> None:
        self.source = source
        self._stream = source if isinstance(source, StreamedSource) else None
        self._size: int | None = None if self._stream is not None else source.size
        self.sealed = sealed
        """Whether the archive was an age file (opened with an identity)."""
        self.compression = compression or (self._stream.kind if self._stream else None)
        """``"zstd"``, ``"gzip"``, ``"bzip2"``, ``"xz"``, or ``None`` for an uncompressed tar."""
        self.use_index = use_index
        self.trust_index = trust_index
        self.max_index_size = max_index_size
        self._embedded: _Embedded | None = None
        self._embedded_looked = False
        self._catalog: _Catalog | None = None
        self._end: ArchiveEnd | None = None
        self._lock = anyio.Lock()  # one index search, one listing, whoever asks first
        self._stream_index_looked = False

    @property
    def size(self) -> int | None:
        """The size of the tar in bytes (decompressed, unsealed); for a stream, ``None`` until a
        pass has reached its end."""
        return self._stream.size if self._stream is not None else self._size

    @property
    def random_access(self) -> bool:
        """Whether any member can be read without decompressing what comes before it (a plain
        tar, seekable zstd, age); ``False`` for a stream read from its start."""
        return self._stream is None

    @property
    def passes(self) -> int:
        """How many times a stream was decompressed from its start so far (0 when the archive
        has random access)."""
        return self._stream.passes if self._stream is not None else 0

    @property
    def possibly_truncated(self) -> bool | None:
        """Whether the last complete pass over the archive ended without a zero block (the
        archive may have been cut at a member boundary: GNU tar, bsdtar and tarfile read such
        files without a word); ``None`` until a pass has reached the end."""
        return None if self._end is None else not self._end.marker

    async def check(self) -> bool:
        """Read every header to the end of the archive (once: lookups reuse the listing) and
        say how it ends: ``True`` when it ends on a block boundary after a member without its
        zero blocks (:attr:`possibly_truncated`), ``False`` when its end-of-archive marker is
        there.

        Raises the :class:`ArchiveFormatError` that stopped the listing: a cut inside a block,
        a member or its padding, a corrupt header, a stream whose checksums fail. Lookups read
        the members before such a fault (as ``tar -x`` leaves them); call this first to refuse
        a damaged archive before anything is written.
        """
        catalog = await self._full_catalog()
        if catalog.error is not None:
            raise catalog.error
        return self.possibly_truncated is True

    # ------------------------------------------------------------------ raw reads

    async def _read_upto(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)``; fewer only where the archive ends."""
        if self._stream is not None:
            return await self._stream.read_upto(start, end)
        assert self._size is not None
        end = min(end, self._size)
        return await self._read_exact(start, end) if end > start else b""

    async def _read_exact(self, start: int, end: int) -> bytes:
        if self._stream is not None:
            data = await self._stream.read_upto(start, end)
            if len(data) != end - start:
                raise _truncated(start, end, start + len(data))
            return data
        assert self._size is not None
        if end > self._size:
            raise _truncated(start, end, self._size)
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
        after yielding the members before it. On a stream (not :attr:`random_access`) a member
        is yielded as soon as its header is read, so that reading it inside the loop continues
        the same pass; data cut short then raises at the next member, and the stream's
        checksums are checked at the end.
        """
        return self._walk(_Fetcher(self))

    async def _walk(
        self,
        fetcher: _Fetcher,
        start: int = 0,
        *,
        until: int | None = None,
        confirm: bool = False,
    ) -> AsyncGenerator[Member, None]:
        """The members from ``start`` on: the one pass every listing and extraction makes.

        ``until``: stop after the member whose header is there (a single member's read).
        ``confirm``: on a stream, decompress a member's data before yielding it, so that only
        members whose data is all there are yielded (as for a tar with random access).
        """
        reader = HeaderReader(start)
        previous: Member | None = None
        while True:
            offset = reader.offset
            want = reader.want()
            data = await fetcher.read(offset, offset + want) if want else b""
            if len(data) < want:  # the archive ends here: its size is known now
                if previous is not None:
                    self._check_data(previous)  # a stream: it ended here, or before
                self._check_end(offset, previous)
            try:
                got = reader.feed(data)
            except ArchiveFormatError:
                kind = sniff_bytes(data) if offset == 0 else "tar"
                if kind != "tar":
                    raise ArchiveFormatError(
                        f"the archive is not a tar but {kind} data: open it with "
                        "open_archive(), which reads what it holds",
                        offset=0,
                    ) from None
                raise
            if got is None:
                continue
            if isinstance(got, ArchiveEnd):
                if until is None:
                    if self._stream is not None:
                        await self._stream.finish()  # the stream's checksums, to its end
                    self._end = got
                return
            if self._stream is None or confirm:
                data_end = got.data_offset + got.stored_size
                if self._stream is not None and got.stored_size:
                    await self._stream.read_upto(data_end - 1, data_end)
                self._check_data(got)
            yield got
            previous = got
            if until is not None and got.header_offset >= until:
                return

    def _check_end(self, offset: int, previous: Member | None) -> None:
        """Refuse an archive that ends before ``offset``, where the next header would be: inside
        the padding of the member (or extension header) before it, as GNU tar does
        ("Unexpected EOF in archive")."""
        size = self.size
        if size is None or size >= offset:
            return
        if previous is not None and previous.next_offset == offset:
            raise ArchiveFormatError(
                f"archive is truncated: it ends at {size}, inside the padding of "
                f"{shown(previous.name)} (which ends at {offset})",
                offset=previous.header_offset,
            )
        raise ArchiveFormatError(
            f"archive is truncated: it ends at {size}, inside the padding of the extension "
            f"header before {offset}",
            offset=size,
        )

    def _check_data(self, member: Member) -> None:
        """Refuse a member whose data runs past the end of the archive (when it is known)."""
        size = self.size
        data_end = member.data_offset + member.stored_size
        if size is not None and data_end > size:
            raise ArchiveFormatError(
                f"archive is truncated: the data of {shown(member.name)} ends at {data_end}, "
                f"past the end of the archive ({size})",
                offset=member.header_offset,
            )

    # ------------------------------------------------------------------ embedded index

    async def embedded_index(self) -> list[IndexRow] | None:
        """The rows of the archive's embedded index, or ``None`` when it has none.

        Only an index that every header confirms is returned (see the module): finding out
        scans the archive once (unless ``trust_index``: then an index whose rows tile the
        archive). An absent, malformed or wrong index gives ``None``, never an error.
        """
        if not self.use_index:
            return None
        if self._stream is not None:
            catalog = await self._full_catalog()
            if not self._stream_index_looked:
                catalog.index = await self._index_from_catalog(catalog)
                self._stream_index_looked = True
            embedded = catalog.index
        elif self.trust_index:
            embedded = await self._index()
        else:
            catalog = await self._full_catalog()
            embedded = catalog.index
        return None if embedded is None else list(embedded.rows)

    async def _index_from_catalog(self, catalog: _Catalog) -> _Embedded | None:
        """On a stream: the last member, if it is an index that the listing confirms."""
        if catalog.error is not None or not catalog.members:
            return None
        last = catalog.members[-1]
        if not last.is_file or not is_index_name(last.name) or last.size > self.max_index_size:
            return None
        try:
            rows = parse_index_csv(await self.read(last))
        except (ValueError, ArchiveFormatError):
            return None
        if check_rows(rows, last.header_offset) is not None:
            return None
        embedded = _Embedded(last, rows)
        return embedded if self._confirms(embedded, catalog) else None

    async def _index(self) -> _Embedded | None:
        if not self._embedded_looked:
            async with self._lock:
                if not self._embedded_looked:
                    self._embedded = await self._find_index() if self.use_index else None
                    self._embedded_looked = True
        return self._embedded

    async def _find_index(self) -> _Embedded | None:
        """The index the archive ends with, if its rows can describe the archive; the bytes
        read are bounded whatever the archive holds (see :func:`locate_index`); a stream
        is not searched (its end is known last)."""
        size = self._size
        if size is None:
            return None
        if size % BLOCK_SIZE or size < 2 * BLOCK_SIZE:
            return None
        window = min(size, _TAIL_FIRST)
        tail = await self._read_exact(size - window, size)
        found = locate_index(tail, size - window)
        while found is NEED_MORE and window < min(size, _TAIL_ZEROS):
            wider = min(window * 4, size, _TAIL_ZEROS)
            tail = await self._read_exact(size - wider, size - window) + tail
            window = wider
            found = locate_index(tail, size - window)
        if isinstance(found, IndexCandidate):
            if found.text_end - found.header_offset - BLOCK_SIZE > self.max_index_size:
                return None
            block = await self._read_exact(found.header_offset, found.header_offset + BLOCK_SIZE)
            found = check_index_header(block, found)
        if not isinstance(found, IndexLocation) or found.size > self.max_index_size:
            return None
        start, stop = found.data_offset, found.data_offset + found.size
        tail_start = size - window
        if start >= tail_start:
            content = tail[start - tail_start : stop - tail_start]
        else:
            content = await self._read_exact(start, tail_start) + tail[: stop - tail_start]
        try:
            rows = parse_index_csv(content)
        except ValueError:
            return None  # not an atartape index after all: the scan answers
        if check_rows(rows, found.header_offset) is not None:
            return None
        return _Embedded(found.member(), rows)

    # ------------------------------------------------------------------ the listing

    async def _full_catalog(self) -> _Catalog:
        """The listing of the whole archive, from one scan (guided by a well-formed index)."""
        if self._catalog is not None:
            return self._catalog
        embedded = await self._index()
        async with self._lock:
            if self._catalog is None:
                self._catalog = await self._scan_catalog(embedded)
        return self._catalog

    async def _lookup_catalog(self) -> _Catalog:
        """The listing, for a lookup: a stream that failed its checksums answers no name (any
        byte of it may be wrong), whereas members before a fault in the tar itself still read,
        as they would from ``tar -x``."""
        catalog = await self._full_catalog()
        if catalog.damaged:
            assert catalog.error is not None
            raise catalog.error
        return catalog

    async def _scan_catalog(self, embedded: _Embedded | None) -> _Catalog:
        hints: list[int] = []
        if embedded is not None:
            hints = [*embedded.starts, embedded.member.header_offset]
        catalog = _Catalog()
        try:
            async with aclosing(self._walk(_Fetcher(self, hints), confirm=True)) as walk:
                async for member in walk:
                    catalog.add(member)
        except ArchiveFormatError as exc:
            catalog.error = exc
        stream = self._stream
        if stream is not None:
            if catalog.error is not None and stream.failure is None:
                # Is the fault the tar's, or the stream's? Its checksums, at its end, say.
                with contextlib.suppress(ArchiveFormatError):
                    await stream.finish()
            if stream.failure is not None:
                catalog.error, catalog.damaged = stream.failure, True
        if embedded is not None and self._confirms(embedded, catalog):
            catalog.index = embedded
        return catalog

    def _confirms(self, embedded: _Embedded, catalog: _Catalog) -> bool:
        """Whether the scan found exactly the members the index lists, then the index."""
        members, rows = catalog.members, embedded.rows
        if catalog.error is not None or len(members) != len(rows) + 1:
            return False
        for member, row in zip(members, rows):
            if not _row_matches(row, member):
                return False
        last = members[-1]
        return (last.header_offset, last.name, last.size) == (
            embedded.member.header_offset,
            embedded.member.name,
            embedded.member.size,
        )

    async def _trusted(self, key: str, before: int | None = None) -> Member | _Unlisted | None:
        """With ``trust_index``: the member the index gives for ``key`` (the last row of that
        name, or the last before ``before``), checked against its header; :data:`_UNLISTED`
        when the index has no such name, ``None`` when it cannot answer (then the scan
        does)."""
        embedded = await self._index()
        if embedded is None:
            return None
        if before is None and key == embedded.member.key:
            return embedded.member
        limit = (
            len(embedded.rows) if before is None else bisect.bisect_left(embedded.starts, before)
        )
        for row in reversed(embedded.rows[:limit]):
            if lookup_key(row.name) == key:
                break
        else:
            return _UNLISTED
        try:
            async with aclosing(
                self._walk(
                    _Fetcher(self, [row.header_offset]), row.header_offset, until=row.header_offset
                )
            ) as walk:
                async for member in walk:
                    return member if _row_matches(row, member) else None
        except ArchiveFormatError:
            return None
        return None

    # ------------------------------------------------------------------ lookups

    async def member(self, name: MemberRef) -> Member:
        """The member called ``name``: the last member of that name in the archive.

        Raises :class:`EntryNotFoundError` when there is none, and the scan's
        :class:`ArchiveFormatError` when the archive breaks off before such a member is found.
        """
        if isinstance(name, Member):
            return name
        key = lookup_key(name)
        if self.use_index and self.trust_index:
            found = await self._trusted(key)
            if found is _UNLISTED:
                raise EntryNotFoundError(f"{shown(name)} is not in the archive (per its index)")
            if isinstance(found, Member):
                return found
        catalog = await self._lookup_catalog()
        member = catalog.last(key)
        if member is not None:
            return member
        if catalog.error is not None:
            raise catalog.error
        raise EntryNotFoundError(f"{shown(name)} is not in the archive")

    async def _link_target(self, link: Member) -> Member:
        """The member a hard link stands for: the last one of its target's name before it."""
        key = lookup_key(link.linkname)
        found: Member | _Unlisted | None = None
        if self.use_index and self.trust_index:
            found = await self._trusted(key, before=link.header_offset)
        if not isinstance(found, Member):
            found = (await self._lookup_catalog()).last_before(key, link.header_offset)
        if found is None:
            raise ArchiveFormatError(
                f"hard link {shown(link.name)} points at {shown(link.linkname)}, "
                "which is not a member before it",
                offset=link.header_offset,
            )
        return found

    async def _content_member(self, name: MemberRef) -> Member:
        """The member holding ``name``'s content: itself, or what its hard links stand for."""
        member = await self.member(name)
        origin = member
        while member.is_hardlink:
            member = await self._link_target(member)  # strictly earlier each time: it ends
        if not member.is_file:
            raise NotAFileError(
                f"{shown(origin.name)} is a {member.type.value}, not a file: it has no content"
            )
        return member

    # ------------------------------------------------------------------ content

    async def read(self, name: MemberRef) -> bytes:
        """The whole content of the file ``name`` (a hard link reads what it stands for; a
        sparse file reads with its holes as zeros).

        Raises :class:`EntryNotFoundError` for a missing name and :class:`NotAFileError` for a
        member that is not a file (folder, symlink, device).
        """
        member = await self._content_member(name)
        async with aclosing(self._chunks(member, 4 * CHUNK_SIZE)) as chunks:
            return b"".join([chunk async for chunk in chunks])

    def chunks(
        self, name: MemberRef, *, chunk_size: int = CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """The content of the file ``name``, as chunks of at most ``chunk_size`` bytes.

        The lookup happens at the first iteration, which raises as :meth:`read` does.
        """
        if chunk_size < 1:
            raise InvalidArgumentError("chunk_size must be positive")
        return self._member_chunks(name, chunk_size)

    async def _member_chunks(self, name: MemberRef, chunk_size: int) -> AsyncGenerator[bytes, None]:
        member = await self._content_member(name)
        async with aclosing(self._chunks(member, chunk_size)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _chunks(self, member: Member, chunk_size: int) -> AsyncGenerator[bytes, None]:
        if member.sparse is None:
            at, end = member.data_offset, member.data_offset + member.size
            while at < end:
                step = min(chunk_size, end - at)
                yield await self._read_exact(at, at + step)
                at += step
            return
        regions = member.sparse.regions
        starts = stored_starts(regions)
        base = member.data_offset + member.sparse.map_size
        for begin in range(0, member.size, chunk_size):
            end = min(begin + chunk_size, member.size)
            plan = layout(regions, starts, begin, end)
            if not plan.pieces:
                yield bytes(end - begin)
                continue
            stored = await self._read_exact(base + plan.stored_start, base + plan.stored_end)
            out = bytearray(end - begin)
            for window_at, stored_at, length in plan.pieces:
                at = stored_at - plan.stored_start
                out[window_at : window_at + length] = stored[at : at + length]
            yield bytes(out)

    # ------------------------------------------------------------------ extraction

    async def extract(self, name: MemberRef, dest: str | os.PathLike[str]) -> str | None:
        """Extract the member ``name`` under the folder ``dest`` (created if needed).

        Parent folders are created as plain folders. A hard link is written as a copy of what
        it stands for (what :meth:`read` returns). Returns the path written
        (``None`` for a member that is not extracted: a header of another type). Raises
        :class:`UnsafeMemberError` when the member is refused (see :mod:`._extract`), and as
        :meth:`read` does.
        """
        member = await self.member(name)
        extractor = await anyio.to_thread.run_sync(_extract.Extractor.open, os.fspath(dest))
        return await self._extract_one(extractor, member, defer_folders=False)

    async def extract_all(self, dest: str | os.PathLike[str]) -> None:
        """Extract every member, in archive order, under the folder ``dest`` (created if needed).

        Stops at the first refused member with :class:`UnsafeMemberError` (or at a corrupt part
        of the archive with :class:`ArchiveFormatError`); what was extracted before it stays
        (always inside ``dest``), and the folders made get their mode and mtime in any case.
        """
        extractor = await anyio.to_thread.run_sync(_extract.Extractor.open, os.fspath(dest))
        fetcher = _Fetcher(self)  # small files come from the read-ahead of the header scan
        seen: dict[str, Member] = {}  # name -> the last member of that name, links resolved
        try:
            async with aclosing(self._walk(fetcher)) as members:
                async for member in members:
                    await self._extract_one(
                        extractor, member, defer_folders=True, fetcher=fetcher, seen=seen
                    )
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(extractor.finish)

    async def _extract_one(
        self,
        extractor: _extract.Extractor,
        member: Member,
        *,
        defer_folders: bool,
        fetcher: _Fetcher | None = None,
        seen: dict[str, Member] | None = None,
    ) -> str | None:
        if member.type is MemberType.OTHER:
            return None  # ACLs, volume labels, ...: not file system objects
        parts = _extract.member_parts(member)
        if member.is_hardlink:
            return await self._extract_hardlink(extractor, member, parts, fetcher, seen)
        if seen is not None:
            seen[member.key] = member
        if member.is_dir:
            return await anyio.to_thread.run_sync(
                lambda: extractor.make_dir(member, parts, defer=defer_folders)
            )
        if member.is_symlink:
            return await anyio.to_thread.run_sync(extractor.make_symlink, member, parts)
        return await self._write_file(extractor, member, parts, member, fetcher)

    async def _extract_hardlink(
        self,
        extractor: _extract.Extractor,
        member: Member,
        parts: list[str],
        fetcher: _Fetcher | None,
        seen: dict[str, Member] | None,
    ) -> str:
        """In ``extract_all``: a link to the file on disk, as tar makes it (that file is the
        last member of the target's name extracted before the link). Alone, or when that
        file is not on disk: a copy of what the link stands for, so that ``extract`` writes
        what ``read`` returns, whatever the destination held before."""
        target: Member | None
        if seen is None:  # a single member: the listing says what the link stands for
            await anyio.to_thread.run_sync(extractor.link_target, member)  # refuse as tar -x
            target = await self._link_target(member)
            while target.is_hardlink:
                target = await self._link_target(target)
        else:  # extract_all: the members extracted so far say it
            target = seen.get(lookup_key(member.linkname))
            seen[member.key] = member if target is None else target
            made = await anyio.to_thread.run_sync(extractor.make_hardlink, member, parts)
            if made is not None:
                return made
            if target is None:
                raise ArchiveFormatError(
                    f"hard link {shown(member.name)} points at {shown(member.linkname)}, "
                    "which is not a member before it",
                    offset=member.header_offset,
                )
        if target.is_symlink:  # a hard link to a symlink is a second symlink
            return await anyio.to_thread.run_sync(
                extractor.make_symlink, member, parts, target.linkname
            )
        if not target.is_file:
            raise UnsafeMemberError(
                f"refusing to extract {shown(member.name)}: its link target "
                f"{shown(member.linkname)} is a {target.type.value}, not a file",
                member=member.name,
            )
        return await self._write_file(extractor, member, parts, target, fetcher)

    async def _write_file(
        self,
        extractor: _extract.Extractor,
        member: Member,
        parts: list[str],
        source: Member,
        fetcher: _Fetcher | None,
    ) -> str:
        if source.sparse is None and source.size <= _SMALL_FILE:
            start, end = source.data_offset, source.data_offset + source.size
            data = await (
                fetcher.read_exact(start, end) if fetcher else self._read_exact(start, end)
            )
            return await anyio.to_thread.run_sync(
                extractor.write_file, member, parts, data, source.mode, source.mtime
            )
        part = await anyio.to_thread.run_sync(extractor.begin_file, member, parts)
        try:
            if source.sparse is None:
                async with aclosing(self._chunks(source, _SMALL_FILE)) as chunks:
                    async for chunk in chunks:
                        await anyio.to_thread.run_sync(part.write, chunk)
                size = None
            else:
                async for pieces in self._sparse_pieces(source):
                    await anyio.to_thread.run_sync(part.write_at, pieces)
                size = source.size
            return await anyio.to_thread.run_sync(
                extractor.publish, part, source.mode, source.mtime, size
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(part.discard)
            raise

    async def _sparse_pieces(self, member: Member) -> AsyncIterator[list[tuple[int, bytes]]]:
        """A sparse file's data regions as ``(offset, bytes)`` pieces, about a MiB per batch:
        written where they go, the holes are never written."""
        assert member.sparse is not None
        base = member.data_offset + member.sparse.map_size
        stored_at = 0
        batch: list[tuple[int, int, int]] = []  # (file offset, stored offset, length)
        batch_bytes = 0
        for offset, length in member.sparse.regions:
            done = 0
            while done < length:
                step = min(length - done, _SMALL_FILE - batch_bytes)
                batch.append((offset + done, stored_at + done, step))
                batch_bytes += step
                done += step
                if batch_bytes >= _SMALL_FILE:
                    yield await self._read_pieces(base, batch)
                    batch, batch_bytes = [], 0
            stored_at += length
        if batch:
            yield await self._read_pieces(base, batch)

    async def _read_pieces(
        self, base: int, batch: list[tuple[int, int, int]]
    ) -> list[tuple[int, bytes]]:
        first = batch[0][1]
        last = batch[-1][1] + batch[-1][2]
        stored = await self._read_exact(base + first, base + last)
        return [(offset, stored[at - first : at - first + length]) for offset, at, length in batch]


def _truncated(start: int, end: int, ends_at: int) -> ArchiveFormatError:
    return ArchiveFormatError(
        f"archive is truncated: {end - start} bytes are needed at {start}, "
        f"but the archive ends at {ends_at}",
        offset=start,
    )


def _row_matches(row: IndexRow, member: Member) -> bool:
    """Whether the header found at a row's offset is the member the row describes."""
    return (
        member.header_offset == row.header_offset
        and member.next_offset == row.end_offset
        and member.key == lookup_key(row.name)
        and (member.size == row.size or not member.is_file)
    )


@asynccontextmanager
async def open_archive(
    source: str | os.PathLike[str] | RangeSource | StreamedSource,
    *,
    age_identity: AgeIdentity | None = None,
    use_index: bool = True,
    trust_index: bool = False,
    max_index_size: int = DEFAULT_MAX_INDEX_SIZE,
) -> AsyncIterator[Archive]:
    """Open an archive for reading: ``async with open_archive(source) as archive``.

    ``source`` is a path (read through a :class:`LocalFileSource`, closed on exit) or a
    :class:`RangeSource` (an :class:`HttpRangeSource`, an ``S3Source``, your own), whose
    ``prepare()`` is awaited first when it has one (the caller keeps ownership: it is not
    closed).

    What the source holds is told from its first bytes, whatever its name: a tar; an age file,
    opened with ``age_identity`` (an ``AGE-SECRET-KEY-1…`` identity or an identity file's text,
    the path of an identity file, or the passphrase: ``bytes``, or a ``str`` holding no
    identity); a seekable zstd file (``atartape record --zstd``, ``pyzstd.SeekableZstdFile``),
    read by range through its seek table; a gzip, bzip2, xz or zstd stream without a seek
    table, read from its start (see the module: a lookup by name costs a pass over the
    stream). Age over zstd (``.tar.zst.age``) and age over a stream work too;
    :attr:`Archive.sealed`, :attr:`Archive.compression` and :attr:`Archive.random_access` say
    what was found.

    ``use_index=False`` ignores an embedded index; ``trust_index=True`` looks members up
    through it without scanning the archive (each member's own header is still checked against
    its row, but a forged index can then make a name read another header of that name than
    ``tar -x`` would: use it for archives you made); ``max_index_size`` bounds the index read.

    Raises :class:`SourceNotFoundError` for a missing file (or identity file) and
    :class:`ArchiveFormatError` for an age file without ``age_identity`` or one it does not
    open, a compression atartape does not read (lz4, lzip, lzop, compress: the message says
    which), a damaged age header, seek table or stream start, and a missing package (zstandard
    for zstd, cryptography for age: the message names the extra). Errors in the tar surface
    when members are read.
    """
    options = {"use_index": use_index, "trust_index": trust_index, "max_index_size": max_index_size}
    if isinstance(source, (str, os.PathLike)):
        async with LocalFileSource(source) as local:
            layers = await unwrap(local, age_identity=age_identity)
            yield Archive(
                layers.plain,
                sealed=layers.sealed,
                compression=layers.compression,
                **options,  # type: ignore[arg-type]
            )
        return
    if isinstance(source, StreamedSource):
        await source.prepare()
        yield Archive(source, **options)  # type: ignore[arg-type]
        return
    prepare = getattr(source, "prepare", None)
    if callable(prepare):
        await prepare()
    size = source.size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise TypeError(f"the range source's size must be a non-negative int, not {size!r}")
    layers = await unwrap(source, age_identity=age_identity)
    yield Archive(
        layers.plain,
        sealed=layers.sealed,
        compression=layers.compression,
        **options,  # type: ignore[arg-type]
    )
