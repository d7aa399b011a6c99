"""Fixtures of the archive reader's tests: archives made once per test session (per worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.archive.made import Made, build_big, build_made


@pytest.fixture(scope="session")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """A tree archived by GNU tar (plain, -z, -j, -J, --zstd), zstd, pyzstd, age, pyrage and
    atartape's views (see :func:`build_made`)."""
    return build_made(tmp_path_factory.mktemp("compressed"))


@pytest.fixture(scope="session")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 64 MiB file and a small one, archived by GNU tar with each compression."""
    return build_big(tmp_path_factory.mktemp("big"))
