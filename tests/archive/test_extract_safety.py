"""Safe extraction: every refusal, nothing outside the destination, no half-written files."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from atartape.archive import open_archive
from atartape.errors import ArchiveFormatError, TarTapeError, UnsafeMemberError
from tests.helpers import MemorySource

pytestmark = pytest.mark.anyio

MTIME = 1_600_000_000


def archive(*members: tuple[str, bytes, str, bytes]) -> bytes:
    """A tar of (name, type, linkname, content) members, built with tarfile (PAX: any name)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, linkname, content in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime, info.size = kind, linkname, MTIME, len(content)
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            tf.addfile(info, io.BytesIO(content) if content else None)
    return out.getvalue()


def file(name: str, content: bytes = b"payload") -> tuple[str, bytes, str, bytes]:
    return (name, tarfile.REGTYPE, "", content)


def symlink(name: str, target: str) -> tuple[str, bytes, str, bytes]:
    return (name, tarfile.SYMTYPE, target, b"")


def hardlink(name: str, target: str) -> tuple[str, bytes, str, bytes]:
    return (name, tarfile.LNKTYPE, target, b"")


def special(name: str, kind: bytes) -> tuple[str, bytes, str, bytes]:
    return (name, kind, "", b"")


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    """A destination, and a sibling folder that must stay untouched (``outside``)."""
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    return dest, outside


def snapshot(folder: Path) -> dict[str, bytes | str]:
    return {
        str(p.relative_to(folder)): os.readlink(p) if p.is_symlink() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


Prepare = Callable[[Path, Path], None]


def _nothing(dest: Path, outside: Path) -> None:
    pass


def _dest_link_to_outside(dest: Path, outside: Path) -> None:
    (dest / "evil").symlink_to(outside)


def _dest_link_up(dest: Path, outside: Path) -> None:
    (dest / "up").symlink_to("..")


CASES: list[tuple[str, list[tuple[str, bytes, str, bytes]], str, str, Prepare]] = [
    (
        "absolute name",
        [file("/tmp/atartape-evil.txt")],
        "/tmp/atartape-evil.txt",
        "absolute",
        _nothing,
    ),
    ("dot-dot name", [file("../outside/new.txt")], "../outside/new.txt", "'..'", _nothing),
    ("inner dot-dot", [file("a/../../outside/x")], "a/../../outside/x", "'..'", _nothing),
    ("absolute symlink", [symlink("passwd", "/etc/passwd")], "passwd", "absolute", _nothing),
    ("escaping symlink", [symlink("a/b", "../../outside/secret.txt")], "a/b", "outside", _nothing),
    (
        "symlink via link",
        [symlink("x", "up/outside/secret.txt")],
        "x",
        "resolves outside",
        _dest_link_up,
    ),
    ("absolute hardlink", [hardlink("h", "/etc/passwd")], "h", "absolute", _nothing),
    ("dot-dot hardlink", [hardlink("h", "../outside/secret.txt")], "h", "'..'", _nothing),
    (
        "hardlink via link",
        [hardlink("h", "evil/secret.txt")],
        "h",
        "through a symlink",
        _dest_link_to_outside,
    ),
    (
        "write through archive symlink",
        [symlink("sub", "."), file("sub/x.txt")],
        "sub/x.txt",
        "through the symlink",
        _nothing,
    ),
    (
        "write through dest symlink",
        [file("evil/planted.txt")],
        "evil/planted.txt",
        "through the symlink",
        _dest_link_to_outside,
    ),
    (
        "folder through dest symlink",
        [("evil", tarfile.DIRTYPE, "", b"")],
        "evil",
        "through the symlink",
        _dest_link_to_outside,
    ),
    ("char device", [special("null", tarfile.CHRTYPE)], "null", "character device", _nothing),
    ("block device", [special("sda", tarfile.BLKTYPE)], "sda", "block device", _nothing),
    ("fifo", [special("pipe", tarfile.FIFOTYPE)], "pipe", "FIFO", _nothing),
    (
        "the destination itself",
        [symlink("./", "elsewhere")],
        ".",
        "destination folder itself",
        _nothing,
    ),
]


@pytest.mark.parametrize(
    ("members", "culprit", "reason", "prepare"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_refusals(
    members: list[tuple[str, bytes, str, bytes]],
    culprit: str,
    reason: str,
    prepare: Prepare,
    arena: tuple[Path, Path],
) -> None:
    dest, outside = arena
    prepare(dest, outside)
    before = snapshot(outside)
    data = archive(file("ok.txt", b"fine"), *members)
    async with open_archive(MemorySource(data)) as tar:
        with pytest.raises(UnsafeMemberError, match=reason) as info:
            await tar.extract_all(dest)
        assert info.value.member is not None
        assert info.value.member.rstrip("/") == culprit.rstrip("/")
        assert repr(culprit.rstrip("/"))[1:-1] in str(info.value)
        assert isinstance(info.value, TarTapeError)
        # The same refusal when that member is extracted alone.
        with pytest.raises(UnsafeMemberError):
            await tar.extract(culprit, dest)
    assert snapshot(outside) == before
    assert not Path("/tmp/atartape-evil.txt").exists()
    assert (dest / "ok.txt").read_bytes() == b"fine"  # extracted before the refusal
    assert not list(dest.rglob(".atartape-*"))


async def test_allowed_links_and_replacements(arena: tuple[Path, Path]) -> None:
    dest, outside = arena
    # An existing symlink at a file's final name is replaced, never followed.
    (dest / "target.txt").symlink_to(outside / "secret.txt")
    data = archive(
        file("target.txt", b"new content"),
        ("d", tarfile.DIRTYPE, "", b""),
        file("d/f.txt", b"f"),
        symlink("d/up", ".."),
        symlink("d/self", "f.txt"),
        hardlink("d/again", "d/f.txt"),
    )
    async with open_archive(MemorySource(data)) as tar:
        await tar.extract_all(dest)
    assert not (dest / "target.txt").is_symlink()
    assert (dest / "target.txt").read_bytes() == b"new content"
    assert (outside / "secret.txt").read_text() == "secret"
    assert os.readlink(dest / "d/up") == ".." and os.readlink(dest / "d/self") == "f.txt"
    assert (dest / "d/again").stat().st_ino == (dest / "d/f.txt").stat().st_ino
    assert int((dest / "d").stat().st_mtime) == MTIME


async def test_modes_are_set_without_special_bits(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for name, mode in (("setuid", 0o4755), ("private", 0o600), ("ro-dir", 0o555)):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, MTIME
            if name == "ro-dir":
                info.type = tarfile.DIRTYPE
            tf.addfile(info)
        inner = tarfile.TarInfo("ro-dir/inside.txt")
        inner.size, inner.mode, inner.mtime = 2, 0o644, MTIME
        tf.addfile(inner, io.BytesIO(b"in"))
    dest = tmp_path / "modes"
    async with open_archive(MemorySource(out.getvalue())) as tar:
        await tar.extract_all(dest)
    assert (dest / "setuid").stat().st_mode & 0o7777 == 0o755
    assert (dest / "private").stat().st_mode & 0o777 == 0o600
    assert (dest / "ro-dir").stat().st_mode & 0o777 == 0o555
    assert (dest / "ro-dir/inside.txt").read_bytes() == b"in"
    os.chmod(dest / "ro-dir", 0o755)  # let pytest clean up


async def test_sparse_and_conflicts(tmp_path: Path) -> None:
    # A PAX 1.0 sparse member whose data has no room for its map is malformed.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("sparse.bin")
        info.size, info.pax_headers = 4, {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        tf.addfile(info, io.BytesIO(b"data"))
    async with open_archive(MemorySource(out.getvalue())) as tar:
        with pytest.raises(ArchiveFormatError, match="sparse"):
            await tar.extract_all(tmp_path / "sparse")
        with pytest.raises(ArchiveFormatError, match="sparse"):
            await tar.read("sparse.bin")
    # A well-formed one is a file like any other, its holes read and written as holes.
    map_text = b"2\n0\n3\n5000\n2\n".ljust(512, b"\0")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("GNUSparseFile.0/sparse.bin")
        info.size = len(map_text) + 5
        info.pax_headers = {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": "sparse.bin",
            "GNU.sparse.realsize": "9000",
        }
        tf.addfile(info, io.BytesIO(map_text + b"abcde"))
    expected = b"abc" + bytes(4997) + b"de" + bytes(3998)
    async with open_archive(MemorySource(out.getvalue())) as tar:
        assert await tar.read("sparse.bin") == expected
        await tar.extract_all(tmp_path / "sparse")
    assert (tmp_path / "sparse" / "sparse.bin").read_bytes() == expected
    dest = tmp_path / "conflict"
    (dest / "name").mkdir(parents=True)
    async with open_archive(MemorySource(archive(file("name")))) as tar:
        with pytest.raises(UnsafeMemberError, match="folder is in the way"):
            await tar.extract_all(dest)
    (dest / "plain").write_text("x")
    async with open_archive(MemorySource(archive(file("plain/below.txt")))) as tar:
        with pytest.raises(UnsafeMemberError, match="not a folder"):
            await tar.extract_all(dest)


class FailingSource(MemorySource):
    """Fails (or waits forever) once reads reach ``fail_at``."""

    def __init__(self, data: bytes, fail_at: int, *, hang: bool = False) -> None:
        super().__init__(data)
        self.fail_at = fail_at
        self.hang = hang
        self.stuck = anyio.Event()

    async def read_range(self, start: int, end: int) -> bytes:
        if end > self.fail_at:
            if self.hang:
                self.stuck.set()
                await anyio.sleep_forever()
            raise OSError("the network went away")
        return await super().read_range(start, end)


@pytest.mark.parametrize("how", ["error", "cancel"])
async def test_interrupted_extraction_leaves_no_half_file(tmp_path: Path, how: str) -> None:
    big = os.urandom(3 * 1024 * 1024 + 17)
    data = archive(file("first.txt", b"1"), file("big.bin", big), file("after.txt", b"2"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        member = tf.getmember("big.bin")
    fail_at = member.offset_data + 2 * 1024 * 1024 + 5  # during the third chunk
    source = FailingSource(data, fail_at, hang=how == "cancel")
    dest = tmp_path / "dest"
    async with open_archive(source) as tar:
        if how == "error":
            with pytest.raises(OSError, match="went away"):
                await tar.extract_all(dest)
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(tar.extract_all, dest)
                await source.stuck.wait()
                tg.cancel_scope.cancel()
    assert sorted(p.name for p in dest.iterdir()) == ["first.txt"]
