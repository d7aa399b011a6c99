"""Streaming behaviour: windows equal slices of the whole (property), bounded read-ahead,
prompt release of files on every way out, and equal bytes on every backend."""

from __future__ import annotations

import hashlib
import os
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atartape
from atartape._engine import producer as _producer
from tests.helpers import write

pytestmark = pytest.mark.anyio

names = st.text(alphabet="abcxyz_-.é", min_size=1, max_size=8).filter(
    lambda n: n not in (".", "..")
)
trees = st.dictionaries(
    st.lists(names, min_size=1, max_size=3).map(tuple),
    st.integers(0, 3000),
    min_size=1,
    max_size=12,
)


def build(root: Path, tree: dict[tuple[str, ...], int]) -> None:
    root.mkdir(parents=True)
    for parts, size in tree.items():
        target = root.joinpath(*parts)
        if any(p.is_file() for p in target.parents if root in p.parents):
            continue  # a file already sits where this path needs a folder
        if target.exists():
            continue
        write(target, bytes((i * 7 + size) % 251 for i in range(size)))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=trees, cuts=st.lists(st.floats(0, 1), min_size=2, max_size=6))
async def test_any_window_is_a_slice_of_the_whole(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[tuple[str, ...], int], cuts: list[float]
) -> None:
    base = tmp_path_factory.mktemp("prop")
    await anyio.to_thread.run_sync(build, base / "root", tree)
    tape = await atartape.record(base / "root", index_path=base / "i.db")
    player = atartape.TapePlayer(tape, chunk_size=1024, read_ahead=3000)
    full = b"".join([c async for c in player.stream()])
    assert len(full) == tape.total_size
    offsets = sorted(int(c * tape.total_size) for c in cuts)
    for start in offsets:
        assert b"".join([c async for c in player.stream(start)]) == full[start:]
    start, end = offsets[0], offsets[-1]
    assert b"".join([c async for c in player.stream(start, end)]) == full[start:end]
    events = [e async for e in player.play(start, end)]
    assert b"".join(e.data for e in events if e.type == "file_data") == full[start:end]


class HopMeter:
    """Counts hops and the bytes each produced, and the bytes the consumer has taken."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hops: list[int] = []
        original = _producer.Producer.hop

        def hop(producer: _producer.Producer, sink: Any) -> Any:
            counting = _CountingSink(sink)
            error = original(producer, counting)
            self.hops.append(counting.bytes)
            return error

        monkeypatch.setattr(_producer.Producer, "hop", hop)


class _CountingSink:
    """A sink that counts the bytes handed to it, and passes them on."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)

    def whole(self, row: Any, header: bytes, data: bytes, pad: bytes, md5: str | None) -> None:
        self.bytes += len(header) + len(data) + len(pad)
        self.sink.whole(row, header, data, pad, md5)

    def piece(self, data: bytes) -> None:
        self.bytes += len(data)
        self.sink.piece(data)


async def test_read_ahead_is_one_hop(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer that pauses never has more than one hop read ahead of it."""
    write(dataset / "huge.bin", os.urandom(3_000_000))
    tape = await atartape.record(dataset)
    meter = HopMeter(monkeypatch)
    chunk, hop = 64 * 1024, 256 * 1024
    player = atartape.TapePlayer(tape, chunk_size=chunk, read_ahead=hop)
    taken = 0
    async with aclosing(player.stream()) as stream:
        async for piece in stream:
            taken += len(piece)
            await anyio.lowlevel.checkpoint()  # a slow consumer, without a clock
            read = sum(meter.hops)
            assert read - taken <= hop + chunk  # buffered: at most one hop's worth
            assert len(piece) <= chunk + 2 * 512 or len(piece) <= chunk * 2
    assert taken == tape.total_size
    assert max(meter.hops) <= hop + chunk


async def test_chunk_sizes(dataset: Path) -> None:
    write(dataset / "huge.bin", os.urandom(2_000_000))
    tape = await atartape.record(dataset)
    sizes = [len(c) async for c in atartape.TapePlayer(tape).stream()]
    assert max(sizes) <= _producer.CHUNK_SIZE + 1024
    assert sum(sizes) == tape.total_size
    # Small entries are joined; small pieces remain only around a large file's header and tail.
    assert sum(1 for s in sizes if s < 64 * 1024) <= 4


def open_fds_under(root: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)):
            found.append(target)
    return found


@pytest.mark.parametrize("how", ["aclose", "cancel", "error_in_consumer"])
async def test_leaving_early_closes_the_open_file(dataset: Path, how: str) -> None:
    write(dataset / "huge.bin", os.urandom(2_000_000))
    tape = await atartape.record(dataset, index_path=dataset.parent / "i.db")
    player = atartape.TapePlayer(tape, chunk_size=4096, read_ahead=8192)
    entry = await tape.entry("dataset/huge.bin")
    stream = player.stream(entry.data_offset)
    first = await stream.__anext__()
    assert first
    assert open_fds_under(dataset) == [str(dataset / "huge.bin")]  # mid-file: it is open
    if how == "aclose":
        await stream.aclose()
    elif how == "cancel":
        with anyio.CancelScope() as scope:
            scope.cancel()
            await stream.__anext__()
        await stream.aclose()
    else:
        with pytest.raises(RuntimeError):
            async with aclosing(stream):
                raise RuntimeError("consumer failed")
    assert open_fds_under(dataset) == []
    assert open_fds_under(dataset.parent) == []  # nor the index


async def test_same_bytes_on_every_backend(dataset: Path, tmp_path: Path) -> None:
    """The digest of the whole stream is the same as on a fresh run under the other backend."""
    tape = await atartape.record(dataset, index_path=tmp_path / "i.db")

    async def digest() -> str:
        h = hashlib.sha256()
        async for chunk in atartape.TapePlayer(tape).stream():
            h.update(chunk)
        return h.hexdigest()

    here = await digest()

    def other(backend: str) -> str:
        return anyio.run(digest, backend=backend)

    for backend in ("asyncio", "trio"):
        assert await anyio.to_thread.run_sync(other, backend) == here
