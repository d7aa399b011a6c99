"""Shared fixtures: every async test runs on asyncio, asyncio+uvloop and trio, with blockbuster."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from tests.helpers import write

BACKENDS: list[Any] = [
    pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
    pytest.param(("trio", {}), id="trio"),
]
if sys.platform != "win32":
    BACKENDS.insert(1, pytest.param(("asyncio", {"use_uvloop": True}), id="asyncio+uvloop"))


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any blocking call our code makes on the event loop (trio runs the same paths)."""
    with blockbuster_ctx("atartape") as bb:
        # pytest, hypothesis and fixtures do blocking I/O on purpose outside our code.
        yield bb


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A small tree with files of several sizes, nested and empty folders, and a symlink."""
    root = tmp_path / "dataset"
    write(root / "a.txt", "hello\n")
    write(root / "empty.bin", b"")
    write(root / "exact.bin", b"x" * 512)
    write(root / "sub" / "big.bin", bytes(range(256)) * 3000)  # 768000 bytes: several chunks
    write(root / "sub" / "deeper" / "c.txt", "c" * 1000, mode=0o600)
    (root / "empty_dir").mkdir()
    (root / "link").symlink_to("a.txt")
    return root
