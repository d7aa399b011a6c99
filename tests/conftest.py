"""Shared fixtures: every async test runs on asyncio, asyncio+uvloop and trio, with blockbuster.

``--fuzz`` runs the reader's property tests (tests/archive/test_fuzz.py, test_symlink_property.py)
far longer: 20,000 examples each instead of a few hundred in all. ``ATARTAPE_FUZZ=1`` does the
same, and ``ATARTAPE_FUZZ=5000`` runs 5,000 examples each (see tests/archive/fuzzing.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from hypothesis import settings

from tests.helpers import write
from tests.s3server import s3_bucket, s3_env, s3_server  # noqa: F401  (fixtures: a real S3 server)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz",
        action="store_true",
        default=False,
        help="run the archive reader's property tests with 20,000 examples each (long)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fuzz", default=False) and not os.environ.get("ATARTAPE_FUZZ"):
        os.environ["ATARTAPE_FUZZ"] = "1"  # read by the test modules when they are imported


# The machine is shared: hypothesis checks properties here, never how long an example takes.
settings.register_profile("atartape", deadline=None)
settings.load_profile("atartape")

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
