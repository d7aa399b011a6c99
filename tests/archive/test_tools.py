"""Archives made at test time by this machine's GNU tar and bsdtar, in every format they write
(sparse files included), read back and compared with tarfile's reading and with the sources.

A test whose tool is missing is skipped, with the reason.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from atartape.archive import open_archive
from atartape.format.members import Member
from tests.helpers import MemorySource, write

pytestmark = pytest.mark.anyio

DATA = Path(__file__).resolve().parent.parent / "data" / "archives"
MTIME = 1_700_000_000

# (label, command, long names allowed): every format each tool writes.
FORMATS = [
    ("gnutar-v7", ["tar", "--format=v7"], False),
    ("gnutar-oldgnu", ["tar", "--format=oldgnu"], True),
    ("gnutar-gnu", ["tar", "--format=gnu"], True),
    ("gnutar-ustar", ["tar", "--format=ustar"], False),
    ("gnutar-posix", ["tar", "--format=posix"], True),
    ("gnutar-gnu-sparse", ["tar", "--format=gnu", "-S"], True),
    ("gnutar-posix-sparse", ["tar", "--format=posix", "-S"], True),
    ("bsdtar-default", ["bsdtar"], True),
    ("bsdtar-v7", ["bsdtar", "--format", "v7"], False),
    ("bsdtar-ustar", ["bsdtar", "--format", "ustar"], False),
    ("bsdtar-gnutar", ["bsdtar", "--format", "gnutar"], True),
    ("bsdtar-pax", ["bsdtar", "--format", "pax"], True),
]


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed on this machine")
    if tool == "tar":
        version = subprocess.run(["tar", "--version"], capture_output=True, check=True).stdout
        if b"GNU tar" not in version:
            pytest.skip("tar is not GNU tar")


def make_source(root: Path, *, long_names: bool) -> None:
    write(root / "a.txt", "alpha\n")
    write(root / "bin" / "data.bin", os.urandom(70_000))
    write(root / "empty.txt", "")
    write(root / "caf\u00e9.txt", "unicode name")
    write(root / "mode.sh", "#!/bin/sh\n", mode=0o750)
    (root / "hard.txt").hardlink_to(root / "a.txt")
    (root / "sym").symlink_to("bin/data.bin")
    (root / "emptydir").mkdir()
    with (root / "holes.bin").open("wb") as handle:  # a sparse file: data, a hole, data
        handle.write(b"head" * 1024)
        handle.seek(300_000)
        handle.write(b"tail" * 300)
    if long_names:
        write(root / ("n" * 90) / ("m" * 90) / ("o" * 90 + ".txt"), "a path of 280 bytes")
        (root / "longlink").symlink_to("../" + "x" * 120)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)


def tarfile_reading(data: bytes) -> list[dict[str, object]]:
    """What tarfile makes of an archive, in the form our members are compared in."""
    kinds = {
        tarfile.REGTYPE: "file",
        tarfile.AREGTYPE: "file",
        tarfile.GNUTYPE_SPARSE: "file",
        tarfile.DIRTYPE: "dir",
        tarfile.SYMTYPE: "symlink",
        tarfile.LNKTYPE: "hardlink",
    }
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for info in tf:
            kind = kinds[info.type]
            content = None
            if kind in ("file", "hardlink"):
                reader = tf.extractfile(info)
                assert reader is not None
                content = hashlib.sha256(reader.read()).hexdigest()
            out.append(
                {
                    "name": info.name.rstrip("/"),
                    "type": kind,
                    "size": info.size if kind == "file" else 0,
                    "mode": info.mode & 0o7777,
                    "mtime": math.floor(info.mtime),
                    "linkname": info.linkname,
                    "sha256": content,
                }
            )
    return out


async def our_reading(data: bytes) -> tuple[list[Member], list[dict[str, object]]]:
    async with open_archive(MemorySource(data)) as archive:
        members = [m async for m in archive.members()]
        out = []
        for member in members:
            content = None
            if member.is_file or member.is_hardlink:
                content = hashlib.sha256(await archive.read(member)).hexdigest()
            out.append(
                {
                    "name": member.name,
                    "type": member.type.value,
                    "size": member.size,
                    "mode": member.mode,
                    "mtime": math.floor(member.mtime),
                    "linkname": member.linkname,
                    "sha256": content,
                }
            )
        return members, out


def tree_digest(root: Path) -> dict[str, object]:
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = ("symlink", os.readlink(path))
        elif path.is_dir():
            found[rel] = ("dir", path.stat().st_mode & 0o777)
        else:
            content = hashlib.sha256(path.read_bytes()).hexdigest()
            found[rel] = ("file", content, path.stat().st_mode & 0o777)
    return found


@pytest.mark.parametrize(("label", "command", "long_names"), FORMATS, ids=[f[0] for f in FORMATS])
async def test_tool_formats(
    label: str, command: list[str], long_names: bool, tmp_path: Path
) -> None:
    need(command[0])
    source = tmp_path / "src"
    make_source(source, long_names=long_names)
    archive_path = tmp_path / f"{label}.tar"
    subprocess.run(
        [*command, "-cf", str(archive_path), "-C", str(tmp_path), "src"],
        check=True,
        capture_output=True,
    )
    data = archive_path.read_bytes()
    members, ours = await our_reading(data)
    assert ours == tarfile_reading(data)
    if label.endswith("-sparse"):  # GNU tar -S finds the hole by reading: stored as sparse
        holes = next(m for m in members if m.name == "src/holes.bin")
        assert holes.sparse is not None and holes.size == 300_000 + 1200
    dest = tmp_path / "out"
    async with open_archive(archive_path) as archive:
        await archive.extract_all(dest)
    assert tree_digest(dest / "src") == tree_digest(source)
    assert (dest / "src/hard.txt").stat().st_ino == (dest / "src/a.txt").stat().st_ino


async def test_make_local_sparse_archives(tmp_path: Path) -> None:
    """The five sparse archives of tests/data/archives/make_local.sh (GNU tar's old-GNU and
    PAX 0.0, 0.1, 1.0; bsdtar's default), against the source files' digests and tarfile."""
    need("bash")
    if shutil.which("tar") is None and shutil.which("bsdtar") is None:
        pytest.skip("neither GNU tar nor bsdtar is installed")
    out = tmp_path / "made"
    subprocess.run(["bash", str(DATA / "make_local.sh"), str(out)], check=True, capture_output=True)
    manifest = (out / "MANIFEST").read_text().splitlines()
    digests = {line.split()[1]: line.split()[2] for line in manifest if line.startswith("SHA256")}
    made = [line.split()[0] for line in manifest if not line.startswith("SHA256")]
    assert made, "make_local.sh made no archive"
    sizes = {"sparse.bin": 1024 * 1024 + 1000, "holes.bin": 64 * 1024}
    for name in made:
        data = (out / name).read_bytes()
        members, ours = await our_reading(data)
        assert [m.name for m in members] == ["sparse.bin", "holes.bin"], name
        assert {m.name: m.size for m in members} == sizes, name
        assert {o["name"]: o["sha256"] for o in ours} == digests, name
        assert ours == tarfile_reading(data), name
        sparse = members[0].sparse
        if sparse is not None:  # the file system reported the holes
            assert len(sparse.regions) == 8 and sparse.data_size == 7 * 4096 + 1000
        dest = tmp_path / name
        async with open_archive(out / name) as archive:
            await archive.extract_all(dest)
        for file, digest in digests.items():
            path = dest / file
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
            if sparse is not None and file == "holes.bin":
                assert path.stat().st_blocks == 0  # written as a hole, not as zeros
