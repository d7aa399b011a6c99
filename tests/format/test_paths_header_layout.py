"""The format core (header, paths, layout), checked against Python's tarfile and by properties."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atartape.errors import InvalidOffsetError
from atartape.format import paths
from atartape.format.header import (
    BLOCK_SIZE,
    FOOTER,
    EntryKind,
    HeaderError,
    decode_header,
    decode_number,
    encode_header,
    encode_number,
    entry_span,
    padding,
)
from atartape.format.layout import (
    Entry,
    Window,
    assign_offsets,
    check_window,
    entry_at,
    fingerprint,
)

component = st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
).filter(lambda c: c not in (".", "..") and len(c.encode()) <= 100)
arc_paths = st.lists(component, min_size=1, max_size=8).map("/".join)


def read_back(header: bytes, content: bytes = b"") -> tarfile.TarInfo:
    data = header + content + bytes(padding(len(content))) + FOOTER
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        (member,) = archive.getmembers()
        return member


@given(
    path=arc_paths,
    kind=st.sampled_from(list(EntryKind)),
    mode=st.integers(0, 0o7777),
    mtime=st.integers(0, 2**33 - 1),
    size=st.integers(0, 2000),
)
@settings(max_examples=300)
def test_header_roundtrips_through_tarfile(
    path: str, kind: EntryKind, mode: int, mtime: int, size: int
) -> None:
    raw = paths.to_bytes(path)
    if paths.violation(path, is_dir=kind is EntryKind.DIRECTORY) is not None:
        with pytest.raises(ValueError, match="USTAR"):
            encode_header(raw, kind, size, mode, mtime)
        return
    size = size if kind is EntryKind.FILE else 0
    link = b"target/x" if kind is EntryKind.SYMLINK else b""
    header = encode_header(raw, kind, size, mode, mtime, link)
    assert len(header) == BLOCK_SIZE
    member = read_back(header, b"z" * size)
    assert member.name == path
    assert member.mode == mode
    assert member.mtime == mtime
    assert member.size == size
    assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
    assert member.type == kind.typeflag
    assert member.linkname == link.decode()
    decoded = decode_header(header)
    assert decoded.name.rstrip(b"/") == raw
    assert (decoded.mode, decoded.size, decoded.mtime) == (mode, size, mtime)


def test_header_matches_tarfile_ustar_bytes() -> None:
    """Byte for byte what tarfile writes, but for the device fields: those are written as GNU
    tar writes them (``0000000``), where tarfile leaves NULs; hence the checksum differs too."""
    info = tarfile.TarInfo("dataset/sub/file.txt")
    info.size, info.mode, info.mtime = 1234, 0o640, 1_700_000_000
    info.uname = info.gname = ""
    expected = info.tobuf(tarfile.USTAR_FORMAT)
    ours = encode_header(b"dataset/sub/file.txt", EntryKind.FILE, 1234, 0o640, 1_700_000_000)
    for lo, hi in [(0, 148), (156, 329), (345, 512)]:
        assert ours[lo:hi] == expected[lo:hi]
    assert ours[329:345] == b"0000000\x00" * 2


@pytest.mark.parametrize("size", [8 * 1024**3 - 1, 8 * 1024**3, 2**40 + 5, 20 * 1024**3])
def test_large_sizes_use_base256(size: int) -> None:
    header = encode_header(b"big.bin", EntryKind.FILE, size, 0o644, 0)
    assert decode_header(header).size == size
    assert (header[124] & 0x80 != 0) == (size >= 8**11)
    with tarfile.open(fileobj=io.BytesIO(header + FOOTER), mode="r:") as archive:
        # tarfile reads the header (it does not need the content to list it).
        member = archive.next()
        assert member is not None
        assert member.size == size


@pytest.mark.parametrize("value", [0, 1, 8**11 - 1, 8**11, 2**63, -1, -(2**40)])
def test_numbers_roundtrip(value: int) -> None:
    assert decode_number(encode_number(value, 12)) == value


def test_number_too_large() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_number(2**100, 12)


def test_bad_headers() -> None:
    header = bytearray(encode_header(b"a", EntryKind.FILE, 1, 0o644, 0))
    header[0] = ord("b")
    with pytest.raises(HeaderError, match="checksum"):
        decode_header(bytes(header))
    with pytest.raises(HeaderError, match="512"):
        decode_header(b"short")
    with pytest.raises(HeaderError, match="numeric"):
        decode_number(b"12x4\0")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/abs", "absolute"),
        ("a//b", "component"),
        ("a/../b", "component"),
        ("a" * 101, "component"),
        ("/".join(["d" * 50] * 6), "bytes"),
        ("a" * 100 + "/" + "b" * 100 + "/" + "c" * 10, "split"),
    ],
)
def test_path_violations(path: str, reason: str) -> None:
    found = paths.violation(path)
    assert found is not None
    assert reason in found


def test_path_limits_that_fit() -> None:
    assert paths.violation("a" * 100) is None
    prefix = "p" * 100 + "/" + "q" * 54  # 155 bytes
    assert paths.violation(prefix + "/" + "n" * 99) is None  # 255 bytes, split at the slash
    assert paths.split_ustar(f"{prefix}/{'n' * 99}".encode()) == (prefix.encode(), b"n" * 99)
    assert paths.violation("l", linkname="t" * 100) is None
    assert paths.violation("l", linkname="t" * 101) is not None


def test_directory_with_100_byte_name_drops_the_slash() -> None:
    name = "d" * 100
    assert paths.header_name(name.encode(), is_dir=True) == (b"", name.encode())
    member = read_back(encode_header(name.encode(), EntryKind.DIRECTORY, 0, 0o755, 0))
    assert member.isdir()
    assert member.name == name


def test_utf8_and_surrogates_roundtrip() -> None:
    raw = b"caf\xe9/\xc3\xa9t\xc3\xa9"
    assert paths.to_bytes(paths.from_bytes(raw)) == raw


def test_relative_to_root() -> None:
    assert paths.relative_to_root("ds", "ds") == ""
    assert paths.relative_to_root("ds/a/b", "ds") == "a/b"
    with pytest.raises(ValueError, match="not inside"):
        paths.relative_to_root("other/a", "ds")


@given(st.lists(st.integers(0, 5000), max_size=50))
def test_layout_offsets(sizes: list[int]) -> None:
    starts, total = assign_offsets(sizes)
    assert total == sum(entry_span(s) for s in sizes) + 1024
    for index, start in enumerate(starts):
        assert start % 512 == 0
        assert entry_at(starts, start) == index
        assert entry_at(starts, start + entry_span(sizes[index]) - 1) == index
    assert entry_at(starts, -1) == -1


def test_check_window() -> None:
    assert check_window(2048, 0, None) == Window(0, 2048, 2048)
    assert check_window(2048, 2048, 2048) == Window(2048, 2048, 2048)
    window = Window(1000, 1600, 2048)
    assert window.footer_start == 1024
    assert window.footer_part == (1024, 576)
    assert window.cut(512, 1024) == (488, 1024)
    assert window.cut(1536, 512) == (0, 64)
    assert window.overlaps(0, 1001) and not window.overlaps(0, 1000)
    assert Window(0, 512, 2048).footer_part == (1024, 0)
    for start, end in [(-1, None), (0, 2049), (5, 4), (2049, None)]:
        with pytest.raises(InvalidOffsetError):
            check_window(2048, start, end)


def test_fingerprint_depends_on_every_promised_field() -> None:
    base = Entry("ds/a", EntryKind.FILE, 1, 0o644, 10, 0)
    variants = [
        Entry("ds/b", EntryKind.FILE, 1, 0o644, 10, 0),
        Entry("ds/a", EntryKind.FILE, 2, 0o644, 10, 0),
        Entry("ds/a", EntryKind.FILE, 1, 0o600, 10, 0),
        Entry("ds/a", EntryKind.FILE, 1, 0o644, 11, 0),
        Entry("ds/a", EntryKind.SYMLINK, 1, 0o644, 10, 0, linkname="x"),
        Entry("ds/a", EntryKind.DIRECTORY, 1, 0o644, 10, 0),
    ]
    prints = {fingerprint([base])} | {fingerprint([v]) for v in variants}
    assert len(prints) == 1 + len(variants)
    assert fingerprint([base]) == fingerprint([base])


def test_a_header_summed_as_signed_chars_decodes() -> None:
    """Old tars summed the header as signed chars: a name with bytes of 0x80 and more then has
    a checksum 256 lower per such byte, and tar accepts either sum."""
    from atartape.format.header import HeaderError, decode_header, header_checksums

    info = tarfile.TarInfo("caf\xe9-\xff.txt")
    block = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT, encoding="latin-1"))
    unsigned, signed = header_checksums(bytes(block))
    assert unsigned - signed == 2 * 256
    block[148:156] = b"%06o\0 " % signed
    assert decode_header(bytes(block)).name == b"caf\xe9-\xff.txt"
    block[148:156] = b"%06o\0 " % (signed - 1)
    with pytest.raises(HeaderError, match="checksum"):
        decode_header(bytes(block))
