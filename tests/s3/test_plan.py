"""The pure arithmetic of atartape.s3: part plans, limits, ETags, checksums, metadata, markers."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest

from atartape.s3 import S3PlanError, S3Url, TapeMetadata, multipart_etag, plan_parts
from atartape.s3.plan import (
    MAX_PARTS,
    MIN_PART_SIZE,
    Marker,
    auto_part_size,
    composite_checksum,
    smallest_part_size,
)

MiB = 1024 * 1024


def test_parts_cover_the_tape_numbered_from_one() -> None:
    plan = plan_parts(12 * MiB + 5, "5MiB")
    assert [(p.number, p.start, p.end) for p in plan] == [
        (1, 0, 5 * MiB),
        (2, 5 * MiB, 10 * MiB),
        (3, 10 * MiB, 12 * MiB + 5),
    ]
    assert sum(p.size for p in plan) == 12 * MiB + 5
    assert plan_parts(5 * MiB, 5 * MiB) == plan_parts(5 * MiB, "5MiB")[:1]


def test_a_single_small_part_is_allowed() -> None:
    assert [p.size for p in plan_parts(3000, 4096)] == [3000]


@pytest.mark.parametrize(
    ("total", "size", "words"),
    [
        (12 * MiB, 1 * MiB, "under S3's smallest part, 5MiB"),
        (
            MIN_PART_SIZE * MAX_PARTS + 1,
            MIN_PART_SIZE,
            "10001 parts; S3 allows 10000: use at least 6MiB",
        ),
        (10**13, "64MiB", "use at least 954MiB"),
        (6 * 1024**3, "5GiB", None),
        (11 * 1024**3, 6 * 1024**3, "over S3's largest part, 5GiB"),
        (100, "five", "is not a size"),
    ],
)
def test_plans_s3_would_refuse_are_refused(total: int, size: object, words: str | None) -> None:
    if words is None:
        assert len(plan_parts(total, size)) == 2  # type: ignore[arg-type]
        return
    with pytest.raises(S3PlanError, match=words) as info:
        plan_parts(total, size)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_automatic_part_sizes_keep_within_ten_thousand_parts() -> None:
    assert auto_part_size(1000) == 16 * MiB
    for total in (10**12, 10**13, 5 * 1024**4):
        size = auto_part_size(total)
        assert size % MiB == 0 and len(plan_parts(total, size)) <= MAX_PARTS
        assert len(plan_parts(total, smallest_part_size(total))) <= MAX_PARTS
        with pytest.raises(S3PlanError):
            plan_parts(total, smallest_part_size(total) - MiB)


def test_multipart_etag_is_the_md5_of_the_part_md5s() -> None:
    parts = [b"a" * 10, b"b" * 3]
    md5s = [hashlib.md5(p).hexdigest() for p in parts]
    joined = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert multipart_etag(md5s) == f"{joined}-2"


def test_composite_checksums() -> None:
    parts = [b"x" * 100, b"y" * 7]
    sha = [base64.b64encode(hashlib.sha256(p).digest()).decode() for p in parts]
    inner = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    assert composite_checksum("sha256", sha) == base64.b64encode(inner).decode() + "-2"
    # CRC32C of "123456789" is 0xE3069283 (the standard check value).
    from atartape.s3.digests import new_checksum

    crc = new_checksum("crc32c")
    crc.update(b"1234")
    crc.update(b"56789")
    assert crc.digest() == bytes.fromhex("e3069283")
    assert zlib.crc32(b"123456789") != 0xE3069283  # not the zlib CRC32


def test_urls() -> None:
    url = S3Url.parse("s3://bucket/dir/tape.tar")
    assert (url.bucket, url.key, str(url)) == ("bucket", "dir/tape.tar", "s3://bucket/dir/tape.tar")
    assert url.marker_key("ab" * 32) == "dir/tape.tar.atartape-upload." + "ab" * 16
    for bad in ("bucket/key", "s3://bucket", "s3://bucket/", "s3:///key", "http://b/k"):
        with pytest.raises(S3PlanError, match="s3://BUCKET/KEY"):
            S3Url.parse(bad)


def test_metadata_and_marker_round_trip() -> None:
    meta = TapeMetadata("f" * 64, "e" * 64, 123456, 5 * MiB, "crc32c")
    as_sent = meta.to_metadata()
    assert all(k.startswith("atartape-") and v.isascii() for k, v in as_sent.items())
    assert TapeMetadata.from_metadata({k.upper(): v for k, v in as_sent.items()}) == meta
    assert TapeMetadata.from_metadata({}) is None
    assert TapeMetadata.from_metadata({**as_sent, "atartape-part-size": "x"}) is None
    assert TapeMetadata.from_metadata({**as_sent, "atartape-checksum": "crc64"}) is None
    marker = Marker("k.tar", "upload-1", meta)
    assert Marker.decode(marker.encode()) == marker
    for junk in (b"", b"not json", b"[]", b'{"format": "other"}', marker.encode()[:-5]):
        assert Marker.decode(junk) is None
