"""Symlinks in any number and order, from one archive or several extracted into one folder:
afterwards no symlink in the destination resolves outside it (checked by the operating system
and Python's realpath, independently of the extractor's own resolution), and nothing outside
the destination changes. ``--fuzz`` (see conftest.py) runs 20,000 examples.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atartape.archive import open_archive
from atartape.errors import TarTapeError
from tests.archive import tarbuild as tb
from tests.archive.fuzzing import examples
from tests.archive.test_attacks import escapes
from tests.helpers import MemorySource

pytestmark = pytest.mark.anyio

EXAMPLES = examples(40)

COMPONENTS = ["a", "b", "c"]
NAMES = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=3).map("/".join)
TARGETS = st.lists(st.sampled_from([*COMPONENTS, "..", "."]), min_size=1, max_size=5).map("/".join)
MEMBERS = st.one_of(
    st.tuples(st.just("symlink"), NAMES, TARGETS),
    st.tuples(st.just("symlink"), NAMES, TARGETS),
    st.tuples(st.just("symlink"), NAMES, TARGETS),
    st.tuples(st.just("dir"), NAMES, st.just("")),
    st.tuples(st.just("file"), NAMES, st.just("")),
    st.tuples(st.just("hardlink"), NAMES, NAMES),
)
PLANS = st.tuples(st.lists(MEMBERS, min_size=1, max_size=14), st.integers(0, 14), st.booleans())


def build(members: list[tuple[str, str, str]]) -> bytes:
    parts = []
    for kind, name, target in members:
        if kind == "symlink":
            parts.append(tb.symlink(name, target))
        elif kind == "dir":
            parts.append(tb.directory(name))
        elif kind == "file":
            parts.append(tb.file(name, name.encode()))
        else:
            parts.append(tb.hardlink(name, target))
    return b"".join(parts) + tb.end()


async def extract_all(data: bytes, dest: Path) -> None:
    with contextlib.suppress(TarTapeError):
        async with open_archive(MemorySource(data)) as archive:
            await archive.extract_all(dest)


async def extract_each(data: bytes, dest: Path) -> None:
    """Member by member, each with its own extractor (as separate calls would)."""
    async with open_archive(MemorySource(data)) as archive:
        for member in [m async for m in archive.members()]:
            with contextlib.suppress(TarTapeError):
                await archive.extract(member, dest)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=PLANS)
async def test_property_no_symlink_leaves_the_destination(
    plan: tuple[list[tuple[str, str, str]], int, bool],
) -> None:
    members, split, one_by_one = plan
    root = Path(tempfile.mkdtemp(prefix="atartape-links-"))
    try:
        dest = root / "box" / "dest"
        dest.mkdir(parents=True)
        sentinel = root / "box" / "sentinel"
        sentinel.mkdir()
        (sentinel / "keep").write_text("x")
        first, second = build(members[:split]), build(members[split:])
        if one_by_one:
            await extract_each(first + second, dest)
        else:
            await extract_all(first, dest)
            await extract_all(second, dest)  # the links of the first extraction count
        assert escapes(dest) == []
        assert sorted(p.name for p in (root / "box").iterdir()) == ["dest", "sentinel"]
        assert [p.name for p in sentinel.iterdir()] == ["keep"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
