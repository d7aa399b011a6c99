"""The arithmetic of a tape stored as one S3 multipart object. Pure: no I/O, no anyio, no boto3.

- :func:`plan_parts`: the parts of a tape (numbered from 1, every one but the last of
  ``part_size`` bytes), refused with :class:`~atartape.s3.S3PlanError` when S3 would refuse
  them: more than 10,000 parts, parts under 5 MiB (but the last), parts over 5 GiB.
- :class:`S3Url`: ``s3://bucket/key``.
- The object's metadata (:class:`TapeMetadata`): the tape's identity, its size, the part size
  and the checksum algorithm, given at ``create_multipart_upload`` and kept on the completed
  object.
- The marker (:class:`Marker`): a small object beside the key, named after the key and the
  tape's identity, that holds the UploadId of the tape's pending upload. S3 lists pending
  uploads without their metadata, so this is how a later run finds *this tape's* upload.
- The digests a store reports: :func:`multipart_etag` (MD5 of the parts' MD5s) and
  :func:`composite_checksum` (the same construction for CRC32C or SHA-256).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..format.units import format_size, parse_size
from .errors import S3PlanError

__all__ = [
    "CHECKSUMS",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "Marker",
    "Part",
    "S3Url",
    "TapeMetadata",
    "auto_part_size",
    "composite_checksum",
    "multipart_etag",
    "plan_parts",
    "smallest_part_size",
]

MIN_PART_SIZE = 5 * 1024 * 1024
"""S3's smallest part (every part but the last): 5 MiB."""
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
"""S3's largest part: 5 GiB."""
MAX_PARTS = 10_000
"""S3's largest part number."""
DEFAULT_MIN_PART = 16 * 1024 * 1024
"""The smallest part size chosen automatically (larger tapes get larger parts)."""
CHECKSUMS = ("md5", "crc32c", "sha256")
"""How each part's integrity is checked by the store: ``md5`` sends ``Content-MD5`` and compares
ETags (stores whose ETags are MD5s); ``crc32c`` and ``sha256`` send S3's flexible checksums
(also where ETags are not MD5s, e.g. SSE-KMS)."""

_MIB = 1024 * 1024
_META_PREFIX = "atartape-"
_VIEWS = ("plain", "zstd", "age", "zstd+age")  # as atartape.views.VIEWS
MARKER_SUFFIX = ".atartape-upload."
"""A marker's key: ``<key>.atartape-upload.<first 32 hex digits of the identity>``."""
MARKER_FORMAT = "atartape-s3-upload"
MARKER_VERSION = 1


@dataclass(frozen=True, slots=True)
class Part:
    """Part ``number`` (from 1): the tape's bytes ``[start, end)``."""

    number: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def auto_part_size(total_size: int) -> int:
    """A part size for a tape of ``total_size`` bytes: 16 MiB, or the smallest whole number of
    MiB that keeps the tape within 10,000 parts."""
    return max(DEFAULT_MIN_PART, smallest_part_size(total_size))


def smallest_part_size(total_size: int) -> int:
    """The smallest part size (a whole number of MiB, at least 5 MiB) that cuts a tape of
    ``total_size`` bytes into at most 10,000 parts."""
    needed = -(-total_size // MAX_PARTS)
    return max(MIN_PART_SIZE, -(-needed // _MIB) * _MIB)


def plan_parts(total_size: int, part_size: int | str) -> list[Part]:
    """The parts of a tape of ``total_size`` bytes cut every ``part_size`` bytes.

    Raises :class:`~atartape.s3.S3PlanError` (also a ``ValueError``), before anything is sent,
    for a bad size, for parts under 5 MiB when there are several, for parts over 5 GiB and for
    more than 10,000 parts; the message says which size would do.
    """
    try:
        size = parse_size(part_size, what="part size")
    except ValueError as exc:
        raise S3PlanError(str(exc)) from None
    if total_size < 1:
        raise S3PlanError(f"a tape of {total_size} bytes has no parts")
    count = -(-total_size // size)
    if size > MAX_PART_SIZE:
        raise S3PlanError(
            f"part size {format_size(size)} is over S3's largest part, 5GiB "
            f"(the tape is {format_size(total_size, exact=False)})"
        )
    if count > 1 and size < MIN_PART_SIZE:
        raise S3PlanError(
            f"part size {format_size(size)} is under S3's smallest part, 5MiB "
            "(only the last part may be smaller)"
        )
    if count > MAX_PARTS:
        raise S3PlanError(
            f"part size {format_size(size)} cuts the tape ({total_size} bytes) into {count} "
            f"parts; S3 allows {MAX_PARTS}: use at least "
            f"{format_size(smallest_part_size(total_size))}"
        )
    return [Part(n + 1, n * size, min((n + 1) * size, total_size)) for n in range(count)]


@dataclass(frozen=True, slots=True)
class S3Url:
    """``s3://bucket/key``; :meth:`parse` checks the form."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> S3Url:
        """Raises :class:`~atartape.s3.S3PlanError` (a ``ValueError``) unless ``url`` is
        ``s3://BUCKET/KEY`` with a non-empty bucket and key."""
        if not isinstance(url, str) or not url.startswith("s3://"):
            raise S3PlanError(f"expected s3://BUCKET/KEY, not {url!r}")
        bucket, _, key = url[5:].partition("/")
        if not bucket or not key:
            raise S3PlanError(f"expected s3://BUCKET/KEY, not {url!r}")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def marker_key(self, identity: str) -> str:
        """The key of the marker that names this tape's pending upload of this object."""
        return f"{self.key}{MARKER_SUFFIX}{identity[:32]}"


@dataclass(frozen=True, slots=True)
class TapeMetadata:
    """What the object's user metadata says about the tape it holds: the identity and size of
    its bytes, which are the tape's ``view`` (``"plain"``: the tar; see :mod:`atartape.views`),
    the recording's layout fingerprint, the part size and the checksum of the parts."""

    identity: str
    fingerprint: str
    total_size: int
    part_size: int
    checksum: str
    view: str = "plain"

    def to_metadata(self) -> dict[str, str]:
        """S3 user metadata (``x-amz-meta-atartape-*``): ASCII keys and values."""
        return {
            f"{_META_PREFIX}identity": self.identity,
            f"{_META_PREFIX}fingerprint": self.fingerprint,
            f"{_META_PREFIX}total-size": str(self.total_size),
            f"{_META_PREFIX}part-size": str(self.part_size),
            f"{_META_PREFIX}checksum": self.checksum,
            f"{_META_PREFIX}view": self.view,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> TapeMetadata | None:
        """The tape described by an object's metadata; ``None`` when it describes none (another
        tool's object) or does so badly."""
        meta = {k.lower(): v for k, v in metadata.items()}
        try:
            found = cls(
                identity=meta[f"{_META_PREFIX}identity"],
                fingerprint=meta.get(f"{_META_PREFIX}fingerprint", ""),
                total_size=int(meta[f"{_META_PREFIX}total-size"]),
                part_size=int(meta[f"{_META_PREFIX}part-size"]),
                checksum=meta.get(f"{_META_PREFIX}checksum", "md5"),
                view=meta.get(f"{_META_PREFIX}view", "plain"),
            )
        except (KeyError, ValueError):
            return None
        if (
            found.part_size < 1
            or found.total_size < 1
            or found.checksum not in CHECKSUMS
            or found.view not in _VIEWS
        ):
            return None
        return found


@dataclass(frozen=True, slots=True)
class Marker:
    """The marker object's content: which pending upload holds which tape."""

    key: str
    upload_id: str
    meta: TapeMetadata

    def encode(self) -> bytes:
        body = {
            "format": MARKER_FORMAT,
            "version": MARKER_VERSION,
            "key": self.key,
            "upload_id": self.upload_id,
            **self.meta.to_metadata(),
        }
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Marker | None:
        """The marker in ``data``; ``None`` for anything else (a damaged or foreign object)."""
        try:
            body: Any = json.loads(data)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("format") != MARKER_FORMAT:
            return None
        meta = TapeMetadata.from_metadata({k: str(v) for k, v in body.items()})
        key, upload_id = body.get("key"), body.get("upload_id")
        if meta is None or not isinstance(key, str) or not isinstance(upload_id, str):
            return None
        return cls(key, upload_id, meta)


def multipart_etag(md5s: Sequence[str]) -> str:
    """The ETag S3 gives a multipart object made of parts with these hex MD5s (unquoted):
    the MD5 of the parts' binary MD5s, ``-`` the part count."""
    joined = b"".join(bytes.fromhex(md5) for md5 in md5s)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(md5s)}"


def composite_checksum(algorithm: str, checksums: Sequence[str]) -> str:
    """S3's composite checksum of a multipart object (``crc32c`` or ``sha256``): the checksum
    of the parts' binary checksums (each given in base64), in base64, ``-`` the part count."""
    from .digests import new_checksum  # the crc32c implementation is imported lazily

    digest = new_checksum(algorithm)
    for value in checksums:
        digest.update(base64.b64decode(value))
    return f"{digest.b64()}-{len(checksums)}"
