"""An archive ends where its blocks say, and extraction owns only what it creates (issue 20,
items 4 and 5).

- A cut inside a header block, inside a member's data or inside its padding is an
  :class:`ArchiveFormatError` from ``members()`` and ``extract_all()``, whatever the source (a
  range source, a file, a gzip/bzip2/xz/zstd stream, seekable zstd, age): GNU tar exits 2
  ("Unexpected EOF in archive") for the last two and reads the first as the end; atartape
  refuses all three. An archive that ends on a block boundary after a member, without its zero
  blocks, is read as GNU tar reads it, with ``possibly_truncated`` true.
- A ``.`` or ``./`` member never changes the destination folder's mode or mtime.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from atartape.archive import Archive, open_archive
from atartape.errors import ArchiveFormatError
from atartape.format import age
from tests.archive import tarbuild as tb
from tests.archive.test_fuzz import seekable_zstd, zstd_stream
from tests.helpers import MemorySource

pytestmark = pytest.mark.anyio

IDENTITY = age.X25519Identity.generate()
LAYERS: dict[str, Callable[[bytes], bytes]] = {
    "range source": lambda data: data,
    "file": lambda data: data,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": zstd_stream,
    "seekable zstd": seekable_zstd,
    "age": lambda data: age.seal_bytes(data, [IDENTITY.recipient]),
}

# a: header 0-512, data 512-516, padding to 1024; b: header 1024-1536, data 1536-2136, padding
# to 2560; then the two zero blocks.
FULL = tb.file("a", b"AAAA") + tb.file("b", b"B" * 600) + tb.end()
CUTS = {
    "inside b's header": 1100,
    "inside b's data": 1800,
    "inside b's padding": 2148,
    "one byte short of b's end": 2559,
    "inside the end marker's first block": 2660,
}


@contextlib.asynccontextmanager
async def opened(layer: str, data: bytes, tmp_path: Path) -> AsyncIterator[Archive]:
    """The tar ``data`` behind the layer (compressed, sealed, in a file or in memory)."""
    wrapped = LAYERS[layer](data)
    source: object = MemorySource(wrapped)
    if layer == "file":
        source = tmp_path / "archive.tar"
        (tmp_path / "archive.tar").write_bytes(wrapped)
    async with open_archive(source, age_identity=str(IDENTITY)) as archive:  # type: ignore[arg-type]
        yield archive


@pytest.mark.parametrize("layer", sorted(LAYERS))
async def test_a_cut_inside_any_block_is_an_error(layer: str, tmp_path: Path) -> None:
    messages: dict[str, str] = {}
    for label, cut in CUTS.items():
        async with opened(layer, FULL[:cut], tmp_path) as archive:
            listed = []
            with pytest.raises(ArchiveFormatError, match="truncated") as info:
                async for member in archive.members():
                    listed.append(member.name)
            assert listed in (["a"], ["a", "b"]), label
            if "data" not in label:  # a stream yields b before its data: see the reader
                assert listed == ["a", "b"] if cut > 1536 else ["a"], label
            messages[label] = str(info.value)
        async with opened(layer, FULL[:cut], tmp_path) as archive:
            dest = tmp_path / f"dest-{cut}"
            with pytest.raises(ArchiveFormatError, match="truncated"):
                await archive.extract_all(dest)
            assert (dest / "a").read_bytes() == b"AAAA", label
            with pytest.raises(ArchiveFormatError, match="truncated"):
                await archive.check()  # what refuses it before anything is written
    assert "padding of 'b'" in messages["inside b's padding"]
    assert "padding of 'b'" in messages["one byte short of b's end"]
    assert "header block" in messages["inside b's header"]
    assert "header block" in messages["inside the end marker's first block"]
    await check_boundaries(layer, tmp_path)


async def check_boundaries(layer: str, tmp_path: Path) -> None:
    """What ends on a block boundary after a member reads, as GNU tar reads it."""
    for cut, names in ((1024, ["a"]), (2560, ["a", "b"])):
        async with opened(layer, FULL[:cut], tmp_path) as archive:
            assert [m.name async for m in archive.members()] == names
            assert archive.possibly_truncated is True
            assert await archive.check() is True
            dest = tmp_path / f"dest-{cut}"
            await archive.extract_all(dest)
            assert sorted(os.listdir(dest)) == names
    for end in (1, 2):  # a lone zero block ends it too (GNU tar warns)
        async with opened(layer, FULL[: 2560 + 512 * end], tmp_path) as archive:
            assert [m.name async for m in archive.members()] == ["a", "b"]
            assert archive.possibly_truncated is False
            assert await archive.check() is False
    # An empty archive: GNU tar says "This does not look like a tar archive" (for a plain
    # file). pyzstd writes an empty seekable file as a lone seek table, which is no zstd
    # frame: 17 bytes of no tar.
    async with opened(layer, b"", tmp_path) as archive:
        with pytest.raises(ArchiveFormatError, match=r"empty|truncated"):
            _ = [m async for m in archive.members()]


# --------------------------------------------------------------------------- the destination


def status(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


@pytest.mark.parametrize("name", [".", "./", ".//.", "././"])
@pytest.mark.parametrize("mode", [0o755, 0o000, 0o777])
async def test_a_member_naming_the_destination_leaves_it_alone(
    name: str, mode: int, tmp_path: Path
) -> None:
    old_mtime = 1_000_000_000
    data = (
        tb.header(name, typeflag=b"5", mode=mode, mtime=old_mtime)
        + tb.file("./inside.txt", b"x")
        + tb.header(name, typeflag=b"5", mode=mode, mtime=old_mtime)
        + tb.end()
    )
    dest = tmp_path / "private"
    dest.mkdir(mode=0o700)
    os.chmod(dest, 0o700)
    before = status(dest)
    async with open_archive(MemorySource(data)) as archive:
        await archive.extract_all(dest)
        assert status(dest) == before
        assert os.stat(dest).st_mtime != old_mtime
        assert (dest / "inside.txt").read_bytes() == b"x"
        assert await archive.extract(name, dest) == str(dest.resolve())
        assert status(dest) == before
        assert os.stat(dest).st_mtime != old_mtime
