"""Hostile and damaged compressed or sealed archives: truncated and corrupted streams, bombs,
decoders asked for too much memory, wrong or missing age identities, compressions atartape does
not read, layers inside layers. Each is a clear TarTapeError, memory stays bounded, and
nothing is written outside the destination."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import tracemalloc
import zlib
from contextlib import aclosing
from pathlib import Path

import pytest

import atartape
from atartape.archive import Archive, StreamedSource, open_archive
from atartape.archive.streams import STEP, WINDOW
from atartape.errors import (
    ArchiveFormatError,
    EntryNotFoundError,
    SourceNotFoundError,
    TarTapeError,
    UnsafeMemberError,
)
from atartape.format import age
from tests.archive import tarbuild as tb
from tests.archive.made import Made
from tests.archive.test_attacks import chain_14, escapes
from tests.helpers import MemorySource

pytestmark = pytest.mark.anyio


def arena(tmp_path: Path, label: str) -> tuple[Path, Path]:
    """A destination and, beside it, a sentinel folder that must stay as it is."""
    dest = tmp_path / label / "dest"
    sentinel = tmp_path / label / "sentinel"
    sentinel.mkdir(parents=True)
    (sentinel / "keep.txt").write_text("untouched")
    return dest, sentinel


def untouched(dest: Path, sentinel: Path) -> None:
    assert sorted(p.name for p in sentinel.parent.iterdir()) in (
        ["dest", "sentinel"],
        ["sentinel"],
    )
    assert [p.name for p in sentinel.iterdir()] == ["keep.txt"]
    assert (sentinel / "keep.txt").read_text() == "untouched"
    if dest.exists():
        assert escapes(dest) == []
        assert not [p for p in dest.rglob("*") if ".part" in p.name or p.name.startswith(".")]


async def read_everything(data: bytes, identity: object) -> None:
    async with (
        open_archive(MemorySource(data), age_identity=identity) as archive,  # type: ignore[arg-type]
        aclosing(archive.members()) as members,
    ):
        async for member in members:
            if member.is_file:
                await archive.read(member)


# Variants whose every byte is covered by a checksum or a tag (zstd frames without a checksum,
# as pyzstd writes them by default, cannot show damage to a stored block: zstd -d cannot either).
CHECKED = {
    "t.tar.gz": "gzip",
    "t.tar.bz2": "bzip2",
    "t.tar.xz": "xz",
    "t.tar.zst": "zstd",
    "t.tar.age": "age",
    "t.tar.gz.age": "age",
    "tape.tar.zst.age": "age",
    "tape.tar.zst": "zstd",
}


@pytest.mark.parametrize("name", sorted(CHECKED))
async def test_truncated_and_corrupted_streams_are_refused(
    made: Made, name: str, tmp_path: Path
) -> None:
    variant = made.variants[name]
    data = variant.path.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    damaged = {
        "cut": data[: len(data) * 3 // 5],
        "flip": bytes(flipped),
        "stub": data[:100],
    }
    for label, bad in damaged.items():
        with pytest.raises(ArchiveFormatError) as info:
            await read_everything(bad, variant.identity)
        message = str(info.value)
        assert CHECKED[name] in message or "truncated" in message or "damaged" in message, message
        assert "byte 0)" not in message or CHECKED[name] in message, message
        dest, sentinel = arena(tmp_path, label)
        with pytest.raises(TarTapeError):
            async with open_archive(MemorySource(bad), age_identity=variant.identity) as archive:  # type: ignore[arg-type]
                await archive.extract_all(dest)
        untouched(dest, sentinel)


def gz(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


ZEROS_64_MIB = gz(bytes(64 << 20))  # 65 KB: deflate's best is about 1:1032


def bomb(mib: int) -> bytes:
    """A gzip stream of ``mib`` MiB: a tar header claiming a 1 TiB file, then zeros, as
    concatenated gzip members (each 64 MiB of zeros in 65 KB)."""
    return gz(tb.header("bomb.bin", size=1 << 40)) + ZEROS_64_MIB * (mib // 64)


async def test_a_gzip_bomb_is_not_held_in_memory() -> None:
    data = bomb(1024)  # 1 MB expanding to 1 GiB
    assert len(data) < 1_100_000
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        async with open_archive(MemorySource(data)) as archive:
            with pytest.raises(ArchiveFormatError, match=r"truncated.*bomb\.bin") as info:
                await archive.member("bomb.bin")
            peak = tracemalloc.get_traced_memory()[1]
            assert archive.size == (1 << 30) + 512  # every byte went through
    finally:
        tracemalloc.stop()
    assert "past the end of the archive" in str(info.value)
    stream = archive.source
    assert isinstance(stream, StreamedSource)
    assert stream.peak_buffered <= WINDOW + STEP
    assert peak < 16 << 20, f"{peak / 2**20:.1f} MiB held"


async def test_bombs_listed_and_extracted(tmp_path: Path) -> None:
    data = bomb(64)
    async with open_archive(MemorySource(data)) as archive:
        listed = []
        with pytest.raises(ArchiveFormatError, match="truncated"):
            async for member in archive.members():
                listed.append(member.name)
        assert listed == ["bomb.bin"]  # yielded from its header: its data is cut
        dest, sentinel = arena(tmp_path, "bomb")
        with pytest.raises(ArchiveFormatError, match="truncated"):
            await archive.extract_all(dest)
        assert list(dest.iterdir()) == []  # the part file is gone
        untouched(dest, sentinel)
        assert archive.source.peak_buffered <= WINDOW + STEP  # type: ignore[union-attr]
    # Zeros only: an empty tar (the end-of-archive blocks), read to its end for the CRC.
    async with open_archive(MemorySource(ZEROS_64_MIB)) as archive:
        assert [m async for m in archive.members()] == []
        assert archive.possibly_truncated is False and archive.size == 64 << 20
        with pytest.raises(EntryNotFoundError):
            await archive.read("anything")


async def test_a_decoder_asking_for_too_much_memory_is_refused() -> None:
    # A zstd frame declaring a 1 GiB window (window descriptor 0xA0), then one raw block.
    block = bytes(tb.header("a", size=3)) + tb.pad(b"abc") + bytes(1024)
    frame = b"\x28\xb5\x2f\xfd\x00\xa0" + (1 | len(block) << 3).to_bytes(3, "little") + block
    with pytest.raises(ArchiveFormatError, match=r"zstd stream needs more memory .* 128 MiB"):
        async with open_archive(MemorySource(frame)):
            pass


IDENTITY = age.X25519Identity.generate()


def plain_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    return out.getvalue()


async def test_age_identities_missing_wrong_or_unreadable(tmp_path: Path) -> None:
    sealed = age.seal_bytes(plain_tar(), [IDENTITY.recipient])
    with pytest.raises(ArchiveFormatError, match=r"sealed with age.*identity"):
        async with open_archive(MemorySource(sealed)):
            pass
    other = age.X25519Identity.generate()
    with pytest.raises(ArchiveFormatError, match="does not open"):
        async with open_archive(MemorySource(sealed), age_identity=str(other)):
            pass
    with pytest.raises(ArchiveFormatError, match="does not open"):
        async with open_archive(MemorySource(sealed), age_identity=b"a passphrase"):
            pass
    with pytest.raises(SourceNotFoundError, match="identity file"):
        async with open_archive(MemorySource(sealed), age_identity=tmp_path / "missing.txt"):
            pass
    (tmp_path / "key.txt").write_text(f"# a comment\n{IDENTITY}\n")
    async with open_archive(MemorySource(sealed), age_identity=tmp_path / "key.txt") as archive:
        assert archive.sealed and await archive.read("a.txt") == b"hello"
    # A passphrase file (its first line), as atartape's --age-identity-file reads it.
    by_passphrase = age.seal_bytes(plain_tar(), [age.ScryptRecipient(b"pass word", 10)])
    (tmp_path / "pass.txt").write_text("pass word\n")
    async with open_archive(MemorySource(by_passphrase), age_identity=tmp_path / "pass.txt") as a:
        assert await a.read("a.txt") == b"hello"
    # An identity given to an archive that is not sealed: not needed, not an error.
    async with open_archive(MemorySource(plain_tar()), age_identity=str(IDENTITY)) as archive:
        assert not archive.sealed and await archive.read("a.txt") == b"hello"


@pytest.mark.parametrize(
    ("head", "named"),
    [
        (b"\x04\x22\x4d\x18" + bytes(60), "lz4"),
        (b"LZIP\x01" + bytes(60), "lzip"),
        (b"\x89LZO\x00\r\n\x1a\n" + bytes(60), "lzop"),
        (b"\x1f\x9d\x90" + bytes(60), "compress"),
        (b"PK\x03\x04" + bytes(60), "zip"),
    ],
)
async def test_compressions_not_read_are_named(head: bytes, named: str) -> None:
    with pytest.raises(ArchiveFormatError, match=named):
        async with open_archive(MemorySource(head)):
            pass


async def test_layers_inside_layers_are_named() -> None:
    twice = gzip.compress(gzip.compress(plain_tar()))
    with pytest.raises(ArchiveFormatError, match="gzip layer holds a gzip stream"):
        async with open_archive(MemorySource(twice)):
            pass
    sealed_inside = gzip.compress(age.seal_bytes(plain_tar(), [IDENTITY.recipient]))
    with pytest.raises(ArchiveFormatError, match="gzip layer holds an age stream"):
        async with open_archive(MemorySource(sealed_inside), age_identity=str(IDENTITY)):
            pass


async def test_a_tar_whose_first_name_looks_like_a_magic_number_is_a_tar() -> None:
    for name in ("BZh91AY&SY", "\x1f\x8bgz", "LZIP.txt", "PK\x03\x04"):
        data = tb.file(name, b"content") + tb.end()
        async with open_archive(MemorySource(data)) as archive:
            assert archive.compression is None
            assert await archive.read(name) == b"content"


async def test_an_archive_opened_without_open_archive_says_what_it_is() -> None:
    source = MemorySource(gzip.compress(plain_tar()))
    with pytest.raises(ArchiveFormatError, match="not a tar but gzip data"):
        async for _ in Archive(source).members():
            pass


async def test_symlink_chains_through_a_stream_are_refused(tmp_path: Path) -> None:
    chain, triggers = chain_14()
    data = gzip.compress(b"".join([*chain, *triggers]) + tb.end())
    dest, sentinel = arena(tmp_path, "chain")
    async with open_archive(MemorySource(data)) as archive:
        with pytest.raises(UnsafeMemberError) as info:
            await archive.extract_all(dest)
    assert info.value.member == "l0"
    untouched(dest, sentinel)


async def test_hard_links_and_sparse_members_through_a_stream(tmp_path: Path) -> None:
    regions = [(k * 700 + 5, bytes([65 + k]) * (3 + k)) for k in range(8)]
    data = (
        tb.oldgnu_sparse("sparse", regions, 7000)
        + tb.pax_sparse_10("sparse10", regions, 7000)
        + tb.hardlink("h", "sparse")
        + tb.file("x", b"first")
        + tb.hardlink("hx", "x")
        + tb.file("x", b"second")
        + tb.end()
    )
    expected = bytearray(7000)
    for offset, chunk in regions:
        expected[offset : offset + len(chunk)] = chunk
    async with open_archive(MemorySource(gzip.compress(data))) as archive:
        assert await archive.read("h") == bytes(expected)
        assert await archive.read("sparse10") == bytes(expected)
        assert await archive.read("hx") == b"first"  # the last "x" before the link
        assert await archive.read("x") == b"second"
        await archive.extract_all(tmp_path / "out")
    assert (tmp_path / "out" / "h").read_bytes() == bytes(expected)
    assert (tmp_path / "out" / "hx").read_bytes() == b"first"
    assert (tmp_path / "out" / "x").read_bytes() == b"second"


async def test_the_stream_reading_api_is_plain() -> None:
    data = gzip.compress(b"0123456789" * 1000)
    stream = StreamedSource(MemorySource(data), "gzip", window=4096)
    assert await stream.read_range(5, 15) == b"5678901234"
    assert stream.size is None
    assert await stream.read_upto(9_990, 20_000) == b"0123456789"
    assert stream.size == 10_000
    with pytest.raises(ArchiveFormatError, match="10000 plain bytes"):
        await stream.read_range(9_995, 10_005)
    assert await stream.read_range(5_000, 5_003) == b"012" and stream.passes == 2
    assert await stream.read_range(6_000, 6_003) == b"012" and stream.passes == 2
    assert await stream.read_range(9_000, 9_003) == b"012" and stream.passes == 2  # kept
    assert await stream.read_range(0, 3) == b"012" and stream.passes == 3
    assert await stream.finish() == 10_000
    with pytest.raises(ValueError, match="kind"):
        StreamedSource(MemorySource(b""), "lz4")
    assert atartape.archive.StreamedSource is StreamedSource


def _stored_gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=0)  # stored blocks: a flipped byte decodes


def _raw_zstd(data: bytes) -> bytes:
    import zstandard

    return bytes(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(data))


@pytest.mark.parametrize(
    ("compress", "kind"), [(_stored_gzip, "gzip"), (_raw_zstd, "zstd")], ids=["gzip", "zstd"]
)
async def test_a_stream_failing_its_checksum_answers_no_lookup(
    compress: object, kind: str, tmp_path: Path
) -> None:
    """Damage that decodes (a byte of a stored block) shows only in the stream's checksum, at
    its end: no name is read from such a stream, not even one before the damage."""
    payload = os.urandom(3_000_000)  # more than one step: the damage is found at the end
    tar = tb.file("a.txt", b"first") + tb.file("b.bin", payload) + tb.file("c.txt", b"last")
    data = bytearray(compress(tar + tb.end()))  # type: ignore[operator]
    at = bytes(data).index(payload[2_000_000:2_000_064])
    data[at + 10] ^= 0x01
    for name in ("a.txt", "c.txt", "b.bin"):
        async with open_archive(MemorySource(bytes(data))) as archive:
            with pytest.raises(ArchiveFormatError, match=kind):
                await archive.read(name)
    async with open_archive(MemorySource(bytes(data))) as archive:
        listed = []
        with pytest.raises(ArchiveFormatError, match=kind):  # at the end of the pass
            async for member in archive.members():
                listed.append(member.name)
        assert listed[:2] == ["a.txt", "b.bin"]  # c.txt comes in the step that fails
        dest, sentinel = arena(tmp_path, "damaged")
        with pytest.raises(ArchiveFormatError, match=kind):  # as tar -x: after writing
            await archive.extract_all(dest)
        untouched(dest, sentinel)


async def test_more_decoder_memory_when_asked_for(tmp_path: Path) -> None:
    """zstd --long=28 asks for a 256 MiB window: refused by default, read by a StreamedSource that
    allows it."""
    zstd = shutil.which("zstd")
    if zstd is None:
        pytest.skip("the zstd tool is missing (Debian: apt install zstd)")
    tar = tb.file("a.txt", b"hello") + tb.end()
    data = subprocess.run(
        [zstd, "-q", "-c", "--long=28"], input=tar, capture_output=True, check=True
    ).stdout
    with pytest.raises(ArchiveFormatError, match="needs more memory"):
        async with open_archive(MemorySource(data)):
            pass
    stream = StreamedSource(MemorySource(data), "zstd", max_decoder_memory=512 << 20)
    async with open_archive(stream) as archive:
        assert await archive.read("a.txt") == b"hello"
