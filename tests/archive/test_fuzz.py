"""The reader against mutated archives: bit flips, truncations, header fields rewritten (with
the checksum fixed) and spliced headers, on valid archives of every format this reader knows.

Whatever the bytes: listing, reading and extracting either succeed or raise a TarTapeError,
never anything else; nothing is written outside the destination (a sentinel folder beside it
stays as it was, and every symlink made resolves inside); nothing hangs (a deadline).
``--fuzz`` (see conftest.py) runs 20,000 examples instead of 60 per event loop.

The differential mode (``--fuzz`` or ``ATARTAPE_FUZZ`` only: it runs GNU tar on every example)
lists each mutated archive with atartape and with GNU tar, and fails on any third answer: a
listing that is neither GNU tar's nor a refusal (see :mod:`tests.archive.gnutar`).

The same mutations also go through the compressed and sealed paths: the mutated tar is
compressed (gzip, bzip2, xz, zstd, seekable zstd) or sealed (age, age over seekable zstd), then
the compressed or sealed bytes may be damaged too (bit flips, truncation).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atartape.archive import open_archive
from atartape.errors import TarTapeError
from atartape.format import age
from atartape.format.embedded import build_index_csv, index_row
from tests.archive import tarbuild as tb
from tests.archive.fuzzing import examples
from tests.archive.gnutar import third_answer
from tests.archive.test_attacks import escapes
from tests.helpers import MemorySource

pytestmark = pytest.mark.anyio

EXAMPLES = examples(60)
CORPUS = Path(__file__).resolve().parent.parent / "data" / "archives"
READ_LIMIT = 1 << 20  # members larger than this are read by their first chunk only


def tarfile_seed(fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:

        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime = kind, len(data), tb.MTIME
            for key, value in kw.items():
                setattr(info, key, value)
            tf.addfile(info, io.BytesIO(data) if data else None)

        add("d", tarfile.DIRTYPE, mode=0o755)
        add("d/a.txt", data=b"alpha" * 50)
        add("d/link", tarfile.SYMTYPE, linkname="a.txt")
        add("d/up", tarfile.SYMTYPE, linkname="../d")
        add("hard", tarfile.LNKTYPE, linkname="d/a.txt")
        if fmt != tarfile.USTAR_FORMAT:
            add("d/" + "l" * 120, data=b"long name")
            add("caf\u00e9", data=b"\xff" * 700)
    return out.getvalue()


def seeds() -> list[bytes]:
    regions = [(k * 700 + 5, bytes([65 + k]) * (3 + k)) for k in range(8)]
    files = [tb.file("x", b"first"), tb.file("x", b"second"), tb.symlink("s", "x")]
    rows = [index_row("x", 5, 0), index_row("x", 6, 1024), index_row("s", 0, 2048)]
    indexed = b"".join(files) + tb.file(".tarindex_00.csv", build_index_csv(rows)) + tb.end()
    out = [
        tarfile_seed(tarfile.USTAR_FORMAT),
        tarfile_seed(tarfile.GNU_FORMAT),
        tarfile_seed(tarfile.PAX_FORMAT),
        tb.oldgnu_sparse("sparse", regions, 7000) + tb.file("after", b"x") + tb.end(),
        tb.pax_sparse_10("sparse", regions, 7000) + tb.hardlink("h", "sparse") + tb.end(),
        tb.pax([("path", "g")], typeflag=b"g") + tb.gnu_long(b"L", "n" * 200) + tb.file("f"),
        indexed,
    ]
    for name in (
        "go-sparse-formats.tar",
        "go-gnu-multi-hdrs.tar",
        "go-pax-global-records.tar",
        "libarchive-test_compat_solaris_tar_acl.tar",
        "go-gnu-incremental.tar",
        "go-star.tar",
    ):
        out.append((CORPUS / name).read_bytes())
    return out


SEEDS = seeds()

# Header fields (offset, width) worth rewriting, and values worth writing there.
FIELDS = [
    (0, 100),  # name
    (100, 8),  # mode
    (124, 12),  # size
    (136, 12),  # mtime
    (156, 1),  # typeflag
    (157, 100),  # linkname
    (257, 8),  # magic and version
    (345, 155),  # prefix / old-GNU atime, ctime, sparse map
    (386, 24),  # first old-GNU sparse entry
    (482, 1),  # isextended
    (483, 12),  # realsize
]
NUMBERS = st.one_of(
    st.integers(0, 8**11 - 1).map(lambda n: b"%011o\0" % n),
    st.sampled_from([0, 1, 511, 512, 513, 8**11, 2**40, 2**63 - 1, -1, -(2**40)]).map(
        lambda n: tb.base256(n, 12)
    ),
)
VALUES = st.one_of(
    st.binary(max_size=24),
    NUMBERS,
    st.sampled_from(
        [b"0", b"1", b"2", b"5", b"S", b"x", b"g", b"L", b"K", b"A", b"V", b"D", b"\0", b"7"]
    ),
    st.sampled_from([b"../../etc", b"/etc/passwd", b"..", b".", b"a/../../b", b"\xff\xfe"]),
)


OPS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("field"), st.integers(0, 1 << 12), st.sampled_from(FIELDS), VALUES),
    st.tuples(
        st.just("splice"),
        st.integers(0, len(SEEDS) - 1),
        st.integers(0, 1 << 12),
        st.integers(1, 3),
        st.integers(0, 1 << 12),
        st.booleans(),
    ),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20)),
    st.tuples(
        st.just("pax"),
        st.sampled_from(["path", "linkpath", "size", "mtime", "GNU.sparse.map"]),
        VALUES,
        st.integers(0, 1 << 12),
    ),
)
RECIPES = st.tuples(st.integers(0, len(SEEDS) - 1), st.lists(OPS, min_size=1, max_size=4))


def mutate(recipe: tuple[int, list[tuple[object, ...]]]) -> bytes:
    """Apply a recipe (drawn by hypothesis, printed small when a test fails) to its seed."""
    seed, ops = recipe
    data = bytearray(SEEDS[seed])
    for op in ops:
        blocks = max(1, len(data) // tb.BLOCK)
        kind = op[0]
        if kind == "flip" and data:
            _, at, bit = op
            data[int(at) % len(data)] ^= 1 << int(bit)  # type: ignore[call-overload]
        elif kind == "field" and len(data) >= tb.BLOCK:
            _, index, (offset, width), value = op  # type: ignore[misc]
            block = index % (len(data) // tb.BLOCK) * tb.BLOCK
            raw = value[:width].ljust(width, b"\0") if width > 1 else (value[:1] or b"\0")
            data[block + offset : block + offset + len(raw)] = raw
            data[block : block + tb.BLOCK] = tb.fix_checksum(
                bytearray(data[block : block + tb.BLOCK])
            )
        elif kind == "splice":
            _, source, start, count, where, insert = op  # type: ignore[misc]
            other = SEEDS[source]
            start = start % max(1, len(other) // tb.BLOCK) * tb.BLOCK
            piece = other[start : start + tb.BLOCK * count]
            at = where % (blocks + 1) * tb.BLOCK
            if insert:
                data[at:at] = piece
            else:
                data[at : at + len(piece)] = piece
        elif kind == "cut":
            del data[int(op[1]) % (len(data) + 1) :]  # type: ignore[call-overload]
        elif kind == "pax":
            _, key, value, where = op  # type: ignore[misc]
            at = where % (blocks + 1) * tb.BLOCK
            data[at:at] = tb.member("p", tb.pax_record(key, value), typeflag=b"x")
    return bytes(data)


async def exercise(data: bytes, root: Path, *, age_identity: str | None = None) -> None:
    """List, read and extract ``data`` under ``root/dest``; only TarTapeErrors may escape."""
    dest = root / "dest"
    with contextlib.suppress(TarTapeError):
        async with open_archive(MemorySource(data), age_identity=age_identity) as archive:
            listed = []
            with contextlib.suppress(TarTapeError):
                async for member in archive.members():
                    listed.append(member)
            for member in listed[:50]:
                with contextlib.suppress(TarTapeError):
                    if member.size <= READ_LIMIT:
                        await archive.read(member)
                    else:
                        chunks = archive.chunks(member, chunk_size=4096)
                        try:
                            await chunks.__anext__()
                        finally:
                            await chunks.aclose()
                with contextlib.suppress(TarTapeError):
                    await archive.read(member.name)
            with contextlib.suppress(TarTapeError):
                await archive.embedded_index()
            with contextlib.suppress(TarTapeError):
                await archive.extract_all(dest)


async def fuzz_one(data: bytes, age_identity: str | None = None) -> None:
    """:func:`exercise` in a fresh folder, then check nothing escaped it."""
    root = Path(tempfile.mkdtemp(prefix="atartape-fuzz-"))
    try:
        sentinel = root / "sentinel"
        sentinel.mkdir()
        (sentinel / "keep.txt").write_text("untouched")
        with anyio.fail_after(30):
            await exercise(data, root, age_identity=age_identity)
        assert sorted(p.name for p in root.iterdir()) in (["dest", "sentinel"], ["sentinel"])
        assert [p.name for p in sentinel.iterdir()] == ["keep.txt"]
        assert (sentinel / "keep.txt").read_text() == "untouched"
        if (root / "dest").exists():
            assert escapes(root / "dest") == []
    finally:
        for folder, dirs, _ in os.walk(root):  # extraction may leave read-only folders
            for name in dirs:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    with contextlib.suppress(OSError):
                        os.chmod(path, 0o700)
        shutil.rmtree(root, ignore_errors=True)


def test_the_seeds_are_valid() -> None:
    for seed in SEEDS[:3]:
        with tarfile.open(fileobj=io.BytesIO(seed)) as tf:
            assert tf.getmembers()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(recipe=RECIPES)
async def test_fuzz_mutated_archives(recipe: tuple[int, list[tuple[object, ...]]]) -> None:
    await fuzz_one(mutate(recipe))


@pytest.mark.skipif(
    not os.environ.get("ATARTAPE_FUZZ"),
    reason="the differential run against GNU tar: --fuzz or ATARTAPE_FUZZ",
)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(recipe=RECIPES)
async def test_fuzz_differential_against_gnu_tar(
    recipe: tuple[int, list[tuple[object, ...]]],
) -> None:
    data = mutate(recipe)
    with anyio.fail_after(60):
        assert await third_answer(data) is None


IDENTITY = age.X25519Identity.generate()


def seekable_zstd(data: bytes) -> bytes:
    import pyzstd

    out = io.BytesIO()
    checksummed = {pyzstd.CParameter.checksumFlag: 1}
    with pyzstd.SeekableZstdFile(
        out, "w", level_or_option=checksummed, max_frame_content_size=2048
    ) as writer:
        writer.write(data)
    return out.getvalue()


def zstd_stream(data: bytes) -> bytes:
    import zstandard

    compressed: bytes = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    return compressed


LAYERS = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": zstd_stream,
    "seekable zstd": seekable_zstd,
    "age": lambda data: age.seal_bytes(data, [IDENTITY.recipient]),
    "age over seekable zstd": lambda data: age.seal_bytes(
        seekable_zstd(data), [IDENTITY.recipient]
    ),
}
DAMAGE = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
        st.tuples(st.just("cut"), st.integers(0, 1 << 20)),
    ),
    max_size=2,
)


def damage(data: bytes, ops: list[tuple[object, ...]]) -> bytes:
    out = bytearray(data)
    for op in ops:
        if op[0] == "flip" and out:
            out[int(op[1]) % len(out)] ^= 1 << int(op[2])  # type: ignore[call-overload]
        elif op[0] == "cut":
            del out[int(op[1]) % (len(out) + 1) :]  # type: ignore[call-overload]
    return bytes(out)


@settings(
    max_examples=max(EXAMPLES // 2, 30),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(recipe=RECIPES, layer=st.sampled_from(sorted(LAYERS)), ops=DAMAGE)
async def test_fuzz_compressed_and_sealed_archives(
    recipe: tuple[int, list[tuple[object, ...]]], layer: str, ops: list[tuple[object, ...]]
) -> None:
    data = damage(LAYERS[layer](mutate(recipe)), ops)
    await fuzz_one(data, age_identity=str(IDENTITY))
