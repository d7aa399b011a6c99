"""The third-party corpus (tests/data/archives): every archive read as expected.json says.

For each archive: every member's name, type, size, mode, mtime, link target and content
(sha256; sparse files by their map and stored data too) and where the members end; hard links
read what they stand for; archives that must be refused raise ArchiveFormatError after the
members expected before the fault. Each member is also extracted on its own and the result
compared. See tests/data/archives/NOTES.md for the facts behind the expectations.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import json
import math
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from atartape.archive import open_archive
from atartape.errors import ArchiveFormatError, NotAFileError, UnsafeMemberError
from atartape.format.members import Member
from tests.helpers import MemorySource

pytestmark = pytest.mark.anyio

CORPUS = Path(__file__).resolve().parent.parent / "data" / "archives"
EXPECTED: dict[str, Any] = json.loads((CORPUS / "expected.json").read_text())["archives"]
HASH_LIMIT = 1 << 30  # larger files are checked by their sparse map (as expected.json does)
BIG = 64 << 20  # larger files are hashed chunk by chunk, and not hashed again once extracted


@cache
def archive_bytes(name: str) -> bytes:
    data = (CORPUS / name).read_bytes()
    return bz2.decompress(data) if name.endswith(".bz2") else data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_field(member: dict[str, Any], field: str, value: str) -> None:
    """A name or link target as expected.json gives it (long ones by length and digest)."""
    if member[field] is None:
        raw = value.encode("utf-8", "surrogateescape")
        assert len(raw) == member[f"{field}_length"]
        assert sha256(raw) == member[f"{field}_sha256"]
    else:
        assert value == member[field]


def check_member(ours: Member, expected: dict[str, Any]) -> None:
    text_field(expected, "name", ours.name)
    text_field(expected, "linkname", ours.linkname)
    assert ours.type.value == expected["type"]
    assert (ours.size, ours.mode, math.floor(ours.mtime)) == (
        expected["size"],
        expected["mode"],
        expected["mtime"],
    )
    if expected["type"] == "other":
        assert ours.typeflag == expected["typeflag"]
    sparse = expected.get("sparse")
    if sparse is None:
        assert ours.sparse is None
    else:
        assert ours.sparse is not None
        assert ours.sparse.format == sparse["format"]
        assert [list(region) for region in ours.sparse.regions] == sparse["map"]


READABLE = sorted(name for name, entry in EXPECTED.items() if "members" in entry)
REFUSED = sorted(name for name, entry in EXPECTED.items() if "error" in entry)


def test_the_corpus_is_all_here() -> None:
    on_disk = {p.name for p in CORPUS.iterdir() if ".tar" in p.name}
    assert on_disk == set(EXPECTED)
    assert len(READABLE) + len(REFUSED) == len(EXPECTED) == 72


@pytest.mark.parametrize("name", READABLE)
async def test_corpus_archive(name: str, tmp_path: Path) -> None:
    entry = EXPECTED[name]
    expected: list[dict[str, Any]] = entry["members"]
    data = archive_bytes(name)
    source = MemorySource(data)
    async with open_archive(source) as archive:
        members = [m async for m in archive.members()]
        assert len(members) == len(expected), [m.name for m in members]
        for ours, theirs in zip(members, expected):
            check_member(ours, theirs)
        if "end" in entry:
            assert (members[-1].next_offset if members else 0) == entry["end"]["offset"]
            assert archive.possibly_truncated is (entry["end"]["zero_blocks"] == 0)

        # Content: each member by itself, and each name (the last member of that name).
        digests: list[str | None] = []
        for ours, theirs in zip(members, expected):
            if ours.is_file and ours.size <= HASH_LIMIT:
                digest = hashlib.sha256()
                async for chunk in archive.chunks(ours, chunk_size=4 << 20):
                    digest.update(chunk)
                digests.append(digest.hexdigest())
                assert digests[-1] == theirs["sha256"], ours.name
            else:
                digests.append(None)
            if ours.sparse is not None:
                base = ours.data_offset + ours.sparse.map_size
                stored = data[base : base + ours.sparse.data_size]
                assert sha256(stored) == theirs["sparse"]["data_sha256"]
            if ours.is_hardlink and theirs["link_target"] is not None:
                target = expected[theirs["link_target"]]
                if target["type"] == "file":
                    assert sha256(await archive.read(ours)) == target["sha256"], ours.name
        last: dict[str, int] = {}
        for index, ours in enumerate(members):
            last[ours.key] = index
        for index in last.values():
            small = members[index].size <= BIG
            if digests[index] is not None and expected[index]["name"] is not None and small:
                assert sha256(await archive.read(expected[index]["name"])) == digests[index]

        # Extraction, member by member: files hold the expected bytes (sparse ones as sparse
        # files), links their targets; only devices, FIFOs, empty and impossible names are
        # refused.
        dest = tmp_path / "out"
        for ours, theirs in zip(members, expected):
            if theirs["type"] in ("chardev", "blockdev", "fifo"):
                with pytest.raises(UnsafeMemberError, match=r"device|FIFO"):
                    await archive.extract(ours, dest)
                continue
            if theirs["name"] == "" and theirs["type"] != "dir":  # GNU tar: "." (refused)
                with pytest.raises(UnsafeMemberError, match="destination folder itself"):
                    await archive.extract(ours, dest)
                continue
            if theirs["name"] is None:  # Go's 1 MiB name: no file system holds it
                with pytest.raises(UnsafeMemberError, match="File name too long") as info:
                    await archive.extract(ours, dest)
                assert len(str(info.value)) < 1000
                continue
            written = await archive.extract(ours, dest)
            if theirs["type"] == "other":
                assert written is None
                continue
            assert written is not None
            path = Path(written)
            if theirs["type"] == "file":
                assert path.stat().st_size == theirs["size"]
                if theirs["sha256"] is not None and ours.size <= BIG:
                    assert sha256(path.read_bytes()) == theirs["sha256"]
                if ours.sparse is not None and ours.size > BIG:
                    assert path.stat().st_blocks * 512 < 64 * 1024 * 1024  # holes stayed holes
                    with path.open("rb") as handle:
                        for offset, length in ours.sparse.regions[:3]:
                            handle.seek(offset)
                            assert len(handle.read(length)) == length
            elif theirs["type"] == "symlink":
                assert os.readlink(path) == ours.linkname
            elif theirs["type"] == "dir":
                assert path.is_dir()


@pytest.mark.parametrize("name", REFUSED)
async def test_corpus_archive_refused(name: str) -> None:
    entry = EXPECTED[name]
    async with open_archive(MemorySource(archive_bytes(name))) as archive:
        listed: list[Member] = []
        with pytest.raises(ArchiveFormatError) as info:
            async for member in archive.members():
                listed.append(member)
            for member in listed:  # a fault found only when the content is read
                with contextlib.suppress(NotAFileError):
                    await archive.read(member)
        assert [m.name for m in listed] == [m["name"] for m in entry["members_before_error"]]
        assert isinstance(info.value.offset, int)
        # A lookup raises the same fault rather than "not found".
        with pytest.raises(ArchiveFormatError):
            await archive.read("no such member")
