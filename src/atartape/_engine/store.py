"""One async interface over a SQLite index, with a driver for each event loop.

aiosqlite serves asyncio; it cannot run on trio (its futures are asyncio's), so on trio the same
interface is served by a plain ``sqlite3`` connection driven through anyio worker threads, one
call at a time. :func:`open_store` picks the driver from the running backend.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import anyio
import anyio.to_thread

from ..errors import TapeNotFoundError

Row = tuple[Any, ...]
Driver = Literal["aiosqlite", "thread"]


def running_backend() -> str:
    """The name of the running async library: ``"asyncio"`` or ``"trio"``."""
    try:
        import sniffio  # trio depends on it, so it is importable whenever trio can run
    except ImportError:  # pragma: no cover - without sniffio, trio is not installed
        return "asyncio"
    return sniffio.current_async_library()


def default_driver() -> Driver:
    return "aiosqlite" if running_backend() == "asyncio" else "thread"


class IndexStore:
    """The operations the engine needs from SQLite. ``rows_fetched`` counts every row read."""

    rows_fetched: int = 0

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def executescript(self, sql: str) -> None:
        raise NotImplementedError

    async def commit(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> IndexStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()


def _connect(path: str, readonly: bool, must_exist: bool) -> sqlite3.Connection:
    """Open a connection (in a worker thread: it touches the disk)."""
    if must_exist and not os.path.isfile(path):
        raise TapeNotFoundError(f"no tape index at {path!r}")
    if readonly:
        uri = "file:" + _uri_path(os.path.abspath(path)) + "?mode=ro"
        return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None)


def _uri_path(path: str) -> str:
    from urllib.parse import quote

    return quote(path)


class _ThreadStore(IndexStore):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = anyio.Lock()

    async def _call(self, func: Any, *args: Any) -> Any:
        async with self._lock:
            return await anyio.to_thread.run_sync(func, *args)

    def _fetchall_sync(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = await self._call(self._fetchall_sync, sql, params)
        self.rows_fetched += len(rows)
        return rows

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._call(self._conn.execute, sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._call(self._conn.executemany, sql, rows)

    async def executescript(self, sql: str) -> None:
        await self._call(self._conn.executescript, sql)

    async def commit(self) -> None:
        await self._call(self._conn.commit)

    async def aclose(self) -> None:
        await self._call(self._conn.close)


class _AiosqliteStore(IndexStore):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        rows = list(await self._conn.execute_fetchall(sql, params))
        self.rows_fetched += len(rows)
        return rows

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        cursor = await self._conn.execute(sql, params)
        await cursor.close()

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        cursor = await self._conn.executemany(sql, rows)
        await cursor.close()

    async def executescript(self, sql: str) -> None:
        cursor = await self._conn.executescript(sql)
        await cursor.close()

    async def commit(self) -> None:
        await self._conn.commit()

    async def aclose(self) -> None:
        await self._conn.close()


async def open_store(
    path: str | os.PathLike[str],
    *,
    readonly: bool = False,
    must_exist: bool = False,
    driver: Driver | None = None,
) -> IndexStore:
    """Open the SQLite file at ``path`` through the driver that suits the running backend.

    Raises :class:`TapeNotFoundError` when ``must_exist`` is set and there is no such file.
    """
    path = os.fspath(path)
    # Connect in a worker thread first: a failure then surfaces here, and not inside
    # aiosqlite's thread, which cannot report it cleanly.
    conn = await anyio.to_thread.run_sync(_connect, path, readonly, must_exist)
    if (driver or default_driver()) == "thread":
        return _ThreadStore(conn)
    import aiosqlite

    return _AiosqliteStore(await aiosqlite.Connection(lambda: conn, 256))
