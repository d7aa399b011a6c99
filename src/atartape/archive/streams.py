"""Compressed tars read from their start: gzip, bzip2, xz, and zstd without a seek table.

Such a stream has no random access: byte ``q`` of the tar is known only once everything before
it has been decompressed. :class:`StreamedSource` decompresses its ``inner`` range source from
the start, in worker threads, a bounded step at a time, and keeps the last plain bytes it made
(a window of :data:`WINDOW` bytes): reading forward costs nothing more than decompressing; a
read that starts before the window starts again from the first byte (a new *pass*, counted in
:attr:`StreamedSource.passes`).

Memory is bounded whatever the stream says: at most :data:`READ` compressed bytes wait to be
decompressed, a step makes at most :data:`STEP` plain bytes, the window holds :data:`WINDOW`,
and the decoder's own memory is capped (:data:`MAX_DECODER_MEMORY`: the zstd window, the xz
dictionary; gzip needs 32 KiB, bzip2 under 4 MB). A bomb (a few KiB that expand to terabytes)
costs time, never memory. What a caller asks for (``read_range(0, 10**12)``) is the caller's.

Every stream's own check is verified when its end is reached (gzip's CRC-32 and size, bzip2's
CRCs, xz's check, a zstd frame's checksum when it has one): a pass that reaches the end has
read bytes whose checksums held. A corrupt stream raises :class:`ArchiveFormatError` naming the
compressed byte it was read up to and the plain bytes made before it; a truncated one says so.
Concatenated streams (``cat a.gz b.gz``, pigz and pbzip2 output, zstd files of many frames)
are read as one; zero bytes after a gzip or xz stream are padding; anything else after the
last stream is refused.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Any, Protocol

import anyio
import anyio.to_thread

from .._extras import require
from ..errors import ArchiveFormatError, InvalidArgumentError, RangeSourceError
from .sources import RangeSource

__all__ = [
    "KINDS",
    "MAX_DECODER_MEMORY",
    "READ",
    "STEP",
    "WINDOW",
    "StreamedSource",
]

KINDS = ("gzip", "bzip2", "xz", "zstd")
"""The compressions read from the start."""
WINDOW = 1 << 20
"""Plain bytes kept behind the read position: a read that starts in them costs no new pass."""
STEP = 1 << 20
"""The most plain bytes one step (one worker-thread hop) makes."""
READ = 1 << 20
"""Compressed bytes fetched from the inner source at a time (one range request)."""
MAX_DECODER_MEMORY = 128 << 20
"""The most a decoder may allocate for a stream: zstd's window (``zstd -d`` allows the same
without ``--memory``), xz's dictionary (``xz -9`` needs 65 MiB). A stream asking for more is
refused."""

_ZSTD_MAGIC = (0xFD2FB528).to_bytes(4, "little")
_ZSTD_BLOCK_MAX = 128 << 10  # no zstd block holds or makes more (the format's limit)
_ZSTD_WINDOW_MAX = 1 << 31  # the largest window zstd decodes (--long=31)
_MAGICS = {
    "gzip": b"\x1f\x8b",
    "bzip2": b"BZh",
    "xz": b"\xfd7zXZ\x00",
    "zstd": _ZSTD_MAGIC,
}
_PADDED = frozenset({"gzip", "xz"})  # zero bytes may follow a stream


class _StreamError(Exception):
    """A stream that does not decompress (the message says why)."""


class _Truncated(_StreamError):
    """The compressed bytes end inside a stream."""


class _Decoder(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int) -> bytes: ...


class _GzipDecoder:
    """One gzip member through zlib, with bz2's decoder interface (zlib checks the CRC-32 and
    the size in the member's trailer)."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._tail = b""
        self._full = False

    @property
    def eof(self) -> bool:
        return bool(self._zlib.eof)

    @property
    def needs_input(self) -> bool:
        return not self._zlib.eof and not self._tail and not self._full

    @property
    def unused_data(self) -> bytes:
        return bytes(self._zlib.unused_data)

    def decompress(self, data: bytes, max_length: int) -> bytes:
        given = self._tail + data if self._tail else data
        out = bytes(self._zlib.decompress(given, max_length))
        self._tail = bytes(self._zlib.unconsumed_tail)
        self._full = len(out) >= max_length
        return out


class _FrameWalk:
    """Where the parts of one zstd frame (or skippable frame) end, from its bytes in order.

    zstandard's decoder makes all the output its input allows, and a zstd block can expand
    thousands of times; the decoder is therefore given whole blocks, a few at a time, so that
    one call makes at most ``blocks * 128 KiB``. Knowing where the frame ends also tells a
    frame cut short (zstandard's readers end silently there) from a complete one.
    """

    def __init__(self) -> None:
        self.phase = "magic"  # magic, block, checksum, skip, done
        self.checksum = False
        self.skip = 0

    def _part(self, buf: bytes | bytearray, at: int) -> tuple[int, bool, str, int] | None:
        """The next whole part at ``buf[at:]``: (length, is a block, next phase, value)."""
        avail = len(buf) - at
        if self.phase == "magic":
            if avail < 4:
                return None
            if buf[at + 1 : at + 4] == b"\x2a\x4d\x18" and buf[at] & 0xF0 == 0x50:
                if avail < 8:
                    return None
                return 8, False, "skip", int.from_bytes(buf[at + 4 : at + 8], "little")
            if buf[at : at + 4] != _ZSTD_MAGIC:
                raise _StreamError("not a zstd frame")
            if avail < 5:
                return None
            descriptor = buf[at + 4]
            single = descriptor >> 5 & 1
            length = (
                5
                + (0 if single else 1)
                + (0, 1, 2, 4)[descriptor & 3]
                + (single, 2, 4, 8)[descriptor >> 6]
            )
            if avail < length:
                return None
            return length, False, "block", descriptor >> 2 & 1
        if self.phase == "block":
            if avail < 3:
                return None
            header = int.from_bytes(buf[at : at + 3], "little")
            last, kind, size = header & 1, header >> 1 & 3, header >> 3
            if kind == 3:
                raise _StreamError("a block of the reserved type")
            if size > _ZSTD_BLOCK_MAX:
                raise _StreamError(f"a block of {size} bytes (at most {_ZSTD_BLOCK_MAX})")
            length = 3 + (1 if kind == 1 else size)
            if avail < length:
                return None
            after = ("checksum" if self.checksum else "done") if last else "block"
            return length, True, after, 0
        if self.phase == "checksum":
            return None if avail < 4 else (4, False, "done", 0)
        return None

    def advance(self, buf: bytes | bytearray, blocks: int) -> tuple[int, bool]:
        """How many bytes of ``buf`` (which follows what was walked before) make whole parts,
        at most ``blocks`` of them blocks; and whether the walk stopped for want of bytes."""
        at = 0
        while self.phase != "done":
            if self.phase == "skip":
                take = min(self.skip, len(buf) - at)
                at += take
                self.skip -= take
                if self.skip:
                    return at, True
                self.phase = "done"
                break
            part = self._part(buf, at)
            if part is None:
                return at, True
            length, is_block, after, value = part
            if is_block:
                if blocks == 0:
                    return at, False
                blocks -= 1
            if self.phase == "magic":
                if after == "skip":
                    self.skip = value
                else:
                    self.checksum = bool(value)
            at += length
            self.phase = after
        return at, False


class _ZstdDecoder:
    """One zstd frame (or skippable frame), with bz2's decoder interface and bounded output."""

    def __init__(self, max_window: int) -> None:
        zstandard = require("zstandard", "zstd", _READING_ZSTD)
        self._errors: tuple[type[BaseException], ...] = (zstandard.ZstdError,)
        window = min(max_window, _ZSTD_WINDOW_MAX)
        self._obj: Any = zstandard.ZstdDecompressor(max_window_size=window).decompressobj()
        self._walk = _FrameWalk()
        self._pending = bytearray()
        self._starved = True
        self.eof = False
        self.unused_data = b""

    @property
    def needs_input(self) -> bool:
        return not self.eof and self._starved

    def decompress(self, data: bytes, max_length: int) -> bytes:
        self._pending += data
        blocks = max(1, max_length // _ZSTD_BLOCK_MAX)
        ready, self._starved = self._walk.advance(self._pending, blocks)
        out = b""
        if ready:
            piece = bytes(self._pending[:ready])
            del self._pending[:ready]
            try:
                out = bytes(self._obj.decompress(piece))
            except self._errors as exc:
                raise _StreamError(str(exc)) from None
        if self._walk.phase == "done":
            if not self._obj.eof:
                raise _StreamError("the frame's blocks end where its decoder does not")
            self.eof = True
            self.unused_data = bytes(self._pending)
            self._pending.clear()
        return out


_READING_ZSTD = "reading a zstd-compressed archive"


def _starts_stream(kind: str, buf: bytes) -> bool | None:
    """Whether ``buf`` starts a stream of ``kind`` (``None``: too few bytes to tell)."""
    magic = _MAGICS[kind]
    if kind == "zstd" and len(buf) >= 4 and buf[1:4] == b"\x2a\x4d\x18" and buf[0] & 0xF0 == 0x50:
        return True  # a skippable frame (a seek table, say)
    if len(buf) < len(magic):
        return None if magic.startswith(buf) else False
    return buf.startswith(magic)


class _Inflater:
    """The plain bytes of a stream, from its compressed bytes given in order (one thread at a
    time): concatenated streams, padding, truncation and corruption handled."""

    def __init__(self, kind: str, max_memory: int) -> None:
        self.kind = kind
        self.max_memory = max_memory
        self.streams = 0
        self.finished = False
        self.taken = 0  # compressed bytes given to step()
        self._dec: _Decoder | None = None
        self._buf = b""  # compressed bytes not yet given to a decoder
        self._last = False

    @property
    def wants_input(self) -> bool:
        if self.finished:
            return False
        if self._dec is None:
            return len(self._buf) < 8
        return not self._buf and self._dec.needs_input

    def _new_decoder(self) -> _Decoder:
        if self.kind == "gzip":
            return _GzipDecoder()
        if self.kind == "bzip2":
            return bz2.BZ2Decompressor()
        if self.kind == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=self.max_memory)
        return _ZstdDecoder(self.max_memory)

    def step(self, data: bytes, last: bool, limit: int) -> bytes:
        """Take ``data`` (the compressed bytes that follow; ``last``: none follow them) and
        return up to ``limit`` plain bytes (a zstd step may make up to 128 KiB more). Returns
        ``b""`` only when it wants more input, or with :attr:`finished` at the end."""
        try:
            return self._step(data, last, limit)
        except _StreamError:
            raise
        except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
            raise _StreamError(str(exc) or type(exc).__name__) from None

    def _step(self, data: bytes, last: bool, limit: int) -> bytes:
        self.taken += len(data)
        if data:
            self._buf = self._buf + data if self._buf else data
        self._last = self._last or last
        while True:
            if self._dec is None:
                if self.streams and self.kind in _PADDED and self._buf.startswith(b"\0"):
                    self._buf = self._buf.lstrip(b"\0")
                if not self._buf:
                    self.finished = self._last
                    return b""
                starts = _starts_stream(self.kind, self._buf[:8])
                if starts is None and not self._last:
                    return b""
                if not starts:
                    if not self.streams:
                        raise _StreamError(f"not a {self.kind} stream")
                    raise _StreamError(
                        f"{len(self._buf)} or more bytes after the end of the {self.kind} "
                        "stream do not start another one"
                    )
                self._dec = self._new_decoder()
                self.streams += 1
            decoder = self._dec
            given = b""
            if decoder.needs_input:
                if not self._buf:
                    if self._last:
                        raise _Truncated("it ends inside a stream")
                    return b""
                given, self._buf = self._buf, b""
            out = decoder.decompress(given, limit)
            if decoder.eof:
                self._buf = decoder.unused_data + self._buf
                self._dec = None
            if out:
                return out


class StreamedSource:
    """The plain bytes of a compressed stream, read from its start: ``kind`` is ``"gzip"``,
    ``"bzip2"``, ``"xz"`` or ``"zstd"``; ``inner`` any range source holding the stream.

    :attr:`size` is ``None`` until a pass has reached the end of the stream. Reads are served
    one at a time (a lock): forward reads continue the current pass; a read starting before
    the kept window starts a new pass from the first byte. :attr:`peak_buffered` is the most
    plain bytes this source held at once; :attr:`passes` how many passes were started.

    Raises :class:`ArchiveFormatError` for a stream that does not decompress, is cut short,
    needs more decoder memory than ``max_decoder_memory``, or (zstd) needs the zstandard
    package; :class:`RangeSourceError` when ``inner`` answers short.
    """

    def __init__(
        self,
        inner: RangeSource,
        kind: str,
        *,
        window: int = WINDOW,
        max_decoder_memory: int = MAX_DECODER_MEMORY,
    ) -> None:
        if kind not in KINDS:
            raise InvalidArgumentError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if window < 1:
            raise InvalidArgumentError("window must be positive")
        self.inner = inner
        self.kind = kind
        self.window = window
        self.max_decoder_memory = max_decoder_memory
        self.passes = 0
        self.peak_buffered = 0
        self.failure: ArchiveFormatError | None = None
        """The error of the first pass that found the stream damaged (it stays damaged)."""
        self._lock = anyio.Lock()
        self._size: int | None = None
        self._inflater: _Inflater | None = None
        self._csize = -1
        self._cpos = 0  # compressed bytes fetched in this pass
        self._ppos = 0  # plain bytes made in this pass
        self._kept = bytearray()  # the plain bytes [_ppos - len(_kept), _ppos)
        self._ended = False

    @property
    def size(self) -> int | None:
        """The number of plain bytes, once a pass has reached the end; ``None`` before."""
        return self._size

    @property
    def compressed_size(self) -> int:
        return self.inner.size

    async def prepare(self) -> None:
        """Learn the inner source's size (its ``prepare()``), and check that the decoder is
        there (zstd needs the zstandard package)."""
        if self._csize >= 0:
            return
        prepare = getattr(self.inner, "prepare", None)
        if prepare is not None:
            await prepare()
        if self.kind == "zstd":
            require("zstandard", "zstd", _READING_ZSTD)
        self._csize = self.inner.size

    async def read_upto(self, start: int, end: int) -> bytes:
        """The plain bytes ``[start, end)``; fewer only where the stream ends (then
        :attr:`size` is known)."""
        if not 0 <= start <= end:
            raise InvalidArgumentError(f"bad range {start}-{end}")
        await self.prepare()
        async with self._lock:
            if start == end or (self._size is not None and start >= self._size):
                return b""
            if self._inflater is None or start < self._ppos - len(self._kept):
                self._restart()
            out: list[bytes] = []
            at = start
            while at < end:
                base = self._ppos - len(self._kept)
                if at < self._ppos:
                    stop = min(end, self._ppos)
                    out.append(bytes(self._kept[at - base : stop - base]))
                    at = stop
                    continue
                if self._ended:
                    break
                await self._step(keep_from=at)
            if len(self._kept) > self.window:  # a step made more than the window: trim
                del self._kept[: len(self._kept) - self.window]
            return b"".join(out)

    async def read_range(self, start: int, end: int) -> bytes:
        """The plain bytes ``[start, end)``, all of them: a stream that ends before raises
        :class:`ArchiveFormatError`."""
        data = await self.read_upto(start, end)
        if len(data) != end - start:
            raise ArchiveFormatError(
                f"the {self.kind} stream holds {start + len(data)} plain bytes: bytes "
                f"{start}-{end - 1} were asked for",
                offset=start + len(data),
            )
        return data

    async def finish(self) -> int:
        """Decompress to the end of the stream (checking every checksum on the way, keeping
        nothing but the window) and return :attr:`size`."""
        await self.prepare()
        async with self._lock:
            if self._inflater is None:
                self._restart()
            while not self._ended:
                await self._step(keep_from=self._ppos)
        assert self._size is not None
        return self._size

    def _restart(self) -> None:
        self._inflater = _Inflater(self.kind, self.max_decoder_memory)
        self._cpos = 0
        self._ppos = 0
        self._kept = bytearray()
        self._ended = False
        self.passes += 1

    async def _step(self, *, keep_from: int) -> None:
        """One bounded step forward; the window keeps the last bytes (those from
        ``keep_from`` on in any case)."""
        inflater = self._inflater
        assert inflater is not None
        data = b""
        if inflater.wants_input and self._cpos < self._csize:
            stop = min(self._csize, self._cpos + READ)
            data = bytes(await self.inner.read_range(self._cpos, stop))
            if len(data) != stop - self._cpos:
                raise RangeSourceError(
                    f"the source of the {self.kind} stream answered {len(data)} bytes for "
                    f"bytes {self._cpos}-{stop - 1}"
                )
            self._cpos = stop
        try:
            plain = await anyio.to_thread.run_sync(
                inflater.step, data, self._cpos >= self._csize, STEP
            )
        except _StreamError as exc:
            self._inflater = None  # its state is lost: the next read starts a new pass
            self.failure = self._error(inflater, exc)
            raise self.failure from None
        except BaseException:
            self._inflater = None
            raise
        if plain:
            self._kept += plain
            self._ppos += len(plain)
            self.peak_buffered = max(self.peak_buffered, len(self._kept))
            base = self._ppos - len(self._kept)
            drop = min(len(self._kept) - self.window, keep_from - base)
            if drop > 0:
                del self._kept[:drop]
        elif inflater.finished:
            self._ended = True
            if self._size is None:
                self._size = self._ppos
            elif self._size != self._ppos:  # the source changed between passes
                raise ArchiveFormatError(
                    f"the {self.kind} stream held {self._size} plain bytes, now {self._ppos}: "
                    "the source changed while it was read"
                )

    def _error(self, inflater: _Inflater, exc: _StreamError) -> ArchiveFormatError:
        made = f"after {self._ppos} plain bytes"
        if isinstance(exc, _Truncated):
            return ArchiveFormatError(
                f"the {self.kind} stream is truncated: it ends at compressed byte "
                f"{self._csize} inside its data ({made})"
            )
        if "memory" in str(exc).lower():  # zstd's window, xz's dictionary: over the cap
            return ArchiveFormatError(
                f"the {self.kind} stream needs more memory to decode than the "
                f"{self.max_decoder_memory >> 20} MiB allowed, at or before compressed byte "
                f"{inflater.taken} (a StreamedSource with a larger max_decoder_memory, given "
                f"to open_archive, reads it): {exc}"
            )
        return ArchiveFormatError(
            f"the {self.kind} stream is corrupt at or before compressed byte {inflater.taken} "
            f"({made}): {exc}"
        )

    async def aclose(self) -> None:
        """Drop what is kept and close ``inner`` (when it has ``aclose``)."""
        self._inflater = None
        self._kept = bytearray()
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> StreamedSource:
        await self.prepare()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
