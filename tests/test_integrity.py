"""The T0 promise: a changed source stops the stream before any byte of the changed entry."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import atartape
from atartape import TarIntegrityError
from tests.helpers import write

pytestmark = pytest.mark.anyio


async def collect(
    player: atartape.TapePlayer, start: int = 0
) -> tuple[bytes, BaseException | None]:
    """The bytes a consumer received before the stream stopped, and why it stopped."""
    received = bytearray()
    try:
        async for chunk in player.stream(start):
            received += chunk
    except atartape.TarTapeError as exc:
        return bytes(received), exc
    return bytes(received), None


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000), follow_symlinks=False)


def same_size_new_mtime(root: Path) -> None:
    path = root / "sub" / "deeper" / "c.txt"
    path.write_text("d" * 1000)
    bump_mtime(path)


def truncate(root: Path) -> None:
    (root / "sub" / "deeper" / "c.txt").write_text("short")


def remove(root: Path) -> None:
    (root / "sub" / "deeper" / "c.txt").unlink()


def replace_with_dir(root: Path) -> None:
    path = root / "sub" / "deeper" / "c.txt"
    path.unlink()
    path.mkdir()


def replace_with_symlink(root: Path) -> None:
    path = root / "sub" / "deeper" / "c.txt"
    stat = path.stat()
    path.unlink()
    path.symlink_to("../../a.txt")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns), follow_symlinks=False)


def add_to_folder(root: Path) -> None:
    write(root / "sub" / "deeper" / "new.txt", "new")


def retarget_link(root: Path) -> None:
    (root / "link").unlink()
    (root / "link").symlink_to("empty.bin")


def remove_folder(root: Path) -> None:
    shutil.rmtree(root / "empty_dir")


def keeping_folder_mtimes(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """The change, with the folders' mtimes put back: only the file itself differs."""

    def changed(root: Path) -> None:
        folders = {p: p.stat() for p in [root, *root.rglob("*")] if p.is_dir()}
        change(root)
        for folder, st in folders.items():
            if folder.is_dir():
                os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))

    return changed


CHANGES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "content+mtime": (same_size_new_mtime, "dataset/sub/deeper/c.txt", "mtime changed"),
    "shrunk": (truncate, "dataset/sub/deeper/c.txt", "size changed"),
    "removed": (keeping_folder_mtimes(remove), "dataset/sub/deeper/c.txt", "missing"),
    "now a folder": (
        keeping_folder_mtimes(replace_with_dir),
        "dataset/sub/deeper/c.txt",
        "is now a folder",
    ),
    "now a symlink": (
        keeping_folder_mtimes(replace_with_symlink),
        "dataset/sub/deeper/c.txt",
        "symlink",
    ),
    "removed, folder shows it": (remove, "dataset/sub/deeper", "folder changed"),
    "folder gained a file": (add_to_folder, "dataset/sub/deeper", "folder changed"),
    "symlink retargeted": (keeping_folder_mtimes(retarget_link), "dataset/link", "target changed"),
    "folder removed": (keeping_folder_mtimes(remove_folder), "dataset/empty_dir", "missing"),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_change_stops_before_the_entry(dataset: Path, change: str) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, source_root=dataset)
    full, error = await collect(player)
    assert error is None
    mutate, arc_path, message = CHANGES[change]
    entry = await tape.entry(arc_path)
    mutate(dataset)
    received, error = await collect(player)
    assert isinstance(error, TarIntegrityError)
    assert error.arc_path == arc_path
    assert arc_path in str(error)
    assert message in str(error)
    # A truncated stream, never a wrong one: a prefix of the promised bytes, none of the entry.
    assert full.startswith(received)
    assert len(received) <= entry.start_offset


async def test_root_mtime_may_change(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    bump_mtime(dataset)
    write(dataset / ".tartape" / "other", "x")  # the index folder lives in the root
    received, error = await collect(atartape.TapePlayer(tape))
    assert error is None
    assert len(received) == tape.total_size


async def test_resume_checks_the_entry_it_starts_in(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    big = await tape.entry("dataset/sub/big.bin")
    (dataset / "sub" / "big.bin").write_bytes(b"changed")
    received, error = await collect(atartape.TapePlayer(tape), start=big.data_offset + 100)
    assert isinstance(error, TarIntegrityError)
    assert received == b""


class GrowingSource:
    """A file that grows while it is read: appended to between the player's thread hops."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def grow(self) -> None:
        with open(self.path, "ab") as handle:
            handle.write(b"more")


async def test_file_growing_while_read(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    big = dataset / "sub" / "big.bin"
    player = atartape.TapePlayer(tape, chunk_size=4096, read_ahead=8192)
    entry = await tape.entry("dataset/sub/big.bin")
    received = bytearray()
    stat = big.stat()
    with pytest.raises(TarIntegrityError, match="grew while being read"):
        async for chunk in player.stream(entry.start_offset):
            if not received:  # the header went out: now the file grows, same mtime
                GrowingSource(big).grow()
                os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            received += chunk
    assert len(received) < entry.span


async def test_file_shrinking_while_read(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    big = dataset / "sub" / "big.bin"
    player = atartape.TapePlayer(tape, chunk_size=4096, read_ahead=8192)
    entry = await tape.entry("dataset/sub/big.bin")
    received = bytearray()
    with pytest.raises(TarIntegrityError, match="shrank while being read"):
        async for chunk in player.stream(entry.start_offset):
            if not received:
                os.truncate(big, 10_000)
            received += chunk
    assert len(received) < entry.span


async def test_interrupted_record_leaves_old_index(dataset: Path, tmp_path: Path) -> None:
    import anyio

    index = tmp_path / "keep.db"
    first = await atartape.record(dataset, index_path=index)
    write(dataset / "more.txt", "more")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await atartape.record(dataset, index_path=index, overwrite=True)
    assert (await atartape.Tape.open(index)).fingerprint == first.fingerprint
    assert sorted(os.listdir(tmp_path)) == ["dataset", "keep.db"]  # no temporary file left


async def test_failed_record_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    write(root / ("n" * 120), "x")
    with pytest.raises(atartape.PathConstraintError):
        await atartape.record(root, index_path=tmp_path / "bad.db")
    assert not (tmp_path / "bad.db").exists()
    assert sorted(os.listdir(tmp_path)) == ["bad"]


@pytest.mark.parametrize("changed", [[5], [150], [30, 140]])
async def test_many_small_files_stop_at_the_first_change(
    tmp_path: Path, changed: list[int]
) -> None:
    """Small files are read many per hop; the stream stops at the first that changed."""
    root = tmp_path / "many"
    for i in range(200):
        write(root / f"f{i:03d}.txt", f"file {i}\n" * 3)
    tape = await atartape.record(root, index_path=tmp_path / "many.db")
    player = atartape.TapePlayer(tape)
    full, _ = await collect(player)
    for i in changed:
        path = root / f"f{i:03d}.txt"
        path.write_text("other content, other size")
    first = await tape.entry(f"many/f{changed[0]:03d}.txt")
    received, error = await collect(player)
    assert isinstance(error, TarIntegrityError)
    assert error.arc_path == first.arc_path
    assert received == full[: first.start_offset]
    events = []
    with pytest.raises(TarIntegrityError):
        async for event in player.play():
            events.append(event)
    assert b"".join(e.data for e in events) == full[: first.start_offset]
