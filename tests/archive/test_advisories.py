"""The published tar parser differentials and extraction advisories (see
:mod:`tests.archive.advisories` for each fixture and its source).

For each: every archive is listed by atartape and by GNU tar, and atartape's listing is GNU
tar's or a refusal (:class:`ArchiveFormatError`), never a third answer; then the archives are
extracted in turn into one destination, which ends without an error or with
:class:`UnsafeMemberError`/:class:`ArchiveFormatError`, within a deadline, and with nothing
written, linked, chmod-ed or touched outside it (its siblings are compared before and after,
modes and mtimes included; every symlink in it resolves inside).
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tarfile
from pathlib import Path

import anyio
import pytest

from atartape.archive import open_archive
from atartape.errors import ArchiveFormatError, UnsafeMemberError
from tests.archive.advisories import ADVISORIES, Advisory
from tests.archive.gnutar import our_listing, third_answer
from tests.archive.test_attacks import escapes
from tests.helpers import MemorySource

pytestmark = pytest.mark.anyio

Snapshot = dict[str, tuple[int, int, bytes | str]]


def snapshot(root: Path, skip: Path) -> Snapshot:
    """Every entry under ``root`` but ``skip``: its mode, mtime (ns) and content or target."""
    out: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in [*dirs, *files, "."]:
            path = Path(folder, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                content: bytes | str = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = path.read_bytes()
            else:
                content = ""
            out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, content)
    return out


def arena(tmp_path: Path) -> tuple[Path, Path]:
    """``outer/dest`` (empty) beside ``outer/outside/secret.txt`` and ``outer/flag``."""
    outer = tmp_path / "outer"
    outside = outer / "outside"
    outside.mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    (outer / "flag").write_text("flag")
    os.chmod(outside / "secret.txt", 0o600)
    os.chmod(outside, 0o700)
    for path in (outside / "secret.txt", outside, outer / "flag"):
        os.utime(path, ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))
    dest = outer / "dest"
    dest.mkdir()
    return tmp_path, dest


async def extract_each(archives: list[bytes], dest: Path) -> list[str]:
    """Extract each archive in turn; what each ended with."""
    outcomes = []
    for data in archives:
        try:
            async with open_archive(MemorySource(data)) as archive:
                await archive.extract_all(dest)
        except (UnsafeMemberError, ArchiveFormatError) as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
        else:
            outcomes.append("extracted")
    return outcomes


@pytest.mark.parametrize("advisory", ADVISORIES, ids=[a.name for a in ADVISORIES])
async def test_advisory(advisory: Advisory, tmp_path: Path) -> None:
    root, dest = arena(tmp_path)
    advisory.plant(dest)
    planted = escapes(dest)  # what the attack starts from (CVE-2025-45582, second step)
    archives = advisory.build(dest)
    for data in archives:
        with anyio.fail_after(30):
            assert await third_answer(data) is None, advisory.source
    before = snapshot(root, dest)
    with anyio.fail_after(60):
        outcomes = await extract_each(archives, dest)
    assert snapshot(root, dest) == before, (advisory.source, outcomes)
    assert escapes(dest) == planted, (advisory.source, outcomes)
    assert not [p for p in dest.rglob("*") if p.is_file() and b"pwned" in p.read_bytes()]


# --------------------------------------------------------------------------- exact answers


async def test_tarmageddon_lists_what_gnu_tar_lists() -> None:
    """CVE-2025-62518: the PAX size decides where the next header is, both ways."""
    larger, smaller = ADVISORIES[0].build(Path("/")), ADVISORIES[1].build(Path("/"))
    listing = await our_listing(larger[0])
    assert [(n, s) for n, _, s in listing.entries] == [("outer.txt", 1536), ("after", 7)]
    listing = await our_listing(smaller[0])
    assert [n for n, _, _ in listing.entries] == ["outer.txt", "smuggled.txt", "after"]


async def test_the_attacks_are_refused(tmp_path: Path) -> None:
    """Each attack ends with a refusal naming the member (nothing is silently skipped)."""
    refused = {
        "realpath-overflow",
        "symlink-outside",
        "hardlink-outside",
        "metadata-outside",
        "errors-skipped",
        "hardlink-fallback",
        "symlink-then-member",
        "planted-symlink",
    }
    for advisory in ADVISORIES:
        if advisory.name not in refused:
            continue
        _, dest = arena(tmp_path / advisory.name)
        advisory.plant(dest)
        outcomes = await extract_each(advisory.build(dest), dest)
        assert outcomes[0].startswith("UnsafeMemberError"), (advisory.name, outcomes)


async def test_loops_are_refused() -> None:
    for name in ("negative-size", "negative-pax-size", "zero-length-record"):
        (advisory,) = [a for a in ADVISORIES if a.name == name]
        for data in advisory.build(Path("/")):
            with anyio.fail_after(10):
                assert not (await our_listing(data)).ok, name


async def test_repeated_names_end_as_tar_leaves_them(tmp_path: Path) -> None:
    (advisory,) = [a for a in ADVISORIES if a.name == "repeated-name"]
    _, dest = arena(tmp_path)
    outcomes = await extract_each(advisory.build(dest), dest)
    assert [o.split(":")[0] for o in outcomes] == [
        "UnsafeMemberError",
        "UnsafeMemberError",
        "extracted",
    ]
    assert (dest / "x").read_bytes() == b"replaces the link"
    assert not (dest / "x").is_symlink()
    assert (dest / "y").read_bytes() == b"y"
    with contextlib.suppress(FileNotFoundError):
        assert (dest / "d").is_dir() and not (dest / "d").is_symlink()


ATTACKS = [
    a
    for a in ADVISORIES
    if a.name
    not in (
        "tarmageddon-pax-size-larger",
        "tarmageddon-pax-size-smaller",
        "negative-size",
        "negative-pax-size",
        "zero-length-record",
    )
]


@pytest.mark.parametrize("advisory", ATTACKS, ids=[a.name for a in ATTACKS])
def test_the_fixtures_bite(advisory: Advisory, tmp_path: Path) -> None:
    """Each attack fixture really reaches outside with an extractor that trusts the archive
    (tarfile, ``filter="fully_trusted"``): the checks above test something."""
    root, dest = arena(tmp_path)
    advisory.plant(dest)
    before = snapshot(root, dest)
    for data in advisory.build(dest):
        with contextlib.suppress(Exception), tarfile.open(fileobj=io.BytesIO(data)) as tf:
            tf.extractall(dest, filter="fully_trusted")
    assert snapshot(root, dest) != before
