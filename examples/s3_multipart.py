"""Upload a tape to S3 as a multipart upload that resumes part by part; restore one file by range.

Every part is one volume of the tape: part ``n`` is volume ``n - 1``, produced from the source
only when it is sent. Parts go up concurrently (an anyio task group, bounded by a
``CapacityLimiter``), and each part's MD5, computed while its bytes pass, is checked against the
ETag S3 returns. If the upload is interrupted, running it again finds the pending upload
(``list_multipart_uploads``), lists the parts already stored (``list_parts``) and sends only the
missing ones. Months later, one file comes back with ranged GETs: ``tape.locate`` needs only the
index, ``restore_file`` fetches exactly that file's bytes and checks them.

    python examples/s3_multipart.py upload FOLDER s3://BUCKET/KEY [--part-size 64MiB]
                                    [--concurrency 4] [--endpoint-url URL]
    python examples/s3_multipart.py restore INDEX s3://BUCKET/KEY ARC_PATH DEST [--endpoint-url URL]

S3 wants parts of at least 5 MiB (all but the last) and at most 10 000 parts: choose the part
size accordingly. aiobotocore runs on asyncio only (with or without uvloop), so this example does
too; atartape itself also runs on trio.

Credentials and region come from the usual AWS environment variables or configuration files.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from aiobotocore.session import get_session  # type: ignore[import-untyped]

import atartape
from atartape.restore import restore_file
from atartape.volumes import Volume

MIN_PART = 5 * 1024 * 1024
MAX_PARTS = 10_000

BeforeSend = Callable[[int], Awaitable[None]]
"""Called with the part number just before each part is sent (tests inject failures here)."""


class PartMismatchError(Exception):
    """The store's ETag for a part is not the MD5 of the bytes sent."""


@dataclass
class UploadResult:
    """What one run of :func:`upload_tape` did."""

    upload_id: str
    part_count: int
    etag: str
    uploaded: list[int] = field(default_factory=list)  # part numbers sent by this run
    reused: list[int] = field(default_factory=list)  # part numbers found already stored


def multipart_etag(md5s: list[str]) -> str:
    """The ETag S3 gives a completed multipart object: MD5 of the parts' MD5s, ``-N``."""
    joined = b"".join(bytes.fromhex(md5) for md5 in md5s)
    return f"{hashlib.md5(joined).hexdigest()}-{len(md5s)}"


async def find_upload(client: Any, bucket: str, key: str) -> str | None:
    """The UploadId of the most recent unfinished multipart upload of ``key``, if any."""
    latest: dict[str, Any] | None = None
    paginator = client.get_paginator("list_multipart_uploads")
    async for page in paginator.paginate(Bucket=bucket, Prefix=key):
        for upload in page.get("Uploads", []):
            if upload["Key"] == key and (
                latest is None or upload["Initiated"] > latest["Initiated"]
            ):
                latest = upload
    return None if latest is None else str(latest["UploadId"])


async def stored_parts(client: Any, bucket: str, key: str, upload_id: str) -> dict[int, Any]:
    """``{part number: {"ETag", "Size"}}`` for the parts already stored."""
    parts: dict[int, Any] = {}
    paginator = client.get_paginator("list_parts")
    async for page in paginator.paginate(Bucket=bucket, Key=key, UploadId=upload_id):
        for part in page.get("Parts", []):
            parts[part["PartNumber"]] = part
    return parts


async def upload_part(
    client: Any,
    bucket: str,
    key: str,
    upload_id: str,
    volume: Volume,
    before_send: BeforeSend | None = None,
) -> str:
    """Produce one volume and send it as part ``index + 1``; return its checked MD5."""
    body = b"".join([chunk async for chunk in volume])  # one linear pass: volume.md5 is set
    if volume.md5 is None or len(body) != volume.size:  # pragma: no cover - a bug if so
        raise PartMismatchError(f"part {volume.index + 1}: incomplete pass over the volume")
    number = volume.index + 1
    if before_send is not None:
        await before_send(number)
    response = await client.upload_part(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        PartNumber=number,
        Body=body,
        ContentMD5=base64.b64encode(bytes.fromhex(volume.md5)).decode(),  # S3 checks it too
    )
    etag = str(response["ETag"]).strip('"')
    if etag != volume.md5:
        raise PartMismatchError(f"part {number}: ETag {etag}, but the MD5 sent is {volume.md5}")
    return etag


async def upload_tape(
    client: Any,
    bucket: str,
    key: str,
    player: atartape.TapePlayer,
    *,
    part_size: int | str = "64MiB",
    concurrency: int = 4,
    before_send: BeforeSend | None = None,
    check_stored: bool = True,
) -> UploadResult:
    """Upload ``player``'s tape to ``s3://bucket/key``, resuming an unfinished upload of it.

    Parts already stored are kept when their size matches the volume and, with
    ``check_stored``, when their ETag equals the MD5 of the volume produced again locally (a
    read of the source, no upload: it guards against a pending upload of another tape; turn
    it off for SSE-KMS buckets, whose ETags are not MD5s). The rest are sent, at most
    ``concurrency`` at a time. The completed object is checked against the size of the tape
    and the multipart ETag expected from the parts' MD5s.
    """
    volumes = player.volumes(part_size)
    if len(volumes) > MAX_PARTS:
        raise ValueError(f"{len(volumes)} parts: S3 allows {MAX_PARTS}; choose a larger size")
    if len(volumes) > 1 and volumes[0].size < MIN_PART:
        raise ValueError(f"parts of {volumes[0].size} bytes: S3 wants at least {MIN_PART}")
    upload_id = await find_upload(client, bucket, key)
    if upload_id is None:
        created = await client.create_multipart_upload(
            Bucket=bucket,
            Key=key,
            ContentType="application/x-tar",
            Metadata={"atartape-fingerprint": player.tape.fingerprint},
        )
        upload_id = str(created["UploadId"])
    md5s: dict[int, str] = {}
    result = UploadResult(upload_id, len(volumes), etag="")
    for number, part in sorted((await stored_parts(client, bucket, key, upload_id)).items()):
        if number > len(volumes) or part["Size"] != volumes[number - 1].size:
            continue  # not a part of this tape: it is sent again, replacing it
        etag = str(part["ETag"]).strip('"')
        if check_stored and await volumes[number - 1].checksum("md5") != etag:
            continue
        md5s[number] = etag
        result.reused.append(number)

    limiter = anyio.CapacityLimiter(concurrency)

    async def send(volume: Volume) -> None:
        async with limiter:  # also bounds memory: one part's bytes per slot
            md5s[volume.index + 1] = await upload_part(
                client, bucket, key, upload_id, volume, before_send
            )
            result.uploaded.append(volume.index + 1)

    async with anyio.create_task_group() as tg:
        for volume in volumes:
            if volume.index + 1 not in md5s:
                tg.start_soon(send, volume)

    numbers = sorted(md5s)
    await client.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{md5s[n]}"'} for n in numbers]},
    )
    head = await client.head_object(Bucket=bucket, Key=key)
    result.etag = str(head["ETag"]).strip('"')
    expected = multipart_etag([md5s[n] for n in numbers])
    if head["ContentLength"] != player.tape.total_size or result.etag != expected:
        raise PartMismatchError(
            f"s3://{bucket}/{key}: {head['ContentLength']} bytes, ETag {result.etag}; "
            f"expected {player.tape.total_size} bytes, ETag {expected}"
        )
    result.uploaded.sort()
    return result


async def restore_from_s3(
    client: Any,
    bucket: str,
    key: str,
    tape: atartape.Tape,
    arc_path: str,
    dest: str | Path,
    *,
    overwrite: bool = False,
) -> Path:
    """Fetch one file of the stored tape with ranged GETs, check it and write it to ``dest``."""
    where = await tape.locate(arc_path)  # the index alone: no source needed

    async def fetch_range(volume_index: int, start: int, end: int) -> bytes:
        # The object is the whole tape: a location made without volume size has volume 0.
        response = await client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        async with response["Body"] as body:
            return bytes(await body.read())

    return await restore_file(where, fetch_range, dest, overwrite=overwrite)


def split_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or "/" not in url[5:]:
        raise SystemExit(f"expected s3://BUCKET/KEY, not {url!r}")
    bucket, key = url[5:].split("/", 1)
    return bucket, key


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint-url", help="another S3 API (MinIO, moto, ...)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upload", help="record FOLDER and upload its tape")
    up.add_argument("folder")
    up.add_argument("url")
    up.add_argument("--part-size", default="64MiB")
    up.add_argument("--concurrency", type=int, default=4)
    back = commands.add_parser("restore", help="restore one file of an uploaded tape")
    back.add_argument("index")
    back.add_argument("url")
    back.add_argument("arc_path")
    back.add_argument("dest")
    args = parser.parse_args(argv)
    bucket, key = split_url(args.url)
    session = get_session()
    async with session.create_client("s3", endpoint_url=args.endpoint_url) as client:
        if args.command == "upload":
            try:
                tape = await atartape.Tape.discover(args.folder)
            except atartape.TapeNotFoundError:
                tape = await atartape.record(args.folder, checksum="sha256")
            result = await upload_tape(
                client,
                bucket,
                key,
                atartape.TapePlayer(tape),
                part_size=args.part_size,
                concurrency=args.concurrency,
            )
            print(
                f"s3://{bucket}/{key}: {result.part_count} parts, {len(result.uploaded)} sent, "
                f"{len(result.reused)} already stored, ETag {result.etag}; index: {tape.index_path}"
            )
        else:
            tape = await atartape.Tape.open(args.index)
            path = await restore_from_s3(client, bucket, key, tape, args.arc_path, args.dest)
            print(f"restored {args.arc_path} to {path}")
    return 0


def self_test() -> int:
    """Upload a ~12 MiB tape to moto's S3 server on 127.0.0.1 and restore one file from it."""
    import os
    import socket
    import tempfile

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "dataset"
            folder.mkdir()
            for number in range(6):
                (folder / f"part{number}.bin").write_bytes(os.urandom(2_000_000 + number))

            async def run() -> int:
                async with get_session().create_client("s3", endpoint_url=endpoint) as client:
                    await client.create_bucket(Bucket="tapes")
                common = ["--endpoint-url", endpoint]
                url = "s3://tapes/dataset.tar"
                await main([*common, "upload", str(folder), url, "--part-size", "5MiB"])
                index = str(folder / ".tartape" / "index.db")
                dest = Path(scratch) / "restored.bin"
                await main([*common, "restore", index, url, "dataset/part3.bin", str(dest)])
                same = dest.read_bytes() == (folder / "part3.bin").read_bytes()
                print("restored file identical:", same)
                return 0 if same else 1

            return anyio.run(run, backend="asyncio")
    finally:
        server.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    sys.exit(anyio.run(main, backend="asyncio"))
