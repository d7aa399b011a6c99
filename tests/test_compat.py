"""What a tape produces is read back unchanged by tarfile, GNU tar, bsdtar and 7-Zip."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import anyio
import pytest

import atartape
from tests.helpers import write

pytestmark = pytest.mark.anyio

SEVEN_ZIP = shutil.which("7zz") or shutil.which("7z")


def varied_tree(root: Path) -> Path:
    write(root / "plain.txt", "plain\n", mode=0o640)
    write(root / "empty.bin", b"")
    write(root / "block.bin", b"b" * 512)
    write(root / "block_plus.bin", b"c" * 513)
    write(root / "big.bin", os.urandom(300_000))
    write(root / "exec.sh", "#!/bin/sh\n", mode=0o755)
    write(root / "ünïcødé" / "naïve café.txt", "utf-8 names")
    write(root / ("n" * 100), "a 100-byte name")
    (root / ("d" * 100)).mkdir()  # a 100-byte folder name: stored without its slash
    deep = root / ("p" * 90) / ("q" * 55)  # prefix "tree/p.../q..." is 151 bytes
    write(deep / ("r" * 90), "a path split between prefix and name")
    (root / "empty_dir").mkdir()
    (root / "links").mkdir()
    (root / "links" / "to_file").symlink_to("../plain.txt")
    (root / "links" / "to_dir").symlink_to("../ünïcødé")
    (root / "links" / "dangling").symlink_to("nowhere")
    return root


def compare_trees(expected: Path, actual: Path, *, modes: bool) -> None:
    names = sorted(
        p.relative_to(expected) for p in expected.rglob("*") if ".tartape" not in p.parts
    )
    got = sorted(p.relative_to(actual) for p in actual.rglob("*"))
    assert got == names
    for rel in names:
        source, copy = expected / rel, actual / rel
        if source.is_symlink():
            assert copy.is_symlink()
            assert os.readlink(copy) == os.readlink(source)
        elif source.is_dir():
            assert copy.is_dir()
        else:
            assert copy.read_bytes() == source.read_bytes(), rel
            if modes:
                assert copy.stat().st_mode & 0o777 == source.stat().st_mode & 0o777, rel
            assert int(copy.stat().st_mtime) == int(source.stat().st_mtime), rel


@pytest.fixture
async def tar_file(tmp_path: Path) -> tuple[Path, Path]:
    source = varied_tree(tmp_path / "tree")
    tape = await atartape.record(source)
    out = tmp_path / "tree.tar"
    data = b"".join([c async for c in atartape.TapePlayer(tape).stream()])
    await anyio.Path(out).write_bytes(data)
    return source, out


def extract_with(tool: str, archive: Path, dest: Path) -> None:
    dest.mkdir()
    commands = {
        "gnu": ["tar", "-xf", str(archive), "-C", str(dest)],
        "bsdtar": ["bsdtar", "-xpf", str(archive), "-C", str(dest)],
        "7zip": [str(SEVEN_ZIP), "x", "-snl", "-snld", "-y", f"-o{dest}", str(archive)],
    }
    subprocess.run(commands[tool], check=True, capture_output=True)


@pytest.mark.parametrize("tool", ["gnu", "bsdtar", "7zip"])
async def test_external_tools_extract_every_file(
    tar_file: tuple[Path, Path], tmp_path: Path, tool: str
) -> None:
    binary = {"gnu": "tar", "bsdtar": "bsdtar", "7zip": SEVEN_ZIP}[tool]
    if not binary or not shutil.which(binary):
        pytest.skip(f"{tool} is not installed here (.ci/run installs it)")
    source, archive = tar_file
    dest = tmp_path / f"out-{tool}"
    await anyio.to_thread.run_sync(extract_with, tool, archive, dest)
    compare_trees(source, dest / "tree", modes=tool != "7zip")


async def test_tarfile_extracts_every_file(tar_file: tuple[Path, Path], tmp_path: Path) -> None:
    source, archive = tar_file
    dest = tmp_path / "out-tarfile"

    def extract() -> None:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="tar")

    await anyio.to_thread.run_sync(extract)
    compare_trees(source, dest / "tree", modes=True)


async def test_gnu_tar_compare_mode_agrees(tar_file: tuple[Path, Path]) -> None:
    """``tar --compare`` checks content, mode, mtime and link targets against the disk."""
    source, archive = tar_file
    result = await anyio.run_process(
        ["tar", "--compare", "-f", str(archive), "-C", str(source.parent)], check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


async def test_sizes_of_8_gib_and_more_in_real_tools(tmp_path: Path) -> None:
    """A sparse 8 GiB + 1 file: its header (base-256 size) is read right by every tool.

    Only the header and the tail are streamed (by window); the content is a hole in the
    output file, so nothing of the 8 GiB is read or written.
    """
    root = tmp_path / "huge"
    root.mkdir()
    size = 8 * 1024**3 + 1
    with open(root / "sparse.bin", "wb") as handle:
        handle.truncate(size)
    tape = await atartape.record(root)
    player = atartape.TapePlayer(tape)
    entry = await tape.entry("huge/sparse.bin")
    head = b"".join([c async for c in player.stream(0, entry.data_offset)])
    tail_from = entry.end_offset - 4096
    tail = b"".join([c async for c in player.stream(tail_from)])
    out = tmp_path / "huge.tar"
    with open(out, "wb") as handle:
        handle.write(head)
        handle.seek(tail_from)
        handle.write(tail)
    assert out.stat().st_size == tape.total_size
    listing = await anyio.run_process(["tar", "-tvf", str(out)])
    assert str(size) in listing.stdout.decode()
    if shutil.which("bsdtar"):
        listing = await anyio.run_process(["bsdtar", "-tvf", str(out)])
        assert str(size) in listing.stdout.decode()
    with tarfile.open(out) as tf:
        assert tf.getmember("huge/sparse.bin").size == size


async def test_one_shot_and_recorded_tapes_agree(tmp_path: Path) -> None:
    source = varied_tree(tmp_path / "tree")
    tape = atartape.TarTape()
    tape.add_folder(source)
    one_shot = b"".join([e.data async for e in tape.stream() if e.type == "file_data"])
    with tarfile.open(fileobj=io.BytesIO(one_shot)) as tf:
        assert len(tf.getmembers()) == 19
    recorded = await atartape.record(source, index_path=tmp_path / "tree.db")
    assert b"".join([c async for c in atartape.TapePlayer(recorded).stream()]) == one_shot
