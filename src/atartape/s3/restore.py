"""Files and folders back from a tape stored as one S3 object, by ranged GETs.

:class:`S3Source` is a range source for :func:`atartape.open_archive` (``size`` and ``async
read_range(start, end)``), pinned to the object's ETag. :func:`restore` brings back one file
(through :func:`atartape.restore_file`, so its size and recorded digest are checked) or one
folder, fetching only their bytes; with the tape's index the parts are cut at the part size
read from the object's metadata, so no request spans two parts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .. import transforms, views
from ..archive.decoded import AgeSource, SeekableZstdSource, decoded
from ..archive.sources import RangeSource
from ..errors import EntryNotFoundError, RangeSourceError, TarIntegrityError, UnsafeMemberError
from ..format.header import EntryKind
from ..format.layout import Entry
from ..format.members import Member, MemberType
from ..format.windows import Fragment, Location, locate_entry
from ..restore import restore_file
from ..tape import Tape
from .client import close_client, make_client, run
from .errors import S3Error, S3IntegrityError
from .plan import S3Url, TapeMetadata

__all__ = ["S3Source", "restore"]

FETCH_SIZE = 8 * 1024 * 1024  # the largest single ranged GET
_KINDS = {
    EntryKind.FILE: MemberType.FILE,
    EntryKind.DIRECTORY: MemberType.DIRECTORY,
    EntryKind.SYMLINK: MemberType.SYMLINK,
}


class S3Source:
    """An S3 object as a range source: ``async with S3Source("s3://bucket/key") as source``.

    :meth:`prepare` (awaited by :func:`~atartape.open_archive`) learns the size, ETag and
    metadata with one ``head_object``; every :meth:`read_range` is a ranged GET with
    ``If-Match`` on that ETag, read in a worker thread, so an object replaced meanwhile is
    refused rather than mixed. ``client`` is a boto3 S3 client to use (else one is made from
    the environment and ``endpoint_url``, and closed by :meth:`aclose`). Raises
    :class:`RangeSourceError` for a short or misplaced answer and :class:`S3Error` for a failed
    request (:class:`S3IntegrityError` when the object changed).
    """

    def __init__(self, url: str, *, client: Any = None, endpoint_url: str | None = None) -> None:
        self.url = S3Url.parse(url)
        self.endpoint_url = endpoint_url
        self.client = client
        self._own = client is None
        self._size: int | None = None
        self.etag: str | None = None
        self.metadata: dict[str, str] = {}

    @property
    def size(self) -> int:
        if self._size is None:
            raise RuntimeError("S3Source is not open: await prepare() first")
        return self._size

    @property
    def tape(self) -> TapeMetadata | None:
        """What the object's metadata says about the tape it holds (``None``: not a tape)."""
        return TapeMetadata.from_metadata(self.metadata)

    async def prepare(self) -> None:
        if self._size is not None:
            return
        if self.client is None:
            self.client = await make_client(self.endpoint_url, max_pool_connections=4)
        answer = await run(
            lambda: self.client.head_object(Bucket=self.url.bucket, Key=self.url.key),
            f"{self.url}: reading the object",
        )
        self._size = int(answer["ContentLength"])
        self.etag = str(answer.get("ETag", ""))
        self.metadata = {str(k).lower(): str(v) for k, v in (answer.get("Metadata") or {}).items()}

    def _get(self, start: int, end: int) -> tuple[str, bytes]:
        params: dict[str, Any] = {
            "Bucket": self.url.bucket,
            "Key": self.url.key,
            "Range": f"bytes={start}-{end - 1}",
        }
        if self.etag:
            params["IfMatch"] = self.etag
        answer = self.client.get_object(**params)
        with answer["Body"] as body:
            return str(answer.get("ContentRange", "")), bytes(body.read())

    async def read_range(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)`` of the object, with one ranged GET."""
        if end <= start:
            return b""
        if self._size is None:
            await self.prepare()
        try:
            content_range, data = await run(
                lambda: self._get(start, end), f"{self.url}: bytes {start}-{end - 1}"
            )
        except S3Error as exc:
            if exc.code in ("PreconditionFailed", "412"):
                raise S3IntegrityError(
                    f"{self.url}: the object changed while it was read (ETag {self.etag})",
                    code=exc.code,
                ) from None
            raise
        first = content_range.partition(" ")[2].partition("-")[0]
        if len(data) != end - start or (content_range and first != str(start)):
            raise RangeSourceError(
                f"{self.url}: asked for bytes {start}-{end - 1}, got {len(data)} bytes "
                f"({content_range or 'no Content-Range'})"
            )
        return data

    async def aclose(self) -> None:
        if self._own and self.client is not None:
            client, self.client = self.client, None
            await close_client(client)

    async def __aenter__(self) -> S3Source:
        await self.prepare()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _subtree(tape: Tape, top: Entry) -> AsyncGenerator[Entry, None]:
    """``top`` and, for a folder, every entry under it (they follow it contiguously)."""
    prefix = top.arc_path + "/"
    rows = tape.entries(top.start_offset)
    async with aclosing(rows) as entries:
        async for entry in entries:
            if entry.arc_path != top.arc_path and not entry.arc_path.startswith(prefix):
                break
            yield entry


def _member(entry: Entry, name: str) -> Member:
    return Member(
        name=name,
        size=entry.size,
        type=_KINDS[entry.kind],
        mode=entry.mode,
        mtime=float(entry.mtime),
        linkname=entry.linkname,
        header_offset=entry.start_offset,
        data_offset=entry.data_offset,
    )


async def _restore_folder(
    source: RangeSource, tape: Tape, top: Entry, dest: str, part_size: int | None
) -> Path:
    """Write ``top`` and what it holds under ``dest`` (as ``dest/<folder name>/...``), safely
    (see :mod:`atartape.archive.extract`); each file's size and recorded digest are checked."""
    import hashlib

    from ..archive import extract as _extract

    extractor = await anyio.to_thread.run_sync(_extract.Extractor.open, dest)
    cut = len(top.arc_path) - len(top.arc_path.rsplit("/", 1)[-1])
    async for entry in _subtree(tape, top):
        member = _member(entry, entry.arc_path[cut:])
        parts = _extract.member_parts(member)
        if member.is_dir:
            await anyio.to_thread.run_sync(
                lambda: extractor.make_dir(member, parts, defer=True)  # noqa: B023
            )
            continue
        if member.is_symlink:
            await anyio.to_thread.run_sync(extractor.make_symlink, member, parts)
            continue
        algorithm = tape.checksum_algorithm if entry.checksum else None
        digest = hashlib.new(algorithm) if algorithm else None
        out = await anyio.to_thread.run_sync(extractor.begin_file, member, parts)
        try:
            location = locate_entry(entry, part_size)
            for fragment in location.fragments:
                base = fragment.volume_index * (part_size or 0)
                at = fragment.offset_in_volume
                while at < fragment.end_in_volume:
                    stop = min(at + FETCH_SIZE, fragment.end_in_volume)
                    data = await source.read_range(base + at, base + stop)
                    if digest is not None:
                        digest.update(data)
                    await anyio.to_thread.run_sync(out.write, data)
                    at = stop
            if digest is not None and digest.hexdigest() != entry.checksum:
                raise TarIntegrityError(
                    f"{entry.arc_path!r}: the {algorithm} of the bytes fetched is not the one "
                    "recorded",
                    arc_path=entry.arc_path,
                    reason="content",
                )
            await anyio.to_thread.run_sync(extractor.publish, out, member.mode, member.mtime)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(out.discard)
            raise
    await anyio.to_thread.run_sync(extractor.finish)
    return Path(extractor.dest) / top.arc_path[cut:]


async def _entry(tape: Tape, arc_path: str) -> Entry:
    """The entry, also for a path given relative to the tape's root folder."""
    arc_path = arc_path.strip("/")
    try:
        return await tape.entry(arc_path)
    except EntryNotFoundError:
        if arc_path == tape.arc_root or arc_path.startswith(tape.arc_root + "/"):
            raise
        return await tape.entry(f"{tape.arc_root}/{arc_path}")


async def restore(
    index_or_tape: Tape | str | os.PathLike[str] | None,
    url: str,
    arc_path: str,
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    endpoint_url: str | None = None,
    client: Any = None,
    age_identity: str | bytes | None = None,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Bring back the file or folder ``arc_path`` of the tape stored at ``url``, fetching only
    its bytes; returns the path written.

    An object holding a compressed or sealed view of the tape (see :func:`upload`) is read
    through its seek table and its age chunks, fetching only the frames and chunks that hold
    the bytes; a sealed one needs its key: the key file beside the index, or ``age_identity``
    (an ``AGE-SECRET-KEY-1…`` identity or the passphrase; without an index, it is required).

    ``index_or_tape`` is the tape's :class:`~atartape.Tape` or index path (the source folder
    is not needed): the object's metadata must name the same recording, and the part size is
    read from it. ``None``: no index; the object is read as any tar (its embedded index, if it
    has one, else a scan of its headers). ``arc_path`` may omit the tape's root folder. A file
    goes to ``dest`` (or into the folder ``dest``, under its name); a folder goes under
    ``dest`` by its name. Without an index the object must end where its blocks say: a cut
    inside a block, a member or its padding raises :class:`~atartape.ArchiveFormatError`
    before anything is written; one that ends without its end-of-archive blocks is read, and
    ``warn`` (if given) is called with a line saying it may be truncated. Raises
    :class:`~atartape.EntryNotFoundError` for an unknown path, :class:`S3IntegrityError` when
    the object is not this tape or changed while read,
    :class:`~atartape.TarIntegrityError` when fetched bytes differ from the recorded digest,
    :class:`FileExistsError` for an existing file ``dest`` without ``overwrite``, and
    :class:`S3Error` for a failed request.
    """
    async with S3Source(url, client=client, endpoint_url=endpoint_url) as source:
        if index_or_tape is None:
            plain = await decoded(source, age_identity=age_identity)
            return await _restore_from_archive(plain, source.url, arc_path, dest, overwrite, warn)
        tape = index_or_tape if isinstance(index_or_tape, Tape) else await Tape.open(index_or_tape)
        stored = source.tape
        if stored is None:
            raise S3IntegrityError(f"{source.url}: the object's metadata names no tape")
        expected = views.identity_of(tape.identity, stored.view)
        if stored.identity != expected or stored.total_size != source.size:
            raise S3IntegrityError(
                f"{source.url}: the object holds the recording {stored.identity[:16]}, "
                f"the index {tape.index_path!r} another ({expected[:16]}, {stored.view} view)"
            )
        reader: RangeSource = source
        part_size: int | None = stored.part_size
        if stored.view != "plain":  # plain offsets no longer fall on part boundaries
            reader = await _plain_view(source, tape, stored.view, age_identity)
            part_size = None
        entry = await _entry(tape, arc_path)
        if entry.kind is not EntryKind.FILE:
            folder = await anyio.to_thread.run_sync(os.path.abspath, os.fspath(dest))
            return await _restore_folder(reader, tape, entry, folder, part_size)
        location = locate_entry(entry, part_size, checksum_algorithm=tape.checksum_algorithm)

        async def fetch_range(part: int, start: int, end: int) -> bytes:
            base = part * (part_size or 0)
            return await reader.read_range(base + start, base + end)

        return await restore_file(location, fetch_range, dest, overwrite=overwrite)


async def _plain_view(
    source: S3Source, tape: Tape, view: str, age_identity: str | bytes | None
) -> RangeSource:
    """The tar inside an object holding a compressed or sealed view of ``tape``."""
    reader: RangeSource = source
    if view.endswith("age"):
        file_key = await transforms.unseal_key(tape.meta, tape.index_path, age_identity)
        sealed = AgeSource(source, file_key=file_key)
        await sealed.prepare()
        reader = sealed
    if view.startswith("zstd"):
        compressed = SeekableZstdSource(reader)
        await compressed.prepare()
        reader = compressed
    if reader.size != tape.total_size:
        raise S3IntegrityError(
            f"{source.url}: the {view} view holds {reader.size} bytes of tar, the tape "
            f"{tape.total_size}"
        )
    return reader


async def _restore_from_archive(
    source: RangeSource,
    url: S3Url,
    arc_path: str,
    dest: str | os.PathLike[str],
    overwrite: bool,
    warn: Callable[[str], None] | None,
) -> Path:
    """Without an index: find the member(s) in the object as in any tar, then fetch them."""
    from ..archive import extract as _extract
    from ..archive import open_archive

    name = arc_path.strip("/")
    async with open_archive(source) as archive:
        try:
            member = await archive.member(name)
        except EntryNotFoundError:
            member = None
        if await archive.check() and warn is not None:  # a cut archive raises: nothing written
            warn(f"{url}: the archive ends without its end-of-archive blocks: it may be truncated")
        if member is not None and member.is_file:
            location = Location(
                arc_path=member.name,
                kind=EntryKind.FILE,
                start_offset=member.header_offset,
                data_offset=member.data_offset,
                size=member.size,
                end_offset=member.next_offset,
                volume_size=None,
                fragments=[Fragment(0, member.data_offset, member.size)] if member.size else [],
                mode=member.mode,
                mtime=int(member.mtime),
            )

            async def fetch_range(_: int, start: int, end: int) -> bytes:
                return await source.read_range(start, end)

            return await restore_file(location, fetch_range, dest, overwrite=overwrite)
        folder = await anyio.to_thread.run_sync(os.path.abspath, os.fspath(dest))
        extractor = await anyio.to_thread.run_sync(_extract.Extractor.open, folder)
        cut = len(name) - len(name.rsplit("/", 1)[-1])
        found = None
        async with aclosing(archive.members()) as members:
            async for item in members:
                if item.name != name and not item.name.startswith(name + "/"):
                    continue
                found = found or item
                renamed = dataclasses.replace(item, name=item.name[cut:])
                await _extract_member(archive, extractor, renamed, item)
        if found is None:
            raise EntryNotFoundError(f"{name!r} is not in {url}")
        await anyio.to_thread.run_sync(extractor.finish)
        return Path(extractor.dest) / name[cut:]


async def _extract_member(archive: Any, extractor: Any, member: Member, original: Member) -> None:
    """One member of the subtree, written under its shortened name: folders and symlinks as
    they are; files and hard links with what :meth:`Archive.chunks` gives for the original
    (a sparse file expanded, a hard link's target content); devices and FIFOs refused."""
    from ..archive import extract as _extract

    parts = _extract.member_parts(member)
    if member.type is MemberType.OTHER:
        return  # an ACL or a volume label: no file system object
    if member.is_dir:
        await anyio.to_thread.run_sync(lambda: extractor.make_dir(member, parts, defer=True))
    elif member.is_symlink:
        await anyio.to_thread.run_sync(extractor.make_symlink, member, parts)
    elif member.is_file or member.is_hardlink:
        out = await anyio.to_thread.run_sync(extractor.begin_file, member, parts)
        try:
            async with aclosing(archive.chunks(original, chunk_size=FETCH_SIZE)) as chunks:
                async for data in chunks:
                    await anyio.to_thread.run_sync(out.write, data)
            await anyio.to_thread.run_sync(extractor.publish, out, member.mode, member.mtime)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(out.discard)
            raise
    else:
        raise UnsafeMemberError(
            f"refusing to restore {original.name!r}: a {member.type.value} is not extracted",
            member=original.name,
        )
