"""Compressed and sealed archives read back through open_archive, as made by the stock tools
(GNU tar -czf/-cjf/-cJf/--zstd, the zstd CLI, pyzstd's seekable writer, age and age-keygen,
pyrage) and by atartape's own views (record(..., compress="zstd", seal=[...])).

Every member's name, type, size, link target and bytes equal what tarfile finds in the
decompressed (unsealed) tar; extraction gives the tree that was archived. A stream without
random access is read in one pass when members are read inside the listing loop.
"""

from __future__ import annotations

import gzip
import hashlib
from contextlib import aclosing
from pathlib import Path

import pytest

import atartape
from atartape.archive import StreamedSource, open_archive
from atartape.archive.streams import STEP
from tests.archive.made import BIG, Made, entry, reference
from tests.helpers import tree, write

pytestmark = pytest.mark.anyio

VARIANTS = [
    "t.tar",
    "t.tar.gz",
    "t.tar.bz2",
    "t.tar.xz",
    "t.tar.zst",
    "gzip members",
    "zstd frames",
    "pyzstd seekable",
    "t.tar.age",
    "seekable.tar.zst.age",
    "t.tar.gz.age",
    "tape.tar.zst.age",
    "tape.tar.zst",
    "tape.tar.age",
]


@pytest.mark.parametrize("name", VARIANTS)
async def test_read_back_equals_tarfile(made: Made, name: str, tmp_path: Path) -> None:
    await read_back(made, name, tmp_path)


# pyrage seals a passphrase with scrypt at work factor 19: seconds of one worker thread, the
# same on every event loop (AgeSource's passphrase path runs on all three in test_decoded.py).
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_passphrase_sealed_tar_from_pyrage(made: Made, tmp_path: Path) -> None:
    await read_back(made, "pyrage passphrase", tmp_path)


async def read_back(made: Made, name: str, tmp_path: Path) -> None:
    """Everything in the archive ``name`` equals what tarfile finds in the tar inside."""
    variant = made.variants[name]
    listing, contents = reference(variant.plain)
    async with open_archive(variant.path, age_identity=variant.identity) as archive:  # type: ignore[arg-type]
        assert archive.compression == variant.compression
        assert archive.sealed == variant.sealed
        assert archive.random_access == variant.random_access
        found, read = [], {}
        async with aclosing(archive.members()) as members:
            async for member in members:  # reading inside the loop: one pass
                found.append(entry(member))
                if member.is_file:
                    read[member.name] = await archive.read(member)
        assert found == listing
        assert read == contents
        assert archive.size == len(variant.plain)
        assert archive.passes == (0 if variant.random_access else 1)
        # Lookups by name: a hard link reads what it stands for, a sparse file its holes.
        if name.startswith("tape"):
            assert await archive.read("t/d/a.txt") == b"alpha\n" * 100
        else:
            assert await archive.read("t/d/hard.txt") == b"alpha\n" * 100
            sparse = await archive.read("t/sparse.img")
            assert len(sparse) == 3 << 20 and sparse[1 << 20 : (1 << 20) + 6] == b"middle"
        chunks = [c async for c in archive.chunks("t/d/big.bin", chunk_size=100_000)]
        assert b"".join(chunks) == contents["t/d/big.bin"]
        await archive.extract_all(tmp_path / "out")
    assert tree(tmp_path / "out" / variant.root) == tree(made.src)


async def test_streamed_lookups_cost_passes_and_say_so(made: Made, tmp_path: Path) -> None:
    """A lookup by name on a stream: one pass to learn the listing, then one to the member;
    forward reads continue the pass, a read behind it starts a new one."""
    variant = made.variants["t.tar.xz"]
    async with open_archive(variant.path) as archive:
        assert archive.size is None  # not known before a pass has reached the end
        assert await archive.read("t/d/big.bin") == reference(variant.plain)[1]["t/d/big.bin"]
        assert archive.passes == 2 and archive.size == len(variant.plain)
        assert await archive.read("t/sparse.img") == (Path(made.src) / "sparse.img").read_bytes()
        assert archive.passes == 2  # after big.bin: forward
        assert await archive.read("t/d/a.txt") == b"alpha\n" * 100
        assert archive.passes == 3  # before it: from the start again
        assert [m.name async for m in archive.members()][-1] == "t/sparse.img"
        assert await archive.embedded_index() is None
        written = await archive.extract("t/d/hard.txt", tmp_path / "one")
        assert written is not None and Path(written).read_bytes() == b"alpha\n" * 100


async def test_seekable_zstd_with_frames_too_large_is_read_as_a_stream(
    made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atartape.archive import decoded as decoded_module

    variant = made.variants["pyzstd seekable"]
    monkeypatch.setattr(decoded_module, "MAX_FRAME_BYTES", 1000)
    async with open_archive(variant.path) as archive:
        assert archive.compression == "zstd" and not archive.random_access
        assert await archive.read("t/d/a.txt") == b"alpha\n" * 100
    async with atartape.archive.LocalFileSource(variant.path) as source:
        with pytest.raises(atartape.ArchiveFormatError, match="frames too large"):
            await decoded_module.decoded(source)


async def test_an_embedded_index_is_confirmed_on_a_stream_too(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.txt", "a")
    write(tmp_path / "d" / "b.txt", "b")
    tape = await atartape.record(tmp_path / "d", embed_index=True)
    plain = b"".join([c async for c in atartape.TapePlayer(tape).chunks()])
    (tmp_path / "t.tar.gz").write_bytes(gzip.compress(plain))
    async with open_archive(tmp_path / "t.tar.gz") as archive:
        rows = await archive.embedded_index()
        assert rows is not None and [r.name for r in rows] == ["d", "d/a.txt", "d/b.txt"]


# --------------------------------------------------------------------------- bounded memory


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "zstd"])
async def test_a_stream_is_read_in_bounded_memory(
    big: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    import tracemalloc

    expected = hashlib.sha256(big["digest"].read_bytes()).hexdigest()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        async with open_archive(big[kind]) as archive:
            digests = {}
            async for member in archive.members():
                digest = hashlib.sha256()
                async for chunk in archive.chunks(member):
                    digest.update(chunk)
                digests[member.name] = digest.hexdigest()
            if kind == "gzip":
                await archive.extract_all(tmp_path / "out")
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digests["big.bin"] == expected
    assert archive.size is not None and archive.size > BIG
    stream = archive.source
    assert isinstance(stream, StreamedSource)
    # What the reader holds: the window and one step of plain bytes; the Python heap (the
    # decoders' buffers included, except zstd's own, capped at MAX_DECODER_MEMORY) stays
    # far below the 64 MiB that went through it.
    assert stream.peak_buffered <= stream.window + STEP
    assert peak < 24 << 20, f"{peak / 2**20:.1f} MiB held"
    assert archive.passes == (2 if kind == "gzip" else 1)
    if kind == "gzip":
        assert (tmp_path / "out" / "big.bin").stat().st_size == BIG
