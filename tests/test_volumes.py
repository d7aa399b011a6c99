"""Volumes: the window math, byte-exact volumes, file-like access, independence, offline use."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import atartape
from atartape.format.windows import split_range, volume_count, volume_window
from atartape.volumes import Volume
from tests.helpers import write

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def full_stream(player: atartape.TapePlayer) -> bytes:
    return b"".join([chunk async for chunk in player.stream()])


async def volume_bytes(volume: Volume) -> bytes:
    return b"".join([chunk async for chunk in volume])


def counting_streams(player: atartape.TapePlayer) -> list[AsyncGenerator[bytes, None]]:
    """Record every stream the player opens (the volume calls ``player.chunks``)."""
    opened: list[AsyncGenerator[bytes, None]] = []
    original = player.chunks

    def stream(start_offset: int = 0, end_offset: int | None = None) -> AsyncGenerator[bytes, None]:
        generator = original(start_offset, end_offset)
        opened.append(generator)
        return generator

    player.chunks = stream  # type: ignore[method-assign]
    return opened


def small_tree(root: Path) -> Path:
    """About 30 KB over a dozen entries: many volume boundaries fall in headers and padding."""
    for i, size in enumerate([0, 1, 511, 512, 513, 1000, 4096, 9999, 12_000]):
        write(root / f"d{i % 3}" / f"f{i}.bin", bytes([i]) * size)
    return root


# ------------------------------------------------------------------------ pure math


@given(st.integers(0, 10**9), st.integers(1, 10**8))
def test_windows_tile_the_tape(total: int, size: int) -> None:
    count = volume_count(total, size)
    assert count == len(range(0, total, size))
    if count:
        assert volume_window(total, size, 0)[0] == 0
        assert volume_window(total, size, count - 1)[1] == total
    for index in {i for i in (0, 1, count // 2, count - 2, count - 1) if 0 <= i < count}:
        start, end = volume_window(total, size, index)
        assert start == index * size and 0 < end - start <= size
        if index + 1 < count:
            assert end - start == size and volume_window(total, size, index + 1)[0] == end


@given(st.integers(0, 10**6), st.integers(0, 10**5), st.integers(1, 10**5))
def test_split_range_covers_the_range_in_order(start: int, length: int, size: int) -> None:
    length = min(length, size * 300)
    pieces = split_range(start, start + length, size)
    assert sum(piece[2] for piece in pieces) == length
    at = start
    for index, offset, piece_length in pieces:
        assert index * size + offset == at
        assert offset >= 0 and offset + piece_length <= size and piece_length > 0
        at += piece_length
    indexes = [piece[0] for piece in pieces]
    assert indexes == list(range(start // size, start // size + len(indexes)))
    assert bool(pieces) == (length > 0)


def test_window_errors() -> None:
    assert volume_count(10_000, "1KiB") == 10
    assert volume_window(10_000, "1KiB", 9) == (9216, 10_000)
    with pytest.raises(atartape.InvalidOffsetError, match=r"volume index 10 .* 0 to 9"):
        volume_window(10_000, "1KiB", 10)
    with pytest.raises(atartape.InvalidOffsetError):
        volume_window(10_000, 1024, -1)
    with pytest.raises(atartape.InvalidOffsetError, match="int"):
        volume_window(10_000, 1024, True)
    for bad in (0, -512, "12 bananas", "5M"):
        with pytest.raises(ValueError, match="volume size"):
            volume_count(10_000, bad)


# ------------------------------------------------------------------------ volumes


async def test_volumes_concatenate_to_the_full_stream(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape)
    full = await full_stream(player)
    for size in ("64KiB", 100_000, 10_001, tape.total_size, tape.total_size + 1):
        volumes = player.volumes(size)
        assert len(volumes) == tape.volume_count(size) == volume_count(tape.total_size, size)
        parts = [await volume_bytes(v) for v in volumes]
        assert b"".join(parts) == full
        for volume, part in zip(volumes, parts):
            assert len(part) == volume.size == volume.end_offset - volume.start_offset
            assert volume.md5 == hashlib.md5(part).hexdigest()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(size=st.integers(min_value=300, max_value=40_000))
@example(size=512)
@example(size=1024)
@example(size=513)
async def test_volumes_concatenate_for_any_size(tmp_path: Path, size: int) -> None:
    root = tmp_path / "small"
    if not root.exists():
        small_tree(root)
    index = tmp_path / "small.db"
    tape = await (
        atartape.Tape.open(index) if index.exists() else atartape.record(root, index_path=index)
    )
    player = atartape.TapePlayer(tape)
    full = await full_stream(player)
    volumes = player.volumes(size)
    assert b"".join([await volume_bytes(v) for v in volumes]) == full
    last = volumes[-1]
    assert last.end_offset == tape.total_size and 0 < last.size <= size
    assert all(v.size == size for v in volumes[:-1])


async def test_volume_by_index_and_names(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape)
    volumes = player.volumes("64KiB")
    count = len(volumes)
    assert [v.index for v in volumes] == list(range(count))
    assert (
        volumes[0].name == "dataset.tar.0000" and volumes[-1].name == f"dataset.tar.{count - 1:04d}"
    )
    third = player.volume(2, "64KiB")
    assert (third.start_offset, third.end_offset) == (2 * 65536, 3 * 65536)
    assert await volume_bytes(third) == await volume_bytes(volumes[2])
    named = player.volume(3, 65536, name_template="{name}.part{index:04d}-of-{count}")
    assert named.name == f"dataset.part0003-of-{count}"
    assert "dataset.tar.0001" in repr(volumes[1])
    with pytest.raises(atartape.InvalidOffsetError, match=f"volume index {count} is outside"):
        player.volume(count, "64KiB")
    with pytest.raises(atartape.InvalidOffsetError):
        player.volume(-1, "64KiB")
    with pytest.raises(ValueError, match="name_template"):
        player.volumes("64KiB", name_template="{tape}.{index}")
    with pytest.raises(ValueError, match="volume size"):
        player.volumes("64 kilobytes")
    with pytest.raises(ValueError, match="positive"):
        player.volumes(0)


async def test_md5_and_checksum(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, chunk_size=4096)
    full = await full_stream(player)
    volume = player.volume(1, "100KB")
    expected = full[100_000:200_000]
    assert volume.md5 is None
    async with aclosing(volume.chunks()) as chunks:
        async for _chunk in chunks:
            break  # an incomplete pass leaves no digest
    assert volume.md5 is None
    assert await volume.checksum("sha256") == hashlib.sha256(expected).hexdigest()
    assert volume.md5 == hashlib.md5(expected).hexdigest()  # the checksum pass was linear
    assert await volume.checksum("blake2b") == hashlib.blake2b(expected).hexdigest()
    with pytest.raises(ValueError, match="unknown hash algorithm 'nope'"):
        await volume.checksum("nope")
    with pytest.raises(ValueError, match="fixed digest length"):
        await volume.checksum("shake_128")


async def test_file_like_access(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, chunk_size=4096)
    full = await full_stream(player)
    opened = counting_streams(player)
    volume = player.volume(0, 300_000)
    expected = full[:300_000]
    with pytest.raises(ValueError, match="async with volume"):
        await volume.read(10)
    async with volume:
        assert volume.tell() == 0
        pieces = []
        while piece := await volume.read(1000):
            pieces.append(piece)
        assert b"".join(pieces) == expected
        assert len(opened) == 1, "sequential reads must share one stream"
        assert volume.md5 == hashlib.md5(expected).hexdigest()
        assert volume.tell() == 300_000 and await volume.read() == b""

        assert await volume.seek(1234) == 1234
        assert await volume.read(10) == expected[1234:1244]
        assert await volume.read(5) == expected[1244:1249]
        assert len(opened) == 2
        assert await volume.seek(0, 1) == 1249  # staying put keeps the stream
        assert await volume.read(3) == expected[1249:1252]
        assert len(opened) == 2
        assert await volume.seek(-100, 2) == 299_900
        assert await volume.read() == expected[-100:]
        assert await volume.seek(10, 1) == 300_010
        assert await volume.read(5) == b""
        with pytest.raises(ValueError, match="negative seek"):
            await volume.seek(-1)
        with pytest.raises(ValueError, match="whence"):
            await volume.seek(0, 3)
        await volume.seek(200_000)
        assert await volume.read(-1) == expected[200_000:]
        await volume.seek(100)
        assert await volume.read(10) == expected[100:110]  # leaves a stream open mid-volume
    # leaving `async with` closed every stream (a closed async generator has no frame)
    assert all(getattr(gen, "ag_frame", 0) is None for gen in opened)
    with pytest.raises(ValueError, match="not open"):
        volume.tell()
    async with volume:  # a volume can be opened again
        assert await volume.read(7) == expected[:7]


async def test_a_subset_of_volumes_concurrently(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, chunk_size=8192)
    full = await full_stream(player)
    size = 96 * 1024
    produced: dict[int, bytes] = {}

    async def produce(index: int) -> None:
        volume = atartape.TapePlayer(tape).volume(index, size)  # nothing shared but the index
        produced[index] = await volume_bytes(volume)

    async with anyio.create_task_group() as tg:
        for index in (6, 1, 3, 4):
            tg.start_soon(produce, index)
    for index, data in produced.items():
        assert data == full[index * size : (index + 1) * size]
    assert sorted(produced) == [1, 3, 4, 6]


async def test_offline_catalog(dataset: Path, tmp_path: Path) -> None:
    index = tmp_path / "catalog" / "tape.db"
    tape = await atartape.record(dataset, index_path=index)
    full = await full_stream(atartape.TapePlayer(tape))
    os.rename(dataset, tmp_path / "moved")  # the machine that reads the catalog has no source
    offline = await atartape.Tape.open(index)
    assert offline.total_size == len(full)
    names = [e.arc_path async for e in offline.entries()]
    assert names[0] == "dataset" and "dataset/sub/big.bin" in names
    player = atartape.TapePlayer(offline)
    volumes = player.volumes("64KiB")
    assert len(volumes) == offline.volume_count("64KiB") == -(-len(full) // 65536)
    assert volumes[-1].end_offset == len(full)
    with pytest.raises(atartape.SourceNotFoundError, match=str(dataset)):
        await volume_bytes(volumes[0])
    async with volumes[1]:
        with pytest.raises(atartape.SourceNotFoundError, match="not at"):
            await volumes[1].read(10)
    moved = atartape.TapePlayer(offline, source_root=tmp_path / "moved")
    assert await volume_bytes(moved.volume(2, "64KiB")) == full[2 * 65536 : 3 * 65536]


async def test_integrity_error_inside_a_volume(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape)
    big = await tape.entry("dataset/sub/big.bin")
    (dataset / "sub" / "big.bin").write_bytes(b"changed")
    volume = player.volume(big.start_offset // 4096, 4096)
    with pytest.raises(atartape.TarIntegrityError, match=r"big\.bin"):
        await volume_bytes(volume)
    assert volume.md5 is None


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_parallel_volumes_example(dataset: Path, tmp_path: Path) -> None:
    """N worker processes, each producing a disjoint set of parts from the index and source."""
    tape = await atartape.record(dataset)
    out = tmp_path / "parts"
    result = await anyio.run_process(
        [
            sys.executable,
            str(EXAMPLES / "parallel_volumes.py"),
            str(dataset),
            "--index",
            tape.index_path,
            "--size",
            "100KiB",
            "--workers",
            "3",
            "--out",
            str(out),
        ],
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    report = result.stdout.decode()
    assert "identical to the full stream" in report
    count = tape.volume_count("100KiB")
    parts = set(os.listdir(out))
    assert {f"dataset.tar.{i:04d}" for i in range(count)} <= parts
    full = await full_stream(atartape.TapePlayer(tape))
    assert (out / "dataset.tar").read_bytes() == full
    workers = {line.split()[1] for line in report.splitlines() if line.startswith("worker")}
    assert len(workers) == 3
