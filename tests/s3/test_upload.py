"""atartape.s3.upload against a real S3 server (SeaweedFS): upload, resume, what is kept and
what is sent again, another tape's upload, paging, BadDigest, checksums, the cluster helpers."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

import atartape
from atartape import s3
from tests.s3server import S3Server

from .conftest import PART, make_tree, object_bytes, pending_uploads, tape_bytes

pytestmark = pytest.mark.anyio


class Stop(Exception):
    """Stands for a crash or a lost network."""


def stop_after(count: int) -> Any:
    seen: list[int] = []

    def on_part(result: s3.PartResult) -> None:
        seen.append(result.number)
        if len(seen) == count:
            raise Stop(f"stopped after {count} parts")

    return on_part


async def test_upload_then_run_again(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tree: Path
) -> None:
    tape = await atartape.record(tree)
    settled: list[int] = []
    result = await s3.upload(tape, url, part_size=PART, on_part=lambda r: settled.append(r.number))
    assert sorted(settled) == [1, 2, 3] and result.sent == (1, 2, 3) and result.kept == ()
    assert not result.resumed and not result.already_complete
    full = await tape_bytes(tape)
    assert object_bytes(client, bucket, key) == full
    assert result.etag == s3.multipart_etag(
        [hashlib.md5(full[p.start : p.end]).hexdigest() for p in s3.plan_parts(len(full), PART)]
    )
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["atartape-identity"] == tape.identity
    assert head["Metadata"]["atartape-part-size"] == str(PART)
    assert head["ContentType"] == "application/x-tar"
    # No pending upload and no marker are left behind.
    assert pending_uploads(client, bucket, key) == []
    listed = client.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    assert [o["Key"] for o in listed] == [key]
    # Run again: the object is already this tape; it is verified, nothing is sent.
    again = await s3.upload(tape, url)
    assert again.already_complete and again.sent == () and again.etag == result.etag
    assert (await s3.verify(tape, url)).etag == result.etag


async def test_an_interrupted_upload_resumes_with_what_is_missing(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tree: Path
) -> None:
    tape = await atartape.record(tree)
    with pytest.raises(Stop):
        await s3.upload(tape, url, part_size=PART, concurrency=1, on_part=stop_after(2))
    [upload_id] = pending_uploads(client, bucket, key)
    with pytest.raises(s3.S3PlanError, match="pending upload uses parts of 5242880 bytes"):
        await s3.upload(tape, url, part_size="6MiB")  # refused: nothing sent, nothing changed
    result = await s3.upload(tape, url, concurrency=3)  # its part size comes from the upload
    assert result.upload_id == upload_id and result.resumed
    assert result.kept == (1, 2) and result.sent == (3,)
    assert object_bytes(client, bucket, key) == await tape_bytes(tape)


async def test_duplicated_wrong_sized_and_foreign_parts_are_sent_again(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tree: Path
) -> None:
    tape = await atartape.record(tree)
    full = await tape_bytes(tape)
    with pytest.raises(Stop):
        await s3.upload(tape, url, part_size=PART, concurrency=1, on_part=stop_after(3))
    [upload_id] = pending_uploads(client, bucket, key)

    def put(number: int, data: bytes) -> None:
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)

    put(1, full[:PART])  # the right bytes, twice: listed twice, so not trusted
    put(2, full[PART : 2 * PART - 512])  # part 2 again, short
    put(3, bytes(len(full) - 2 * PART))  # part 3 of the right size with other bytes
    listed = await s3.find_upload(client, tape, url)
    assert listed is not None
    assert [len(listed.listed[n]) for n in (1, 2, 3)] == [2, 2, 2]
    result = await s3.upload(tape, url)
    assert result.resumed and result.upload_id == upload_id
    assert result.sent == (1, 2, 3) and result.kept == ()
    assert object_bytes(client, bucket, key) == full


async def test_duplicates_hidden_by_small_pages_still_complete_right(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tree: Path
) -> None:
    """SeaweedFS pages skip the other copies of a number: with pages of one part each copy
    seen may be the right or the wrong one. Whatever is kept or sent, the completion names the
    ETags computed from the tape, and the object is checked against them."""
    tape = await atartape.record(tree)
    full = await tape_bytes(tape)
    with pytest.raises(Stop):
        await s3.upload(tape, url, part_size=PART, concurrency=1, on_part=stop_after(3))
    [upload_id] = pending_uploads(client, bucket, key)
    for number in (1, 2):
        client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(PART)
        )
    pending = await s3.find_upload(client, tape, url, page_size=1)
    assert pending is not None and sorted(pending.listed) == [1, 2, 3]
    result = await s3.upload(tape, url, page_size=1)
    assert result.upload_id == upload_id and result.kept + result.sent != ()
    assert object_bytes(client, bucket, key) == full


async def test_paging_with_small_pages_keeps_the_stored_parts(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tmp_path: Path
) -> None:
    big = make_tree(tmp_path / "big", sizes=(9 * 1024 * 1024, 6 * 1024 * 1024))  # 4 parts
    tape = await atartape.record(big)
    with pytest.raises(Stop):
        await s3.upload(tape, url, part_size=PART, concurrency=1, on_part=stop_after(3))
    pending = await s3.find_upload(client, tape, url, page_size=2)
    assert pending is not None and sorted(pending.listed) == [1, 2, 3]
    result = await s3.upload(tape, url, page_size=2)
    assert result.kept == (1, 2, 3) and result.sent == (4,)
    assert object_bytes(client, bucket, key) == await tape_bytes(tape)


async def test_another_tapes_pending_upload_is_never_adopted(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tmp_path: Path
) -> None:
    first = await atartape.record(make_tree(tmp_path / "a", seed=1))
    second = await atartape.record(make_tree(tmp_path / "b", seed=2))
    with pytest.raises(Stop):
        await s3.upload(second, url, part_size=PART, concurrency=1, on_part=stop_after(2))
    [theirs] = pending_uploads(client, bucket, key)
    # A foreign upload of the key too (another tool; no marker), with a part of the right size.
    foreign = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=foreign, PartNumber=1, Body=bytes(PART))

    result = await s3.upload(first, url, part_size=PART)
    assert not result.resumed and result.sent == (1, 2, 3)
    assert result.upload_id not in (theirs, foreign)
    assert set(result.others) == {theirs, foreign}
    assert object_bytes(client, bucket, key) == await tape_bytes(first)
    assert set(pending_uploads(client, bucket, key)) == {theirs, foreign}

    # The second tape still finds its own upload and completes it (replacing the object).
    again = await s3.upload(second, url)
    assert again.resumed and again.upload_id == theirs and again.kept == (1, 2)
    assert object_bytes(client, bucket, key) == await tape_bytes(second)
    assert pending_uploads(client, bucket, key) == [foreign]


async def test_a_damaged_part_is_refused_by_the_store(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tree: Path
) -> None:
    """Bytes damaged on the way no longer match their Content-MD5: BadDigest, said clearly."""
    tape = await atartape.record(tree)
    damaged = {"count": 0, "limit": 10**9}

    def damage(params: dict[str, Any], **_: Any) -> None:
        if damaged["count"] < damaged["limit"]:
            damaged["count"] += 1
            body = params["body"]  # a file object over the part's bytes
            data = bytearray(body.read() if hasattr(body, "read") else body)
            data[100] ^= 0xFF
            params["body"] = bytes(data)

    client.meta.events.register("before-call.s3.UploadPart", damage)
    with pytest.raises(s3.S3IntegrityError, match="BadDigest") as info:
        await s3.upload(tape, url, part_size=PART, concurrency=1, client=client)
    assert info.value.code == "BadDigest"
    assert "differ from the digest computed from the tape" in str(info.value)
    assert damaged["count"] == 2  # sent twice, refused twice
    assert client.list_objects_v2(Bucket=bucket, Prefix=f"{key}.atartape").get("KeyCount") == 1

    damaged.update(count=0, limit=1)  # damaged once: the second send goes through
    result = await s3.upload(tape, url, client=client)
    assert result.resumed and result.sent == (1, 2, 3)
    assert object_bytes(client, bucket, key) == await tape_bytes(tape)


@pytest.mark.parametrize("checksum", ["crc32c", "sha256"])
async def test_flexible_checksums(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tree: Path, checksum: str
) -> None:
    tape = await atartape.record(tree)
    with pytest.raises(Stop):
        await s3.upload(
            tape, url, part_size=PART, checksum=checksum, concurrency=1, on_part=stop_after(1)
        )
    with pytest.raises(s3.S3PlanError, match=f"uses the {checksum} checksum"):
        await s3.upload(tape, url)
    result = await s3.upload(tape, url, checksum=checksum)
    assert result.kept == (1,) and result.sent == (2, 3)
    assert result.checksum is not None and result.checksum.endswith("-3")
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head[f"Checksum{checksum.upper()}"] == result.checksum
    assert object_bytes(client, bucket, key) == await tape_bytes(tape)
    assert (await s3.verify(tape, url)).checksum == result.checksum


async def test_plans_s3_would_refuse_send_nothing(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tree: Path
) -> None:
    tape = await atartape.record(tree)
    with pytest.raises(s3.S3PlanError, match="under S3's smallest part"):
        await s3.upload(tape, url, part_size="1MiB")
    with pytest.raises(s3.S3PlanError, match="unknown checksum"):
        await s3.upload(tape, url, checksum="crc64")
    with pytest.raises(atartape.SourceNotFoundError):
        await s3.upload(tape, url, source_root=tree / "nowhere")
    with pytest.raises(s3.S3Error) as info:
        await s3.upload(tape, "s3://no-such-bucket-here/t.tar", part_size=PART)
    assert info.value.code == "NoSuchBucket"
    assert pending_uploads(client, bucket, key) == []
    assert client.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 0


async def test_restart_aborts_this_tapes_pending_upload(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tree: Path
) -> None:
    tape = await atartape.record(tree)
    with pytest.raises(Stop):
        await s3.upload(tape, url, part_size=PART, concurrency=1, on_part=stop_after(1))
    [old] = pending_uploads(client, bucket, key)
    result = await s3.upload(tape, url, part_size="6MiB", restart=True)
    assert result.upload_id != old and result.part_size == 6 * 1024 * 1024
    assert pending_uploads(client, bucket, key) == []


async def test_parts_spread_over_workers_and_completed_by_the_client(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tree: Path, tmp_path: Path
) -> None:
    """The cluster helpers: picklable specs, sync and async senders, complete."""
    import pickle

    tape = await atartape.record(tree)
    upload = await s3.begin(tape, url, part_size=PART, client=client)
    specs = [
        pickle.loads(pickle.dumps(spec)) for spec in upload.part_specs(tape.index_path, str(tree))
    ]
    import anyio.to_thread

    results = [await s3.send_part(specs[0])]
    results += [await anyio.to_thread.run_sync(s3.send_part_sync, spec) for spec in specs[1:]]
    assert [r.sent for r in results] == [True, True, True]
    # A retried task sends the same bytes again: harmless.
    results[1] = await s3.send_part(specs[1], client=client)
    done = await s3.complete(client, upload, results)
    assert done.sent == (1, 2, 3)
    assert object_bytes(client, bucket, key) == await tape_bytes(tape)

    # A worker whose index now holds another recording refuses before any byte.
    upload2 = await s3.begin(tape, url + "2", part_size=PART, client=client)
    (tree / "notes" / "small.txt").write_text("changed\n")
    await atartape.record(tree, overwrite=True)
    with pytest.raises(atartape.TapeChangedError, match="refusing to send another tape's bytes"):
        await s3.send_part(upload2.part_specs(tape.index_path, str(tree))[0])
    with pytest.raises(s3.S3PlanError, match="missing"):
        await s3.complete(client, upload2, [])


async def test_the_content_md5_sent_is_the_parts(
    s3_env: S3Server, bucket: str, key: str, url: str, client: Any, tree: Path
) -> None:
    """What goes over the wire: Content-MD5 of exactly the part's bytes, and no botocore CRC."""
    tape = await atartape.record(tree)
    full = await tape_bytes(tape)
    seen: list[tuple[str, int, str | None]] = []

    def spy(params: dict[str, Any], **_: Any) -> None:
        headers = params["headers"]
        body = params["body"]
        size = len(body.getvalue() if hasattr(body, "getvalue") else body)
        seen.append((headers["Content-MD5"], size, headers.get("x-amz-checksum-crc32")))

    client.meta.events.register("before-call.s3.UploadPart", spy)
    await s3.upload(tape, url, part_size=PART, client=client, concurrency=1)
    expected = [
        (base64.b64encode(hashlib.md5(full[p.start : p.end]).digest()).decode(), p.size, None)
        for p in s3.plan_parts(len(full), PART)
    ]
    assert seen == expected
