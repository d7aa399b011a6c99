"""Volumes: a tape cut into fixed-size windows, each produced on its own.

The window arithmetic is pure (see :mod:`atartape.format.windows`). A :class:`Volume` reads its
bytes only when it is consumed, ``async for chunk in volume``, the file-like
``async with volume:`` access, or the synchronous file :meth:`Volume.as_file`, from the byte source
it was made from (a player's ``chunks``).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import anyio

from .errors import InvalidArgumentError, InvalidOffsetError
from .syncio import ByteSource, TapeReader

__all__ = ["ByteSource", "ChecksumKeeper", "Volume"]

ChecksumKeeper = Callable[["Volume"], Awaitable[None]]
"""Called once with a volume whose :attr:`Volume.md5` has just become known, to keep it (the
player keeps the checksums of a registered layout's volumes in the tape's index)."""


class Volume:
    """The bytes ``[start_offset, end_offset)`` of a tape, under a name.

    Consume it as an async iterable (``async for chunk in volume``, or :meth:`chunks` to close
    it early: exactly its bytes, read straight from the source, as many times as wanted) or as
    a file inside ``async with volume:`` (:meth:`read`, :meth:`seek`, :meth:`tell`). Nothing is
    read before that.

    ``md5`` is ``None`` until the volume's bytes have been seen once from the first byte to the
    last in order (a complete ``async for``, sequential reads, or :meth:`checksum`), then the hex
    MD5 of its bytes. It is computed on the event loop as the chunks pass (a fraction of a
    millisecond per chunk), so it costs no second read. For a volume of a registered layout
    (``player.volumes(layout)``, ``layout_tag`` names it), the MD5 is then kept in the tape's
    index, before the volume's last bytes are handed out, for :func:`~atartape.verify_volume`.

    Reading raises what :meth:`TapePlayer.chunks` raises: :class:`SourceNotFoundError` when the
    source folder is missing (say an offline catalog), :class:`TarIntegrityError` when a file
    changed since the tape was recorded. One volume object serves one task at a time; to produce
    volumes concurrently, use one object per volume (they share nothing).
    """

    def __init__(
        self,
        source: ByteSource,
        index: int,
        start_offset: int,
        end_offset: int,
        name: str,
        *,
        layout_tag: str | None = None,
        keep_checksum: ChecksumKeeper | None = None,
    ) -> None:
        if not 0 <= start_offset < end_offset:
            raise InvalidOffsetError(
                f"volume window [{start_offset}, {end_offset}) is empty or negative"
            )
        self.source = source
        self.index = index
        self.start_offset = start_offset
        self.end_offset = end_offset
        self.name = name
        self.layout_tag = layout_tag
        self.md5: str | None = None
        self._keep_checksum = keep_checksum
        self._kept = False
        self._hasher = hashlib.md5(usedforsecurity=False)
        self._hashed = 0  # bytes of the volume fed to _hasher, always from its start
        # file-like state (inside ``async with``)
        self._is_open = False
        self._position = 0
        self._stream: AsyncGenerator[bytes, None] | None = None
        self._stream_position = 0  # volume offset of the next unread byte of the stream
        self._buffer = b""
        self._buffer_at = 0

    @property
    def size(self) -> int:
        """Number of bytes in the volume."""
        return self.end_offset - self.start_offset

    def __repr__(self) -> str:
        return (
            f"<Volume {self.index} {self.name!r} [{self.start_offset}, {self.end_offset}) "
            f"{self.size} bytes>"
        )

    def _observe(self, position: int, data: bytes) -> None:
        """Feed the MD5 with bytes found at ``position`` when they extend the hashed prefix."""
        if self.md5 is not None:
            return
        end = position + len(data)
        if position <= self._hashed < end:
            self._hasher.update(memoryview(data)[self._hashed - position :])
            self._hashed = end
            if self._hashed == self.size:
                self.md5 = self._hasher.hexdigest()

    async def _keep(self) -> None:
        """Hand a newly known MD5 to the keeper, once (it never raises but cancellation)."""
        if self.md5 is None or self._kept or self._keep_checksum is None:
            return
        self._kept = True
        with anyio.CancelScope(shield=True):
            await self._keep_checksum(self)

    # --------------------------------------------------------------- async iteration

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks()

    def chunks(self) -> AsyncGenerator[bytes, None]:
        """The volume's bytes, as its source hands them out.

        ``async for chunk in volume`` iterates this. To stop before the end, close it at once
        (``async with aclosing(volume.chunks()) as chunks:``) so the open file is released
        promptly rather than when the generator is garbage collected.
        """
        return self._chunks()

    def _chunks(self) -> AsyncGenerator[bytes, None]:
        return self._window(0, self.size)

    async def _window(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """The volume's bytes ``[start, end)`` (volume offsets), fed to the MD5 as they pass."""
        position = start
        source = self.source(self.start_offset + start, self.start_offset + end)
        async with aclosing(source) as chunks:
            async for chunk in chunks:
                self._observe(position, chunk)
                position += len(chunk)
                await self._keep()
                yield chunk

    def as_file(self, *, backend: str = "asyncio", portal: Any = None) -> TapeReader:
        """The volume as a synchronous, seekable file (see :mod:`atartape.syncio`), for
        blocking upload clients; a linear read of it computes (and keeps) :attr:`md5` too.
        Close it (or use ``with``) to release its play and its portal."""
        return TapeReader(
            self._window, 0, self.size, name=self.name, backend=backend, portal=portal
        )

    async def checksum(self, algorithm: str = "md5") -> str:
        """Read the whole volume again and return its hex digest with ``algorithm``.

        Any fixed-length algorithm of :mod:`hashlib` (``"md5"``, ``"sha256"``, ``"blake2b"``...).
        Raises :class:`ValueError` for an unknown or variable-length (``shake_*``) algorithm,
        before anything is read, and what reading raises (see the class).
        """
        try:
            digest = hashlib.new(algorithm, usedforsecurity=False)
        except (ValueError, TypeError):
            raise InvalidArgumentError(
                f"unknown hash algorithm {algorithm!r}; "
                f"available: {', '.join(sorted(hashlib.algorithms_available))}"
            ) from None
        if digest.digest_size == 0 or algorithm.lower().startswith("shake"):
            raise InvalidArgumentError(
                f"{algorithm!r} has no fixed digest length; use e.g. 'sha256'"
            )
        async with aclosing(self._chunks()) as chunks:
            async for chunk in chunks:
                digest.update(chunk)
        return digest.hexdigest()

    # --------------------------------------------------------------- file-like access

    async def __aenter__(self) -> Volume:
        if self._is_open:
            raise RuntimeError(f"volume {self.name!r} is already open")
        self._is_open = True
        self._position = 0
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._is_open = False
        await self._drop_stream()

    def _check_open(self) -> None:
        if not self._is_open:
            raise InvalidArgumentError(
                f"volume {self.name!r} is not open: use read() and seek() inside "
                "`async with volume:`"
            )

    async def _drop_stream(self) -> None:
        """Close the current stream (its open file and index connection), even if cancelled."""
        stream, self._stream = self._stream, None
        self._buffer, self._buffer_at = b"", 0
        if stream is not None:
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    def tell(self) -> int:
        """The current position in the volume. Raises :class:`ValueError` outside ``async with``."""
        self._check_open()
        return self._position

    async def seek(self, offset: int, whence: int = 0) -> int:
        """Move to ``offset`` from the start (``whence=0``), the position (1) or the end (2).

        Returns the new position. A position past the end is allowed (reads return ``b""``).
        Raises :class:`ValueError` for a negative resulting position, a bad ``whence``, or a
        volume that is not open. The stream being read is closed when the position changes.
        """
        self._check_open()
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise InvalidArgumentError(f"seek offset must be an int, not {type(offset).__name__}")
        if whence == 0:
            target = offset
        elif whence == 1:
            target = self._position + offset
        elif whence == 2:
            target = self.size + offset
        else:
            raise InvalidArgumentError(f"whence must be 0, 1 or 2, not {whence!r}")
        if target < 0:
            raise InvalidArgumentError(f"negative seek position {target}")
        if target != self._stream_position:
            await self._drop_stream()
        self._position = target
        return target

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes from the current position (``n < 0``: up to the end of the volume).

        Returns fewer bytes only at the end of the volume, and ``b""`` past it. Sequential
        reads share one open stream; a stream is (re)opened only after a :meth:`seek` that
        moved the position, and closed when the ``async with`` block ends. Raises
        :class:`ValueError` outside ``async with``, and what reading raises (see the class).
        """
        self._check_open()
        want = self.size - self._position if n < 0 else min(n, self.size - self._position)
        if want <= 0:
            return b""
        if self._stream is None or self._stream_position != self._position:
            await self._drop_stream()
            self._stream = self.source(self.start_offset + self._position, self.end_offset)
            self._stream_position = self._position
        parts: list[bytes] = []
        got = 0
        try:
            while got < want:
                if self._buffer_at >= len(self._buffer):
                    try:
                        self._buffer = await self._stream.__anext__()
                    except StopAsyncIteration:  # pragma: no cover - the window ends the volume
                        break
                    self._buffer_at = 0
                take = min(want - got, len(self._buffer) - self._buffer_at)
                if self._buffer_at == 0 and take == len(self._buffer):
                    parts.append(self._buffer)
                else:
                    parts.append(self._buffer[self._buffer_at : self._buffer_at + take])
                self._buffer_at += take
                got += take
        except BaseException:
            # A failed or cancelled read leaves the stream unusable: start afresh next time.
            await self._drop_stream()
            raise
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._observe(self._position, data)
        self._position += len(data)
        self._stream_position = self._position
        await self._keep()
        return data
