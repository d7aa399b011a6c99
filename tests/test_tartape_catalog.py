"""tartape 3.0.3 catalogs, made at test time by tartape itself, opened by atartape.

They are found beside their folder, listed, located and restored offline, and they play
tartape's own bytes (its header profile), so an upload begun with tartape can be finished here.
Their promise is tartape's: whole-second mtimes (see the docstring of
``atartape._engine.tartape_catalog``).
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import subprocess
import tarfile
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

import atartape
from tests.helpers import write

tartape = pytest.importorskip("tartape", reason="tartape 3 cannot be imported on Python 3.10")

# tartape 3.0.3 leaves its catalog connections to the garbage collector (``with
# sqlite3.connect(...)`` commits, it does not close), which Python 3.13 reports.
UNCLOSED_BY_TARTAPE = "ignore:unclosed database:ResourceWarning"

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings(UNCLOSED_BY_TARTAPE)]

MTIME = 1_700_000_000
DEEP = "/".join(f"level_{i:02d}_directory_name" for i in range(11))


@pytest.fixture(autouse=True)
def tartape_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tartape keeps a hash cache under ~/.tartape: keep it in the test's folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(autouse=True)
def collect_tartapes_connections() -> Iterator[None]:
    """Collect the connections tartape left here, so no later test is blamed for them."""
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed database", ResourceWarning)
        gc.collect()


def make_tree(root: Path, *, long_paths: bool = False) -> Path:
    """The tree of the tartape notes, plus the cases where headers could differ."""
    write(root / "hello.txt", "Hello\n", mode=0o664)
    write(root / "run.sh", "#!/bin/sh\necho hi\n", mode=0o700)
    write(root / "secret.txt", "secret", mode=0o600)
    write(root / "empty.txt", b"")
    write(root / "sub" / "a.txt", "a" * 600)
    write(root / "sub-x.txt", "subx")
    write(root / "sub.txt", "sub")
    write(root / "café.txt", "unicode")
    write(root / "block.bin", bytes(range(256)) * 2)  # exactly 512 bytes: no padding
    (root / "emptydir").mkdir()
    (root / "link").symlink_to("hello.txt")
    # A folder whose slashed path is between 100 and 156 bytes: cut before its own name.
    write(root / ("d" * 60) / ("e" * 45) / "f.txt", "in a long folder")
    if long_paths:
        write(root / ("L" * 146 + ".txt"), "long name")
        write(root / DEEP / "report.pdf", "deep")
        write(root / ("D" * 120) / "x.txt", "under a long folder")
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    os.utime(root, (MTIME, MTIME))
    # A fraction that tartape's float rounds up to the next second.
    os.utime(root / "sub.txt", ns=(MTIME * 10**9 + 999_999_999,) * 2)
    return root


def tartape_record(root: Path, **options: Any) -> tuple[Path, bytes]:
    """Record ``root`` with tartape 3.0.3 (a worker thread's job) and play it whole."""
    tape = tartape.record(str(root), **options)
    try:
        data = b"".join(tape.play())
    finally:
        tape.close()
    catalog = options.get("catalog_path") or root.parent / f"{root.name}.tartape"
    return Path(catalog), data


def tartape_volumes(catalog: Path, root: Path, size: str, tag: str | None, out: Path) -> list[Path]:
    """Write tartape's own volumes of ``catalog`` to ``out`` (it keeps their sha256)."""
    out.mkdir(exist_ok=True)
    tape = tartape.open(str(root), catalog_path=str(catalog))
    written = []
    try:
        for volume in tape.iter_volumes(size, tag=tag):
            with volume:
                data = volume.read()
            target = out / volume.name
            target.write_bytes(data)
            written.append(target)
    finally:
        tape.close()
    return written


async def played(tape: atartape.Tape, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in atartape.TapePlayer(tape).chunks(start, end)])


def beside(catalog: Path) -> list[str]:
    return sorted(p.name for p in catalog.parent.iterdir() if p.name.startswith(catalog.name))


OPTIONS = [
    pytest.param({}, id="default"),
    pytest.param({"anonymize": False}, id="owners"),
    pytest.param({"checksum": "md5"}, id="md5"),
    pytest.param({"auto_truncate": True}, id="auto_truncate"),
]


@pytest.mark.parametrize("options", OPTIONS)
async def test_a_tartape_catalog_plays_tartapes_bytes(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    root = make_tree(tmp_path / "dataset", long_paths="auto_truncate" in options)
    if "anonymize" in options:
        os.lchown(root / "hello.txt", 1234, 5678)
        os.lchown(root / "link", 1, 1)
    catalog, expected = await anyio.to_thread.run_sync(partial(tartape_record, root, **options))
    tape = await atartape.Tape.discover(root)
    assert tape.index_format == "tartape-3" and tape.index_path == str(catalog)
    assert tape.total_size == len(expected) and tape.arc_root == "dataset"
    data = await played(tape)
    assert data == expected  # tartape's bytes, header for header
    for start, end in [(0, 512), (700, 5000), (len(data) - 1500, None), (513, 514)]:
        assert await played(tape, start, end) == expected[start:end]
    # Listed like any tape; mtimes and checksums as tartape took them.
    entries = {e.arc_path: e async for e in tape.entries()}
    assert entries["dataset/sub.txt"].mtime == MTIME + 1  # int(st_mtime) rounded up
    assert entries["dataset/link"].is_symlink and entries["dataset/link"].linkname == "hello.txt"
    if "checksum" in options:
        assert entries["dataset/hello.txt"].checksum == hashlib.md5(b"Hello\n").hexdigest()
        assert await atartape.TapePlayer(tape).verify(content=True)
    if "auto_truncate" in options:
        assert tape.auto_truncated > 0
        found = await tape.entry(f"dataset/{DEEP}/report.pdf")  # by its original path
        assert found.source_path == f"{DEEP}/report.pdf"
    assert await atartape.TapePlayer(tape).verify()
    assert beside(catalog) == [catalog.name]  # no -wal or -shm left behind


async def test_offline_locate_and_restore_from_tartapes_volumes(tmp_path: Path) -> None:
    """tartape's "zero-disk surgical reconstruction", with atartape reading its catalog."""
    root = make_tree(tmp_path / "dataset")
    write(root / "random.bin", os.urandom(20_000))
    os.utime(root, (MTIME, MTIME))
    catalog, expected = await anyio.to_thread.run_sync(tartape_record, root)
    out = tmp_path / "volumes"
    parts = await anyio.to_thread.run_sync(
        tartape_volumes, catalog, root, "4KB", "offline_layout", out
    )
    originals = {
        name: (root / name).read_bytes() for name in ("random.bin", "sub/a.txt", "hello.txt")
    }
    await anyio.to_thread.run_sync(shutil.rmtree, root)

    tape = await atartape.Tape.open(catalog)
    layout = tape.get_layout("offline_layout")
    assert layout.registered and layout.volume_size == 4096  # tartape's "4KB" is 4 KiB
    assert [layout.volume(i).name for i in range(layout.count)] == [p.name for p in parts]
    assert layout.volume(0).checksum_algorithm == "sha256"
    for index, part in enumerate(parts):
        assert await atartape.verify_volume(tape, part, index, tag="offline_layout")
        assert await atartape.verify_volume(catalog, part)  # by name, the default layout

    async def fetch(volume: int, start: int, end: int) -> bytes:
        data = await anyio.to_thread.run_sync((out / layout.names[volume]).read_bytes)
        return data[start:end]

    for name, content in originals.items():
        where = await tape.locate(f"dataset/{name}", "offline_layout")
        assert where.layout_tag == "offline_layout"
        restored = await atartape.restore_file(where, fetch, tmp_path / "restored" / name)
        assert restored.read_bytes() == content
    assert b"".join(p.read_bytes() for p in parts) == expected


async def test_volumes_of_tartapes_layout_are_tartapes(tmp_path: Path) -> None:
    """An upload of tartape's parts, begun with tartape, finished with atartape."""
    root = make_tree(tmp_path / "dataset")
    catalog, _ = await anyio.to_thread.run_sync(tartape_record, root)
    parts = await anyio.to_thread.run_sync(
        tartape_volumes, catalog, root, "2KB", "s3", tmp_path / "out"
    )
    tape = await atartape.Tape.discover(root)
    volumes = atartape.TapePlayer(tape).volumes("s3")
    assert [v.name for v in volumes] == [p.name for p in parts]
    for volume, part in zip(volumes, parts):
        assert b"".join([c async for c in volume]) == part.read_bytes()
    # "2KB" is 2000 bytes to atartape: beside tartape's 2 KiB layout it is refused, by name.
    with pytest.raises(atartape.AmbiguousLayoutError, match="'s3'"):
        atartape.TapePlayer(tape).volumes("2KB")
    # A layout tartape tagged itself ("1KB", 1024 bytes) is found by that tag.
    await anyio.to_thread.run_sync(tartape_volumes, catalog, root, "1KB", None, tmp_path / "o")
    tape = await atartape.Tape.discover(root)
    assert sorted(layout.tag for layout in tape.layouts) == ["1KB", "s3"]
    assert atartape.TapePlayer(tape).volumes("1KB")[0].size == 1024
    with pytest.raises(atartape.ReadOnlyIndexError, match="tartape-3 catalog"):
        await tape.register_layout(1024)
    assert tape.get_layout("s3").checksum(0) == hashlib.sha256(parts[0].read_bytes()).hexdigest()


async def test_the_promise_is_whole_seconds(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "dataset")
    await anyio.to_thread.run_sync(tartape_record, root)
    tape = await atartape.Tape.discover(root)
    # A new mtime, another second: refused before any byte of the file.
    os.utime(root / "hello.txt", (MTIME + 5, MTIME + 5))
    with pytest.raises(atartape.TarIntegrityError, match=r"recorded 1700000000 s") as info:
        await played(tape)
    assert info.value.arc_path == "dataset/hello.txt" and info.value.reason == "mtime"
    os.utime(root / "hello.txt", (MTIME, MTIME))
    # What tartape's catalog cannot tell: a rewrite of the same size within the same second.
    # (The documented limit of these catalogs; an atartape recording compares nanoseconds.)
    write(root / "hello.txt", "HELLO\n")
    os.utime(root / "hello.txt", ns=(MTIME * 10**9 + 123,) * 2)
    assert await atartape.TapePlayer(tape).verify()
    with tarfile.open(fileobj=_io(await played(tape))) as archive:
        member = archive.extractfile("dataset/hello.txt")
        assert member is not None and member.read() == b"HELLO\n"
    # A folder whose names changed (its mtime moved) is refused; the root folder is exempt.
    write(root / "new-in-root.txt", "ignored: not in the tape")
    write(root / "sub" / "new.txt", "new")
    with pytest.raises(atartape.TarIntegrityError, match="folder changed") as info:
        await played(tape)
    assert info.value.arc_path == "dataset/sub"


def _io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


async def test_a_catalog_recorded_again_is_another_recording(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "dataset")
    await anyio.to_thread.run_sync(tartape_record, root)
    tape = await atartape.Tape.discover(root)
    again = await atartape.Tape.discover(root)
    assert again.identity == tape.identity  # computed from the rows, the same each time
    write(root / "more.txt", "more")
    await anyio.to_thread.run_sync(partial(tartape_record, root, overwrite=True))
    with pytest.raises(atartape.TapeChangedError):
        await played(tape)
    renewed = await atartape.Tape.discover(root)
    assert renewed.identity != tape.identity
    assert len(await played(renewed)) == renewed.total_size


async def test_tartapes_legacy_location(tmp_path: Path) -> None:
    """A tartape catalog at <folder>/.tartape/index.db, where atartape keeps its own."""
    root = make_tree(tmp_path / "dataset")
    legacy = root / ".tartape" / "index.db"
    _, expected = await anyio.to_thread.run_sync(
        partial(tartape_record, root, catalog_path=str(legacy))
    )
    tape = await atartape.Tape.discover(root)
    assert tape.index_format == "tartape-3" and tape.source_root == str(root)
    assert await played(tape) == expected


@pytest.fixture
def make_read_only() -> Iterator[Callable[[Path], None]]:
    mounted: list[Path] = []

    def make(folder: Path) -> None:
        done = subprocess.run(["mount", "-o", "bind,ro", str(folder), str(folder)], check=False)
        if done.returncode != 0:
            pytest.skip("cannot make a read-only bind mount here")
        mounted.append(folder)

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=True)


async def test_a_catalog_on_a_read_only_place(
    tmp_path: Path, make_read_only: Callable[[Path], None]
) -> None:
    """tartape leaves its catalog in WAL mode, which SQLite cannot open read-only where it
    cannot create its -shm file: it is read as immutable there."""
    root = make_tree(tmp_path / "dataset")
    catalog, expected = await anyio.to_thread.run_sync(tartape_record, root)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shutil.copy(catalog, shelf / catalog.name)
    await anyio.to_thread.run_sync(make_read_only, shelf)
    tape = await atartape.Tape.open(shelf / catalog.name, source_root=root)
    assert await played(tape) == expected
    assert await tape.locate("dataset/sub/a.txt", 1024)
    assert os.listdir(shelf) == [catalog.name]


async def test_a_sidecar_is_found_only_beside_its_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "dataset")
    with pytest.raises(atartape.TapeNotFoundError, match=r"dataset\.tartape"):
        await atartape.Tape.discover(root)
    catalog, _ = await anyio.to_thread.run_sync(tartape_record, root)
    moved = tmp_path / "elsewhere" / "my.tartape"
    moved.parent.mkdir()
    catalog.rename(moved)
    with pytest.raises(atartape.TapeNotFoundError):
        await atartape.Tape.discover(root)
    tape = await atartape.Tape.open(moved, source_root=root)  # any path, with its source
    assert tape.entry_count == 16  # the root, 12 files and links, 3 folders
