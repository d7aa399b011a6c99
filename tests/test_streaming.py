"""Streaming behaviour: windows equal slices of the whole (property), bounded read-ahead,
prompt release of files on every way out, and equal bytes on every backend."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
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
    # Mid-file: it is open, and the handle on the folder it is opened beneath.
    assert sorted(open_fds_under(dataset)) == [str(dataset), str(dataset / "huge.bin")]
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


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.floats(0, 1), min_size=2, max_size=2))
async def test_write_to_a_descriptor_gives_the_same_bytes(
    dataset: Path, tmp_path: Path, cuts: list[float]
) -> None:
    """Straight to a file, from the worker threads: exactly what chunks() hands out."""
    write(dataset / "huge.bin", os.urandom(2_500_000))
    tape = await atartape.record(dataset, overwrite=True)
    player = atartape.TapePlayer(tape, chunk_size=8192)
    start, end = sorted(int(c * tape.total_size) for c in cuts)
    expected = b"".join([c async for c in player.chunks(start, end)])
    out = tmp_path / "out.bin"
    progress = atartape.Progress()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        written = await player.write_to(fd, start, end, progress=progress)
    finally:
        os.close(fd)
    assert written == end - start == progress.bytes
    assert out.read_bytes() == expected


@pytest.fixture
def kernel_copies(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Records each ``copy_file_range`` the sinks make: (offset in the source, length)."""
    from atartape._engine import sinks

    calls: list[tuple[int, int]] = []
    real = os.copy_file_range

    def spy(src: int, dst: int, count: int, offset_src: int | None = None) -> int:
        assert offset_src is not None
        calls.append((offset_src, count))
        return real(src, dst, count, offset_src)

    monkeypatch.setattr(sinks.os, "copy_file_range", spy)
    return calls


async def test_write_to_a_file_copies_content_in_the_kernel(
    dataset: Path, tmp_path: Path, kernel_copies: list[tuple[int, int]]
) -> None:
    """To a regular file, large contents go by copy_file_range: the same bytes, every window;
    to a file opened to append (no copy there) too."""
    write(dataset / "huge.bin", os.urandom(2_500_000))
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, chunk_size=65536)
    full = b"".join([c async for c in player.chunks()])
    out = tmp_path / "out.bin"
    huge = await tape.entry("dataset/huge.bin")
    cuts = {0, 1, 511, 512, huge.start_offset, huge.data_offset, huge.data_offset + 1}
    cuts |= {huge.data_offset + 65536, huge.end_offset - 1, huge.end_offset, tape.total_size}
    for start in sorted(cuts):
        for end in sorted(c for c in cuts if c >= start):
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                assert await player.write_to(fd, start, end) == end - start
            finally:
                os.close(fd)
            assert out.read_bytes() == full[start:end], (start, end)
    assert kernel_copies, "no content was copied in the kernel"
    kernel_copies.clear()
    out.write_bytes(b"kept")
    fd = os.open(out, os.O_WRONLY | os.O_APPEND)
    try:
        await player.write_to(fd)
    finally:
        os.close(fd)
    assert out.read_bytes() == b"kept" + full and not kernel_copies


async def test_a_file_changed_during_a_kernel_copy_is_cut_back(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write lands while the kernel copies a piece: the check after the copy sees it, the
    output is cut back to the bytes checked before, and no byte of the new content stays."""
    from atartape._engine import sinks

    source = dataset / "huge.bin"
    write(source, bytes(2_500_000))
    os.utime(source, (1_000_000_000, 1_000_000_000))
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, chunk_size=65536)
    full = b"".join([c async for c in player.chunks()])
    real = os.copy_file_range
    calls = 0

    def rewritten_meanwhile(src: int, dst: int, count: int, offset_src: int | None = None) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:  # same size, new bytes, as `cp` over the file does
            with open(source, "r+b") as f:
                f.write(b"\xff" * 2_500_000)
        return real(src, dst, count, offset_src)

    monkeypatch.setattr(sinks.os, "copy_file_range", rewritten_meanwhile)
    out = tmp_path / "out.bin"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with pytest.raises(atartape.TarIntegrityError) as info:
            await player.write_to(fd)
    finally:
        os.close(fd)
    assert info.value.arc_path == "dataset/huge.bin"
    held = out.read_bytes()
    huge = await tape.entry("dataset/huge.bin")
    assert held == full[: len(held)] and b"\xff" not in held
    assert len(held) == huge.data_offset + 2 * 65536  # the two pieces checked before it


async def test_a_kernel_that_refuses_to_copy_gets_reads(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from atartape._engine import sinks

    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(sinks.os, "copy_file_range", refuse)
    write(dataset / "huge.bin", os.urandom(2_500_000))
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, chunk_size=65536)
    full = b"".join([c async for c in player.chunks()])
    out = tmp_path / "out.bin"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        await player.write_to(fd)
    finally:
        os.close(fd)
    assert out.read_bytes() == full


async def test_write_to_a_pipe_and_a_socket(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape)
    full = b"".join([c async for c in player.chunks()])
    import socket

    for kind in ("pipe", "socket"):
        if kind == "pipe":
            read_end, write_end = os.pipe()
        else:
            left, right = socket.socketpair()
            right.setblocking(False)  # as an event loop's socket is: the writer waits with poll
            read_end, write_end = os.dup(left.fileno()), os.dup(right.fileno())
            left.close()
            right.close()
            os.set_blocking(write_end, False)
        received = bytearray()

        def drain(fd: int = read_end, into: bytearray = received) -> None:
            while data := os.read(fd, 65536):
                into.extend(data)

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, drain)
            try:
                await player.write_to(write_end)
            finally:
                os.close(write_end)
        os.close(read_end)
        assert bytes(received) == full, kind


async def test_write_to_a_closed_pipe(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with pytest.raises(BrokenPipeError):
            await atartape.TapePlayer(tape).write_to(write_end)
    finally:
        os.close(write_end)


@pytest.fixture
def cold_disk(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every probe says "not cached": the read-ahead across files turns on at once. Returns
    the record of files asked for (by size)."""
    from atartape._engine import prefetch, producer

    asked: list[int] = []
    monkeypatch.setattr(producer, "is_cold", lambda fd, offset=0: True)
    original = prefetch._advise_file

    def counting(where: Any, length: int) -> None:
        asked.append(length)
        original(where, length)

    monkeypatch.setattr(prefetch, "_advise_file", counting)
    return asked


async def test_read_ahead_across_files_changes_no_byte(
    tmp_path: Path, cold_disk: list[int]
) -> None:
    root = tmp_path / "many"
    for i in range(300):
        write(root / f"d{i % 7}" / f"f{i:03d}.bin", os.urandom(i * 37 % 5000))
    write(root / "big.bin", os.urandom(3_000_000))
    write(root / "d3" / "huge.bin", os.urandom(5 * 1024 * 1024))  # left to the kernel's read-ahead
    tape = await atartape.record(root)
    player = atartape.TapePlayer(tape, chunk_size=65536)
    chunks = b"".join([c async for c in player.chunks()])
    with tarfile.open(fileobj=io.BytesIO(chunks)) as archive:
        for member in archive.getmembers():
            if member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                assert extracted.read() == (tmp_path / member.name).read_bytes()
    assert cold_disk, "the files ahead were asked for"
    assert sum(cold_disk) <= tape.total_size  # each file at most once
    from atartape._engine.prefetch import PREFETCH_FILE_MAX

    assert max(cold_disk) <= PREFETCH_FILE_MAX  # huge.bin was not asked for


async def test_a_file_changed_after_it_was_read_ahead_stops_before_its_header(
    tmp_path: Path, cold_disk: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-ahead only asks the kernel for pages: a file rewritten in place (same size) after
    it was asked for, before the player reaches it, still stops the stream before its header,
    and every byte sent before is the tape's."""
    import threading

    from atartape._engine import prefetch, producer

    root = tmp_path / "many"
    for i in range(200):
        write(root / f"f{i:03d}.bin", os.urandom(3000))
    target = root / "f150.bin"
    os.utime(target, (1_000_000_000, 1_000_000_000))
    tape = await atartape.record(root)
    full = b"".join([c async for c in atartape.TapePlayer(tape).chunks()])
    original = prefetch._advise_file
    rewritten: list[bytes] = []

    done = threading.Event()

    def advise_then_rewrite(where: Any, length: int) -> None:
        _, rel = where
        original(where, length)
        if rel.endswith(b"f150.bin") and not rewritten:
            with open(target, "r+b") as f:  # what `cp` over the file does
                f.write(b"\xee" * 3000)
            rewritten.append(rel)
            done.set()

    opener = producer.open_file

    def open_after_the_rewrite(where: Any, row: Any) -> Any:
        if where[1].endswith(b"f150.bin"):  # the player reaches it only once it was rewritten
            done.wait(30)
        return opener(where, row)

    monkeypatch.setattr(prefetch, "_advise_file", advise_then_rewrite)
    monkeypatch.setattr(producer, "open_file", open_after_the_rewrite)
    got = b""
    with pytest.raises(atartape.TarIntegrityError) as info:
        async for chunk in atartape.TapePlayer(tape, read_ahead=8192).chunks():
            got += chunk
    entry = await tape.entry("many/f150.bin")
    assert rewritten and info.value.arc_path == "many/f150.bin"
    assert len(got) <= entry.start_offset and got == full[: len(got)]


async def test_read_ahead_stops_when_the_consumer_leaves(
    tmp_path: Path, cold_disk: list[int]
) -> None:
    root = tmp_path / "many"
    for i in range(2000):
        write(root / f"f{i:04d}.bin", b"x" * 3000)
    tape = await atartape.record(root)
    player = atartape.TapePlayer(tape, read_ahead=8192)
    async with aclosing(player.chunks()) as stream:
        async for _ in stream:
            break
    from atartape._engine import prefetch

    if prefetch._pool is not None:  # what was not begun is dropped; what runs finishes soon
        await anyio.to_thread.run_sync(every_prefetch_thread_idle)
    assert open_fds_under(root) == []


def every_prefetch_thread_idle() -> None:
    """Return once every prefetch thread has finished what it was doing: all of them meet at
    one barrier, which none can reach while still busy with a file."""
    import threading

    from atartape._engine import prefetch

    assert prefetch._pool is not None
    barrier = threading.Barrier(prefetch.PREFETCH_THREADS)
    waits = [prefetch._pool.submit(barrier.wait, 60) for _ in range(prefetch.PREFETCH_THREADS)]
    for done in waits:
        done.result()


async def test_open_plays_hold_no_thread_each(tmp_path: Path) -> None:
    """Hundreds of plays paused half-way share the index connection of their event loop and
    the worker threads of its pool: none keeps an OS thread of its own while it waits."""
    import threading

    for i in range(40):
        write(tmp_path / "src" / f"f{i}", b"x" * 100_000)
    tape = await atartape.record(tmp_path / "src")
    before = threading.active_count()
    plays = [atartape.TapePlayer(tape, read_ahead=64 * 1024).chunks() for _ in range(200)]
    try:
        for play in plays:
            await play.__anext__()  # opened, one hop made, waiting for its consumer
        assert threading.active_count() - before < 20
    finally:
        for play in plays:
            await play.aclose()
