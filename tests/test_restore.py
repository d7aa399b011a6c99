"""restore_file: one file back from stored volumes or a stored tape, checked, written atomically."""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import anyio
import pytest

import atartape
from atartape.restore import FetchRange, restore_file

pytestmark = pytest.mark.anyio

VOLUME = "64KiB"


async def full_stream(player: atartape.TapePlayer) -> bytes:
    return b"".join([chunk async for chunk in player.stream()])


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


async def store_volumes(tape: atartape.Tape, folder: Path) -> None:
    """Write every volume to a file, as an upload to any store would."""
    folder.mkdir()
    for volume in atartape.TapePlayer(tape).volumes(VOLUME):
        async with await anyio.open_file(folder / volume.name, "wb") as handle:
            async for chunk in volume:
                await handle.write(chunk)


def from_volume_files(
    tape: atartape.Tape, folder: Path, calls: list[tuple[int, int, int]]
) -> FetchRange:
    async def fetch_range(volume_index: int, start: int, end: int) -> bytes:
        calls.append((volume_index, start, end))
        async with await anyio.open_file(folder / f"{tape.name}.tar.{volume_index:04d}", "rb") as f:
            await f.seek(start)
            return await f.read(end - start)

    return fetch_range


async def test_restore_from_volume_files(dataset: Path, tmp_path: Path) -> None:
    tape = await atartape.record(dataset, checksum="sha256")
    await store_volumes(tape, tmp_path / "store")
    os.rename(dataset, tmp_path / "gone")  # months later: only the index and the stored volumes
    offline = await atartape.Tape.open(
        tape.index_path.replace(str(dataset), str(tmp_path / "gone"))
    )
    original = (tmp_path / "gone" / "sub" / "big.bin").read_bytes()
    where = await offline.locate("dataset/sub/big.bin", volume_size=VOLUME)
    calls: list[tuple[int, int, int]] = []
    out = tmp_path / "out"
    written = await restore_file(
        where, from_volume_files(offline, tmp_path / "store", calls), out / "big.bin"
    )
    assert written == out / "big.bin" and written.read_bytes() == original
    assert [c[0] for c in calls] == where.volume_indexes  # one fetch per fragment here
    assert leftovers(out) == []
    c_where = await offline.locate("dataset/sub/deeper/c.txt", volume_size=VOLUME)
    restored = await restore_file(c_where, from_volume_files(offline, tmp_path / "store", []), out)
    assert restored == out / "c.txt"  # dest is a folder: the file keeps its name
    assert restored.read_bytes() == b"c" * 1000
    stat = restored.stat()
    assert stat.st_mode & 0o777 == 0o600 and int(stat.st_mtime) == c_where.mtime


async def test_restore_from_the_whole_tape_in_bounded_pieces(dataset: Path, tmp_path: Path) -> None:
    tape = await atartape.record(dataset, checksum="md5")
    full = await full_stream(atartape.TapePlayer(tape))
    calls: list[tuple[int, int, int]] = []

    async def fetch_range(volume_index: int, start: int, end: int) -> memoryview:
        calls.append((volume_index, start, end))
        return memoryview(full)[start:end]

    where = await tape.locate("dataset/sub/big.bin")
    dest = await restore_file(where, fetch_range, tmp_path / "big.bin", max_fetch=100_000)
    assert dest.read_bytes() == (dataset / "sub" / "big.bin").read_bytes()
    assert len(calls) == 8 and all(c[0] == 0 and c[2] - c[1] <= 100_000 for c in calls)
    assert calls[0][1] == where.data_offset and calls[-1][2] == where.data_offset + where.size


async def test_digest_mismatch_leaves_no_file(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    tape = await atartape.record(dataset, checksum="sha256")
    full = bytearray(await full_stream(atartape.TapePlayer(tape)))
    where = await tape.locate("dataset/sub/big.bin")
    full[where.data_offset + 1000] ^= 0xFF  # one bit rotted in storage

    async def fetch_range(volume_index: int, start: int, end: int) -> bytes:
        return bytes(full[start:end])

    with pytest.raises(atartape.TarIntegrityError, match="sha256") as info:
        await restore_file(where, fetch_range, out / "big.bin")
    assert info.value.arc_path == "dataset/sub/big.bin"
    assert not (out / "big.bin").exists() and leftovers(out) == []


async def test_short_fetch_and_failing_fetch_leave_no_file(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    tape = await atartape.record(dataset)  # no digest: the size is still checked
    where = await tape.locate("dataset/sub/big.bin")

    async def short(volume_index: int, start: int, end: int) -> bytes:
        return bytes(end - start - 1)

    with pytest.raises(atartape.TarIntegrityError, match="returned 767999 bytes, expected 768000"):
        await restore_file(where, short, out / "big.bin")

    async def broken(volume_index: int, start: int, end: int) -> bytes:
        raise ConnectionError("store unreachable")

    with pytest.raises(ConnectionError):
        await restore_file(where, broken, out / "big.bin")
    assert os.listdir(out) == []


async def test_cancelled_restore_leaves_no_file(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    tape = await atartape.record(dataset)
    full = await full_stream(atartape.TapePlayer(tape))
    where = await tape.locate("dataset/sub/big.bin")
    second_fetch = anyio.Event()

    async def slow(volume_index: int, start: int, end: int) -> bytes:
        if start > where.data_offset:
            second_fetch.set()
            await anyio.sleep_forever()
        return full[start:end]

    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(restore_file, where, slow, out / "big.bin", max_fetch=1000))
        await second_fetch.wait()
        assert len(leftovers(out)) == 1  # the temporary file is there, unpublished
        tg.cancel_scope.cancel()
    assert os.listdir(out) == []


async def test_empty_file_existing_dest_and_non_files(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    tape = await atartape.record(dataset, checksum="sha256")

    async def never(volume_index: int, start: int, end: int) -> bytes:
        raise AssertionError("an empty file needs no fetch")

    empty = await tape.locate("dataset/empty.bin", VOLUME)
    dest = await restore_file(empty, never, out / "empty.bin")
    assert dest.read_bytes() == b""
    assert empty.checksum == hashlib.sha256(b"").hexdigest()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        await restore_file(empty, never, dest)
    dest.write_bytes(b"old content")
    await restore_file(empty, never, dest, overwrite=True)
    assert dest.read_bytes() == b""
    for path in ("dataset/sub", "dataset/link"):
        with pytest.raises(ValueError, match="only regular files"):
            await restore_file(await tape.locate(path), never, out / "x")
    assert sorted(os.listdir(out)) == ["empty.bin"]
