"""Archives made at test time by the stock tools and by atartape's views, for the tests of
reading compressed and sealed archives back (see conftest.py for the fixtures)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

import atartape
from atartape.format.members import Member
from tests.helpers import write

MTIME = 1_700_000_000
PASSPHRASE = "correct horse battery staple"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"the {name} tool is missing (Debian: apt install {name})")
    return path


def gnu_tar() -> str:
    path = tool("tar")
    if b"GNU tar" not in subprocess.run([path, "--version"], capture_output=True).stdout:
        pytest.skip("tar is not GNU tar")
    return path


def make_tree(root: Path) -> None:
    """Files small and larger than the stream window, a hard link, a symlink chain, a sparse
    file, a long name, an empty file and folder; every mtime fixed."""
    rng = random.Random(5)
    write(root / "d" / "big.bin", rng.randbytes(1_500_000))
    write(root / "d" / "a.txt", "alpha\n" * 100)
    write(root / "d" / "empty", b"")
    write(root / "d" / ("n" * 70) / ("m" * 70 + ".txt"), b"a long name")
    os.link(root / "d" / "a.txt", root / "d" / "hard.txt")
    (root / "d" / "sym").symlink_to("a.txt")
    (root / "d" / "chain").symlink_to("sym")
    (root / "e").mkdir()
    with open(root / "sparse.img", "wb") as out:
        out.truncate(3 << 20)
        out.seek(1 << 20)
        out.write(b"middle")
        out.seek((3 << 20) - 5)
        out.write(b"end!!")
    for path in [*root.rglob("*"), root]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)


@dataclass(frozen=True)
class Variant:
    path: Path
    plain: bytes  # the tar inside
    root: str  # the folder it holds, under its name
    compression: str | None
    sealed: bool = False
    random_access: bool = True
    identity: object = None


@dataclass(frozen=True)
class Made:
    src: Path
    variants: dict[str, Variant]


def zstd_d(path: Path) -> bytes:
    return subprocess.run(
        [tool("zstd"), "-d", "-c", str(path)], capture_output=True, check=True
    ).stdout


async def _record(src: Path, index: Path, out: Path, **options: object) -> bytes:
    """A tape of ``src`` in the view the options ask for, written to ``out``; its plain tar."""
    tape = await atartape.record(src, index_path=index, **options)  # type: ignore[arg-type]
    async with await anyio.open_file(out, "wb") as file:
        async for chunk in atartape.TapePlayer(tape).chunks():
            await file.write(chunk)
    plain = atartape.TapePlayer(tape, view="plain")
    return b"".join([chunk async for chunk in plain.chunks()])


def build_made(base: Path) -> Made:
    """The tree, archived by every tool and view this suite reads back (under ``base``)."""
    tar = gnu_tar()
    src = base / "t"
    make_tree(src)
    key = base / "key.txt"
    subprocess.run([tool("age-keygen"), "-o", str(key)], check=True, capture_output=True)
    recipient = next(
        line.split(": ")[1] for line in key.read_text().splitlines() if "public key" in line
    )
    variants: dict[str, Variant] = {}

    def by_tar(name: str, flags: list[str], decompress: object, kind: str | None) -> Path:
        out = base / name
        subprocess.run(
            [tar, "--sort=name", "--format=gnu", "-S", *flags, "-cf", out, "-C", base, "t"],
            check=True,
        )
        plain = decompress(out.read_bytes()) if callable(decompress) else zstd_d(out)
        variants[name] = Variant(out, plain, "t", kind, random_access=kind is None)
        return out

    plain_tar = by_tar("t.tar", [], lambda data: data, None)
    by_tar("t.tar.gz", ["-z"], gzip.decompress, "gzip")
    by_tar("t.tar.bz2", ["-j"], bz2.decompress, "bzip2")
    by_tar("t.tar.xz", ["-J"], lzma.decompress, "xz")
    by_tar("t.tar.zst", ["--zstd"], None, "zstd")
    plain = plain_tar.read_bytes()
    half = len(plain) // 2 + 1234

    # Streams in several pieces: gzip members and zstd frames (one without its checksum).
    pieces = base / "pieces.tar.gz"
    pieces.write_bytes(gzip.compress(plain[:half]) + gzip.compress(plain[half:]))
    variants["gzip members"] = Variant(pieces, plain, "t", "gzip", random_access=False)
    zstd = tool("zstd")
    frames = base / "frames.tar.zst"
    frames.write_bytes(
        subprocess.run([zstd, "-c", "-q"], input=plain[:half], capture_output=True).stdout
        + subprocess.run(
            [zstd, "-c", "-q", "--no-check", "-19"], input=plain[half:], capture_output=True
        ).stdout
    )
    variants["zstd frames"] = Variant(frames, plain, "t", "zstd", random_access=False)

    pyzstd = pytest.importorskip("pyzstd")
    seekable = base / "seekable.tar.zst"
    with pyzstd.SeekableZstdFile(seekable, "w", max_frame_content_size=64 * 1024) as out:
        out.write(plain)
    variants["pyzstd seekable"] = Variant(seekable, plain, "t", "zstd")

    age = tool("age")

    def sealed(name: str, inner: Path, kind: str | None, random_access: bool) -> None:
        out = base / name
        subprocess.run([age, "-e", "-r", recipient, "-o", str(out), str(inner)], check=True)
        variants[name] = Variant(
            out, plain, "t", kind, sealed=True, random_access=random_access, identity=key
        )

    sealed("t.tar.age", plain_tar, None, True)
    sealed("seekable.tar.zst.age", seekable, "zstd", True)
    sealed("t.tar.gz.age", base / "t.tar.gz", "gzip", False)
    pyrage = pytest.importorskip("pyrage")
    passphrased = base / "passphrase.tar.age"
    passphrased.write_bytes(pyrage.passphrase.encrypt(plain, PASSPHRASE))
    variants["pyrage passphrase"] = Variant(
        passphrased, plain, "t", None, sealed=True, identity=PASSPHRASE.encode()
    )

    # atartape's own views, played to files.
    async def own() -> None:
        for name, options, kind, seal in [
            ("tape.tar.zst.age", {"compress": "zstd", "seal": [recipient]}, "zstd", True),
            ("tape.tar.zst", {"compress": "zstd"}, "zstd", False),
            ("tape.tar.age", {"seal": [recipient]}, None, True),
        ]:
            out = base / name
            tape_plain = await _record(
                src, base / f"{name}.db", out, frame_size="64KiB", embed_index=True, **options
            )
            variants[name] = Variant(
                out, tape_plain, "t", kind, sealed=seal, identity=key.read_text()
            )

    anyio.run(own)
    return Made(src, variants)


def reference(plain: bytes) -> tuple[list[tuple[str, str, int, str]], dict[str, bytes]]:
    """What tarfile finds in a tar: (name, type, size, link target) of each member, and the
    content of each file."""
    kinds = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink"}
    listing, contents = [], {}
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        for info in tf:
            kind = kinds.get(info.type, "file")
            listing.append((info.name, kind, info.size if kind == "file" else 0, info.linkname))
            if kind == "file":
                extracted = tf.extractfile(info)
                assert extracted is not None
                contents[info.name] = extracted.read()
    return listing, contents


def entry(member: Member) -> tuple[str, str, int, str]:
    return (member.name, member.type.value, member.size, member.linkname)


BIG = 64 << 20


def build_big(base: Path) -> dict[str, Path]:
    """A tree with a 64 MiB file (zeros, with a few random bytes every MiB), archived with
    each compression by GNU tar."""
    tar = gnu_tar()
    rng = random.Random(9)
    with open(base / "big.bin", "wb") as out:
        for _ in range(BIG >> 20):
            out.write(rng.randbytes(16) + bytes((1 << 20) - 16))
    write(base / "small.txt", "small\n")
    found = {}
    for kind, flag in [("gzip", "-z"), ("bzip2", "-j"), ("xz", "-J"), ("zstd", "--zstd")]:
        found[kind] = base / f"big.{kind}"
        subprocess.run(
            [tar, flag, "-cf", str(found[kind]), "-C", str(base), "big.bin", "small.txt"],
            check=True,
        )
    found["digest"] = base / "big.bin"
    return found
