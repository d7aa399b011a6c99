"""Opening beneath a folder: never through a symlink, on both ways of resolving a path."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from atartape._engine import beneath
from atartape._engine.beneath import Beneath, NotBeneathError, UnsafePathError
from tests.helpers import write

READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@pytest.fixture(params=["openat2", "walk"])
def resolution(request: pytest.FixtureRequest) -> Iterator[str]:
    """Both ways: ``openat2`` (skipped where the kernel lacks it) and component by component."""
    if request.param == "openat2" and not beneath.use_openat2(True):
        pytest.skip("openat2 is not available here")
    if request.param == "walk":
        beneath.use_openat2(False)
    try:
        yield request.param
    finally:
        beneath.use_openat2(True)


@pytest.fixture
def share(tmp_path: Path) -> Path:
    """share/{a.txt, d/e/f.txt, link -> a.txt, up -> d}, and outside/e/f.txt beside it."""
    root = tmp_path / "share"
    write(root / "a.txt", "a")
    write(root / "d" / "e" / "f.txt", "inside")
    (root / "link").symlink_to("a.txt")
    (root / "up").symlink_to("d")
    write(tmp_path / "outside" / "e" / "f.txt", "SECRET")
    return root


def read(root: Beneath, rel: bytes) -> bytes:
    fd = root.open(rel, READ)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_opens_stats_and_lists_beneath(share: Path, resolution: str) -> None:
    with Beneath(str(share)) as root:
        assert read(root, b"d/e/f.txt") == b"inside"
        assert read(root, b"a.txt") == b"a"
        assert root.lstat(b"link").st_mode & 0o170000 == 0o120000  # the link, not its target
        assert root.lstat(b"").st_ino == share.stat().st_ino
        with root.parent(b"link") as (dir_fd, name):
            assert os.readlink(name, dir_fd=dir_fd) == b"a.txt"  # a target is data
        assert sorted(root.listdir(b"d/e")) == [b"f.txt"]
        assert sorted(root.listdir(b"")) == [b"a.txt", b"d", b"link", b"up"]


def test_a_symlinked_folder_on_the_path_is_refused(
    share: Path, tmp_path: Path, resolution: str
) -> None:
    with Beneath(str(share)) as root:
        with pytest.raises(NotBeneathError):
            read(root, b"up/e/f.txt")  # inside the folder, but through a symlink: refused too
        (share / "d").rename(tmp_path / "d-away")
        (share / "d").symlink_to(tmp_path / "outside")
        for rel in (b"d/e/f.txt", b"d/e"):
            with pytest.raises(NotBeneathError):
                read(root, rel)
            with pytest.raises(NotBeneathError):
                root.lstat(rel)
        with pytest.raises(NotBeneathError):
            root.listdir(b"d")  # the folder asked for is the symlink
        with pytest.raises(OSError) as info:  # the last component: O_NOFOLLOW's own ELOOP
            read(root, b"link")
        assert info.value.errno == errno.ELOOP and not isinstance(info.value, NotBeneathError)


def test_a_file_in_place_of_a_folder_is_missing(share: Path, resolution: str) -> None:
    with Beneath(str(share)) as root:
        with pytest.raises(OSError) as info:
            read(root, b"a.txt/x")
        assert info.value.errno == errno.ENOTDIR and not isinstance(info.value, NotBeneathError)
        with pytest.raises(FileNotFoundError):
            read(root, b"d/nothing/x")


@pytest.mark.parametrize(
    "rel", [b"../outside/e/f.txt", b"d/../a.txt", b"./a.txt", b"d//e", b"/etc/passwd", b"a\0b"]
)
def test_unclean_paths_are_refused_before_the_disk(share: Path, rel: bytes) -> None:
    with Beneath(str(share)) as root:
        with pytest.raises(UnsafePathError):
            read(root, rel)
        with pytest.raises(UnsafePathError):
            root.lstat(rel)
        with pytest.raises(UnsafePathError):
            root.listdir(rel)


def test_every_descriptor_is_closed(share: Path, tmp_path: Path, resolution: str) -> None:
    before = open_fds()
    root = Beneath(str(share))
    for _ in range(3):
        read(root, b"d/e/f.txt")
        root.lstat(b"d/e/f.txt")
        root.listdir(b"d/e")
    (share / "d").rename(tmp_path / "d-away")
    (share / "d").symlink_to(tmp_path / "outside")
    for rel in (b"d/e/f.txt", b"d/e/g", b"a.txt/x"):
        with pytest.raises(OSError):
            read(root, rel)
    root.hold()  # a second user: the handle stays open until both let go
    root.close()
    assert open_fds() != before
    root.release()
    assert open_fds() == before
    with pytest.raises(ValueError, match="closed"):
        root.hold()
