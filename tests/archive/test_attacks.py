"""Each reported fault of the reader, as a test (the numbers are the issue's items).

Where a tool's behaviour is the reference (GNU tar, tarfile), the test compares with it and is
skipped, with the reason, when the tool is missing.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import atartape
from atartape.archive import open_archive
from atartape.errors import ArchiveFormatError, NotAFileError, TarTapeError, UnsafeMemberError
from atartape.format.embedded import IndexRow, build_index_csv, index_row
from atartape.format.members import Member, MemberType
from tests.archive import tarbuild as tb
from tests.helpers import MemorySource, tape_bytes, write

pytestmark = pytest.mark.anyio


def gnu_tar() -> str:
    path = shutil.which("tar")
    if path is None:
        pytest.skip("GNU tar is not installed")
    version = subprocess.run([path, "--version"], capture_output=True, check=True).stdout
    if b"GNU tar" not in version:
        pytest.skip("tar is not GNU tar")
    return path


def tar_extract(data: bytes, tmp_path: Path, name: str) -> bytes:
    """What ``tar -xf`` leaves at ``name``."""
    tar = gnu_tar()
    archive = write(tmp_path / "by-gnu-tar.tar", data)
    out = tmp_path / "by-gnu-tar"
    out.mkdir()
    subprocess.run([tar, "-xf", str(archive), "-C", str(out)], check=True, capture_output=True)
    return (out / name).read_bytes()


async def names(data: bytes) -> list[str]:
    async with open_archive(MemorySource(data)) as archive:
        return [m.name async for m in archive.members()]


# --------------------------------------------------------------------------- 1, 2: sparse files


REGIONS = [(k * 10_000 + 3, bytes([65 + k]) * (100 + k)) for k in range(9)]
REAL_SIZE = 100_000


async def test_1_oldgnu_extension_blocks_keep_the_members_after(tmp_path: Path) -> None:
    for count in (5, 9, 30):  # 6 entries: one extension block; 31: two
        # Whole blocks but the last, as GNU tar writes them (it cannot read others).
        regions = [(k * 3000 + 7, bytes([33 + k]) * 512) for k in range(count)]
        regions[-1] = (regions[-1][0], b"end")
        data = (
            tb.oldgnu_sparse("holes.bin", regions, 100_000)
            + tb.file("after1", b"one")
            + tb.file("after2", b"two")
            + tb.end()
        )
        expected = tb.expand(regions, 100_000)
        assert await names(data) == ["holes.bin", "after1", "after2"]
        async with open_archive(MemorySource(data)) as archive:
            assert await archive.read("holes.bin") == expected
            assert await archive.read("after2") == b"two"
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            handle = tf.extractfile("holes.bin")
            assert handle is not None and handle.read() == expected
    if shutil.which("tar"):
        assert tar_extract(data, tmp_path, "holes.bin") == expected


async def test_2_sparse_members_read_and_extract_with_their_holes(tmp_path: Path) -> None:
    expected = tb.expand(REGIONS, REAL_SIZE)
    for label, member in (
        ("oldgnu", tb.oldgnu_sparse("holes.bin", REGIONS, REAL_SIZE)),
        ("pax-1.0", tb.pax_sparse_10("holes.bin", REGIONS, REAL_SIZE)),
    ):
        data = member + tb.file("after", b"x") + tb.end()
        async with open_archive(MemorySource(data)) as archive:
            found = await archive.member("holes.bin")
            assert (found.name, found.size, found.type) == ("holes.bin", REAL_SIZE, "file")
            assert found.sparse is not None and found.sparse.format == label
            assert await archive.read("holes.bin") == expected
            for chunk_size in (7, 99, 4096, 10_003):
                chunks = [c async for c in archive.chunks("holes.bin", chunk_size=chunk_size)]
                assert b"".join(chunks) == expected and max(map(len, chunks)) <= chunk_size
            dest = tmp_path / label
            await archive.extract_all(dest)
        assert (dest / "holes.bin").read_bytes() == expected
        assert (dest / "after").read_bytes() == b"x"
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            handle = tf.extractfile("holes.bin")
            assert handle is not None and handle.read() == expected


async def test_2_malformed_sparse_maps_are_refused() -> None:
    overlapping = [(100, b"a" * 50), (120, b"b" * 10)]
    past_end = [(100, b"a" * 50)]
    for data in (
        tb.oldgnu_sparse("x", overlapping, 1000),
        tb.oldgnu_sparse("x", past_end, 120),
        tb.pax_sparse_10("x", overlapping, 1000),
        tb.pax([("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.realsize", "9")])
        + tb.file("x", tb.pad(b"#!gnu-sparse-format\n")),
        tb.pax([("GNU.sparse.size", "10"), ("GNU.sparse.offset", "0")]) + tb.file("x", b""),
        tb.pax([("GNU.sparse.size", "10"), ("GNU.sparse.map", "0,4,8")]) + tb.file("x", b"abcd"),
        tb.pax([("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")]) + tb.file("x", b""),
    ):
        with pytest.raises(ArchiveFormatError, match="sparse"):
            await names(data + tb.end())


# --------------------------------------------------------------------------- 4: no end marker


async def test_4_archives_without_the_end_marker() -> None:
    data = tb.file("a", b"AAAA") + tb.file("b", b"B" * 600)
    async with open_archive(MemorySource(data)) as archive:
        assert await archive.read("a") == b"AAAA"
        assert [m.name async for m in archive.members()] == ["a", "b"]
        assert archive.possibly_truncated is True
    # Cut inside the second member: the first still reads; the second raises the fault.
    async with open_archive(MemorySource(data[:-500])) as archive:
        assert await archive.read("a") == b"AAAA"
        with pytest.raises(ArchiveFormatError, match="truncated"):
            await archive.read("b")
        with pytest.raises(ArchiveFormatError, match="truncated"):
            await archive.read("c")
    # A lone zero block, and a block with a newline after it (plexus), end the archive.
    async with open_archive(MemorySource(data + tb.end(1) + b"\n".rjust(512, b"\0"))) as archive:
        assert [m.name async for m in archive.members()] == ["a", "b"]
        assert archive.possibly_truncated is False


# --------------------------------------------------------------------------- 5, 6, 7: the index


def text_last_archive(size: int, last_name: str = "data.csv") -> bytes:
    """A 6-byte member, then ``size`` bytes of CSV text whose last line looks like an index
    row, then the end marker."""
    line = b"name,1,2,3\r\n"
    text = line * (size // len(line))
    return tb.file("small.txt", b"hello!") + tb.file(last_name, text) + tb.end(20)


@pytest.mark.parametrize("last_name", ["data.csv", ".tarindex_0011223344556677.csv"])
async def test_5_the_index_search_reads_a_bounded_tail(last_name: str) -> None:
    data = text_last_archive(57_800_000, last_name)
    counted = MemorySource(data)
    async with open_archive(counted) as archive:
        assert await archive.read("small.txt") == b"hello!"
        assert await archive.embedded_index() is None
    plain = MemorySource(data)
    async with open_archive(plain, use_index=False) as archive:
        assert await archive.read("small.txt") == b"hello!"
    assert counted.fetched < plain.fetched + 20 * 1024
    assert counted.fetched < 200_000  # was 57,880,070: the whole text walked back


async def test_6_a_last_member_that_is_not_an_index(tmp_path: Path) -> None:
    bad_csv = [
        b"this is not,an index\r\n",  # not an index at all
        b"name,size,start_block,blocks\r\n" + b'"' + b"x" * 200_000 + b'",1,0,2\r\n',
        b"x,1,0,2\r\n\0",  # a NUL in the text
    ]
    for text in bad_csv:
        data = tb.file("a.txt", b"A") + tb.file(".tarindex_0011223344556677.csv", text) + tb.end()
        for trust in (False, True):
            async with open_archive(MemorySource(data), trust_index=trust) as archive:
                assert await archive.read("a.txt") == b"A"
                assert await archive.embedded_index() is None

    # A tape extracted, then archived again by GNU tar: the index is now a member among others.
    tar = gnu_tar()
    root = tmp_path / "tree"
    write(root / "a.txt", "alpha")
    write(root / "sub" / "b.txt", "beta")
    _, data = await tape_bytes(root, tmp_path, embed_index=True)
    out = tmp_path / "extracted"
    async with open_archive(MemorySource(data)) as archive:
        await archive.extract_all(out)
    again = tmp_path / "again.tar"
    for extra in ([], ["--sort=name"]):
        subprocess.run([tar, "-cf", str(again), *extra, "-C", str(out), "."], check=True)
        for trust in (False, True):
            async with open_archive(again, trust_index=trust) as archive:
                assert await archive.read("./tree/sub/b.txt") == b"beta"
                assert await archive.read("tree/a.txt") == b"alpha"


def with_index(parts: list[bytes], rows: list[IndexRow]) -> bytes:
    body = b"".join(parts)
    csv = build_index_csv(rows)
    return body + tb.file(".tarindex_0011223344556677.csv", csv) + tb.end()


async def test_7_an_index_cannot_change_what_a_name_reads(tmp_path: Path) -> None:
    first, second = tb.file("x", b"first"), tb.file("x", b"second")
    other = tb.file("y", b"why")
    at_second, at_other = len(first), len(first) + len(second)
    honest = [
        index_row("x", 5, 0),
        index_row("x", 6, at_second),
        index_row("y", 3, at_other),
    ]
    forged = {
        "omits the second copy": [honest[0], honest[2]],
        "renames the second copy": [honest[0], index_row("z", 6, at_second), honest[2]],
        "lists the first copy last": [honest[1], honest[0], honest[2]],
        "lies about a span": [honest[0], IndexRow("y", 3, at_second // 512, 4)],
    }
    for label, rows in {"honest": honest, **forged}.items():
        data = with_index([first, second, other], rows)
        async with open_archive(MemorySource(data)) as archive:
            assert await archive.read("x") == b"second", label
            assert await archive.read("y") == b"why", label
            index = await archive.embedded_index()
            assert (index is not None) == (label == "honest"), label
            written = await archive.extract("x", tmp_path / label)
            assert written is not None and Path(written).read_bytes() == b"second"
            await archive.extract_all(tmp_path / f"{label}-all")
        assert (tmp_path / f"{label}-all" / "x").read_bytes() == b"second"
    if shutil.which("tar"):
        assert tar_extract(data, tmp_path, "x") == b"second"


# --------------------------------------------------------------------------- 8: hard links


async def test_8_a_hard_link_stands_for_the_last_member_before_it(tmp_path: Path) -> None:
    cases = {
        "f, hl, f": (
            [tb.file("f", b"AAAA"), tb.hardlink("hl", "f"), tb.file("f", b"BBBBBB")],
            b"AAAA",
        ),
        "f, f, hl, f": (
            [
                tb.file("f", b"AAAA"),
                tb.file("f", b"BBBBBB"),
                tb.hardlink("hl", "f"),
                tb.file("./f", b"CC"),
            ],
            b"BBBBBB",
        ),
    }
    for label, (parts, linked) in cases.items():
        data = b"".join(parts) + tb.end()
        dest = tmp_path / label
        async with open_archive(MemorySource(data)) as archive:
            assert await archive.read("hl") == linked, label
            await archive.extract_all(dest)
            written = await archive.extract("hl", tmp_path / f"{label}-alone")
            # Alone, a link is what read() returns, whatever the destination holds already.
            again = await archive.extract("hl", dest)
            assert again is not None and Path(again).read_bytes() == linked
        assert (dest / "hl").read_bytes() == linked
        assert written is not None and Path(written).read_bytes() == linked
        if shutil.which("tar"):
            assert tar_extract(data, tmp_path / label, "hl") == linked
    # A link to nothing before it, and a loop of links, are format errors, not crashes.
    for parts, name in (
        ([tb.hardlink("hl", "f"), tb.file("f", b"late")], "hl"),
        ([tb.hardlink("a", "b"), tb.hardlink("b", "a")], "b"),
    ):
        async with open_archive(MemorySource(b"".join(parts) + tb.end())) as archive:
            with pytest.raises(ArchiveFormatError, match="not a member before it"):
                await archive.read(name)


# --------------------------------------------------------------------------- 9: odd names


async def test_9_names_the_file_system_cannot_hold(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    cases = [
        ("long component", tb.pax([("path", "d/" + "n" * 300)]) + tb.file("short")),
        ("deep path", tb.pax([("path", ("d" * 200 + "/") * 21 + "f")]) + tb.file("short")),
        ("long target", tb.pax([("linkpath", "t" * 5000)]) + tb.symlink("s", "t")),
        ("huge sparse file", tb.pax_sparse_10("huge", [(0, b"x")], 2**62)),
    ]
    for label, body in cases:
        async with open_archive(MemorySource(tb.file("ok", b"1") + body + tb.end())) as archive:
            with pytest.raises(
                UnsafeMemberError, match=r"File name too long|File too large"
            ) as info:
                await archive.extract_all(dest)
            assert info.value.member is not None, label
            assert len(str(info.value)) < 1000, label
    # A NUL in a link target: refused when read (PAX), and by extraction whatever the source.
    nul = tb.pax([("linkpath", b"a\0b")]) + tb.symlink("s", "t") + tb.end()
    async with open_archive(MemorySource(nul)) as archive:
        with pytest.raises(ArchiveFormatError, match="NUL"):
            await archive.extract_all(dest)
    async with open_archive(MemorySource(tb.end())) as archive:
        for kind in (MemberType.SYMLINK, MemberType.HARDLINK):
            member = Member("s", 0, kind, 0o777, 0, "a\0b", 0, 512)
            with pytest.raises(UnsafeMemberError, match="NUL"):
                await archive.extract(member, dest)


# --------------------------------------------------------------------------- 10, 11: smaller


async def test_10_a_bad_pax_mtime_is_ignored_a_bad_size_is_not() -> None:
    good = tb.pax([("mtime", "999xxx9324.4")]) + tb.file("f", b"x") + tb.end()
    async with open_archive(MemorySource(good)) as archive:
        assert (await archive.member("f")).mtime == tb.MTIME
    bad = tb.pax([("size", "1x")]) + tb.file("f", b"x") + tb.end()
    with pytest.raises(ArchiveFormatError, match="size"):
        await names(bad)


async def test_11_other_headers_modes_and_refusals_part_way(tmp_path: Path) -> None:
    # Solaris ACL headers are no files: listed as 'other', skipped by extraction.
    data = tb.member("f", b"user::rw-\0", typeflag=b"A") + tb.file("f", b"real") + tb.end()
    async with open_archive(MemorySource(data)) as archive:
        acl, _ = [m async for m in archive.members()]
        assert (acl.type, acl.typeflag, acl.size) == (MemberType.OTHER, "A", 0)
        with pytest.raises(NotAFileError):
            await archive.read(acl)
        assert await archive.read("f") == b"real"
        assert await archive.extract(acl, tmp_path / "acl") is None
        await archive.extract_all(tmp_path / "acl")
    assert (tmp_path / "acl/f").read_bytes() == b"real"

    # A refusal part-way: the folders made so far still get their modes and mtimes.
    data = (
        tb.directory("d", 0o750)
        + tb.file("d/f")
        + tb.directory("tmp", 0o1777)
        + tb.directory("open", 0o777)
        + tb.symlink("evil", "/etc/passwd")
        + tb.end()
    )
    dest = tmp_path / "modes"
    async with open_archive(MemorySource(data)) as archive:
        with pytest.raises(UnsafeMemberError, match="evil"):
            await archive.extract_all(dest)
    assert (dest / "d").stat().st_mode & 0o7777 == 0o750
    assert int((dest / "d").stat().st_mtime) == tb.MTIME
    assert (dest / "tmp").stat().st_mode & 0o7777 == 0o1777  # sticky kept with world-write
    assert (dest / "open").stat().st_mode & 0o7777 == 0o775  # no world-write without it


# --------------------------------------------------------------------------- 3: symlink chains


def would_be(link: str) -> str | None:
    """Where a dangling symlink leads once what is missing on its way exists as folders: a
    walk of the path like the kernel's (at most 40 links followed: ``None`` for a loop)."""
    follows = 0

    def walk(base: str, target: str) -> str | None:
        nonlocal follows
        current = "/" if target.startswith("/") else base
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                current = os.path.dirname(current)
                continue
            candidate = os.path.join(current, part)
            if os.path.islink(candidate):
                follows += 1
                if follows > 40:
                    return None
                resolved = walk(current, os.readlink(candidate))
                if resolved is None:
                    return None
                current = resolved
            else:
                current = candidate
        return current

    return walk(os.path.dirname(link), os.readlink(link))


def escapes(dest: Path) -> list[str]:
    """The symlinks under ``dest`` that resolve outside it: by the operating system for those
    that resolve now, by :func:`would_be` for those that lead to what does not exist yet."""
    root = os.path.realpath(dest)
    bad = []
    for folder, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                continue
            try:
                resolved: str | None = os.path.realpath(path, strict=True)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    continue  # no system resolves it
                resolved = would_be(os.path.join(root, os.path.relpath(path, dest)))
                if resolved is None:
                    continue  # a loop once the missing folders exist
            if resolved != root and not resolved.startswith(root + os.sep):
                bad.append(f"{os.path.relpath(path, dest)} -> {resolved}")
    return bad


def chain_14() -> tuple[list[bytes], list[bytes]]:
    """13 links c0..c12 and pw -> c12/etc/passwd, each harmless while the l<i> do not exist,
    and the 13 links l<i> -> . that make c12 the root of the file system."""
    chain = [tb.symlink("c0", "l0/..")]
    chain += [tb.symlink(f"c{i}", f"c{i - 1}/l{i}/..") for i in range(1, 13)]
    chain.append(tb.symlink("pw", "c12/etc/passwd"))
    triggers = [tb.symlink(f"l{i}", ".") for i in range(13)]
    return chain, triggers


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    dest = tmp_path / "deep" / "er" / "dest"
    dest.mkdir(parents=True)
    sentinel = tmp_path / "deep" / "er" / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("untouched")
    return dest, sentinel


async def extract(parts: list[bytes], dest: Path) -> str | None:
    """extract_all; the name of the refused member, if one is."""
    async with open_archive(MemorySource(b"".join(parts) + tb.end())) as archive:
        try:
            await archive.extract_all(dest)
        except UnsafeMemberError as exc:
            return exc.member
    return None


async def test_3_symlink_chains_in_any_order(arena: tuple[Path, Path]) -> None:
    dest, sentinel = arena
    t, l_ = tb.symlink("t", "l/.."), tb.symlink("l", ".")
    chain, triggers = chain_14()
    orders: dict[str, tuple[list[bytes], str]] = {
        "t then l": ([t, l_], "l"),
        "l then t": ([l_, t], "t"),
        "chain then triggers": ([*chain, *triggers], "l0"),
        "triggers then chain": ([*triggers, *chain], "c0"),
        "reversed triggers": ([*chain, *reversed(triggers)], "l12"),
        "interleaved": ([x for pair in zip(chain, triggers) for x in pair], "l0"),
        "through a folder": (
            [tb.directory("d"), tb.symlink("d/t", "../l/.."), tb.symlink("l", ".")],
            "l",
        ),
        "hard link to a symlink": (
            [tb.symlink("a/s", "../x"), tb.hardlink("s2", "a/s")],
            "s2",
        ),
    }
    for label, (parts, culprit) in orders.items():
        target = dest / label
        refused = await extract(parts, target)
        assert refused is not None, label
        assert refused == culprit, label
        assert escapes(target) == [], label
    assert (sentinel / "keep.txt").read_text() == "untouched"
    assert sorted(p.name for p in sentinel.iterdir()) == ["keep.txt"]


async def test_3_symlink_chains_across_extractions(arena: tuple[Path, Path]) -> None:
    """The same chains split over several archives, or members, extracted into one folder:
    the links already there count (found by a walk of the destination)."""
    dest, _ = arena
    chain, triggers = chain_14()
    assert await extract(chain, dest / "two") is None
    assert await extract(triggers, dest / "two") == "l0"
    assert escapes(dest / "two") == []

    assert await extract([tb.symlink("t", "l/..")], dest / "split") is None
    one_by_one = tb.symlink("l", ".") + tb.end()
    async with open_archive(MemorySource(one_by_one)) as archive:
        with pytest.raises(UnsafeMemberError, match=r"would make the symlink 't'"):
            await archive.extract("l", dest / "split")
    assert escapes(dest / "split") == []

    # A link placed in the destination by someone else is guarded too.
    (dest / "pre").mkdir()
    (dest / "pre" / "p").symlink_to("q/..")
    assert await extract([tb.symlink("q", ".")], dest / "pre") == "q"
    assert escapes(dest / "pre") == []


async def test_3_allowed_links_stay_allowed(tmp_path: Path) -> None:
    parts = [
        tb.directory("lib"),
        tb.file("lib/libfoo.so.1", b"elf"),
        tb.symlink("lib/libfoo.so", "libfoo.so.1"),
        tb.directory("bin"),
        tb.symlink("bin/foo", "../lib/libfoo.so"),
        tb.symlink("up", "lib/.."),
        tb.symlink("loop1", "loop2"),
        tb.symlink("loop2", "loop1"),
        tb.symlink("dangling", "not/yet/there"),
        tb.directory("not"),
        tb.symlink("lib/libfoo.so", "libfoo.so.1"),  # the same link again
        tb.file("bin/foo", b"replaced"),  # a file over a symlink
    ]
    assert await extract(parts, tmp_path / "ok") is None
    assert (tmp_path / "ok/bin/foo").read_bytes() == b"replaced"
    assert os.readlink(tmp_path / "ok/lib/libfoo.so") == "libfoo.so.1"
    assert escapes(tmp_path / "ok") == []


async def test_3_errors_are_atartape_errors(tmp_path: Path) -> None:
    async with open_archive(MemorySource(tb.symlink("x", "/etc/passwd") + tb.end())) as archive:
        with pytest.raises(TarTapeError):
            await archive.extract_all(tmp_path / "x")
    assert isinstance(UnsafeMemberError("m"), atartape.TarTapeError)


def test_3_case_insensitive_file_systems(tmp_path: Path) -> None:
    """Where names differ only by case or Unicode form (macOS, Windows), ``L`` is ``l``."""
    from atartape.archive.extract import Extractor, LinkGuard

    extractor = Extractor.open(str(tmp_path / "dest"))
    extractor.guard = LinkGuard(extractor.dest, fold=True)

    def link(name: str, target: str) -> Member:
        return Member(name, 0, MemberType.SYMLINK, 0o777, 0, target, 0, 512)

    extractor.make_symlink(link("t", "l/.."), ["t"])
    with pytest.raises(UnsafeMemberError, match="would make the symlink 't'"):
        extractor.make_symlink(link("L", "."), ["L"])
    extractor.make_symlink(link("t2", "cafe\u0301/.."), ["t2"])  # NFD spelling
    with pytest.raises(UnsafeMemberError, match="would make the symlink 't2'"):
        extractor.make_symlink(link("caf\u00e9", "."), ["caf\u00e9"])  # NFC: the same name
    assert escapes(tmp_path / "dest") == []
