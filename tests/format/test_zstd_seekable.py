"""atartape.format.zstd_seekable: layout arithmetic, the seek table, frames, and interop."""

from __future__ import annotations

import io
import random
import shutil
import struct
import subprocess
import tarfile
from functools import cache
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from atartape.format import zstd_seekable as zs
from atartape.format.zstd_seekable import (
    FOOTER_SIZE,
    MAX_FRAME_SIZE,
    SeekableError,
    SeekEntry,
    SeekTable,
    SeekTableError,
)

MiB = 1 << 20
ZSTD = shutil.which("zstd")
TAR = shutil.which("tar")
needs_zstd = pytest.mark.skipif(ZSTD is None, reason="the zstd binary is missing (Debian: zstd)")


def needs_zstandard() -> None:
    pytest.importorskip("zstandard", reason="compressing frames needs the zstandard package")


# --------------------------------------------------------------------------- arithmetic

u32 = st.integers(0, 0xFFFFFFFF)
frame_sizes = st.one_of(st.integers(1, 5000), st.sampled_from([1, 512, MiB, MAX_FRAME_SIZE]))
plain_sizes = st.one_of(st.integers(0, 50_000), st.integers(0, 1 << 50))


@given(plain_sizes, frame_sizes)
@example(0, MiB)
@example(MiB, MiB)
@example(MiB + 1, MiB)
def test_frame_count_and_ranges(plain: int, frame: int) -> None:
    count = zs.frame_count(plain, frame)
    assert count == max(1, -(-plain // frame))
    first = zs.frame_plain_range(0, plain, frame)
    last = zs.frame_plain_range(count - 1, plain, frame)
    assert first[0] == 0
    assert last[1] == plain
    assert 0 < last[1] - last[0] <= frame or plain == 0
    if count > 1:
        assert first == (0, frame)
        assert zs.frame_plain_range(count - 2, plain, frame)[1] == last[0]
    with pytest.raises(SeekableError):
        zs.frame_plain_range(count, plain, frame)


def test_frame_count_rejects_bad_sizes() -> None:
    with pytest.raises(SeekableError):
        zs.frame_count(-1, MiB)
    with pytest.raises(SeekableError):
        zs.frame_count(10, 0)
    with pytest.raises(SeekableError):
        zs.frame_count(10, MAX_FRAME_SIZE + 1)


@given(st.lists(st.integers(0, 10_000), max_size=50), st.booleans())
def test_compressed_size_formula(sizes: list[int], checksums: bool) -> None:
    """Z = sum(c_k) + 8m + 17 without checksums, sum(c_k) + 12m + 17 with them."""
    per_entry = 12 if checksums else 8
    assert zs.compressed_size(sizes, checksums) == sum(sizes) + per_entry * len(sizes) + 17
    entries = [SeekEntry(size, 1, 7 if checksums else None) for size in sizes]
    encoded = zs.encode_seek_table(entries, checksums)
    assert len(encoded) == zs.seek_table_size(len(sizes), checksums)
    assert SeekTable(tuple(entries), checksums).size == zs.compressed_size(sizes, checksums)


entries_st = st.lists(
    st.builds(SeekEntry, st.integers(0, 3000), st.integers(0, 3000), u32), min_size=0, max_size=40
)


@given(entries_st, st.booleans(), st.binary(max_size=30))
def test_seek_table_round_trip(entries: list[SeekEntry], checksums: bool, junk: bytes) -> None:
    if not checksums:
        entries = [SeekEntry(e.compressed_size, e.decompressed_size) for e in entries]
    encoded = zs.encode_seek_table(entries, checksums)
    # The skippable frame header, then the entries, then the footer.
    magic, frame_size = struct.unpack_from("<II", encoded)
    assert magic == 0x184D2A5E
    assert frame_size == len(encoded) - 8
    count, descriptor, seekable = struct.unpack_from("<IBI", encoded, len(encoded) - 9)
    assert (count, descriptor, seekable) == (len(entries), 0x80 if checksums else 0, 0x8F92EAB1)
    assert zs.seek_table_size_from_footer(encoded[-9:]) == len(encoded)
    parsed = zs.parse_seek_table(junk + encoded)
    assert parsed == SeekTable(tuple(entries), checksums)
    assert parsed.encode() == encoded
    total = parsed.size
    assert zs.parse_seek_table(encoded, file_size=total) == parsed
    with pytest.raises(SeekTableError):
        zs.parse_seek_table(encoded, file_size=total + 1)
    with pytest.raises(SeekTableError):
        zs.parse_seek_table(encoded[1:])


def test_parse_seek_table_refusals() -> None:
    good = zs.encode_seek_table([SeekEntry(10, 20)], False)
    with pytest.raises(SeekTableError, match="footer"):
        zs.parse_seek_table(good[:-1] + b"\x00")
    with pytest.raises(SeekTableError, match="reserved"):
        zs.parse_seek_table(good[:-5] + b"\x04" + good[-4:])
    with pytest.raises(SeekTableError, match="skippable"):
        zs.parse_seek_table(b"\x00" + good[1:])
    with pytest.raises(SeekTableError):
        zs.parse_seek_table(b"\x5e\x2a\x4d\x18\x05\x00\x00\x00" + good[8:])  # wrong frame size
    with pytest.raises(SeekTableError):
        zs.seek_table_size_from_footer(good[-8:])
    # The two unused low bits of the descriptor are ignored.
    assert zs.parse_seek_table(good[:-5] + b"\x03" + good[-4:]).entries == (SeekEntry(10, 20),)


def test_entries_fit_u32() -> None:
    with pytest.raises(SeekableError):
        SeekEntry(1 << 32, 0)
    with pytest.raises(SeekableError):
        SeekEntry(0, -1)
    with pytest.raises(SeekableError):
        SeekEntry(0, 0, 1 << 32)
    with pytest.raises(SeekableError):
        SeekTable((SeekEntry(1, 1),), with_checksums=True)
    with pytest.raises(SeekableError):
        zs.encode_seek_table([SeekEntry(1, 1)], True)


@st.composite
def tables(draw: st.DrawFn) -> SeekTable:
    frame = draw(st.integers(1, 4000))
    plain = draw(st.integers(0, min(30_000, 60 * frame)))
    count = zs.frame_count(plain, frame)
    sizes = draw(st.lists(st.integers(9, 5000), min_size=count, max_size=count))
    checks = draw(st.none() | st.lists(u32, min_size=count, max_size=count))
    return SeekTable.for_frames(plain, frame, sizes, checks)


@given(tables(), st.data())
def test_locate_every_offset_kind(table: SeekTable, data: st.DataObject) -> None:
    offset = data.draw(st.integers(0, table.size - 1))
    position = table.locate(offset)
    if offset >= table.table_offset:
        assert position.in_seek_table
        assert position.within == offset - table.table_offset
        field = zs.seek_table_field(position.within, table.frame_count, table.with_checksums)
        # The field's bytes are where the encoded table has them.
        encoded = table.encode()
        assert 0 <= field.within < 4 or field.name == "descriptor"
        if field.entry is not None:
            entry = table.entries[field.entry]
            value = {
                "compressed_size": entry.compressed_size,
                "decompressed_size": entry.decompressed_size,
                "checksum": entry.checksum,
            }[field.name]
            start = position.within - field.within
            assert struct.unpack_from("<I", encoded, start)[0] == value
    else:
        assert position.frame is not None
        start, end = table.frame_compressed_range(position.frame)
        assert start <= offset < end
        assert position.within == offset - start
        assert table.frame_of(offset) == position.frame


@given(tables())
def test_frames_tile_the_file(table: SeekTable) -> None:
    assert table.compressed_offsets[0] == 0
    for index in range(table.frame_count):
        start, end = table.frame_compressed_range(index)
        assert end - start == table.entries[index].compressed_size
        plain_start, plain_end = table.frame_plain_range(index)
        assert plain_end - plain_start == table.entries[index].decompressed_size
        if index:
            assert table.frame_compressed_range(index - 1)[1] == start
            assert table.frame_plain_range(index - 1)[1] == plain_start
    assert table.table_offset + table.table_size == table.size


@given(tables(), st.data())
def test_ranges_map_both_ways(table: SeekTable, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, table.size))
    end = data.draw(st.integers(start, table.size))
    frames = table.frames_for_compressed_range(start, end)
    for index in frames:
        frame_start, frame_end = table.frame_compressed_range(index)
        assert frame_start < end and start < frame_end
    if frames:
        assert frames.start == 0 or table.frame_compressed_range(frames.start - 1)[1] <= start
        assert (
            frames.stop == table.frame_count or table.frame_compressed_range(frames.stop)[0] >= end
        )
        plain_start, plain_end = table.plain_range_for_compressed_range(start, end)
        assert plain_start == table.frame_plain_range(frames[0])[0]
        assert plain_end == table.frame_plain_range(frames[-1])[1]
    else:
        assert start == end or start >= table.table_offset
    # Plain to compressed: whole frames that hold every plain byte of the range.
    plain_start = data.draw(st.integers(0, table.plain_size))
    plain_end = data.draw(st.integers(plain_start, table.plain_size))
    comp_start, comp_end = table.compressed_range_for_plain_range(plain_start, plain_end)
    if plain_start == plain_end:
        assert comp_start == comp_end
    else:
        first, last = table.frame_of_plain(plain_start), table.frame_of_plain(plain_end - 1)
        assert comp_start == table.frame_compressed_range(first)[0]
        assert comp_end == table.frame_compressed_range(last)[1]
        back = table.plain_range_for_compressed_range(comp_start, comp_end)
        assert back[0] <= plain_start < plain_end <= back[1]


@given(tables(), st.data())
def test_seek_table_windows_from_few_entries(table: SeekTable, data: st.DataObject) -> None:
    encoded = table.encode()
    start = data.draw(st.integers(0, len(encoded)))
    end = data.draw(st.integers(start, len(encoded)))
    needed = zs.seek_table_entries_for_range(start, end, table.frame_count, table.with_checksums)
    for index in needed:
        entry_start = 8 + index * zs.entry_size(table.with_checksums)
        assert entry_start < end and start < entry_start + zs.entry_size(table.with_checksums)
    window = zs.encode_seek_table_range(
        start,
        end,
        table.frame_count,
        table.with_checksums,
        table.entries[needed.start : needed.stop],
    )
    assert window == encoded[start:end]
    if needed:  # one entry short
        with pytest.raises(SeekableError):
            zs.encode_seek_table_range(
                start,
                end,
                table.frame_count,
                table.with_checksums,
                table.entries[needed.start : needed.stop - 1],
            )


def test_seek_table_field_names() -> None:
    names = [zs.seek_table_field(i, 2, True).name for i in range(zs.seek_table_size(2, True))]
    assert names == (
        ["skippable_magic"] * 4
        + ["frame_size"] * 4
        + (["compressed_size"] * 4 + ["decompressed_size"] * 4 + ["checksum"] * 4) * 2
        + ["number_of_frames"] * 4
        + ["descriptor"]
        + ["seekable_magic"] * 4
    )
    assert zs.seek_table_field(8 + 12 + 5, 2, True) == zs.SeekTableField("decompressed_size", 1, 1)
    assert zs.seek_table_field(8 + 8 + 1, 3, False) == zs.SeekTableField("compressed_size", 1, 1)
    with pytest.raises(SeekableError):
        zs.seek_table_field(zs.seek_table_size(2, True), 2, True)


def test_empty_stream_is_one_empty_frame() -> None:
    assert zs.frame_count(0, MiB) == 1
    table = SeekTable.for_frames(0, MiB, [13])
    assert table.frame_count == 1 and table.plain_size == 0
    assert table.size == 13 + 8 + 17
    assert table.compressed_range_for_plain_range(0, 0) == (13, 13)
    with pytest.raises(SeekableError):
        SeekTable.for_frames(0, MiB, [])


# --------------------------------------------------------------------------- frames


@cache
def sample(size: int, seed: int = 0) -> bytes:
    """Compressible but not trivial bytes: text-like runs with random noise."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(1, 12)) for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) if rng.random() < 0.9 else rng.randbytes(64)
    return bytes(out[:size])


def build(data: bytes, frame: int, checksums: bool = True) -> tuple[SeekTable, list[bytes]]:
    params = zs.FrameParams.current(3)
    frames = [
        zs.compress_frame(data[start:end], params)
        for start, end in (
            zs.frame_plain_range(k, len(data), frame)
            for k in range(zs.frame_count(len(data), frame))
        )
    ]
    checks = [zs.frame_checksum(f) for f in frames] if checksums else None
    return SeekTable.for_frames(len(data), frame, [len(f) for f in frames], checks), frames


@cache
def archive(size: int, frame: int, checksums: bool = True) -> tuple[SeekTable, tuple[bytes, ...]]:
    table, frames = build(sample(size), frame, checksums)
    return table, tuple(frames)


def blob_of(size: int, frame: int, checksums: bool = True) -> bytes:
    table, frames = archive(size, frame, checksums)
    return b"".join(frames) + table.encode()


def test_frame_params_record_the_build() -> None:
    needs_zstandard()
    import zstandard

    params = zs.FrameParams.current(5)
    assert params.level == 5 and params.checksum
    assert params.binding == f"zstandard {zstandard.__version__}"
    assert params.zstd_version == ".".join(map(str, zstandard.ZSTD_VERSION))
    assert zs.FrameParams.parse(params.encode()) == params
    params.check_current()
    other = zs.FrameParams(5, True, params.binding, "0.0.1")
    with pytest.raises(zs.ZstdBuildError, match=r"0\.0\.1"):
        other.check_current()
    with pytest.raises(zs.ZstdBuildError):
        zs.compress_frame(b"data", other)
    with pytest.raises(SeekableError):
        zs.FrameParams.parse("level=3")
    with pytest.raises(SeekableError):
        zs.FrameParams.current(0)


def test_frames_are_deterministic_and_complete() -> None:
    needs_zstandard()
    import zstandard

    params = zs.FrameParams.current(3)
    data = sample(3 * MiB + 5, seed=4)[MiB : 2 * MiB]
    first = zs.compress_frame(data, params)
    assert zs.compress_frame(data, params) == first
    assert zs.compress_frame(bytes(data), zs.FrameParams.parse(params.encode())) == first
    frame_params = zstandard.get_frame_parameters(first)
    assert frame_params.content_size == len(data)
    assert frame_params.has_checksum
    assert frame_params.dict_id == 0
    assert zs.decompress_frame(first) == data
    assert zs.decompress_frame(first, len(data)) == data
    assert len(zs.frame_digest(first)) == 16
    no_checksum = zs.compress_frame(data, zs.FrameParams.current(3, checksum=False))
    assert len(no_checksum) == len(first) - 4
    with pytest.raises(zs.FrameError):
        zs.frame_checksum(no_checksum)


def test_frame_checksum_is_xxh64_low_bits() -> None:
    needs_zstandard()
    xxhash = pytest.importorskip("xxhash", reason="the xxhash package checks the checksum")
    params = zs.FrameParams.current(3)
    for data in (b"", b"a", sample(100_000)):
        frame = zs.compress_frame(data, params)
        assert zs.frame_checksum(frame) == xxhash.xxh64_intdigest(data) & 0xFFFFFFFF


def test_decompress_frame_refusals() -> None:
    needs_zstandard()
    params = zs.FrameParams.current(3)
    frame = zs.compress_frame(sample(10_000), params)
    with pytest.raises(zs.FrameError):
        zs.decompress_frame(frame + b"x")
    with pytest.raises(zs.FrameError):
        zs.decompress_frame(frame + frame)
    with pytest.raises(zs.FrameError):
        zs.decompress_frame(frame[:-1])
    with pytest.raises(zs.FrameError):
        zs.decompress_frame(frame[:-1] + bytes([frame[-1] ^ 1]))  # checksum
    with pytest.raises(zs.FrameError):
        zs.decompress_frame(frame, 9_999)
    with pytest.raises(zs.FrameError):
        zs.decompress_frame(b"\x00" * 20)


def test_check_frame() -> None:
    needs_zstandard()
    frame = zs.compress_frame(sample(5000), zs.FrameParams.current(3))
    entry = SeekEntry(len(frame), 5000, zs.frame_checksum(frame))
    zs.check_frame(frame, entry, zs.frame_digest(frame))
    with pytest.raises(zs.FrameError, match="bytes"):
        zs.check_frame(frame + b"x", entry, zs.frame_digest(frame))
    with pytest.raises(zs.FrameError, match="digest"):
        zs.check_frame(frame, entry, bytes(16))
    with pytest.raises(zs.FrameError, match="checksum"):
        zs.check_frame(frame, SeekEntry(len(frame), 5000, 1), zs.frame_digest(frame))


@pytest.mark.parametrize(("size", "frame"), [(0, MiB), (1, MiB), (3 * MiB + 123, MiB)])
def test_compressed_windows_are_slices(size: int, frame: int) -> None:
    needs_zstandard()
    table, frames = archive(size, frame)
    blob = blob_of(size, frame)
    assert len(blob) == table.size
    rng = random.Random(size)
    edges = sorted({0, table.table_offset, table.size, *table.compressed_offsets})
    cuts = [(a, b) for a in edges for b in edges if a <= b]
    low, high = sorted((rng.randrange(table.size + 1), rng.randrange(table.size + 1)))
    cuts.append((low, high))
    cuts += [(x, x + 1) for x in range(max(0, table.table_offset - 2), table.size)]
    for start, end in cuts:
        needed = table.frames_for_compressed_range(start, end)
        window = zs.compressed_window(table, start, end, frames[needed.start : needed.stop])
        assert window == blob[start:end], (start, end)
    with pytest.raises(SeekableError):
        zs.compressed_window(table, 0, table.size, [])


@pytest.mark.parametrize(("size", "frame"), [(3 * MiB + 123, MiB), (200_000, 4099)])
def test_read_plain_range(size: int, frame: int) -> None:
    needs_zstandard()
    table, _ = archive(size, frame)
    blob = blob_of(size, frame)
    data = sample(size)
    rng = random.Random(1)
    for _ in range(30):
        start = rng.randrange(size)
        end = min(size, start + rng.choice([1, 100, frame, 2 * frame + 3]))
        comp_start, comp_end = table.compressed_range_for_plain_range(start, end)
        assert zs.read_plain_range(table, start, end, blob[comp_start:comp_end]) == data[start:end]
    comp_start, comp_end = table.compressed_range_for_plain_range(0, frame)
    bad_table = SeekTable(
        (SeekEntry(table.entries[0].compressed_size, frame, 12345), *table.entries[1:]), True
    )
    with pytest.raises(zs.FrameError, match="checksum"):
        zs.read_plain_range(bad_table, 0, frame, blob[comp_start:comp_end])
    with pytest.raises(SeekableError):
        zs.read_plain_range(table, 0, frame, blob[comp_start : comp_end - 1])


# --------------------------------------------------------------------------- interop


@needs_zstd
@pytest.mark.parametrize(
    ("size", "frame", "checksums"),
    [
        (0, MiB, True),
        (1, MiB, True),
        (3 * MiB + 123, MiB, True),
        (3 * MiB, MiB, False),
        (1_000_003, 65_537, True),
    ],
)
def test_zstd_cli_decompresses(size: int, frame: int, checksums: bool, tmp_path: Path) -> None:
    needs_zstandard()
    path = tmp_path / "tape.zst"
    path.write_bytes(blob_of(size, frame, checksums))
    out = subprocess.run([str(ZSTD), "-d", "-c", "-q", str(path)], capture_output=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == sample(size)
    check = subprocess.run([str(ZSTD), "-t", "-q", str(path)], capture_output=True)
    assert check.returncode == 0, check.stderr


@needs_zstd
@pytest.mark.skipif(TAR is None, reason="GNU tar is missing")
def test_tar_lists_a_compressed_tar(tmp_path: Path) -> None:
    needs_zstandard()
    buffer = io.BytesIO()
    members = {f"dir/file{i}.bin": sample(50_000 + 7919 * i, seed=i) for i in range(60)}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    plain = buffer.getvalue()
    table, frames = build(plain, MiB)
    assert table.frame_count > 1
    path = tmp_path / "tape.tar.zst"
    path.write_bytes(b"".join(frames) + table.encode())
    listed = subprocess.run(
        [str(TAR), "--zstd", "-tf", str(path)], capture_output=True, text=True, check=True
    )
    assert listed.stdout.split() == list(members)
    extract = tmp_path / "x"
    extract.mkdir()
    subprocess.run([str(TAR), "--zstd", "-xf", str(path), "-C", str(extract)], check=True)
    for name, content in members.items():
        assert (extract / name).read_bytes() == content


@pytest.mark.parametrize(("size", "frame"), [(3 * MiB + 123, MiB), (1_000_003, 65_537), (0, MiB)])
def test_pyzstd_seekable_reader(size: int, frame: int, tmp_path: Path) -> None:
    needs_zstandard()
    pyzstd = pytest.importorskip("pyzstd", reason="pyzstd reads the seekable format")
    path = tmp_path / "tape.zst"
    path.write_bytes(blob_of(size, frame))
    data = sample(size)
    rng = random.Random(size)
    with pyzstd.SeekableZstdFile(str(path), "r") as reader:
        assert reader.read() == data
        for _ in range(25):
            offset = rng.randrange(size + 1)
            length = rng.choice([0, 1, 1000, frame, 3 * frame])
            reader.seek(offset)
            assert reader.read(length) == data[offset : offset + length]
        reader.seek(-min(size, 1), 2)  # from the end
        assert reader.read() == data[-1:]


def test_footer_constants() -> None:
    assert FOOTER_SIZE == 9
    assert zs.seek_table_size(0, False) == 17
    assert zs.seek_table_size(3, True) == 17 + 36
    with pytest.raises(SeekableError):
        zs.seek_table_size(1 << 32, False)


def test_frame_tags_are_per_key_and_per_frame() -> None:
    pytest.importorskip("cryptography")
    key, other = bytes(range(32)), bytes(32)
    frame = zs.compress_frame(b"tape bytes " * 1000, zs.FrameParams.current(3))
    tag = zs.frame_tag(key, 7, frame)
    assert len(tag) == 16
    assert zs.frame_tag(key, 7, frame) == tag
    assert zs.frame_tag(key, 8, frame) != tag
    assert zs.frame_tag(other, 7, frame) != tag
    for at in (0, len(frame) // 2, len(frame) - 1):
        changed = frame[:at] + bytes([frame[at] ^ 1]) + frame[at + 1 :]
        assert zs.frame_tag(key, 7, changed) != tag
    assert zs.frame_tag(key, 7, frame + b"\0") != tag
    with pytest.raises(zs.FrameError):
        zs.frame_tag(key[:16], 7, frame)
