"""A tape as a synchronous, seekable file object, for code that wants one.

``requests.put(url, data=tape.as_file())``, ``boto3``'s ``upload_fileobj``, tus or Google
resumable-upload clients, ``shutil.copyfileobj``: they take a file and call ``read``, ``seek``
and ``tell`` from plain (blocking) code. :class:`TapeReader` is that file, an
:class:`io.RawIOBase` over a window of a tape's bytes (the whole tape, one volume, any range).

How it runs the async side: each reader owns a blocking portal
(:func:`anyio.from_thread.start_blocking_portal`): an event loop of its own, in a thread of its
own, started at the first read and stopped by :meth:`~TapeReader.close`. So it works the same
from a plain thread with no event loop anywhere, and from a worker thread of a running event loop
(``await anyio.to_thread.run_sync(upload, reader)``): the reads never touch the caller's loop. A
portal you already run can be shared instead (``portal=``: the reader then leaves it running).
Reading on an event loop's own thread would block that loop, so it is refused
(``RuntimeError``): use ``chunks()`` there.

Positions are relative to the window: ``tell()`` is 0 at its first byte, ``seek(0, SEEK_END)``
gives its size, and reading at the end gives ``b""``. A seek outside ``[0, size]`` raises
:class:`~atartape.InvalidOffsetError` (a ``ValueError``). Sequential reads share one play of the
tape; a seek elsewhere closes it and the next read opens one from there. Reads raise what the
play raises (:class:`~atartape.TarIntegrityError`, :class:`~atartape.SourceNotFoundError`...); a
read that fails hands nothing out and leaves the position where it was (bytes it had read before
the error are dropped), and the next read starts a fresh play from there.
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractContextManager
from typing import Any

from .errors import InvalidArgumentError, InvalidOffsetError

__all__ = ["ByteSource", "TapeReader"]

ByteSource = Callable[[int, int], AsyncGenerator[bytes, None]]
"""``source(start, end)``: the bytes ``[start, end)`` of a tape, as an async generator."""


async def _next_chunk(stream: AsyncGenerator[bytes, None]) -> bytes | None:
    return await anext(stream, None)


def _on_event_loop() -> bool:
    """Whether this thread is running an event loop (asyncio's or trio's) right now."""
    try:
        import sniffio
    except ImportError:  # pragma: no cover - anyio depends on sniffio
        return False
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return False
    return True


class TapeReader(io.RawIOBase):
    """The bytes ``[start_offset, end_offset)`` of a tape as a synchronous, seekable, read-only
    file (see the module docstring).

    ``source`` gives those bytes (a player's ``chunks``). ``name`` is what the file is called
    (upload clients use it as a file name). ``backend`` is the event loop the reader's portal
    runs (``"asyncio"`` or ``"trio"``); ``portal`` is a running
    :class:`anyio.from_thread.BlockingPortal` to use instead of one of its own. Building it
    does no I/O. Raises :class:`~atartape.InvalidOffsetError` for a window that ends before it
    starts.
    """

    def __init__(
        self,
        source: ByteSource,
        start_offset: int,
        end_offset: int,
        *,
        name: str = "tape.tar",
        backend: str = "asyncio",
        portal: Any = None,
    ) -> None:
        super().__init__()
        self._portal = portal
        self._portal_cm: AbstractContextManager[Any] | None = None
        self._stream: AsyncGenerator[bytes, None] | None = None
        if not 0 <= start_offset <= end_offset:
            self.close()
            raise InvalidOffsetError(f"bad window [{start_offset}, {end_offset}) of a tape")
        self._source = source
        self._start = start_offset
        self._size = end_offset - start_offset
        self.name = name
        self._backend = backend
        self._position = 0
        self._chunk = b""
        self._chunk_at = 0  # next unread byte of _chunk
        self._stream_position = 0  # window offset of _chunk[_chunk_at]

    @property
    def size(self) -> int:
        """The number of bytes of the window."""
        return self._size

    def __repr__(self) -> str:
        return f"<TapeReader {self.name!r} at {self._position} of {self._size} bytes>"

    # ------------------------------------------------------------------ io.RawIOBase

    def readable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        self._check_open()
        return True

    def writable(self) -> bool:
        self._check_open()
        return False

    def tell(self) -> int:
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to ``offset`` from the start (``SEEK_SET``), the position (``SEEK_CUR``) or the
        end (``SEEK_END``); return the new position. Raises :class:`InvalidOffsetError` for a
        position outside ``[0, size]`` and ``ValueError`` for a bad ``whence`` (or a closed
        file)."""
        self._check_open()
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise InvalidOffsetError(f"seek offset must be an int, not {type(offset).__name__}")
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._position + offset
        elif whence == os.SEEK_END:
            target = self._size + offset
        else:
            raise InvalidArgumentError(f"whence must be 0, 1 or 2, not {whence!r}")
        if not 0 <= target <= self._size:
            raise InvalidOffsetError(
                f"seek position {target} is outside the file (valid: 0 to {self._size})"
            )
        self._position = target
        return target

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current position; fewer bytes only at the end of the file.

        Raises what the play raises (see the module docstring), and ``RuntimeError`` on an
        event loop's thread.
        """
        self._check_open()
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._position)
        filled = 0
        start = self._position
        try:
            while filled < want:
                data = self._next(want - filled)
                if not data:
                    break
                view[filled : filled + len(data)] = data
                filled += len(data)
        except BaseException:
            self._position = start  # a failed read hands nothing out
            raise
        return filled

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when ``size`` is negative or ``None``): fewer
        only at the end of the file, ``b""`` there. Raises as :meth:`readinto` does."""
        self._check_open()
        left = self._size - self._position
        want = left if size is None or size < 0 else min(size, left)
        parts: list[bytes] = []
        got = 0
        start = self._position
        try:
            while got < want:
                data = self._next(want - got)
                if not data:
                    break
                parts.append(data)
                got += len(data)
        except BaseException:
            self._position = start  # a failed read hands nothing out
            raise
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        """Close the play being read (its open files and index connection) and stop the
        reader's portal. Reading afterwards raises ``ValueError``; closing again does nothing."""
        if self.closed:
            return
        try:
            self._drop_stream()
        finally:
            cm, self._portal_cm = self._portal_cm, None
            if cm is not None:
                self._portal = None
                cm.__exit__(None, None, None)
            super().close()

    # ------------------------------------------------------------------ the async side

    def _check_open(self) -> None:
        if self.closed:
            raise InvalidArgumentError(f"I/O operation on a closed tape reader ({self.name!r})")

    def _call(self, func: Callable[..., Any], *args: Any) -> Any:
        if self._portal is None:
            if _on_event_loop():
                raise RuntimeError(
                    "a TapeReader blocks: read it from a thread (anyio.to_thread.run_sync), "
                    "not on the event loop, where chunks() gives the same bytes"
                )
            from anyio.from_thread import start_blocking_portal

            cm = start_blocking_portal(self._backend)
            self._portal = cm.__enter__()
            self._portal_cm = cm
        return self._portal.call(func, *args)

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._chunk, self._chunk_at = b"", 0
        if stream is not None and self._portal is not None:
            self._portal.call(stream.aclose)

    def _next(self, most: int) -> bytes:
        """At most ``most`` bytes from the position on (``b""`` at the end), moving it."""
        if self._stream is not None and self._stream_position != self._position:
            self._drop_stream()
        if self._chunk_at >= len(self._chunk):
            if self._stream is None:
                at = self._start + self._position
                self._stream = self._source(at, self._start + self._size)
                self._stream_position = self._position
            try:
                chunk = self._call(_next_chunk, self._stream)
            except BaseException:
                self._drop_stream()  # a failed play cannot go on: the next read starts afresh
                raise
            if chunk is None:
                self._drop_stream()
                return b""
            self._chunk, self._chunk_at = chunk, 0
        take = min(most, len(self._chunk) - self._chunk_at)
        if self._chunk_at == 0 and take == len(self._chunk):
            data = self._chunk
        else:
            data = self._chunk[self._chunk_at : self._chunk_at + take]
        self._chunk_at += take
        self._position += take
        self._stream_position = self._position
        return data
