"""The SeaweedFS test server (tests/s3server.py) starts, stores a multipart object, and stops."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import socket
from pathlib import Path

import pytest

from tests.s3server import GRPC_OFFSET, S3Server, require_weed, seaweedfs

MiB = 1024 * 1024


def _listening_addresses(ports: set[int]) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the LISTEN sockets on ``ports``."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                address, port = fields[1].split(":")
                if fields[3] == "0A" and int(port, 16) in ports:  # 0A: LISTEN
                    found.add(address)
    return found


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_server_answers_signed_requests_on_loopback_only(s3_env: S3Server, s3_bucket: str) -> None:
    import boto3
    from botocore.exceptions import ClientError

    # A client configured by the environment alone (endpoint, keys, region, path style).
    assert "AWS_SESSION_TOKEN" not in os.environ
    client = boto3.session.Session().client("s3")
    try:
        assert s3_bucket in {b["Name"] for b in client.list_buckets()["Buckets"]}
    finally:
        client.close()

    stranger = boto3.session.Session().client(
        "s3", aws_access_key_id=s3_env.access_key, aws_secret_access_key="wrong"
    )
    try:
        with pytest.raises(ClientError) as info:
            stranger.list_buckets()
        assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    finally:
        stranger.close()

    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("no /proc/net/tcp to read the listening sockets from")
    ports = {p for port in s3_env.ports.values() for p in (port, port + GRPC_OFFSET)}
    assert _listening_addresses(ports) == {"0100007F"}  # 127.0.0.1, and nothing else


def test_multipart_upload_of_two_parts_reads_back(s3_server: S3Server, s3_bucket: str) -> None:
    rng = random.Random(7)
    parts = [rng.randbytes(5 * MiB), rng.randbytes(MiB + 17)]  # 5 MiB: S3's smallest non-last
    client = s3_server.client()
    try:
        upload = client.create_multipart_upload(
            Bucket=s3_bucket, Key="tape.tar", Metadata={"fingerprint": "abc"}
        )
        done = []
        for number, data in enumerate(parts, 1):
            answer = client.upload_part(
                Bucket=s3_bucket,
                Key="tape.tar",
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=data,
                ContentMD5=_md5_b64(data),
            )
            assert answer["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
            done.append({"PartNumber": number, "ETag": answer["ETag"]})
        listed = client.list_parts(Bucket=s3_bucket, Key="tape.tar", UploadId=upload["UploadId"])
        assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2]
        client.complete_multipart_upload(
            Bucket=s3_bucket,
            Key="tape.tar",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": done},
        )

        whole = b"".join(parts)
        head = client.head_object(Bucket=s3_bucket, Key="tape.tar")
        md5s = b"".join(hashlib.md5(p).digest() for p in parts)
        assert head["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
        assert head["ContentLength"] == len(whole)
        assert head["Metadata"] == {"fingerprint": "abc"}
        assert client.get_object(Bucket=s3_bucket, Key="tape.tar")["Body"].read() == whole
        window = client.get_object(Bucket=s3_bucket, Key="tape.tar", Range="bytes=5242870-5242899")
        assert window["Body"].read() == whole[5242870:5242900]
    finally:
        client.close()


def test_server_is_gone_after_the_context(tmp_path: Path) -> None:
    weed = require_weed()
    with seaweedfs(tmp_path, weed=weed) as server:
        client = server.client()
        try:
            client.create_bucket(Bucket="smoke")
            assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["smoke"]
        finally:
            client.close()
        pid, port = server.pid, server.ports["s3"]
        assert server.running()

    assert server.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no process is left in its group
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert not any(Path("/tmp").glob(f"seaweedfs-*-{port}.sock"))


def test_a_server_that_does_not_start_fails_with_its_log(tmp_path: Path) -> None:
    pytest.importorskip("boto3")
    fake = tmp_path / "weed"
    fake.write_text("#!/bin/sh\necho 'flag provided but not defined: -x' >&2\nexit 3\n")
    fake.chmod(0o755)
    with (
        pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*not defined: -x"),
        seaweedfs(tmp_path / "server", weed=fake),
    ):
        pass
