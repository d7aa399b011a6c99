"""Range sources: random access to the bytes of an archive, on disk or over HTTP.

Any object with a ``size`` and ``async read_range(start, end)`` is a :class:`RangeSource`;
:class:`LocalFileSource` reads a file (``os.pread`` in worker threads) and
:class:`HttpRangeSource` a URL, with HTTP range requests through httpx (extra ``http``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.to_thread

from .._engine.files import pread_exact
from .._extras import require
from ..errors import ArchiveFormatError, RangeSourceError, SourceNotFoundError

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpRangeSource", "LocalFileSource", "RangeSource"]


class RangeSource(Protocol):
    """Random access to the bytes of an archive.

    ``size`` is the archive's length in bytes; ``read_range(start, end)`` returns the bytes
    ``[start, end)``, all of them (``0 <= start <= end <= size``). :func:`open_archive` awaits the
    source's ``prepare()`` first when it has one (that is where :class:`HttpRangeSource` learns
    the size).
    """

    @property
    def size(self) -> int: ...

    async def read_range(self, start: int, end: int) -> bytes: ...


class LocalFileSource:
    """A local file as a range source; every read runs in a worker thread (``os.pread``).

    Use it as an async context manager, or call :meth:`prepare` and :meth:`aclose`.
    :meth:`prepare` raises :class:`SourceNotFoundError` when there is no such file and
    :class:`ArchiveFormatError` when the path is not a regular file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = -1
        self._size: int | None = None

    @property
    def size(self) -> int:
        if self._size is None:
            raise RuntimeError("LocalFileSource is not open: await prepare() first")
        return self._size

    def _open(self) -> tuple[int, int]:
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self.path, flags | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise SourceNotFoundError(f"no archive at {self.path!r}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ArchiveFormatError(f"{self.path!r} is not a regular file")
        return fd, st.st_size

    async def prepare(self) -> None:
        """Open the file and learn its size (idempotent)."""
        if self._fd < 0:
            self._fd, self._size = await anyio.to_thread.run_sync(self._open)

    async def read_range(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)`` (fewer only if the file was truncated meanwhile)."""
        if self._fd < 0:
            raise RuntimeError("LocalFileSource is not open: await prepare() first")
        if end <= start:
            return b""
        return await anyio.to_thread.run_sync(pread_exact, self._fd, end - start, start)

    async def aclose(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(os.close, fd)

    async def __aenter__(self) -> LocalFileSource:
        await self.prepare()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class HttpRangeSource:
    """A URL as a range source, read with HTTP ``Range`` requests through httpx.

    ``client`` is an ``httpx.AsyncClient`` to reuse (its connections, headers, auth); without
    one, each request uses a short-lived client. ``size`` skips the size probe when known.
    Works on asyncio and trio. :meth:`prepare` (awaited by :func:`open_archive`) learns the size
    with a one-byte range request. Raises :class:`RangeSourceError` when the server ignores ranges
    (answers 200) or answers a different range, and ``httpx.HTTPStatusError`` for an error
    status; transport errors are httpx's own.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        size: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.client = client
        self.headers = dict(headers or {})
        self._size = size

    @property
    def size(self) -> int:
        if self._size is None:
            raise RuntimeError("HttpRangeSource size is unknown: await prepare() first")
        return self._size

    def _headers(self, first: int, last: int) -> dict[str, str]:
        return {**self.headers, "Range": f"bytes={first}-{last}", "Accept-Encoding": "identity"}

    async def _get(self, first: int, last: int, *, probe: bool) -> tuple[int, bytes, str]:
        require("httpx", "http", "HttpRangeSource")
        import httpx

        async def fetch(client: httpx.AsyncClient) -> tuple[int, bytes, str]:
            async with client.stream("GET", self.url, headers=self._headers(first, last)) as r:
                content_range = r.headers.get("content-range", "")
                if r.status_code == 200:
                    raise RangeSourceError(
                        f"{self.url} ignored a Range request (status 200): "
                        "the server does not serve byte ranges"
                    )
                if r.status_code == 416 and probe:
                    return r.status_code, b"", content_range
                r.raise_for_status()
                body = b"" if probe else await r.aread()
                return r.status_code, body, content_range

        if self.client is not None:
            return await fetch(self.client)
        async with httpx.AsyncClient() as client:
            return await fetch(client)

    async def prepare(self) -> None:
        """Learn the size of the resource (one ``Range: bytes=0-0`` request), unless known."""
        if self._size is not None:
            return
        status, _, content_range = await self._get(0, 0, probe=True)
        total = content_range.rpartition("/")[2].strip()
        if not total.isdigit():
            raise RangeSourceError(
                f"{self.url} answered {status} without a usable Content-Range "
                f"({content_range!r}): its size is unknown"
            )
        self._size = int(total)

    async def read_range(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)``, with one range request."""
        if end <= start:
            return b""
        status, body, content_range = await self._get(start, end - 1, probe=False)
        unit, _, spec = content_range.partition(" ")
        first = spec.partition("-")[0]
        if status != 206 or unit != "bytes" or first != str(start):
            raise RangeSourceError(
                f"{self.url} answered {status} {content_range!r} to a request for "
                f"bytes {start}-{end - 1}"
            )
        return body
