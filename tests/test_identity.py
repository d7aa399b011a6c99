"""One identity per recording, pinned by everything planned from a Tape: never another's bytes."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

import atartape
from atartape._engine import index as _index
from tests.helpers import write

pytestmark = pytest.mark.anyio


def same_second_rewrite(path: Path, data: bytes) -> None:
    """Rewrite a file at the same size with an mtime in the same whole second as before."""
    before = path.stat()
    path.write_bytes(data)
    later = before.st_mtime_ns + 1  # one nanosecond later: the header's whole second is the same
    os.utime(path, ns=(before.st_atime_ns, later))


async def test_identity_sees_what_the_fingerprint_cannot(dataset: Path) -> None:
    first = await atartape.record(dataset)
    same_second_rewrite(dataset / "a.txt", b"HELLO\n")
    second = await atartape.record(dataset, overwrite=True)
    assert second.fingerprint == first.fingerprint  # the same layout, the same headers...
    assert second.identity != first.identity  # ...but not the same promise, nor the same bytes
    again = await atartape.record(dataset, overwrite=True)
    assert again.identity == second.identity  # same tree, same identity
    assert (await atartape.Tape.discover(dataset)).identity == second.identity


async def test_a_held_tape_never_plays_another_recording(dataset: Path) -> None:
    held = await atartape.record(dataset)
    player = atartape.TapePlayer(held)
    volume = player.volume(0, "64KiB")
    same_second_rewrite(dataset / "a.txt", b"HELLO\n")
    await atartape.record(dataset, overwrite=True)
    for stream in (player.chunks(), player.play(), volume.chunks()):
        received = []
        with pytest.raises(atartape.TapeChangedError, match="re-recorded"):
            async for item in stream:
                received.append(item)
        assert received == []  # refused before any byte
    with pytest.raises(atartape.TapeChangedError):
        await held.entry("dataset/a.txt")
    with pytest.raises(atartape.TapeChangedError):
        await player.verify()
    fresh = atartape.TapePlayer(await atartape.Tape.discover(dataset))
    assert b"HELLO" in b"".join([c async for c in fresh.chunks()])


async def test_identity_covers_digests_modes_targets(dataset: Path, tmp_path: Path) -> None:
    index = tmp_path / "i.db"
    plain = await atartape.record(dataset, index_path=index)
    summed = await atartape.record(dataset, index_path=index, overwrite=True, checksum="md5")
    assert summed.fingerprint == plain.fingerprint and summed.identity != plain.identity
    os.chmod(dataset / "a.txt", 0o600)
    moded = await atartape.record(dataset, index_path=index, overwrite=True)
    assert moded.identity not in (plain.identity, summed.identity)


async def test_plays_share_one_index_connection(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    opened: list[object] = []
    original = _index._open_index

    async def counting(where: str, expected: str | None) -> _index.Index:
        found = await original(where, expected)
        opened.append(found)
        return found

    player = atartape.TapePlayer(tape, chunk_size=4096, read_ahead=4096)
    streams = [player.chunks() for _ in range(30)]
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_index, "_open_index", counting)
            for stream in streams:  # thirty plays open at once
                await anext(stream)
        assert len(opened) == 1  # one connection (one aiosqlite thread on asyncio) for all
    finally:
        for stream in streams:
            await stream.aclose()


async def test_damaged_index_is_refused(dataset: Path, tmp_path: Path) -> None:
    write(dataset / "more" / "x.txt", "x" * 3000)
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape)
    rows = [e async for e in tape.entries()]
    victim = rows[4]

    def tamper(sql: str, *args: object) -> None:
        with sqlite3.connect(tape.index_path) as conn:
            conn.execute(sql, args)
        conn.close()

    tamper("DELETE FROM entries WHERE start_offset = ?", victim.start_offset)
    for start in (0, victim.start_offset, victim.start_offset + 100, rows[3].start_offset):
        with pytest.raises(atartape.TapeFormatError, match="damaged"):
            async for _ in player.chunks(start):
                pass
    # A window after the missing row is refused too: its block no longer gives its digest.
    with pytest.raises(atartape.TapeFormatError, match="not the ones its identity"):
        async for _ in player.chunks(rows[6].start_offset):
            pass
    with pytest.raises(atartape.TapeFormatError, match="damaged"):
        await player.verify()


async def test_a_shifted_row_is_refused(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    rows = [e async for e in tape.entries()]
    big = next(i for i, e in enumerate(rows) if e.arc_path == "dataset/sub/big.bin")
    with sqlite3.connect(tape.index_path) as conn:
        conn.execute(
            "UPDATE entries SET start_offset = start_offset + 512 WHERE start_offset = ?",
            (rows[big].start_offset,),
        )
    conn.close()
    player = atartape.TapePlayer(tape)
    starts = (0, rows[big - 1].start_offset, rows[big].start_offset + 10, rows[big].data_offset)
    for start in starts:
        with pytest.raises(atartape.TapeFormatError):
            async for _ in player.chunks(start):
                pass
    with pytest.raises(atartape.TapeFormatError):
        await player.verify()


async def test_a_lowered_total_size_is_refused(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    with sqlite3.connect(tape.index_path) as conn:
        conn.execute("UPDATE meta SET value = value - 1024 WHERE key = 'total_size'")
    conn.close()
    lowered = await atartape.Tape.open(tape.index_path)
    with pytest.raises(atartape.TapeFormatError):
        async for _ in atartape.TapePlayer(lowered).chunks():
            pass
