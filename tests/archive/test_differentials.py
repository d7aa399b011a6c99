"""The third answers the differential fuzzer found (``--fuzz``, test_fuzz.py), each as a case:
atartape's listing is GNU tar's, or a refusal. GNU tar 1.34's readings, verified on these
bytes, are in each case's comment and in tests/data/archives/NOTES.md."""

from __future__ import annotations

import pytest

from tests.archive import tarbuild as tb
from tests.archive.gnutar import our_listing, third_answer
from tests.archive.test_fuzz import mutate

pytestmark = pytest.mark.anyio

REGIONS = [(100, b"A" * 10), (300, b"B" * 20)]
STORED = b"A" * 10 + b"B" * 20
PAX_00 = [
    ("GNU.sparse.numblocks", "2"),
    ("GNU.sparse.offset", "100"),
    ("GNU.sparse.numbytes", "10"),
    ("GNU.sparse.offset", "300"),
    ("GNU.sparse.numbytes", "20"),
]


def _without_magic(data: bytes, block: int) -> bytes:
    out = bytearray(data)
    at = block * tb.BLOCK
    out[at + 257 : at + 265] = bytes(8)
    out[at : at + tb.BLOCK] = tb.fix_checksum(bytearray(out[at : at + tb.BLOCK]))
    return bytes(out)


def _old_gnu_with_prefix() -> bytes:
    """A pre-1.8 Go writer's header: old-GNU magic, a directory in the prefix field."""
    return tb.header("foo", magic=b"ustar  \0", prefix=b"dir") + tb.end()


CASES = {
    # GNU tar lists the stored size (30) and extracts to the map's end (320): refused.
    "sparse 0.0 without its real size": tb.pax(PAX_00) + tb.file("s", STORED) + tb.end(),
    # GNU tar: an 'S' header without the old-GNU magic is a plain file of its stored size.
    "old-GNU sparse without its magic": _without_magic(
        tb.oldgnu_sparse("s", REGIONS, 400) + tb.file("after", b"x") + tb.end(), 0
    ),
    # GNU tar ignores the prefix of an old-GNU header: "foo".
    "old-GNU header with a prefix": _old_gnu_with_prefix(),
    # GNU tar reads a long name to its first NUL in whole blocks: 250 characters, not 201.
    "long name longer than its size": tb.header(
        "././@LongLink", typeflag=b"L", size=201, magic=b"ustar  \0"
    )
    + tb.pad(b"alpha" * 50)
    + tb.symlink("n", "t")
    + tb.end(),
    # GNU tar: a '0' file whose name ends with a slash is a directory.
    "file named with a slash": tb.header("d/", typeflag=b"0") + tb.file("d/a") + tb.end(),
    # GNU tar: GNU.sparse.name names any member, over path.
    "GNU.sparse.name on a folder": tb.pax([("path", "p"), ("GNU.sparse.name", "renamed")])
    + tb.directory("d")
    + tb.end(),
    # PAX 1.0 sparse records over a v7 header (found by the fuzzer: seed 4, the magic of its
    # block 2 blanked): GNU tar runs past the end ("Unexpected EOF"); refused.
    "PAX sparse over a v7 header": mutate((4, [("field", 2, (257, 8), b"")])),
    # GNU tar skips a symlink's, a device's or a FIFO's size as data: 'x', then 'b'.
    "symlink with a size": tb.header("x", typeflag=b"2", size=600, linkname="t")
    + tb.pad(tb.file("inner", b"i"))
    + tb.file("b")
    + tb.end(),
    "fifo with a size": tb.header("x", typeflag=b"6", size=600)
    + tb.pad(tb.file("inner", b"i"))
    + tb.file("b")
    + tb.end(),
    # GNU tar: a global header replaces the whole global set, and an empty path is an empty
    # name (tarfile too): 'G1', then ''.
    "global headers replace each other": tb.pax([("path", "G1")], typeflag=b"g")
    + tb.file("a")
    + tb.pax([("path", "")], typeflag=b"g")
    + tb.file("b")
    + tb.end(),
}


@pytest.mark.parametrize("data", CASES.values(), ids=list(CASES))
async def test_no_third_answer(data: bytes) -> None:
    assert await third_answer(data) is None


async def test_what_is_read() -> None:
    assert [e[0] for e in (await our_listing(CASES["old-GNU header with a prefix"])).entries] == [
        "foo"
    ]
    symlink = await our_listing(CASES["symlink with a size"])
    assert [e[0] for e in symlink.entries] == ["x", "b"]
    assert not (await our_listing(CASES["sparse 0.0 without its real size"])).ok
