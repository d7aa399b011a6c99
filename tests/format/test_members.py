"""The pure reader core: headers and extensions into members, PAX records, the index CSV."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atartape.errors import ArchiveFormatError
from atartape.format.embedded import (
    INDEX_COLUMNS,
    NEED_MORE,
    IndexLocation,
    IndexRow,
    build_index_csv,
    index_name,
    index_row,
    is_index_name,
    locate_index,
    parse_index_csv,
)
from atartape.format.header import BLOCK_SIZE, EntryKind, encode_header, encode_number, padding
from atartape.format.members import (
    ArchiveEnd,
    HeaderReader,
    Member,
    MemberType,
    lookup_key,
    parse_number,
    parse_pax_records,
    pax_record_list,
)

MTIME = 1_700_000_000


def scan_with_end(data: bytes) -> tuple[list[Member], ArchiveEnd]:
    """Every member of an in-memory archive, and its end, through the pure reader alone."""
    reader = HeaderReader()
    members: list[Member] = []
    while True:
        got = reader.feed(data[reader.offset : reader.offset + reader.want()])
        if isinstance(got, ArchiveEnd):
            return members, got
        if got is not None:
            members.append(got)


def scan_bytes(data: bytes) -> list[Member]:
    return scan_with_end(data)[0]


def info(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.mtime = MTIME
    for key, value in fields.items():
        setattr(member, key, value)
    return member


def build_tar(fmt: int, long_names: bool = True, pax: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, pax_headers=pax or {}) as tf:
        tf.addfile(info("top", tarfile.DIRTYPE, mode=0o755))
        tf.addfile(info("top/a.txt", size=5, mode=0o640), io.BytesIO(b"hello"))
        tf.addfile(info("top/empty"), io.BytesIO(b""))
        tf.addfile(info("top/sym", tarfile.SYMTYPE, linkname="a.txt"))
        tf.addfile(info("top/hard", tarfile.LNKTYPE, linkname="top/a.txt"))
        tf.addfile(info("top/fifo", tarfile.FIFOTYPE))
        tf.addfile(info("top/chr", tarfile.CHRTYPE, devmajor=1, devminor=3))
        tf.addfile(info("top/caf\u00e9.txt", size=2), io.BytesIO(b"ok"))
        if long_names:
            deep = "top/" + "d" * 120 + "/" + "n" * 150 + ".bin"
            tf.addfile(info(deep, size=600), io.BytesIO(b"z" * 600))
            tf.addfile(info("top/longlink", tarfile.SYMTYPE, linkname="t" * 140))
    return out.getvalue()


_KINDS = {
    tarfile.REGTYPE: MemberType.FILE,
    tarfile.DIRTYPE: MemberType.DIRECTORY,
    tarfile.SYMTYPE: MemberType.SYMLINK,
    tarfile.LNKTYPE: MemberType.HARDLINK,
    tarfile.FIFOTYPE: MemberType.FIFO,
    tarfile.CHRTYPE: MemberType.CHAR_DEVICE,
}


@pytest.mark.parametrize(
    ("fmt", "long_names"),
    [
        (tarfile.USTAR_FORMAT, False),
        (tarfile.GNU_FORMAT, True),
        (tarfile.PAX_FORMAT, True),
    ],
    ids=["ustar", "gnu", "pax"],
)
def test_members_match_tarfile(fmt: int, long_names: bool) -> None:
    data = build_tar(fmt, long_names)
    ours = scan_bytes(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        theirs = tf.getmembers()
    assert len(ours) == len(theirs)
    for member, ti in zip(ours, theirs):
        assert member.name == ti.name
        assert member.type is _KINDS[ti.type]
        assert member.size == (ti.size if ti.isreg() else 0)
        assert (member.mode, int(member.mtime), member.linkname) == (ti.mode, ti.mtime, ti.linkname)
        assert (member.header_offset, member.data_offset) == (ti.offset, ti.offset_data)
    names = [m.name for m in ours]
    assert "top/caf\u00e9.txt" in names
    if long_names:
        assert any(len(n) > 255 for n in names)
        assert any(len(m.linkname) == 140 for m in ours)


def test_pax_global_local_and_deleted_records() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(info("plain", size=1), io.BytesIO(b"p"))
        special = info("short", size=3)
        special.pax_headers = {"mtime": "1700000000.25", "path": "renamed/by/pax"}
        tf.addfile(special, io.BytesIO(b"abc"))
    data = bytearray(out.getvalue())
    members = scan_bytes(bytes(data))
    assert [m.name for m in members] == ["plain", "renamed/by/pax"]
    assert members[1].mtime == 1700000000.25
    # The PAX header is the member's first header: header_offset points at it.
    assert members[1].data_offset - members[1].header_offset == 3 * BLOCK_SIZE

    # A global record holds for every later member; a local empty value deletes it.
    def pax_block(kind: bytes, records: bytes) -> bytes:
        header = bytearray(encode_header(b"pax", EntryKind.FILE, len(records), 0o644, 0))
        header[156:157] = kind
        header[148:156] = b"        "
        header[148:156] = b"%06o\0 " % sum(header)
        return bytes(header) + records + bytes(padding(len(records)))

    def file_block(name: bytes, content: bytes) -> bytes:
        head = encode_header(name, EntryKind.FILE, len(content), 0o644, MTIME)
        return head + content + bytes(padding(len(content)))

    archive = (
        pax_block(b"g", b"17 mtime=1234567\n")
        + file_block(b"one", b"1")
        + pax_block(b"x", b"9 mtime=\n")
        + file_block(b"two", b"2")
        + bytes(1024)
    )
    one, two = scan_bytes(archive)
    assert (one.name, one.mtime, one.header_offset) == ("one", 1234567, BLOCK_SIZE * 2)
    assert (two.name, two.mtime) == ("two", MTIME)


def test_parse_pax_records() -> None:
    def record(key: bytes, value: bytes) -> bytes:
        body = b" %s=%s\n" % (key, value)
        length = len(body) + 2
        return b"%d%s" % (length, body)

    payload = record(b"path", "some/long/éname.txt".encode()) + record(b"linkpath", b"a=b/c.d")
    payload += b"\0\0\0"
    assert parse_pax_records(payload) == {
        "path": "some/long/éname.txt".encode(),
        "linkpath": b"a=b/c.d",
    }
    assert parse_pax_records(b"") == {}
    for bad in (b"x path=a\n", b"99 path=a\n", b"8 patha\n", b"9 path=a!", b"3 \n", b"\0\0x"):
        with pytest.raises(ValueError):
            parse_pax_records(bad)


def test_base256_size_and_v7_directory() -> None:
    size = 9 * 1024**3  # past the 8 GiB octal limit: GNU base-256
    header = bytearray(encode_header(b"huge.bin", EntryKind.FILE, 0, 0o644, MTIME))
    header[124:136] = encode_number(size, 12)
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    member = HeaderReader().feed(bytes(header))
    assert isinstance(member, Member)
    assert member.size == size and member.next_offset == BLOCK_SIZE + size

    v7 = bytearray(BLOCK_SIZE)
    v7[0:5] = b"olddir/"[:5]
    v7[0:7] = b"olddir/"
    v7[100:108] = b"0000755\0"
    v7[124:136] = b"00000000000\0"
    v7[136:148] = b"%011o\0" % MTIME
    v7[148:156] = b"        "
    v7[148:156] = b"%06o\0 " % sum(v7)
    old = HeaderReader().feed(bytes(v7))
    assert isinstance(old, Member)
    assert (old.name, old.type) == ("olddir", MemberType.DIRECTORY)


def test_format_errors_carry_the_offset() -> None:
    data = bytearray(build_tar(tarfile.GNU_FORMAT))
    second = scan_bytes(bytes(data))[1].header_offset
    data[second + 10] ^= 0xFF
    with pytest.raises(ArchiveFormatError, match="checksum") as info_:
        scan_bytes(bytes(data))
    assert info_.value.offset == second and f"at byte {second}" in str(info_.value)

    with pytest.raises(ArchiveFormatError, match="truncated"):
        HeaderReader(1024).feed(b"\1" * 100)

    # An extension header followed by the end-of-archive marker describes nothing.
    long_name = build_tar(tarfile.GNU_FORMAT)
    reader = HeaderReader()
    members = scan_bytes(long_name)
    deep = next(m for m in members if len(m.name) > 255)
    first = long_name[deep.header_offset : deep.header_offset + 512]
    assert reader.feed(first) is None and reader.pending
    size = parse_number(first[124:136])
    assert reader.want() == size + (-size % 512)  # a GNU long name: read in whole blocks
    assert reader.feed(bytes(reader.want())) is None  # an empty name: padding
    with pytest.raises(ArchiveFormatError, match="without its member"):
        reader.feed(bytes(512))

    huge = bytearray(first)
    huge[124:136] = b"%011o\0" % (64 * 1024 * 1024)
    huge[148:156] = b"        "
    huge[148:156] = b"%06o\0 " % sum(huge)
    with pytest.raises(ArchiveFormatError, match="extension header of"):
        HeaderReader().feed(bytes(huge))


# --------------------------------------------------------------------------- index CSV


def test_index_rows_and_names() -> None:
    assert index_name("0123456789abcdef" * 4) == ".tarindex_0123456789abcdef.csv"
    assert is_index_name(".tarindex_0123456789abcdef.csv")
    assert is_index_name("some/folder/.tarindex_x.csv")
    assert not is_index_name(".tarindex_x.csv/inner") and not is_index_name("tarindex_x.csv")
    assert index_row("a", 0, 0) == IndexRow("a", 0, 0, 1)
    assert index_row("b", 1, 512) == IndexRow("b", 1, 1, 2)
    assert index_row("c", 1024, 1024) == IndexRow("c", 1024, 2, 3)
    with pytest.raises(ValueError):
        index_row("d", 1, 100)
    csv = build_index_csv([IndexRow("a,b", 5, 1, 2), IndexRow('say "hi"\nnow', 0, 3, 1)])
    assert csv.startswith(b"name,size,start_block,blocks\r\n")
    assert parse_index_csv(csv) == [IndexRow("a,b", 5, 1, 2), IndexRow('say "hi"\nnow', 0, 3, 1)]
    assert parse_index_csv(b"x,1,0,2\r\ny/,0,2,1\n") == [
        IndexRow("x", 1, 0, 2),
        IndexRow("y", 0, 2, 1),
    ]
    for bad in (b"a,1,2\n", b"a,1,2,0\n", b"a,-1,2,3\n", b"a,one,2,3\n"):
        with pytest.raises(ValueError, match="line 1"):
            parse_index_csv(bad)
    assert INDEX_COLUMNS == ("name", "size", "start_block", "blocks")


names = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\0/")
    | st.sampled_from([",", '"', "\n", "\r", "\udce9"]),
    min_size=1,
    max_size=40,
)


@given(st.lists(st.tuples(names, st.integers(0, 10**12), st.integers(0, 10**9)), max_size=20))
def test_index_csv_round_trip(rows: list[tuple[str, int, int]]) -> None:
    made = [index_row(name, size, block * BLOCK_SIZE) for name, size, block in rows]
    assert parse_index_csv(build_index_csv(made)) == made


def _tape_bytes(files: dict[str, bytes], *, trailing_zeros: int = 2) -> tuple[bytes, int]:
    """A tape-shaped archive: the files, then the index member, then zero blocks."""
    parts: list[bytes] = []
    rows: list[IndexRow] = []
    offset = 0
    for name, content in files.items():
        rows.append(index_row(name, len(content), offset))
        chunk = encode_header(name.encode(), EntryKind.FILE, len(content), 0o644, MTIME)
        chunk += content + bytes(padding(len(content)))
        parts.append(chunk)
        offset += len(chunk)
    csv = build_index_csv(rows)
    index_at = offset
    parts.append(
        encode_header(b".tarindex_0011223344556677.csv", EntryKind.FILE, len(csv), 0o644, 0)
    )
    parts.append(csv + bytes(padding(len(csv))))
    parts.append(bytes(BLOCK_SIZE * trailing_zeros))
    return b"".join(parts), index_at


def test_locate_index_steps_back_from_the_end() -> None:
    files = {f"dir/file{i:04d}.txt": b"%d" % i * 40 for i in range(100)}
    data, index_at = _tape_bytes(files, trailing_zeros=20)
    found = locate_index(data, 0)
    assert isinstance(found, IndexLocation)
    assert found.header_offset == index_at and found.name == ".tarindex_0011223344556677.csv"
    rows = parse_index_csv(data[found.data_offset : found.data_offset + found.size])
    assert [r.name for r in rows] == list(files)
    assert [m.name for m in scan_bytes(data)][-1] == found.name
    # A tail that starts inside the index asks for more; one that holds its header is enough.
    assert locate_index(data[-2048:], len(data) - 2048) is NEED_MORE
    tail_start = index_at - 1024
    assert locate_index(data[tail_start:], tail_start) == found
    # An archive whose last member is not an index, or with no end marker, has none.
    plain = build_tar(tarfile.USTAR_FORMAT, long_names=False)
    assert locate_index(plain, 0) is None
    assert locate_index(data[: index_at + 512 + found.size], 0) is None
    assert locate_index(bytes(4096), 0) is None
    assert locate_index(bytes(4096), 4096) is NEED_MORE


# --------------------------------------------------------------------------- fields and records


def test_numbers_keys_and_records() -> None:
    assert parse_number(b"0000644\0") == 0o644
    assert parse_number(b"  644 \0") == 0o644
    assert parse_number(b"\0" * 8) == 0
    assert parse_number(b"\x80" + (9 * 1024**3).to_bytes(11, "big")) == 9 * 1024**3
    assert parse_number(b"\xff" * 12) == -1
    assert parse_number(encode_number(-(10**9), 12)) == -(10**9)
    for bad in (b"0o644\0", b"1_2\0", b"+12\0", b"12 34\0", b"89\0"):
        with pytest.raises(ValueError):
            parse_number(bad)
    assert lookup_key("./a//b/./c/") == "a/b/c" == lookup_key("a/b/c")
    assert lookup_key("/etc/passwd") == "/etc/passwd" != lookup_key("etc/passwd")
    assert lookup_key(".") == lookup_key("./") == lookup_key("") == ""
    assert lookup_key("a/../b") == "a/../b"
    # Repeated keys stay, in order (the PAX 0.0 sparse map needs them).
    payload = record("GNU.sparse.offset", "0000001") + record("GNU.sparse.numbytes", "2")
    assert pax_record_list(payload) == [
        ("GNU.sparse.offset", b"0000001"),
        ("GNU.sparse.numbytes", b"2"),
    ]
    # A record without its newline: dropped when nothing uses its key, fatal otherwise.
    assert pax_record_list(b"4 x=") == []
    with pytest.raises(ValueError, match="newline"):
        pax_record_list(b"11 path=abc\0")
    with pytest.raises(ValueError, match="NUL"):
        pax_record_list(b"14 bad\0key=val\n")


def pax_block(kind: bytes, records: bytes, name: bytes = b"pax") -> bytes:
    header = bytearray(encode_header(name, EntryKind.FILE, len(records), 0o644, 0))
    header[156:157] = kind
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + records + bytes(padding(len(records)))


def file_block(name: bytes, content: bytes, kind: bytes = b"0", mtime: int = MTIME) -> bytes:
    header = bytearray(encode_header(name, EntryKind.FILE, len(content), 0o644, mtime))
    header[156:157] = kind
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + content + bytes(padding(len(content)))


def record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + len(str(len(body)))
    if len(str(length)) != len(str(len(body))):
        length += 1
    return str(length).encode() + body


def test_extension_precedence() -> None:
    # Consecutive 'x' headers: the last counts, whole (GNU tar, Go); several 'L': the last.
    data = (
        pax_block(b"x", record("path", "P1") + record("mtime", "111"))
        + pax_block(b"x", record("linkpath", "L2"))
        + file_block(b"hdrname", b"abc")
        + pax_block(b"L", b"first-long\0")
        + pax_block(b"L", b"second-long\0")
        + file_block(b"short", b"")
        + bytes(1024)
    )
    first, second = scan_bytes(data)
    assert (first.name, first.mtime, first.linkname) == ("hdrname", MTIME, "")
    assert first.header_offset == 0 and first.data_offset == 5 * BLOCK_SIZE
    assert second.name == "second-long"

    # As GNU tar reads them: each global header replaces the whole global set; an empty path
    # is used as is (an empty name); an empty mtime is malformed, ignored.
    data = (
        pax_block(b"g", record("path", "G1") + record("mtime", "222"))
        + file_block(b"a", b"")
        + pax_block(b"g", record("uname", "u"))
        + file_block(b"b", b"")
        + pax_block(b"x", record("mtime", ""))
        + file_block(b"c", b"")
        + pax_block(b"g", record("path", ""))
        + file_block(b"d", b"")
        + bytes(1024)
    )
    a, b, c, d = scan_bytes(data)
    assert [(m.name, m.mtime) for m in (a, b, c, d)] == [
        ("G1", 222),
        ("b", MTIME),
        ("c", MTIME),
        ("", MTIME),
    ]


def test_malformed_records() -> None:
    def one(records: bytes) -> list[Member]:
        return scan_bytes(pax_block(b"x", records) + file_block(b"f", b"x") + bytes(1024))

    # A bad mtime is ignored; a bad or negative size is fatal; NULs in names are fatal.
    assert one(record("mtime", "999xxx9324.4"))[0].mtime == MTIME
    assert one(record("mtime", "1748089464.951928467a"))[0].mtime == MTIME
    assert one(record("mtime", "-12.5"))[0].mtime == -12.5
    for bad, why in (
        (record("size", "12x"), "size"),
        (record("size", "-1"), "size"),
        (record("path", "a\0b"), "NUL"),
        (record("linkpath", "a\0b"), "NUL"),
        (b"9 path=a\0", "newline"),
        (b"30      =                    \n" + b"\xff", "PAX"),
    ):
        with pytest.raises(ArchiveFormatError, match=why):
            one(bad)
    # Unknown types are 'other', their data skipped; header-only types carry no data.
    data = (
        file_block(b"acl", b"user::rw-", kind=b"A")
        + file_block(b"dir/", b"12345", kind=b"5")
        + file_block(b"dump", b"listing", kind=b"D")
        + file_block(b"after", b"x")
        + bytes(1024)
    )
    with pytest.raises(ArchiveFormatError):  # the directory's "data" is read as a header
        scan_bytes(data)
    data = (
        file_block(b"acl", b"user::rw-", kind=b"A")
        + file_block(b"dump", b"listing", kind=b"D")
        + file_block(b"after", b"x")
        + bytes(1024)
    )
    acl, dump, after = scan_bytes(data)
    assert (acl.type, acl.typeflag, acl.size, acl.stored_size) == (MemberType.OTHER, "A", 0, 9)
    assert (dump.type, dump.size, dump.stored_size) == (MemberType.DIRECTORY, 0, 7)
    assert after.name == "after"


def test_end_of_archive() -> None:
    one = file_block(b"f", b"abc")
    for tail, marker in (
        (b"", False),
        (bytes(512), True),
        (bytes(2048), True),
    ):
        members, end = scan_with_end(one + tail)
        assert [m.name for m in members] == ["f"]
        assert (end.offset, end.marker) == (512 * 2, marker)
    for cut in (b"x" * 100, bytes(100)):  # a block cut short, zeros or not: a cut
        with pytest.raises(ArchiveFormatError, match="truncated inside a header block"):
            scan_with_end(one + cut)
    with pytest.raises(ArchiveFormatError, match="empty"):
        scan_with_end(b"")
    with pytest.raises(ArchiveFormatError, match="without its member"):
        scan_with_end(pax_block(b"x", record("path", "p")))
    assert scan_with_end(pax_block(b"g", record("comment", "git")) + bytes(1024))[0] == []
