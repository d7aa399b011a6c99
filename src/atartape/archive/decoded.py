"""Range sources over compressed or sealed archives: the plain tar bytes, by range.

:class:`SeekableZstdSource` reads a file in the Zstandard seekable format (what ``atartape
record --zstd`` makes, and ``pyzstd.SeekableZstdFile`` writes): its seek table says which frame
holds a byte, so a range costs the frames that hold it. :class:`AgeSource` reads an age v1 file
(``age -e``, rage, pyrage, ``atartape record --age-recipient``) with an identity: a range costs
the 64 KiB chunks that hold it, each authenticated. Both wrap any range source (a local file,
HTTP, S3) and are range sources themselves, so :func:`~atartape.open_archive` and
:func:`~atartape.restore_file` read through them; a sealed, compressed tape is an
:class:`AgeSource` over a :class:`SeekableZstdSource`'s input, i.e.
``SeekableZstdSource(AgeSource(source, identity))``.

Every byte handed out was checked: a zstd frame must decompress to the size the seek table
gives (and to its checksum, when it has one); an age chunk must authenticate under the file's
key at its own index. A damaged or hostile file raises :class:`~atartape.ArchiveFormatError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import anyio.to_thread

from ..errors import ArchiveFormatError, RangeSourceError
from ..format import age, zstd_seekable
from .sources import RangeSource

__all__ = ["AgeSource", "SeekableZstdSource", "decoded", "sniff"]

MAX_FRAME_BYTES = 256 * 1024 * 1024
"""The largest plain frame a seek table may declare: more is refused, never allocated."""
_MAX_HEADER = 1024 * 1024  # an age header larger than this is refused
_HEADER_READ = 4096
_FETCH = 8 * 1024 * 1024  # plain bytes decoded per inner read, at most (plus one frame/chunk)
_TAIL = 64 * 1024


async def _prepare(source: Any) -> None:
    prepare = getattr(source, "prepare", None)
    if prepare is not None:
        await prepare()


async def _read(source: RangeSource, start: int, end: int, what: str) -> bytes:
    data = await source.read_range(start, end)
    if len(data) != end - start:
        raise RangeSourceError(f"{what}: asked for bytes {start}-{end - 1}, got {len(data)} bytes")
    return bytes(data)


class SeekableZstdSource:
    """The plain bytes of a seekable zstd file read through ``inner`` (a range source).

    :meth:`prepare` reads the seek table from the end of the file (checked to account for every
    byte of it); :meth:`read_range` fetches and decompresses the frames that hold the range.
    The last frame decompressed is kept, so reading a tar's headers one after another inside
    one frame fetches it once. Raises :class:`ArchiveFormatError` for a file that is not
    seekable zstd, a table that does not fit the file, or a frame that does not decompress to
    what the table says.
    """

    def __init__(self, inner: RangeSource) -> None:
        self.inner = inner
        self.table: zstd_seekable.SeekTable | None = None
        self._cached: tuple[int, bytes] | None = None

    @property
    def size(self) -> int:
        if self.table is None:
            raise RuntimeError("SeekableZstdSource is not open: await prepare() first")
        return self.table.plain_size

    async def prepare(self) -> None:
        if self.table is not None:
            return
        await _prepare(self.inner)
        total = self.inner.size
        footer_at = total - zstd_seekable.FOOTER_SIZE
        if footer_at < 0:
            raise ArchiveFormatError(f"{total} bytes are too few for a seekable zstd file")
        tail_at = max(0, total - _TAIL)
        tail = await _read(self.inner, tail_at, total, "the seek table")
        try:
            size = zstd_seekable.seek_table_size_from_footer(tail)
            if size > len(tail):
                if size > total:
                    raise zstd_seekable.SeekTableError("the seek table is larger than the file")
                tail = await _read(self.inner, total - size, total, "the seek table")
            table = zstd_seekable.parse_seek_table(tail, file_size=total)
        except zstd_seekable.SeekableError as exc:
            raise ArchiveFormatError(f"not a seekable zstd file: {exc}") from None
        for index, entry in enumerate(table.entries):
            if entry.decompressed_size > MAX_FRAME_BYTES:
                raise ArchiveFormatError(
                    f"frame {index} of the seek table declares {entry.decompressed_size} plain "
                    f"bytes, more than the {MAX_FRAME_BYTES} read here"
                )
        self.table = table

    async def read_range(self, start: int, end: int) -> bytes:
        """The plain bytes ``[start, end)``."""
        if self.table is None:
            await self.prepare()
        table = self.table
        assert table is not None
        if not 0 <= start <= end <= table.plain_size:
            raise ValueError(f"bytes {start}-{end} are outside the {table.plain_size} plain bytes")
        out: list[bytes] = []
        at = start
        while at < end:
            frame = table.frame_of_plain(at)
            lo, hi = table.frame_plain_range(frame)
            plain = await self._frame(frame)
            out.append(plain[at - lo : min(end, hi) - lo])
            at = min(end, hi)
        return b"".join(out)

    async def _frame(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        assert self.table is not None
        lo, hi = self.table.frame_compressed_range(index)
        compressed = await _read(self.inner, lo, hi, f"zstd frame {index}")
        entry = self.table.entries[index]
        plain = await anyio.to_thread.run_sync(_decompress, index, compressed, entry)
        self._cached = (index, plain)
        return plain

    async def aclose(self) -> None:
        self._cached = None
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> SeekableZstdSource:
        await self.prepare()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _decompress(index: int, frame: bytes, entry: zstd_seekable.SeekEntry) -> bytes:
    try:
        has_checksum = len(frame) > 4 and frame[4] & 0x04
        if (
            entry.checksum is not None
            and has_checksum
            and zstd_seekable.frame_checksum(frame) != entry.checksum
        ):
            raise zstd_seekable.FrameError("its checksum differs from the seek table's")
        return zstd_seekable.decompress_frame(frame, entry.decompressed_size)
    except zstd_seekable.SeekableError as exc:
        raise ArchiveFormatError(f"zstd frame {index} is damaged: {exc}") from None


class AgeSource:
    """The plain bytes of an age v1 file read through ``inner`` with ``identities``.

    ``identities``: an ``AGE-SECRET-KEY-1…`` identity, the text of an identity file, a
    passphrase (``bytes``, or a ``str`` that is not a key), or parsed identities; or, instead,
    the file key itself (``file_key``, as kept beside a sealed tape's index). :meth:`prepare`
    reads and opens the header (wrong identities, a wrong passphrase or a bad MAC raise
    :class:`ArchiveFormatError`); :meth:`read_range` fetches the sealed chunks that hold the
    range and opens each at its own index, so a chunk moved, altered or cut is refused.
    ``max_work_factor`` bounds the scrypt work a passphrase header may ask for.
    """

    def __init__(
        self,
        inner: RangeSource,
        identities: str | bytes | Sequence[age.Identity] | None = None,
        *,
        file_key: bytes | None = None,
        max_work_factor: int = age.DEFAULT_MAX_WORK_FACTOR,
    ) -> None:
        if (identities is None) == (file_key is None):
            raise ValueError("give identities or file_key (one of them)")
        self.inner = inner
        self._identities = identities
        self._file_key = file_key
        self.max_work_factor = max_work_factor
        self.layout: age.SealedLayout | None = None
        self._key: age.PayloadKey | None = None
        self._cached: tuple[int, bytes] | None = None

    @property
    def size(self) -> int:
        if self.layout is None:
            raise RuntimeError("AgeSource is not open: await prepare() first")
        return self.layout.plain_size

    async def prepare(self) -> None:
        if self.layout is not None:
            return
        await _prepare(self.inner)
        total = self.inner.size
        want = min(total, _HEADER_READ)
        while True:
            head = await _read(self.inner, 0, want, "the age header")
            try:
                length = age.header_length(head)
            except age.SealError as exc:
                raise ArchiveFormatError(f"not an age file: {exc}") from None
            if length is not None:
                break
            if want >= min(total, _MAX_HEADER):
                raise ArchiveFormatError(
                    f"the age header does not end within {want} bytes: refused"
                )
            want = min(total, _MAX_HEADER, want * 4)
        try:
            opened = await anyio.to_thread.run_sync(self._open_header, head[:length])
            plain_size = age.plain_size_of(opened.header_size, total)
        except age.SealError as exc:
            raise ArchiveFormatError(f"the age file does not open: {exc}") from None
        self._key = opened.payload_key()
        self.layout = age.SealedLayout(opened.header_size, plain_size)

    def _open_header(self, prefix: bytes) -> age.OpenedHeader:
        if self._file_key is not None:
            return age.check_file_key(prefix, self._file_key)
        assert self._identities is not None
        identities = _identities(self._identities)
        return age.open_header(prefix, identities, max_work_factor=self.max_work_factor)

    async def read_range(self, start: int, end: int) -> bytes:
        """The plain bytes ``[start, end)``, every chunk authenticated."""
        if self.layout is None:
            await self.prepare()
        layout, key = self.layout, self._key
        assert layout is not None
        assert key is not None
        if not 0 <= start <= end <= layout.plain_size:
            raise ValueError(f"bytes {start}-{end} are outside the {layout.plain_size} plain bytes")
        out: list[bytes] = []
        at = start
        while at < end:
            stop = min(end, at + _FETCH)
            cached = self._cached
            chunk = at // age.CHUNK_SIZE
            if cached is not None and cached[0] == chunk:
                lo = chunk * age.CHUNK_SIZE
                stop = min(end, lo + len(cached[1]))
                out.append(cached[1][at - lo : stop - lo])
                at = stop
                continue
            out.append(await self._open(layout, key, at, stop))
            at = stop
        return b"".join(out)

    async def _open(self, layout: age.SealedLayout, key: age.PayloadKey, lo: int, hi: int) -> bytes:
        sealed_lo, sealed_hi = layout.sealed_range_for_plain_range(lo, hi)
        sealed = await _read(self.inner, sealed_lo, sealed_hi, "age chunks")
        # Whole chunks are opened: keep the last one, which the next small read may need.
        first = lo - lo % age.CHUNK_SIZE
        last_chunk = (hi - 1) // age.CHUNK_SIZE
        whole_hi = min(layout.plain_size, (last_chunk + 1) * age.CHUNK_SIZE)
        try:
            plain = await anyio.to_thread.run_sync(
                age.open_window, key, layout, first, whole_hi, sealed
            )
        except age.SealError as exc:
            raise ArchiveFormatError(f"the age payload is damaged: {exc}") from None
        tail_at = last_chunk * age.CHUNK_SIZE
        self._cached = (last_chunk, plain[tail_at - first :])
        return plain[lo - first : hi - first]

    async def aclose(self) -> None:
        self._cached = None
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> AgeSource:
        await self.prepare()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _identities(given: str | bytes | Sequence[age.Identity]) -> list[age.Identity]:
    if isinstance(given, bytes):
        return [age.ScryptIdentity(given)]
    if isinstance(given, str):
        keys = [
            line.strip()
            for line in given.splitlines()
            if line.strip().startswith("AGE-SECRET-KEY-1")
        ]
        if keys:
            try:
                return list(age.parse_identities("\n".join(keys)))
            except age.SealError as exc:
                raise ArchiveFormatError(str(exc)) from None
        return [age.ScryptIdentity(given.encode())]
    return list(given)


AGE_MAGIC = b"age-encryption.org/v1\n"
_ZSTD_MAGIC = zstd_seekable.ZSTD_MAGIC.to_bytes(4, "little")


async def sniff(source: RangeSource) -> str:
    """What the first bytes of ``source`` say it is: ``"age"``, ``"zstd"`` (a zstd frame first),
    ``"gzip"``, ``"bzip2"``, ``"xz"`` or ``"tar"`` (anything else)."""
    await _prepare(source)
    head = await _read(source, 0, min(source.size, len(AGE_MAGIC)), "the first bytes")
    if head.startswith(AGE_MAGIC):
        return "age"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return "tar"


async def decoded(
    source: RangeSource, *, age_identity: str | bytes | Sequence[age.Identity] | None = None
) -> RangeSource:
    """``source`` as plain tar bytes: unsealed (an age file, with ``age_identity``) and/or
    decompressed (seekable zstd), as its first bytes say; itself when it is neither.

    Raises :class:`ArchiveFormatError` for an age file without ``age_identity`` (or one that
    does not open it), and for a compressed stream that cannot be read by range (zstd without a
    seek table, gzip, bzip2, xz): those are read from the start, see
    :func:`~atartape.open_archive`.
    """
    kind = await sniff(source)
    if kind == "age":
        if age_identity is None:
            raise ArchiveFormatError(
                "the archive is sealed with age: give an identity or the passphrase to read it"
            )
        sealed = AgeSource(source, age_identity)
        await sealed.prepare()
        source = sealed
        kind = await sniff(source)
    if kind == "zstd":
        compressed = SeekableZstdSource(source)
        await compressed.prepare()
        return compressed
    if kind != "tar":
        raise ArchiveFormatError(
            f"the archive is {kind}-compressed without a seek table: it can only be read from "
            "the start"
        )
    return source
