"""Folders keep their names: OS noise is tolerated, every other change stops the play."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import atartape
from tests.helpers import write

pytestmark = pytest.mark.anyio


async def play(tape: atartape.Tape) -> tuple[bytes, BaseException | None]:
    received = bytearray()
    try:
        async for chunk in atartape.TapePlayer(tape).chunks():
            received += chunk
    except atartape.TarTapeError as exc:
        return bytes(received), exc
    return bytes(received), None


@pytest.mark.parametrize("name", [".DS_Store", "Thumbs.db", "desktop.ini", "._c.txt"])
async def test_noise_written_later_changes_nothing(dataset: Path, name: str) -> None:
    tape = await atartape.record(dataset)
    full, error = await play(tape)
    assert error is None
    write(dataset / "sub" / "deeper" / name, "written by the OS")
    write(dataset / name, "and in the root")
    again, error = await play(tape)
    assert error is None and again == full
    assert await atartape.TapePlayer(tape).verify()


async def test_noise_is_left_out_unless_asked(dataset: Path, tmp_path: Path) -> None:
    write(dataset / "sub" / ".DS_Store", "finder")
    tape = await atartape.record(dataset)
    assert "dataset/sub/.DS_Store" not in [e.arc_path async for e in tape.entries()]
    assert tape.noise == (".DS_Store", "Thumbs.db", "desktop.ini", "._*")
    kept = await atartape.record(dataset, index_path=tmp_path / "k.db", noise=())
    assert "dataset/sub/.DS_Store" in [e.arc_path async for e in kept.entries()]
    write(dataset / "sub" / "Thumbs.db", "now it is a real file to this tape")
    _, error = await play(kept)
    assert isinstance(error, atartape.TarIntegrityError) and error.arc_path == "dataset/sub"


async def test_a_file_added_to_the_root_stops_the_play(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    write(dataset / "new.txt", "added after recording")
    received, error = await play(tape)
    assert isinstance(error, atartape.TarIntegrityError)
    assert error.arc_path == "dataset" and error.reason == "mtime"
    assert received == b""  # the root's header is the first entry: nothing went out
    report = await atartape.TapePlayer(tape).verify()
    assert [(d.arc_path, d.reason) for d in report.differences] == [("dataset", "added")]
    assert "added 'new.txt'" in report.differences[0].message


async def test_a_name_added_to_a_subfolder_is_reported(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    write(dataset / "sub" / "deeper" / "extra.bin", "x")
    _, error = await play(tape)
    assert isinstance(error, atartape.TarIntegrityError)
    assert error.arc_path == "dataset/sub/deeper"
    report = await atartape.TapePlayer(tape).verify()
    assert {d.arc_path: d.reason for d in report.differences} == {"dataset/sub/deeper": "added"}


async def test_a_renamed_back_folder_still_plays(dataset: Path) -> None:
    """The mtime moved, the names did not: no byte of the tape depends on the mtime alone."""
    tape = await atartape.record(dataset)
    (dataset / "sub" / "deeper" / "c.txt").rename(dataset / "sub" / "deeper" / "tmp")
    (dataset / "sub" / "deeper" / "tmp").rename(dataset / "sub" / "deeper" / "c.txt")
    _, error = await play(tape)
    assert error is None


async def test_excluded_names_may_come_and_go(dataset: Path) -> None:
    tape = await atartape.record(dataset, exclude=["*.tmp", "cache"])
    write(dataset / "sub" / "scratch.tmp", "excluded by pattern")
    (dataset / "cache").mkdir()
    _, error = await play(tape)
    assert error is None


async def test_an_index_beside_the_files_is_not_a_change(dataset: Path) -> None:
    """An index kept inside the tree (not in .tartape), re-recorded while an old play runs."""
    index = dataset / "sub" / "tape.db"
    tape = await atartape.record(dataset, index_path=index)
    assert "dataset/sub/tape.db" not in [e.arc_path async for e in tape.entries()]
    write(dataset / "sub" / f".tape.db.{os.getpid()}.0123abcd.tmp", "a recording in progress")
    _, error = await play(tape)
    assert error is None


async def test_folder_replaced_by_a_file_on_a_resumed_play(tmp_path: Path) -> None:
    """The source check is one: a resumed play sees what a whole play and verify see."""
    root = tmp_path / "data"
    write(root / "a" / "b" / "c.txt", "c" * 2000)
    tape = await atartape.record(root)
    entry = await tape.entry("data/a/b")
    shutil.rmtree(root / "a")
    write(root / "a", "a file where the folder was")
    player = atartape.TapePlayer(tape)
    for start in (0, entry.start_offset, entry.start_offset + 10):
        with pytest.raises(atartape.TarIntegrityError) as info:
            async for _ in player.chunks(start):
                pass
        assert info.value.reason in ("missing", "type")
    report = await player.verify()
    assert report.differences and all(d.reason in ("missing", "type") for d in report.differences)


def test_folder_replaced_by_a_file_exits_1(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write(root / "a" / "b" / "c.txt", "c" * 2000)
    env = {**os.environ, "ATARTAPE_DEBUG": ""}
    cli = [sys.executable, "-m", "atartape"]
    subprocess.run([*cli, "record", str(root)], check=True, capture_output=True, env=env)
    listing = subprocess.run([*cli, "ls", str(root)], check=True, capture_output=True, text=True)
    offset = next(
        int(line.split()[0]) for line in listing.stdout.splitlines() if line.endswith(" data/a/b")
    )
    shutil.rmtree(root / "a")
    write(root / "a", "a file")
    out = tmp_path / "out.tar"
    played = subprocess.run(
        [*cli, "play", str(root), "--offset", str(offset), "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert played.returncode == 1, played.stderr
    assert played.stderr.count("\n") == 1 and "data/a/b" in played.stderr


async def test_contents_of_a_folder_follow_it(tmp_path: Path) -> None:
    """Component order: 'a_test/' and everything in it, then 'a_test.py' ('.' < '/')."""
    root = tmp_path / "tree"
    write(root / "a_test" / "empty", "")
    write(root / "a_test.py", "print()")
    write(root / "a_test" / "deeper" / "x", "x")
    tape = await atartape.record(root)
    names = [e.arc_path async for e in tape.entries()]
    assert names == [
        "tree",
        "tree/a_test",
        "tree/a_test/deeper",
        "tree/a_test/deeper/x",
        "tree/a_test/empty",
        "tree/a_test.py",
    ]
    data, error = await play(tape)
    assert error is None
    out = tmp_path / "out"
    out.mkdir()
    tar = tmp_path / "t.tar"
    tar.write_bytes(data)
    subprocess.run(["tar", "-xf", str(tar), "-C", str(out)], check=True)
    for name in names:  # GNU tar sets each folder's mtime after its contents: all come back
        recorded = await tape.entry(name)
        assert int((out / name).lstat().st_mtime) == recorded.mtime, name
    with tarfile.open(tar) as archive:
        assert archive.getnames() == names


async def test_mtime_after_2262_is_stored(tmp_path: Path) -> None:
    root = tmp_path / "future"
    path = write(root / "f.txt", "from the future")
    far = 11_000_000_000 * 10**9 + 123  # year 2318, past int64 nanoseconds
    os.utime(path, ns=(far, far))
    tape = await atartape.record(root)
    entry = await tape.entry("future/f.txt")
    assert entry.mtime_ns == far and entry.mtime == far // 10**9
    data, error = await play(tape)
    assert error is None
    tar = tmp_path / "f.tar"
    tar.write_bytes(data)
    with tarfile.open(tar) as archive:
        assert archive.getmember("future/f.txt").mtime == far // 10**9
