"""One async interface over a SQLite index, with a driver for each event loop.

aiosqlite serves asyncio; it cannot run on trio (its futures are asyncio's), so on trio the same
interface is served by a plain ``sqlite3`` connection driven through anyio worker threads, one
call at a time. :func:`open_store` picks the driver from the running backend.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import anyio
import anyio.to_thread

from ..errors import TapeFormatError, TapeNotFoundError

Row = tuple[Any, ...]
Driver = Literal["aiosqlite", "thread"]


def running_backend() -> str:
    """The name of the running async library: ``"asyncio"`` or ``"trio"``."""
    try:
        import sniffio  # trio depends on it, so it is importable whenever trio can run
    except ImportError:  # pragma: no cover - without sniffio, trio is not installed
        return "asyncio"
    return sniffio.current_async_library()


def loop_token() -> object:
    """The running event loop (asyncio) or run (trio): what a shared connection belongs to."""
    if running_backend() == "asyncio":
        import asyncio

        return asyncio.get_running_loop()
    import trio

    return trio.lowlevel.current_trio_token()


def default_driver() -> Driver:
    return "aiosqlite" if running_backend() == "asyncio" else "thread"


class IndexStore:
    """The operations the engine needs from SQLite. ``rows_fetched`` counts every row read.

    SQLite's own errors never leave it: a full disk is an ``OSError`` (ENOSPC), a file that
    cannot be opened or written a ``PermissionError``, anything else (a damaged page, a file
    that is not a database) a :class:`TapeFormatError`, each naming the file.
    """

    rows_fetched: int = 0
    path: str = ""

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            rows = await self._fetchall(sql, params)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None
        self.rows_fetched += len(rows)
        return rows

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            await self._execute(sql, params)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            await self._executemany(sql, rows)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    async def executescript(self, sql: str) -> None:
        try:
            await self._executescript(sql)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    async def commit(self) -> None:
        try:
            await self._commit()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    async def aclose(self) -> None:
        raise NotImplementedError

    async def _fetchall(self, sql: str, params: Sequence[Any]) -> list[Row]:
        raise NotImplementedError

    async def _execute(self, sql: str, params: Sequence[Any]) -> None:
        raise NotImplementedError

    async def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def _executescript(self, sql: str) -> None:
        raise NotImplementedError

    async def _commit(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> IndexStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()


_SQLITE_FULL, _SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_PERM = 13, 8, 14, 3


def translate(exc: sqlite3.Error, path: str) -> Exception:
    """The error of atartape (or the OS) that a SQLite error on the index ``path`` means."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code == _SQLITE_FULL or "disk is full" in text:
        return OSError(errno.ENOSPC, f"no space left to write the tape index ({text})", path)
    if (
        code in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_PERM)
        or "readonly" in text
        or ("unable to open" in text)
    ):
        return PermissionError(
            errno.EACCES,
            f"the tape index cannot be opened or written ({text}); "
            "choose another place with index_path= (--index)",
            path,
        )
    if isinstance(exc, sqlite3.DatabaseError):
        return TapeFormatError(f"the tape index {path} cannot be read: it is damaged ({text})")
    return TapeFormatError(f"the tape index {path} cannot be read ({text})")  # pragma: no cover


def _connect(path: str, readonly: bool, must_exist: bool) -> sqlite3.Connection:
    """Open a connection (in a worker thread: it touches the disk)."""
    if must_exist and not os.path.isfile(path):
        raise TapeNotFoundError(f"no tape index at {path!r}")
    if readonly and not os.access(path, os.R_OK):
        raise PermissionError(errno.EACCES, "the tape index cannot be read", path)
    try:
        if readonly:
            uri = "file:" + _uri_path(os.path.abspath(path)) + "?mode=ro"
            return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        return sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise translate(exc, path) from None


def _uri_path(path: str) -> str:
    from urllib.parse import quote

    return quote(os.fsencode(path))


class _ThreadStore(IndexStore):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = anyio.Lock()

    async def _call(self, func: Any, *args: Any) -> Any:
        async with self._lock:
            return await anyio.to_thread.run_sync(func, *args)

    def _fetchall_sync(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    async def _fetchall(self, sql: str, params: Sequence[Any]) -> list[Row]:
        rows: list[Row] = await self._call(self._fetchall_sync, sql, params)
        return rows

    async def _execute(self, sql: str, params: Sequence[Any]) -> None:
        await self._call(self._conn.execute, sql, params)

    async def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._call(self._conn.executemany, sql, rows)

    async def _executescript(self, sql: str) -> None:
        await self._call(self._conn.executescript, sql)

    async def _commit(self) -> None:
        await self._call(self._conn.commit)

    async def aclose(self) -> None:
        await self._call(self._conn.close)


class _AiosqliteStore(IndexStore):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def _fetchall(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def _execute(self, sql: str, params: Sequence[Any]) -> None:
        cursor = await self._conn.execute(sql, params)
        await cursor.close()

    async def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        cursor = await self._conn.executemany(sql, rows)
        await cursor.close()

    async def _executescript(self, sql: str) -> None:
        cursor = await self._conn.executescript(sql)
        await cursor.close()

    async def _commit(self) -> None:
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
    store: IndexStore
    if (driver or default_driver()) == "thread":
        store = _ThreadStore(conn)
    else:
        import aiosqlite

        store = _AiosqliteStore(await aiosqlite.Connection(lambda: conn, 256))
    store.path = path
    return store
