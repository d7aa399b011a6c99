"""verify: every difference between the source and the index, reported at once, in batched hops."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import atartape
from atartape import verify
from atartape.verify import VerifyError, VerifyReport
from tests.helpers import write

pytestmark = pytest.mark.anyio


def reasons(report: VerifyReport) -> dict[str, str]:
    return {error.arc_path: error.reason for error in report.errors}


def touch_back(path: Path, like: os.stat_result) -> None:
    """Give ``path`` the exact mtime it had (the change keeps size and mtime)."""
    os.utime(path, ns=(like.st_atime_ns, like.st_mtime_ns), follow_symlinks=False)


async def test_a_faithful_source_passes(dataset: Path) -> None:
    tape = await atartape.record(dataset, checksum="sha256")
    player = atartape.TapePlayer(tape)
    report = await player.verify()
    assert report and report.ok and report.errors == []
    assert report.checked == tape.entry_count and report.deep and not report.content
    assert "all hold" in str(report)
    content = await player.verify(content=True)
    assert content and content.hashed_bytes == sum(
        p.stat().st_size
        for p in dataset.rglob("*")
        if p.is_file() and not p.is_symlink() and ".tartape" not in str(p)
    )


async def test_every_difference_is_reported(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    write(dataset / "a.txt", "hello, longer\n")  # size
    os.utime(dataset / "exact.bin", (1, 1))  # mtime
    (dataset / "sub" / "deeper" / "c.txt").unlink()  # missing; its folder's mtime moves
    (dataset / "empty_dir").rmdir()
    write(dataset / "empty_dir", "now a file")  # type
    link_stat = (dataset / "link").lstat()
    (dataset / "link").unlink()
    (dataset / "link").symlink_to("exact.bin")  # target
    touch_back(dataset / "link", link_stat)
    report = await atartape.TapePlayer(tape).verify()
    assert not report
    assert reasons(report) == {
        "dataset/a.txt": "size",
        "dataset/exact.bin": "mtime",
        "dataset/sub/deeper": "removed",
        "dataset/sub/deeper/c.txt": "missing",
        "dataset/empty_dir": "type",
        "dataset/link": "content",
    }
    by_path = {e.arc_path: e for e in report.errors}
    assert "recorded 6 bytes, now 14" in by_path["dataset/a.txt"].message
    assert "is now a file (it was recorded as a folder)" in by_path["dataset/empty_dir"].message
    assert "'a.txt' -> 'exact.bin'" in by_path["dataset/link"].message
    assert "removed 'c.txt'" in by_path["dataset/sub/deeper"].message
    assert [e.arc_path for e in report.errors] == sorted(
        (e.arc_path for e in report.errors), key=os.fsencode
    )
    assert "6 differ" in str(report) and "dataset/a.txt: size changed" in str(report)
    assert isinstance(report.errors[0], VerifyError)


async def test_content_check_sees_what_size_and_mtime_hide(dataset: Path) -> None:
    tape = await atartape.record(dataset, checksum="md5")
    big = dataset / "sub" / "big.bin"
    before = big.stat()
    data = bytearray(big.read_bytes())
    data[500_000] ^= 1
    big.write_bytes(bytes(data))
    touch_back(big, before)
    player = atartape.TapePlayer(tape)
    assert await player.verify()  # same size, same mtime: only the content knows
    report = await player.verify(content=True)
    assert reasons(report) == {"dataset/sub/big.bin": "content"}
    assert "recorded md5" in report.errors[0].message
    # Hashing a large file is spread over several bounded hops, with the same verdict.
    small_hops = await verify.verify(tape, content=True, hop_bytes=100_000)
    assert reasons(small_hops) == reasons(report)


async def test_content_needs_recorded_digests(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    with pytest.raises(atartape.ChecksumsNotRecordedError, match="recorded without checksums"):
        await atartape.TapePlayer(tape).verify(content=True)
    # One of atartape's errors (the command line's exit 2), still a ValueError as it was.
    assert issubclass(atartape.ChecksumsNotRecordedError, atartape.InvalidArgumentError)
    assert issubclass(atartape.InvalidArgumentError, (atartape.TarTapeError, ValueError))


async def test_canary_check(dataset: Path) -> None:
    write(dataset / "zz_newest.txt", "n")
    os.utime(dataset / "zz_newest.txt", (4_000_000_000, 4_000_000_000))
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape)
    quick = await player.verify(deep=False, sample=0)
    # first (the root), last and newest (zz_newest.txt), largest (big.bin)
    assert quick and quick.checked == 3 and not quick.deep
    everything = await player.verify(False, sample=1000)
    assert everything.checked == tape.entry_count
    some = await player.verify(deep=False, sample=3, seed=7)
    again = await player.verify(deep=False, sample=3, seed=7)
    assert 3 <= some.checked <= 6 and some.checked == again.checked
    write(dataset / "sub" / "big.bin", "shrunk")
    report = await player.verify(deep=False, sample=0)
    assert reasons(report) == {"dataset/sub/big.bin": "size"}
    with pytest.raises(atartape.InvalidArgumentError, match="sample"):
        await player.verify(deep=False, sample=-1)


async def test_checks_are_batched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "many"
    for i in range(700):
        write(root / f"d{i % 7}" / f"f{i:04d}.txt", str(i))
    tape = await atartape.record(root, checksum="sha256")
    hops = 0
    original = verify._Checker.hop

    def counting(checker: verify._Checker) -> None:
        nonlocal hops
        hops += 1
        original(checker)

    monkeypatch.setattr(verify._Checker, "hop", counting)
    report = await atartape.TapePlayer(tape).verify(content=True)
    assert report and report.checked == 708
    assert hops <= 3, f"{hops} thread hops for 708 entries: checks must be batched"


async def test_missing_source(dataset: Path, tmp_path: Path) -> None:
    tape = await atartape.record(dataset, index_path=tmp_path / "t.db")
    shutil.rmtree(dataset)
    with pytest.raises(atartape.SourceNotFoundError, match=str(dataset)):
        await atartape.TapePlayer(tape).verify()
