"""Compressed and sealed archives read by range: seekable zstd, age, both; made by atartape and by
the stock tools (pyzstd, age, pyrage); damaged and hostile ones refused."""

from __future__ import annotations

import io
import itertools
import os
import random
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

import atartape
from atartape.archive.decoded import AgeSource, SeekableZstdSource, decoded, sniff
from atartape.archive.sources import LocalFileSource
from atartape.format import age, zstd_seekable
from tests.helpers import write

pytestmark = pytest.mark.anyio

IDENTITY = age.X25519Identity.generate()
RECIPIENT = str(IDENTITY.recipient)


class Counting:
    """A range source over bytes that counts what was fetched."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fetched = 0
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return len(self.data)

    async def read_range(self, start: int, end: int) -> bytes:
        self.fetched += end - start
        self.reads.append((start, end))
        return self.data[start:end]


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def tar_read(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def a_tar() -> bytes:
    rng = random.Random(7)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(30):
            data = rng.randbytes(rng.choice([0, 100, 5000, 70_000, 200_000]))
            info = tarfile.TarInfo(f"dir/file{i:02}.bin")
            info.size = len(data)
            info.mtime = 1_700_000_000 + i
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def cuts(size: int, *marks: int) -> list[tuple[int, int]]:
    rng = random.Random(size)
    points = {0, 1, size - 1, size, *(m for m in marks if 0 <= m <= size)}
    points |= {rng.randrange(size + 1) for _ in range(40)}
    ordered = sorted(points)
    pairs = list(itertools.pairwise(ordered))
    pairs += [(a, min(size, a + n)) for a in ordered[:20] for n in (0, 1, 511, 65_536, 70_000)]
    return pairs


async def check_ranges(source: object, plain: bytes, *marks: int) -> None:
    await source.prepare()  # type: ignore[attr-defined]
    assert source.size == len(plain)  # type: ignore[attr-defined]
    for a, b in cuts(len(plain), *marks):
        assert await source.read_range(a, b) == plain[a:b], (a, b)  # type: ignore[attr-defined]


async def test_seekable_zstd_written_by_pyzstd(tmp_path: Path) -> None:
    pyzstd = pytest.importorskip("pyzstd")
    plain = a_tar()
    path = tmp_path / "t.tar.zst"
    with pyzstd.SeekableZstdFile(path, "w", max_frame_content_size=50_000) as out:
        out.write(plain)
    async with SeekableZstdSource(LocalFileSource(path)) as source:
        assert source.table is not None and source.table.frame_count > 10
        await check_ranges(source, plain, *[50_000 * k for k in range(40)])
    # open_archive reads it as the tar it holds, by range
    source = SeekableZstdSource(LocalFileSource(path))
    async with source, atartape.open_archive(source) as archive:
        assert [m.name async for m in archive.members()] == tar_names(plain)
        assert await archive.read("dir/file07.bin") == tar_read(plain, "dir/file07.bin")


async def test_one_member_of_a_compressed_tape_costs_its_frames(tmp_path: Path) -> None:
    write(tmp_path / "d" / "big.bin", os.urandom(2_000_000))
    write(tmp_path / "d" / "small.txt", "small\n")
    tape = await atartape.record(tmp_path / "d", compress="zstd", frame_size="64KiB")
    compressed = b"".join([c async for c in atartape.TapePlayer(tape).chunks()])
    plain = b"".join([c async for c in atartape.TapePlayer(tape, view="plain").chunks()])
    counting = Counting(compressed)
    source = SeekableZstdSource(counting)
    await source.prepare()
    entry = await tape.entry("d/small.txt")
    table_cost = counting.fetched
    assert await source.read_range(entry.data_offset, entry.data_offset + 6) == b"small\n"
    assert counting.fetched - table_cost < 200_000  # one or two frames, not the 2 MB tape
    await check_ranges(SeekableZstdSource(Counting(compressed)), plain, entry.start_offset)


async def test_age_written_by_the_age_tool(tmp_path: Path) -> None:
    if shutil.which("age") is None:
        pytest.skip("the age tool is missing (Debian: age)")
    plain = a_tar()
    (tmp_path / "t.tar").write_bytes(plain)
    subprocess.run(
        ["age", "-e", "-r", RECIPIENT, "-o", tmp_path / "t.tar.age", tmp_path / "t.tar"],
        check=True,
    )
    key_file = f"# created: now\n# public key: {RECIPIENT}\n{IDENTITY}\n"
    async with AgeSource(LocalFileSource(tmp_path / "t.tar.age"), key_file) as source:
        await check_ranges(source, plain, *[65_536 * k for k in range(100)])
    sealed = AgeSource(LocalFileSource(tmp_path / "t.tar.age"), str(IDENTITY))
    async with sealed, atartape.open_archive(sealed) as archive:
        assert [m.name async for m in archive.members()] == tar_names(plain)


async def test_age_with_a_passphrase_from_pyrage(tmp_path: Path) -> None:
    pyrage = pytest.importorskip("pyrage")
    plain = a_tar()[:300_000]
    sealed = pyrage.passphrase.encrypt(plain, "correct horse")
    source = AgeSource(Counting(sealed), "correct horse")
    await check_ranges(source, plain)
    with pytest.raises(atartape.ArchiveFormatError, match="does not open"):
        await AgeSource(Counting(sealed), "wrong horse").prepare()


async def test_a_sealed_compressed_tape_reads_back_fetching_only_its_chunks(
    tmp_path: Path,
) -> None:
    write(tmp_path / "d" / "big.bin", os.urandom(3_000_000))
    write(tmp_path / "d" / "z" / "note.txt", "note\n" * 10)
    tape = await atartape.record(
        tmp_path / "d", compress="zstd", frame_size="64KiB", seal=[RECIPIENT]
    )
    assert tape.view == "zstd+age"
    stored = b"".join([c async for c in atartape.TapePlayer(tape).chunks()])
    plain = b"".join([c async for c in atartape.TapePlayer(tape, view="plain").chunks()])
    counting = Counting(stored)
    source = await decoded(counting, age_identity=str(IDENTITY))
    assert source.size == len(plain)
    opened = counting.fetched
    async with atartape.open_archive(source) as archive:
        assert await archive.read("d/z/note.txt") == b"note\n" * 10
    assert counting.fetched - opened < len(stored) // 4  # its frames' chunks, not the tape
    await check_ranges(await decoded(Counting(stored), age_identity=str(IDENTITY)), plain)
    with pytest.raises(atartape.ArchiveFormatError, match="identity"):
        await decoded(Counting(stored))


async def test_a_damaged_chunk_or_frame_is_refused_the_rest_reads(tmp_path: Path) -> None:
    plain = a_tar()
    sealed = bytearray(age.seal_bytes(plain, [IDENTITY.recipient]))
    header = age.header_length(bytes(sealed))
    assert header is not None
    sealed[header + 3 * age.SEALED_CHUNK_SIZE + 100] ^= 1  # chunk 3
    source = AgeSource(Counting(bytes(sealed)), str(IDENTITY))
    assert await source.read_range(0, 65_536) == plain[:65_536]
    with pytest.raises(atartape.ArchiveFormatError, match="damaged"):
        await source.read_range(3 * 65_536 + 10, 3 * 65_536 + 20)
    assert await source.read_range(5 * 65_536, 6 * 65_536) == plain[5 * 65_536 : 6 * 65_536]

    pyzstd = pytest.importorskip("pyzstd")
    path = tmp_path / "t.tar.zst"
    # Frames with their content checksum (atartape's own always have one): without it, damage
    # to a stored (incompressible) block would not show.
    checksummed = {pyzstd.CParameter.checksumFlag: 1}
    with pyzstd.SeekableZstdFile(
        path, "w", level_or_option=checksummed, max_frame_content_size=50_000
    ) as out:
        out.write(plain)
    data = bytearray(path.read_bytes())
    zsource = SeekableZstdSource(Counting(bytes(data)))
    await zsource.prepare()
    assert zsource.table is not None
    lo, hi = zsource.table.frame_compressed_range(2)
    data[(lo + hi) // 2] ^= 0xFF
    damaged = SeekableZstdSource(Counting(bytes(data)))
    assert await damaged.read_range(0, 1000) == plain[:1000]
    with pytest.raises(atartape.ArchiveFormatError, match="frame 2"):
        await damaged.read_range(100_000, 100_010)


async def test_hostile_seek_tables_and_headers(tmp_path: Path) -> None:
    frame = zstd_seekable.compress_frame(b"x" * 100, zstd_seekable.FrameParams.current())
    # A table declaring a frame of 1 TiB: refused before anything is allocated.
    entry = zstd_seekable.SeekEntry(len(frame), 100, None)
    table = bytearray(zstd_seekable.encode_seek_table([entry], False))
    struct.pack_into("<I", table, 8 + 4, 0xFFFFFFFF)
    with pytest.raises(atartape.ArchiveFormatError):
        await SeekableZstdSource(Counting(frame + bytes(table))).prepare()
    # Sizes that do not account for the file, a truncated file, no footer at all.
    good = frame + zstd_seekable.encode_seek_table([entry], False)
    for bad in (frame + frame + good[len(frame) :], good[:-1], b"\x00" * 5, b"not zstd" * 10):
        with pytest.raises(atartape.ArchiveFormatError):
            await SeekableZstdSource(Counting(bad)).prepare()
    # An age header that never ends, and one that is not age.
    endless = b"age-encryption.org/v1\n-> X25519 " + b"A" * 3_000_000
    with pytest.raises(atartape.ArchiveFormatError, match="does not end"):
        await AgeSource(Counting(endless), str(IDENTITY)).prepare()
    with pytest.raises(atartape.ArchiveFormatError):
        await AgeSource(Counting(b"age-encryption.org/v2\n" + b"x" * 100), "pw").prepare()


async def test_sniff_names_what_it_sees() -> None:
    assert await sniff(Counting(b"age-encryption.org/v1\n...")) == "age"
    assert await sniff(Counting(b"\x28\xb5\x2f\xfd....")) == "zstd"
    assert await sniff(Counting(b"\x1f\x8b\x08\x00....")) == "gzip"
    assert await sniff(Counting(b"BZh91AY&SY")) == "bzip2"
    assert await sniff(Counting(b"\xfd7zXZ\x00\x00")) == "xz"
    assert await sniff(Counting(a_tar())) == "tar"
    assert await sniff(Counting(b"")) == "tar"
    with pytest.raises(atartape.ArchiveFormatError, match="gzip"):
        await decoded(Counting(b"\x1f\x8b\x08\x00" + bytes(100)))
