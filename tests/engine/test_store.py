"""The index store: one interface, two drivers (aiosqlite on asyncio, worker threads anywhere)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

import atartape
from atartape._engine import index as _index
from atartape._engine import store as _store
from atartape.format.layout import BLOCK_ROWS
from tests.synthetic import write_synthetic_index

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["aiosqlite", "thread"])
def driver(request: pytest.FixtureRequest, anyio_backend: Any) -> str:
    backend = anyio_backend[0] if isinstance(anyio_backend, tuple) else anyio_backend
    if request.param == "aiosqlite" and backend == "trio":
        pytest.skip("aiosqlite runs on asyncio only; trio uses the thread driver")
    return str(request.param)


async def test_default_driver_follows_the_backend(anyio_backend: Any) -> None:
    backend = anyio_backend[0]
    assert _store.default_driver() == ("aiosqlite" if backend == "asyncio" else "thread")


async def test_roundtrip(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "s.db"
    async with await _store.open_store(path, driver=driver) as store:  # type: ignore[arg-type]
        await store.executescript("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        await store.execute("BEGIN")
        await store.executemany("INSERT INTO t VALUES (?, ?)", [(i, b"x" * i) for i in range(100)])
        await store.commit()
        assert await store.fetchone("SELECT v FROM t WHERE k = ?", (3,)) == (b"xxx",)
        rows = await store.fetchall("SELECT k FROM t WHERE k >= ? LIMIT 10", (50,))
        assert [r[0] for r in rows] == list(range(50, 60))
        assert store.rows_fetched == 11
    async with await _store.open_store(path, readonly=True, driver=driver) as store:  # type: ignore[arg-type]
        with pytest.raises(PermissionError, match="index_path="):  # translated, never sqlite3's
            await store.execute("INSERT INTO t VALUES (1000, x'00')")


async def test_missing_file(tmp_path: Path, driver: str) -> None:
    with pytest.raises(atartape.TapeNotFoundError):
        await _store.open_store(tmp_path / "none.db", must_exist=True, driver=driver)  # type: ignore[arg-type]


async def test_tape_queries_on_both_drivers(
    tmp_path: Path, dataset: Path, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tape = await atartape.record(dataset)
    monkeypatch.setattr(_store, "default_driver", lambda: driver)
    async with await _index.open_index(tape.index_path) as index:
        assert index.meta["fingerprint"] == tape.fingerprint
        assert index.identity == tape.identity
        everything = [row async for row in index.rows(batch=3)]
        assert len(everything) == tape.entry_count
        assert [r.start_offset for r in everything] == sorted(r.start_offset for r in everything)
        big = await index.row_by_path(b"dataset/sub/big.bin")
        assert big is not None
        assert await index.start_covering(big.start_offset + 700) == big.start_offset
        assert await index.row_by_path(b"dataset/none") is None
        assert sorted(await index.child_names(b"dataset/sub")) == [b"big.bin", b"deeper"]


def test_resume_lookup_is_an_indexed_search(tmp_path: Path) -> None:
    """The query plan searches the start-offset key; it never scans the table."""
    write_synthetic_index(tmp_path / "big.db", tmp_path / "src", 1000)
    with sqlite3.connect(tmp_path / "big.db") as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM entries WHERE start_offset <= ? "
            "ORDER BY start_offset DESC LIMIT 1",
            (5000,),
        ).fetchall()
        plan += conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM entries WHERE start_offset >= ? "
            "ORDER BY start_offset LIMIT 10",
            (5000,),
        ).fetchall()
    conn.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "SEARCH entries USING INTEGER PRIMARY KEY" in details
    assert "SCAN" not in details


class CountingStores:
    """Counts the entry rows the index hands out (the meta is read once, apart)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows = 0
        rows_from = _index.Index.rows_from
        start_covering = _index.Index.start_covering

        async def counting_rows(index: _index.Index, *args: Any) -> Any:
            found = await rows_from(index, *args)
            self.rows += len(found)
            return found

        async def counting_search(index: _index.Index, *args: Any) -> Any:
            self.rows += 1
            return await start_covering(index, *args)

        monkeypatch.setattr(_index.Index, "rows_from", counting_rows)
        monkeypatch.setattr(_index.Index, "start_covering", counting_search)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingStores:
    return CountingStores(monkeypatch)


async def test_resume_near_the_end_reads_few_rows(tmp_path: Path, counting: CountingStores) -> None:
    n = 50_000
    await anyio.to_thread.run_sync(write_synthetic_index, tmp_path / "big.db", tmp_path / "src", n)
    tape = await atartape.Tape.open(tmp_path / "big.db")
    assert tape.entry_count == n
    player = atartape.TapePlayer(tape)
    tail = b"".join([c async for c in player.stream(tape.total_size - 4096)])
    assert len(tail) == 4096
    assert tail == bytes(4096) or tail.endswith(bytes(1024))
    # The block holding the resume point, read whole and checked: never the n rows before it.
    assert counting.rows <= BLOCK_ROWS
