"""Volumes: a tape cut into fixed-size windows, each produced on its own.

The window math is pure (:func:`volume_count`, :func:`volume_window`, :func:`split_range`): volume
``i`` of size ``s`` is the bytes ``[i * s, min((i + 1) * s, total_size))`` of the tape, and every
volume but the last is exactly ``s`` bytes. Nothing else is needed to produce one, so any subset
of the volumes of a tape can be produced at the same time, in one process or in many.

A :class:`Volume` reads its bytes from a :class:`~atartape.TapePlayer` only when it is consumed:
``async for chunk in volume`` or the file-like ``async with volume:`` access.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio

from ._errors import InvalidOffsetError
from .units import parse_size

if TYPE_CHECKING:
    from .player import TapePlayer

__all__ = [
    "DEFAULT_NAME_TEMPLATE",
    "Volume",
    "make_volume",
    "make_volumes",
    "split_range",
    "volume_count",
    "volume_name",
    "volume_window",
]

DEFAULT_NAME_TEMPLATE = "{name}.tar.{index:04d}"
"""Volume names: ``dataset.tar.0000``. Fields: ``name`` (the tape's), ``index``, ``count``."""


# ------------------------------------------------------------------------------ pure math


def _check_total(total_size: int) -> None:
    if isinstance(total_size, bool) or not isinstance(total_size, int) or total_size < 0:
        raise ValueError(f"total_size must be a non-negative int, not {total_size!r}")


def volume_count(total_size: int, size: int | str) -> int:
    """How many volumes of ``size`` bytes a tape of ``total_size`` bytes makes (rounded up).

    ``size`` is an int or a string such as ``"64MiB"`` (see :func:`~atartape.units.parse_size`).
    Raises :class:`ValueError` for a bad size or a negative ``total_size``.
    """
    _check_total(total_size)
    step = parse_size(size, what="volume size")
    return -(-total_size // step)


def volume_window(total_size: int, size: int | str, index: int) -> tuple[int, int]:
    """The ``[start, end)`` tape offsets of volume ``index``.

    Raises :class:`ValueError` for a bad size and :class:`InvalidOffsetError` for an index that
    is not an int or lies outside ``[0, volume_count)``.
    """
    count = volume_count(total_size, size)
    step = parse_size(size, what="volume size")
    if isinstance(index, bool) or not isinstance(index, int):
        raise InvalidOffsetError(f"volume index must be an int, not {type(index).__name__}")
    if not 0 <= index < count:
        raise InvalidOffsetError(
            f"volume index {index} is outside the tape: {total_size} bytes in volumes of "
            f"{step} bytes make {count} volume{'s' if count != 1 else ''} "
            f"(valid indexes: 0 to {count - 1})"
        )
    start = index * step
    return start, min(start + step, total_size)


def split_range(start: int, end: int, size: int) -> list[tuple[int, int, int]]:
    """Cut the tape range ``[start, end)`` at volume boundaries.

    Returns ``(volume_index, offset_in_volume, length)`` for each volume of ``size`` bytes that
    the range touches, in order; an empty range touches none (``[]``). Raises
    :class:`ValueError` for ``size < 1``, a negative ``start`` or ``end < start``.
    """
    if size < 1 or start < 0 or end < start:
        raise ValueError(f"bad range [{start}, {end}) or volume size {size}")
    pieces: list[tuple[int, int, int]] = []
    at = start
    while at < end:
        index, offset = divmod(at, size)
        length = min(size - offset, end - at)
        pieces.append((index, offset, length))
        at += length
    return pieces


def volume_name(template: str, *, name: str, index: int, count: int) -> str:
    """A volume's name from ``template`` (``str.format`` fields ``name``, ``index``, ``count``).

    Raises :class:`ValueError` naming the template when it uses another field or a bad format.
    """
    try:
        return template.format(name=name, index=index, count=count)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"bad volume name_template {template!r} ({exc!r}); it may use the fields "
            "{name}, {index} and {count}, as in '{name}.part{index:04d}'"
        ) from None


# ------------------------------------------------------------------------------ volumes


def make_volumes(
    player: TapePlayer, size: int | str, *, name_template: str | None = None
) -> list[Volume]:
    """Every volume of ``player``'s tape, in order (see :meth:`TapePlayer.volumes`)."""
    total = player.tape.total_size
    count = volume_count(total, size)
    return [make_volume(player, i, size, name_template=name_template) for i in range(count)]


def make_volume(
    player: TapePlayer, index: int, size: int | str, *, name_template: str | None = None
) -> Volume:
    """Volume ``index`` of ``player``'s tape (see :meth:`TapePlayer.volume`)."""
    total = player.tape.total_size
    start, end = volume_window(total, size, index)
    name = volume_name(
        name_template or DEFAULT_NAME_TEMPLATE,
        name=player.tape.name,
        index=index,
        count=volume_count(total, size),
    )
    return Volume(player, index, start, end, name)


class Volume:
    """The bytes ``[start_offset, end_offset)`` of a tape, under a name.

    Consume it as an async iterable (``async for chunk in volume``, or :meth:`chunks` to close
    it early: exactly its bytes, read straight from the source, as many times as wanted) or as
    a file inside ``async with volume:`` (:meth:`read`, :meth:`seek`, :meth:`tell`). Nothing is
    read before that.

    ``md5`` is ``None`` until the volume's bytes have been seen once from the first byte to the
    last in order (a complete ``async for``, sequential reads, or :meth:`checksum`), then the hex
    MD5 of its bytes. It is computed on the event loop as the chunks pass (a fraction of a
    millisecond per chunk), so it costs no second read.

    Reading raises what :meth:`TapePlayer.stream` raises: :class:`SourceNotFoundError` when the
    source folder is missing (say an offline catalog), :class:`TarIntegrityError` when a file
    changed since the tape was recorded. One volume object serves one task at a time; to produce
    volumes concurrently, use one object per volume (they share nothing).
    """

    def __init__(
        self, player: TapePlayer, index: int, start_offset: int, end_offset: int, name: str
    ) -> None:
        if not 0 <= start_offset < end_offset <= player.tape.total_size:
            raise InvalidOffsetError(
                f"volume window [{start_offset}, {end_offset}) is empty or outside the tape "
                f"(0 to {player.tape.total_size})"
            )
        self.player = player
        self.index = index
        self.start_offset = start_offset
        self.end_offset = end_offset
        self.name = name
        self.md5: str | None = None
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

    # --------------------------------------------------------------- async iteration

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks()

    def chunks(self) -> AsyncGenerator[bytes, None]:
        """The volume's bytes, in chunks of about the player's ``chunk_size``.

        ``async for chunk in volume`` iterates this. To stop before the end, close it at once
        (``async with aclosing(volume.chunks()) as chunks:``) so the open file is released
        promptly rather than when the generator is garbage collected.
        """
        return self._chunks()

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        position = 0
        async with aclosing(self.player.stream(self.start_offset, self.end_offset)) as chunks:
            async for chunk in chunks:
                self._observe(position, chunk)
                position += len(chunk)
                yield chunk

    async def checksum(self, algorithm: str = "md5") -> str:
        """Read the whole volume again and return its hex digest with ``algorithm``.

        Any fixed-length algorithm of :mod:`hashlib` (``"md5"``, ``"sha256"``, ``"blake2b"``...).
        Raises :class:`ValueError` for an unknown or variable-length (``shake_*``) algorithm,
        before anything is read, and what reading raises (see the class).
        """
        try:
            digest = hashlib.new(algorithm)
        except (ValueError, TypeError):
            raise ValueError(
                f"unknown hash algorithm {algorithm!r}; "
                f"available: {', '.join(sorted(hashlib.algorithms_available))}"
            ) from None
        if digest.digest_size == 0 or algorithm.lower().startswith("shake"):
            raise ValueError(f"{algorithm!r} has no fixed digest length; use e.g. 'sha256'")
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
            raise ValueError(
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
            raise ValueError(f"seek offset must be an int, not {type(offset).__name__}")
        if whence == 0:
            target = offset
        elif whence == 1:
            target = self._position + offset
        elif whence == 2:
            target = self.size + offset
        else:
            raise ValueError(f"whence must be 0, 1 or 2, not {whence!r}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
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
            self._stream = self.player.stream(self.start_offset + self._position, self.end_offset)
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
        return data
