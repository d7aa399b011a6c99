"""S3 multipart upload with resume, and restore by ranged GETs, against a real S3 API (moto).

moto runs in server mode in a subprocess on 127.0.0.1; the example talks to it over HTTP with
aiobotocore. aiobotocore is asyncio-only, so these tests run on asyncio and asyncio+uvloop and
skip trio (atartape's own code under test runs on trio in the other test modules).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import atartape
from tests.helpers import write

pytest.importorskip("aiobotocore")
pytest.importorskip("moto.server")

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part size (all parts but the last)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "s3_multipart.py"


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="asyncio+uvloop"),
        pytest.param(
            ("trio", {}),
            id="trio",
            marks=pytest.mark.skip(reason="aiobotocore runs on asyncio only"),
        ),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, started for this module and stopped after."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.05)  # polling a port with a deadline, not waiting blindly
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("s3_multipart_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session  # type: ignore[import-untyped]

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }.items():
        monkeypatch.setenv(name, value)
    session = get_session()
    async with session.create_client("s3", endpoint_url=moto_endpoint) as client:
        yield client


@pytest.fixture
def big_tree(tmp_path: Path) -> Path:
    """About 16 MiB: four parts of 5 MiB (the last one short)."""
    root = tmp_path / "bigtree"
    write(root / "data" / "one.bin", os.urandom(7 * MiB + 123))
    write(root / "data" / "two.bin", os.urandom(5 * MiB))
    write(root / "three.bin", os.urandom(3 * MiB + 7))
    write(root / "notes" / "small.txt", "a small file among big ones\n")
    write(root / "notes" / "empty.txt", "")
    return root


async def full_stream(player: atartape.TapePlayer) -> bytes:
    return b"".join([chunk async for chunk in player.stream()])


async def object_bytes(client: Any, bucket: str, key: str) -> bytes:
    response = await client.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return bytes(await body.read())


async def test_upload_concurrently_then_restore_one_file(
    s3: Any, example: ModuleType, big_tree: Path, tmp_path: Path
) -> None:
    bucket = f"tapes-{os.urandom(4).hex()}"
    await s3.create_bucket(Bucket=bucket)
    tape = await atartape.record(big_tree, checksum="sha256")
    player = atartape.TapePlayer(tape)
    assert tape.volume_count(PART) == 4

    result = await example.upload_tape(s3, bucket, "bigtree.tar", player, part_size=PART)
    assert result.uploaded == [1, 2, 3, 4] and result.reused == []
    assert result.etag.endswith("-4")
    assert await object_bytes(s3, bucket, "bigtree.tar") == await full_stream(player)
    assert await example.find_upload(s3, bucket, "bigtree.tar") is None  # completed

    # Months later, on a machine with only the index: one file back, by ranged GETs.
    offline = await atartape.Tape.open(tape.index_path, source_root=tmp_path / "nowhere")
    (tmp_path / "restored").mkdir()
    restored = await example.restore_from_s3(
        s3, bucket, "bigtree.tar", offline, "bigtree/data/two.bin", tmp_path / "restored"
    )
    assert restored == tmp_path / "restored" / "two.bin"
    assert restored.read_bytes() == (big_tree / "data" / "two.bin").read_bytes()
    small = await example.restore_from_s3(
        s3, bucket, "bigtree.tar", offline, "bigtree/notes/small.txt", tmp_path / "restored"
    )
    assert small.read_text() == "a small file among big ones\n"
    empty = await example.restore_from_s3(
        s3, bucket, "bigtree.tar", offline, "bigtree/notes/empty.txt", tmp_path / "restored"
    )
    assert empty.read_bytes() == b""


async def test_interrupted_upload_resumes_with_the_missing_parts(
    s3: Any, example: ModuleType, big_tree: Path
) -> None:
    bucket = f"tapes-{os.urandom(4).hex()}"
    await s3.create_bucket(Bucket=bucket)
    tape = await atartape.record(big_tree)
    player = atartape.TapePlayer(tape)
    sent: list[int] = []

    async def fail_at_part_three(number: int) -> None:
        if number == 3:
            raise ConnectionResetError("injected: the network went away during part 3")
        sent.append(number)

    with pytest.RaisesGroup(ConnectionResetError, flatten_subgroups=True):
        await example.upload_tape(
            s3,
            bucket,
            "t.tar",
            player,
            part_size=PART,
            concurrency=1,
            before_send=fail_at_part_three,
        )
    assert sent == [1, 2]
    upload_id = await example.find_upload(s3, bucket, "t.tar")
    assert upload_id is not None
    assert sorted(await example.stored_parts(s3, bucket, "t.tar", upload_id)) == [1, 2]

    result = await example.upload_tape(s3, bucket, "t.tar", player, part_size=PART, concurrency=3)
    assert result.upload_id == upload_id  # the same upload, completed
    assert result.reused == [1, 2] and result.uploaded == [3, 4]
    assert await object_bytes(s3, bucket, "t.tar") == await full_stream(player)
    assert await example.find_upload(s3, bucket, "t.tar") is None


async def test_stored_parts_of_another_tape_are_replaced(
    s3: Any, example: ModuleType, big_tree: Path
) -> None:
    """A pending upload under the same key whose parts hold other bytes is not trusted."""
    bucket = f"tapes-{os.urandom(4).hex()}"
    await s3.create_bucket(Bucket=bucket)
    tape = await atartape.record(big_tree)
    player = atartape.TapePlayer(tape)
    created = await s3.create_multipart_upload(Bucket=bucket, Key="t.tar")
    await s3.upload_part(
        Bucket=bucket, Key="t.tar", UploadId=created["UploadId"], PartNumber=1, Body=bytes(PART)
    )
    result = await example.upload_tape(s3, bucket, "t.tar", player, part_size=PART)
    assert result.upload_id == created["UploadId"]
    assert result.reused == [] and result.uploaded == [1, 2, 3, 4]
    assert await object_bytes(s3, bucket, "t.tar") == await full_stream(player)


async def test_part_size_limits(s3: Any, example: ModuleType, big_tree: Path) -> None:
    tape = await atartape.record(big_tree)
    with pytest.raises(ValueError, match="at least"):
        await example.upload_tape(s3, "b", "k", atartape.TapePlayer(tape), part_size="1MiB")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_command_line(moto_endpoint: str, s3: Any, big_tree: Path, tmp_path: Path) -> None:
    import anyio

    await s3.create_bucket(Bucket="cli")
    env = {**os.environ}
    run = [sys.executable, str(EXAMPLE), "--endpoint-url", moto_endpoint]
    up = await anyio.run_process(
        [*run, "upload", str(big_tree), "s3://cli/t.tar", "--part-size", "5MiB"],
        env=env,
        check=False,
    )
    assert up.returncode == 0, up.stderr.decode()
    assert "4 parts, 4 sent, 0 already stored" in up.stdout.decode()
    index = big_tree / ".tartape" / "index.db"
    back = await anyio.run_process(
        [*run, "restore", str(index), "s3://cli/t.tar", "bigtree/three.bin", str(tmp_path / "3")],
        env=env,
        check=False,
    )
    assert back.returncode == 0, back.stderr.decode()
    assert (tmp_path / "3").read_bytes() == (big_tree / "three.bin").read_bytes()
