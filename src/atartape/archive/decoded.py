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

:func:`unwrap` is what :func:`~atartape.open_archive` does with a source: it tells from the
first bytes what the source holds and peels the layers off: age (with an identity), then
seekable zstd (by range) or a compressed stream without random access (gzip, bzip2, xz, zstd
without a seek table: a :class:`~atartape.archive.streams.StreamedSource`, read from the start).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from .._extras import require
from ..errors import ArchiveFormatError, InvalidArgumentError, RangeSourceError, SourceNotFoundError
from ..format import age, zstd_seekable
from ..format.header import BLOCK_SIZE, header_checksums
from ..format.members import parse_number
from .sources import RangeSource
from .streams import KINDS as STREAMED_KINDS
from .streams import StreamedSource

__all__ = [
    "AgeIdentity",
    "AgeSource",
    "Layers",
    "SeekableZstdSource",
    "decoded",
    "sniff",
    "sniff_bytes",
    "unwrap",
]

AgeIdentity = str | bytes | os.PathLike[str] | Sequence[age.Identity]
"""What opens an age file: an ``AGE-SECRET-KEY-1…`` identity or the text of an identity file
(``str``), a passphrase (``bytes``, or a ``str`` holding no identity), the path of an identity
file (or of a file whose first line is the passphrase), or parsed identities."""

MAX_FRAME_BYTES = 256 * 1024 * 1024
"""The largest plain frame a seek table may declare: more is refused, never allocated."""
_MAX_HEADER = 1024 * 1024  # an age header larger than this is refused
_HEADER_READ = 4096
_FETCH = 8 * 1024 * 1024  # plain bytes decoded per inner read, at most (plus one frame/chunk)
_TAIL = 4096  # first read of a seek table (more when the footer says it is larger)
_FRAME_CACHE = 8 * 1024 * 1024  # plain bytes of recent zstd frames kept (the last one always)
_CHUNK_CACHE = 16  # recent age chunks kept (1 MiB)


class NotSeekableError(ArchiveFormatError):
    """A zstd file without a seek table at its end: it can be read from its start only."""


class FramesTooLargeError(ArchiveFormatError):
    """A seek table declares a frame larger than :data:`MAX_FRAME_BYTES`: such a file is read
    from its start instead, with bounded memory."""


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
    The frames decompressed last are kept (8 MiB of them, at least one), so reading a tar's
    headers one after another inside one frame fetches it once. Raises
    :class:`ArchiveFormatError` for a file that is not seekable zstd, a table that does not fit
    the file, or a frame that does not decompress to what the table says.
    """

    def __init__(self, inner: RangeSource) -> None:
        self.inner = inner
        self.table: zstd_seekable.SeekTable | None = None
        self._frames: OrderedDict[int, bytes] = OrderedDict()

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
        if int.from_bytes(tail[-4:], "little") != zstd_seekable.SEEKABLE_MAGIC:
            raise NotSeekableError(
                "not a seekable zstd file: no seek table footer (magic 0x8F92EAB1) at the end"
            )
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
                raise FramesTooLargeError(
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
            raise InvalidArgumentError(
                f"bytes {start}-{end} are outside the {table.plain_size} plain bytes"
            )
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
        cached = self._frames.get(index)
        if cached is not None:
            self._frames.move_to_end(index)
            return cached
        assert self.table is not None
        lo, hi = self.table.frame_compressed_range(index)
        compressed = await _read(self.inner, lo, hi, f"zstd frame {index}")
        entry = self.table.entries[index]
        plain = await anyio.to_thread.run_sync(_decompress, index, compressed, entry)
        self._frames[index] = plain
        held = sum(len(frame) for frame in self._frames.values())
        while held > _FRAME_CACHE and len(self._frames) > 1:
            held -= len(self._frames.popitem(last=False)[1])
        return plain

    async def aclose(self) -> None:
        self._frames.clear()
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
            raise InvalidArgumentError("give identities or file_key (one of them)")
        self.inner = inner
        self._identities = identities
        self._file_key = file_key
        self.max_work_factor = max_work_factor
        self.layout: age.SealedLayout | None = None
        self._key: age.PayloadKey | None = None
        self._chunks: OrderedDict[int, bytes] = OrderedDict()  # recent chunks, opened

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
            raise InvalidArgumentError(
                f"bytes {start}-{end} are outside the {layout.plain_size} plain bytes"
            )
        out: list[bytes] = []
        at = start
        while at < end:
            chunk = at // age.CHUNK_SIZE
            cached = self._chunks.get(chunk)
            if cached is not None:
                self._chunks.move_to_end(chunk)
                lo = chunk * age.CHUNK_SIZE
                stop = min(end, lo + len(cached))
                out.append(cached[at - lo : stop - lo])
                at = stop
                continue
            stop = min(end, at + _FETCH)
            later = [k for k in self._chunks if chunk < k and k * age.CHUNK_SIZE < stop]
            if later:  # fetch up to the first chunk at hand
                stop = min(later) * age.CHUNK_SIZE
            out.append(await self._open(layout, key, at, stop))
            at = stop
        return b"".join(out)

    async def _open(self, layout: age.SealedLayout, key: age.PayloadKey, lo: int, hi: int) -> bytes:
        sealed_lo, sealed_hi = layout.sealed_range_for_plain_range(lo, hi)
        sealed = await _read(self.inner, sealed_lo, sealed_hi, "age chunks")
        first = lo - lo % age.CHUNK_SIZE
        last_chunk = (hi - 1) // age.CHUNK_SIZE
        whole_hi = min(layout.plain_size, (last_chunk + 1) * age.CHUNK_SIZE)
        try:
            plain = await anyio.to_thread.run_sync(
                age.open_window, key, layout, first, whole_hi, sealed
            )
        except age.SealError as exc:
            raise ArchiveFormatError(f"the age payload is damaged: {exc}") from None
        # Keep the chunks of a small window (a header, a seek table), else its last chunk: the
        # next small read may need them.
        first_chunk = first // age.CHUNK_SIZE
        keep = range(first_chunk if last_chunk - first_chunk < 4 else last_chunk, last_chunk + 1)
        for chunk in keep:
            at = (chunk - first_chunk) * age.CHUNK_SIZE
            self._chunks[chunk] = plain[at : at + age.CHUNK_SIZE]
            self._chunks.move_to_end(chunk)
        while len(self._chunks) > _CHUNK_CACHE:
            self._chunks.popitem(last=False)
        return plain[lo - first : hi - first]

    async def aclose(self) -> None:
        self._chunks.clear()
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
_MAGICS = (
    (AGE_MAGIC, "age"),
    (_ZSTD_MAGIC, "zstd"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"LZIP", "lzip"),
    (b"\x89LZO\x00\r\n\x1a\n", "lzop"),
    (b"\x1f\x9d", "compress"),
    (b"PK\x03\x04", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
)
# What is recognised but not read, and what reads it.
_FOREIGN = {
    "lz4": "an lz4-compressed archive: decompress it first (lz4 -d), or use tar --lz4",
    "lzip": "an lzip-compressed archive: decompress it first (lzip -d), or use tar --lzip",
    "lzop": "an lzop-compressed archive: decompress it first (lzop -d), or use tar --lzop",
    "compress": "a compress (.Z) archive: decompress it first (gzip -d reads it)",
    "zip": "a zip file, not a tar: use unzip or Python's zipfile",
    "7z": "a 7-Zip file, not a tar: use 7z",
}
_SNIFF_BYTES = BLOCK_SIZE


def _is_tar_header(block: bytes) -> bool:
    """Whether ``block`` is a tar header whose checksum holds (its magic aside)."""
    if len(block) < BLOCK_SIZE or not block.strip(b"\0"):
        return False
    try:
        stored = parse_number(block[148:156])
    except ValueError:
        return False
    return stored in header_checksums(block[:BLOCK_SIZE])


def sniff_bytes(head: bytes) -> str:
    """What the first bytes of a file (512 of them when there are) say it is: ``"tar"`` when
    they are a tar header whose checksum holds (whatever its name starts with), else by magic
    number ``"age"``, ``"zstd"``, ``"gzip"``, ``"bzip2"``, ``"xz"``, ``"lz4"``, ``"lzip"``,
    ``"lzop"``, ``"compress"``, ``"zip"`` or ``"7z"``; ``"tar"`` for anything else (the tar
    reader then says what is wrong)."""
    if _is_tar_header(head):
        return "tar"
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    return "tar"


async def sniff(source: RangeSource) -> str:
    """What the first bytes of ``source`` say it is (see :func:`sniff_bytes`)."""
    await _prepare(source)
    head = await _read(source, 0, min(source.size, _SNIFF_BYTES), "the first bytes")
    return sniff_bytes(head)


@dataclass(frozen=True)
class Layers:
    """A source with its layers peeled off (see :func:`unwrap`): ``plain`` reads the tar.

    ``sealed``: it was an age file; ``compression``: ``"zstd"``, ``"gzip"``, ``"bzip2"``,
    ``"xz"`` or ``None``; ``random_access``: any byte can be read without the ones before it
    (a plain tar, seekable zstd, age); otherwise ``plain`` is a
    :class:`~atartape.archive.streams.StreamedSource`, read from its start.
    """

    plain: RangeSource | StreamedSource
    sealed: bool = False
    compression: str | None = None

    @property
    def random_access(self) -> bool:
        return not isinstance(self.plain, StreamedSource)


def _require(module: str, extra: str, what: str) -> None:
    require(module, extra, f"reading an archive {what}")


async def _identity_text(given: AgeIdentity) -> str | bytes | Sequence[age.Identity]:
    """``given``, with an identity file's path replaced by what it holds."""
    if not isinstance(given, os.PathLike):
        return given
    path = os.fspath(given)
    try:
        text = await anyio.to_thread.run_sync(_read_text, path)
    except FileNotFoundError:
        raise SourceNotFoundError(f"no age identity file at {path!r}") from None
    if "AGE-SECRET-KEY-1" in text:
        return text
    lines = text.strip().splitlines()
    if not lines:
        raise ArchiveFormatError(f"the age identity file {path!r} is empty")
    return lines[0]  # a passphrase file, as the CLI's --age-identity-file reads it


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def _not_tar(outer: str, inner: str) -> ArchiveFormatError:
    """A layer (``outer``) that holds another compression or a sealed file (``inner``)."""
    if inner in _FOREIGN:
        what = _FOREIGN[inner].split(":")[0]  # "an lz4-compressed archive", "a zip file", ...
    else:
        what = f"{'an' if inner[0] in 'aeiou' else 'a'} {inner} stream"
    return ArchiveFormatError(
        f"the {outer} layer holds {what}, not a tar: unpack it first, then read what it holds"
    )


async def unwrap(
    source: RangeSource, *, age_identity: AgeIdentity | None = None, sequential: bool = True
) -> Layers:
    """Peel ``source``'s layers off, as its first bytes say: an age file is opened with
    ``age_identity``; a seekable zstd file is read by range through its seek table; a gzip,
    bzip2, xz or zstd stream without a seek table (or with frames over
    :data:`MAX_FRAME_BYTES`) is read from its start (``sequential=False`` refuses it
    instead); anything else is taken for a tar.

    Raises :class:`ArchiveFormatError` for an age file without ``age_identity`` or one it does
    not open, a compression atartape does not read (lz4, lzip, lzop, compress; zip and 7z are
    not tars), a layer that holds another compression or age inside it, a damaged header or
    seek table, and a missing package (``zstandard`` for zstd, ``cryptography`` for age, with
    the extra that brings it); :class:`SourceNotFoundError` for a missing identity file.
    """
    await _prepare(source)
    kind = await sniff(source)
    sealed = False
    unseekable = "without a seek table"
    if kind == "age":
        if age_identity is None:
            raise ArchiveFormatError(
                "the archive is sealed with age (age-encryption.org/v1): give an identity "
                "(age_identity=: an AGE-SECRET-KEY-1 identity, an identity file's text or "
                "path) or the passphrase to read it"
            )
        _require("cryptography", "age", "sealed with age")
        opened = AgeSource(source, await _identity_text(age_identity))
        await opened.prepare()
        source, sealed = opened, True
        kind = await sniff(source)
        if kind == "age":
            raise _not_tar("age", kind)
    if kind in _FOREIGN:
        raise ArchiveFormatError(f"the archive is {_FOREIGN[kind]}")
    if kind == "zstd":
        _require("zstandard", "zstd", "compressed with zstd")
        seekable = SeekableZstdSource(source)
        try:
            await seekable.prepare()
        except NotSeekableError:
            pass  # read from its start below
        except FramesTooLargeError:
            unseekable = "with frames too large to read by range"
        else:
            inner = await sniff(seekable)
            if inner != "tar":
                raise _not_tar("zstd", inner)
            return Layers(seekable, sealed, "zstd")
    if kind in STREAMED_KINDS:
        if not sequential:
            raise ArchiveFormatError(
                f"the archive is {kind}-compressed {unseekable}: it can only be read from "
                "the start (open_archive reads it so)"
            )
        streamed = StreamedSource(source, kind)
        await streamed.prepare()
        inner = sniff_bytes(await streamed.read_upto(0, _SNIFF_BYTES))
        if inner != "tar":
            raise _not_tar(kind, inner)
        return Layers(streamed, sealed, kind)
    return Layers(source, sealed, None)


async def decoded(source: RangeSource, *, age_identity: AgeIdentity | None = None) -> RangeSource:
    """``source`` as plain tar bytes, by range: unsealed (an age file, with ``age_identity``)
    and/or decompressed (seekable zstd), as its first bytes say; itself when it is neither.

    Raises :class:`ArchiveFormatError` as :func:`unwrap` does, and for a compressed stream that
    cannot be read by range (zstd without a seek table, gzip, bzip2, xz): those are read from
    the start, see :func:`~atartape.open_archive`.
    """
    layers = await unwrap(source, age_identity=age_identity, sequential=False)
    assert not isinstance(layers.plain, StreamedSource)
    return layers.plain
