"""One-shot tapes, first class: planned before the first byte, played from any range.

Members in memory, on disk and remote (read by ranges); ``chunks(a, b) == full[a:b]`` as a
property; only the needed ranges of remote objects are read; every size is a promise.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import tarfile
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atartape
from atartape.format.header import BLOCK_SIZE
from tests.helpers import write

pytestmark = pytest.mark.anyio

MTIME = 1_700_000_000


class Remote:
    """An object read by ranges, which records every range asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    async def read_range(self, start: int, end: int) -> bytes:
        self.reads.append((start, end))
        await anyio.lowlevel.checkpoint()
        return self.data[start:end]


async def whole(tape: atartape.TarTape) -> bytes:
    return b"".join([c async for c in tape.chunks()])


async def window(tape: atartape.TarTape, start: int, end: int | None = None) -> bytes:
    return b"".join([c async for c in tape.chunks(start, end)])


async def mixed_tape(
    tmp_path: Path, sizes: list[int], chunk_size: int = 4096
) -> tuple[atartape.TarTape, dict[str, Remote]]:
    """Disk files (a folder and one file), bytes and remote objects, interleaved by name."""
    folder = tmp_path / "disk"
    for i, size in enumerate(sizes):
        write(folder / f"f{i}.bin", bytes((i * 31 + k) % 251 for k in range(size)))
    single = write(tmp_path / "single.txt", "a single file\n")
    for path in (*folder.iterdir(), folder, single):
        os.utime(path, (MTIME, MTIME))
    tape = atartape.TarTape(name="mixed", chunk_size=chunk_size)
    tape.add_folder(folder)
    tape.add_file(single, arcname="e/single.txt")
    remotes: dict[str, Remote] = {}
    for i, size in enumerate(sizes):
        tape.add_bytes(f"c/mem{i}.bin", bytes([i % 256]) * size, mtime=MTIME)
        remote = remotes[f"b/remote{i}.bin"] = Remote(os.urandom(size))
        tape.add_remote(
            f"b/remote{i}.bin", size, mtime=MTIME + i, read_range=remote.read_range, version=f"v{i}"
        )
    return await tape.prepare(), remotes


# ------------------------------------------------------------------ planned before the first byte


async def test_everything_is_known_before_the_first_byte(tmp_path: Path) -> None:
    tape, remotes = await mixed_tape(tmp_path, [0, 1, 511, 512, 513, 10_000])
    assert tape.prepared and tape.name == "mixed" and tape.ranges
    assert tape.recorded_at == datetime.fromtimestamp(MTIME + 5, tz=timezone.utc)  # the newest
    total, identity = tape.total_size, tape.identity
    assert all(not r.reads for r in remotes.values())  # nothing read to know all that
    data = await whole(tape)
    assert len(data) == total
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
        assert names[0] == "b/remote0.bin" and "disk/f5.bin" in names
        member = archive.extractfile("b/remote5.bin")
        assert member is not None and member.read() == remotes["b/remote5.bin"].data
    # The same declared members give the same plan and identity: a remote object's bytes are
    # promised by its version, which the caller gives (here the same, over other bytes).
    again, _ = await mixed_tape(tmp_path / "again", [0, 1, 511, 512, 513, 10_000])
    assert again.total_size == total and again.fingerprint == tape.fingerprint
    assert again.identity == identity


async def test_identity_follows_the_promises(tmp_path: Path) -> None:
    async def make(data: bytes, version: str, when: int) -> atartape.TarTape:
        tape = atartape.TarTape()
        tape.add_bytes("a.txt", data, mtime=MTIME)
        remote = Remote(b"xyz")
        tape.add_remote("r.bin", 3, mtime=MTIME, read_range=remote.read_range, version=version)
        tape.add_file(write(tmp_path / "f.txt", "file"), arcname="f.txt")
        os.utime(tmp_path / "f.txt", ns=(when, when))
        return await tape.prepare()

    base = await make(b"one", "v1", MTIME * 10**9)
    assert (await make(b"one", "v1", MTIME * 10**9)).identity == base.identity
    assert (await make(b"two", "v1", MTIME * 10**9)).identity != base.identity
    assert (await make(b"one", "v2", MTIME * 10**9)).identity != base.identity
    moved = await make(b"one", "v1", MTIME * 10**9 + 5)  # the same second, another nanosecond
    assert moved.identity != base.identity and moved.fingerprint == base.fingerprint


async def test_before_and_after_preparing(tmp_path: Path) -> None:
    tape = atartape.TarTape()
    tape.add_bytes("a.txt", b"a", mtime=MTIME)
    for attribute in ("total_size", "identity", "fingerprint", "recorded_at", "ranges"):
        with pytest.raises(RuntimeError, match="prepare"):
            getattr(tape, attribute)
    with pytest.raises(RuntimeError, match="prepare"):
        tape.as_file()
    assert tape.name == "tape"
    assert await tape.prepare() is tape and await tape.prepare() is tape
    with pytest.raises(RuntimeError, match="frozen"):
        tape.add_bytes("b.txt", b"b")
    with pytest.raises(atartape.InvalidOffsetError):  # checked at once, the size being known
        tape.chunks(0, tape.total_size + 1)
    fixed = datetime(2020, 1, 1, tzinfo=timezone.utc)
    dated = atartape.TarTape(recorded_at=fixed)
    assert (await dated.prepare()).recorded_at == fixed
    assert dated.total_size == 1024  # the footer alone


async def test_add_remote_checks_its_arguments() -> None:
    tape = atartape.TarTape()
    remote = Remote(b"")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative int"):
            tape.add_remote("x", bad, mtime=MTIME, read_range=remote.read_range)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mtime"):
        tape.add_remote("x", 1, mtime=1.5, read_range=remote.read_range)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read_range"):
        tape.add_remote("x", 1, mtime=MTIME, read_range=b"no")  # type: ignore[arg-type]
    with pytest.raises(atartape.PathConstraintError):
        tape.add_remote("../x", 1, mtime=MTIME, read_range=remote.read_range)


# ------------------------------------------------------------------ ranges


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=4),
    cuts=st.lists(st.floats(0, 1), min_size=2, max_size=8),
)
async def test_any_window_is_a_slice_of_the_whole(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], cuts: list[float]
) -> None:
    base = tmp_path_factory.mktemp("oneshot")
    tape, remotes = await mixed_tape(base, sizes, chunk_size=1024)
    full = await whole(tape)
    assert len(full) == tape.total_size
    offsets = sorted(int(c * tape.total_size) for c in cuts)
    for start, end in itertools.pairwise(offsets):
        for remote in remotes.values():
            remote.reads.clear()
        assert await window(tape, start, end) == full[start:end]
        assert await window(tape, start) == full[start:]
        events = [e async for e in tape.play(start, end)]
        data = [e for e in events if e.type == "file_data"]
        assert b"".join(e.data for e in data) == full[start:end]
        at = start
        for event in data:
            assert event.metadata.start_offset == at
            at = event.metadata.end_offset
        completed = [e for e in events if e.type == "tape_completed"]
        if end == tape.total_size:
            assert completed == events[-1:] and len(completed) == 1
        else:
            assert completed == []


async def test_only_the_needed_ranges_are_read(tmp_path: Path) -> None:
    tape, remotes = await mixed_tape(tmp_path, [100_000, 50_000], chunk_size=16 * 1024)
    full = await whole(tape)
    entries = {e.arc_path: e async for e in _entries(tape)}
    big = entries["b/remote0.bin"]
    remote, other = remotes["b/remote0.bin"], remotes["b/remote1.bin"]
    remote.reads.clear()
    other.reads.clear()
    start = big.data_offset + 70_000  # a download resumed inside the object
    assert await window(tape, start) == full[start:]
    assert remote.reads[0] == (70_000, 70_000 + 16 * 1024)
    assert sum(e - s for s, e in remote.reads) == 30_000 and remote.reads[-1][1] == 100_000
    assert sum(e - s for s, e in other.reads) == 50_000  # it comes after: read whole
    remote.reads.clear()
    other.reads.clear()
    await window(tape, big.data_offset + 10, big.data_offset + 20)
    assert remote.reads == [(10, 20)] and other.reads == []


async def _entries(tape: atartape.TarTape) -> AsyncIterator[atartape.Entry]:
    async for event in tape.play():
        if event.type == "file_start" and event.entry is not None:
            yield event.entry


# ------------------------------------------------------------------ promises


async def test_a_remote_object_that_breaks_its_size(tmp_path: Path) -> None:
    async def short(start: int, end: int) -> bytes:
        return b"s" * max(0, min(end, 700) - start)

    async def long(start: int, end: int) -> bytes:
        return b"l" * (end - start + 1)

    for reader, what in ((short, "returned 188 bytes"), (long, "returned 513 bytes, not 512")):
        tape = atartape.TarTape(chunk_size=512)
        tape.add_bytes("a.txt", b"first", mtime=MTIME)
        tape.add_remote("b.bin", 1000, mtime=MTIME, read_range=reader)
        await tape.prepare()
        sent: list[bytes] = []
        with pytest.raises(atartape.TarIntegrityError, match=what) as info:
            async for chunk in tape.chunks():
                sent.append(chunk)
        assert info.value.arc_path == "b.bin" and info.value.reason == "size"
        b_content = 3 * BLOCK_SIZE
        data = b"".join(sent)
        assert len(data) <= b_content + 1000 and b"l" not in data  # never a byte too many
        if reader is short:
            assert data[b_content:] == b"s" * len(data[b_content:]) and len(data) <= b_content + 512


async def test_a_file_changed_after_preparing(tmp_path: Path) -> None:
    path = write(tmp_path / "f.txt", "before")
    tape = atartape.TarTape()
    tape.add_file(path)
    await tape.prepare()
    write(path, "after!")  # the same size, a new mtime
    with pytest.raises(atartape.TarIntegrityError) as info:
        await whole(tape)
    assert info.value.arc_path == "f.txt" and info.value.reason == "mtime"


async def chunks_of(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_a_tape_with_streams_plays_whole_and_once(tmp_path: Path) -> None:
    tape = atartape.TarTape()
    tape.add_stream("s.bin", 6, chunks_of([b"abc", b"def"]), mtime=MTIME)
    tape.add_remote("r.bin", 3, mtime=MTIME, read_range=Remote(b"xyz").read_range)
    await tape.prepare()
    assert not tape.ranges
    with pytest.raises(atartape.InvalidOffsetError, match="plays whole"):
        tape.chunks(512)
    with pytest.raises(atartape.InvalidOffsetError):
        tape.as_file()
    data = await whole(tape)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert archive.extractfile("s.bin").read() == b"abcdef"  # type: ignore[union-attr]
        assert archive.extractfile("r.bin").read() == b"xyz"  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="played already"):
        await whole(tape)


async def test_the_md5_of_remote_members_in_events(tmp_path: Path) -> None:
    blob = os.urandom(40_000)
    tape = atartape.TarTape(chunk_size=8192)
    tape.add_remote("blob.bin", len(blob), mtime=MTIME, read_range=Remote(blob).read_range)
    ends = [e async for e in tape.play() if e.type == "file_end"]
    assert ends[0].metadata.md5sum == hashlib.md5(blob).hexdigest()
    starts = [e async for e in tape.play(600) if e.type == "file_start"]
    assert starts[0].metadata.resumed
    ends = [e async for e in tape.play(600) if e.type == "file_end"]
    assert ends[0].metadata.md5sum is None  # not hashed whole: no digest
