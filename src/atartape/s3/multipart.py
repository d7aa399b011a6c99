"""Begin, find again and complete the multipart upload of one tape.

Finding *this tape's* pending upload: S3 lists pending uploads without their metadata, so
:func:`create_upload` writes a small marker object beside the key,
``<key>.atartape-upload.<identity[:32]>``, holding the UploadId, the tape's identity, its
size, the part size and the checksum algorithm (and the upload itself carries the same in its
metadata, which the completed object keeps). :func:`find_upload` reads the marker of this
tape's identity, checks it names this key and this recording, and lists that upload's parts;
a marker whose upload is gone (completed, aborted) finds nothing. Another tape's pending upload
of the same key has another marker (or none): it is never adopted, only counted in
:attr:`Upload.others`. :func:`complete` deletes the marker once the object is verified.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from .. import views
from ..format.units import parse_size
from ..tape import Tape
from .client import call, run
from .errors import S3Error, S3IntegrityError, S3PlanError
from .parts import ListedPart, PartResult, PartSpec
from .plan import (
    CHECKSUMS,
    Part,
    S3Url,
    TapeMetadata,
    auto_part_size,
    composite_checksum,
    multipart_etag,
    plan_parts,
)

__all__ = [
    "Upload",
    "UploadResult",
    "abort_upload",
    "check_object",
    "complete",
    "create_upload",
    "find_upload",
    "list_parts",
]

_GONE = frozenset({"NoSuchUpload", "404"})
_NO_KEY = frozenset({"NoSuchKey", "404"})


@dataclass(frozen=True)
class Upload:
    """A pending multipart upload of one tape (picklable).

    ``listed`` holds, per part number, the copies the store listed when it was found again
    (empty for a new upload); ``resumed`` says it was found, not created; ``others`` lists the
    UploadIds of the key's other pending uploads, which are not this tape's and were left alone.
    """

    bucket: str
    key: str
    upload_id: str
    meta: TapeMetadata
    endpoint_url: str | None = None
    listed: Mapping[int, tuple[ListedPart, ...]] = field(default_factory=dict)
    resumed: bool = False
    others: tuple[str, ...] = ()

    @property
    def url(self) -> S3Url:
        return S3Url(self.bucket, self.key)

    @property
    def parts(self) -> list[Part]:
        return plan_parts(self.meta.total_size, self.meta.part_size)

    def part_specs(self, index_path: str, source_root: str) -> list[PartSpec]:
        """One :class:`PartSpec` per part, to produce and send where the index and the source
        are (``index_path`` and ``source_root`` as seen there)."""
        return [
            PartSpec(
                bucket=self.bucket,
                key=self.key,
                upload_id=self.upload_id,
                number=part.number,
                start=part.start,
                end=part.end,
                identity=self.meta.identity,
                index_path=index_path,
                source_root=source_root,
                checksum=self.meta.checksum,
                endpoint_url=self.endpoint_url,
                listed=self.listed.get(part.number, ()),
                view=self.meta.view,
            )
            for part in self.parts
        ]


@dataclass(frozen=True)
class UploadResult:
    """A completed, verified object: its URL, ETag (unquoted), composite checksum (``None``
    for ``md5``), size, part size and count, the parts sent by this run and the parts found
    already stored and kept, whether a pending upload was resumed, whether the object was
    already complete (nothing sent), and the other pending uploads of the key left alone."""

    url: str
    upload_id: str | None
    etag: str
    checksum: str | None
    size: int
    part_size: int
    part_count: int
    sent: tuple[int, ...] = ()
    kept: tuple[int, ...] = ()
    resumed: bool = False
    already_complete: bool = False
    others: tuple[str, ...] = ()


def check_checksum(checksum: str) -> str:
    if checksum not in CHECKSUMS:
        raise S3PlanError(f"unknown checksum {checksum!r}: use one of {', '.join(CHECKSUMS)}")
    if checksum != "md5":
        from .digests import new_checksum

        new_checksum(checksum)  # crc32c: fail now when no implementation is installed
    return checksum


def tape_metadata(tape: Tape, part_size: int, checksum: str, view: str = "plain") -> TapeMetadata:
    """The metadata of an object holding ``view`` of ``tape``; ``ValueError`` for a view the
    tape was not recorded with."""
    size = tape.view_size(view)
    identity = views.identity_of(tape.identity, view)
    return TapeMetadata(identity, tape.fingerprint, size, part_size, checksum, view)


async def list_parts(
    client: Any, url: S3Url, upload_id: str, *, page_size: int | None = None, checksum: str = "md5"
) -> dict[int, tuple[ListedPart, ...]] | None:
    """Every copy of every part the store lists for the upload, page by page; ``None`` when
    the upload no longer exists. A part number may come more than once (SeaweedFS keeps each
    upload of a number): all copies are kept, in the order listed."""
    found: dict[int, list[ListedPart]] = {}
    marker = 0
    name = f"Checksum{checksum.upper()}"
    while True:
        params: dict[str, Any] = {"Bucket": url.bucket, "Key": url.key, "UploadId": upload_id}
        if marker:
            params["PartNumberMarker"] = marker
        if page_size is not None:
            params["MaxParts"] = page_size
        try:
            page = await call(client, "list_parts", f"{url}: listing the stored parts", **params)
        except S3Error as exc:
            if exc.code in _GONE:
                return None
            raise
        for part in page.get("Parts") or ():
            copy = ListedPart(
                size=int(part.get("Size", -1)),
                etag=str(part.get("ETag", "")).strip('"').lower(),
                checksum=part.get(name),
            )
            found.setdefault(int(part["PartNumber"]), []).append(copy)
        if not page.get("IsTruncated"):
            break
        following = int(page.get("NextPartNumberMarker") or 0)
        if following <= marker:
            raise S3Error(f"{url}: list_parts did not move past part {marker}")
        marker = following
    return {number: tuple(copies) for number, copies in found.items()}


async def _read_marker(client: Any, url: S3Url, identity: str) -> Any:
    from .plan import Marker

    key = url.marker_key(identity)

    def fetch() -> bytes:
        answer = client.get_object(Bucket=url.bucket, Key=key)
        with answer["Body"] as body:
            return bytes(body.read())

    try:
        data = await run(fetch, f"s3://{url.bucket}/{key}: reading the upload marker")
    except S3Error as exc:
        if exc.code in _NO_KEY:
            return None
        raise
    return Marker.decode(data)


async def _other_uploads(client: Any, url: S3Url, mine: str | None) -> tuple[str, ...]:
    """UploadIds of the key's pending uploads other than ``mine``."""
    others: list[str] = []
    params: dict[str, Any] = {"Bucket": url.bucket, "Prefix": url.key}
    for _ in range(10_000):  # bounded: a store that never ends the listing
        page = await call(
            client, "list_multipart_uploads", f"{url}: listing pending uploads", **params
        )
        for item in page.get("Uploads") or ():
            if item.get("Key") == url.key and item.get("UploadId") != mine:
                others.append(str(item.get("UploadId")))
        following = (page.get("NextKeyMarker") or url.key, page.get("NextUploadIdMarker") or "")
        if not page.get("IsTruncated") or following == (
            params.get("KeyMarker"),
            params.get("UploadIdMarker"),
        ):
            break
        params["KeyMarker"], params["UploadIdMarker"] = following
    return tuple(dict.fromkeys(others))


async def find_upload(
    client: Any,
    tape: Tape,
    url: str | S3Url,
    *,
    endpoint_url: str | None = None,
    page_size: int | None = None,
    view: str | None = None,
) -> Upload | None:
    """This tape's pending upload of ``url`` with its listed parts, or ``None``.

    Found through the marker of the identity of the tape's ``view`` (by default the one it was
    recorded with; see the module); a marker of another recording or view, of another key, or
    whose upload is gone finds nothing. ``page_size`` bounds each ``list_parts`` page
    (``MaxParts``).
    """
    url = S3Url.parse(url) if isinstance(url, str) else url
    view = view or tape.view
    identity = views.identity_of(tape.identity, view)
    marker = await _read_marker(client, url, identity)
    if (
        marker is None
        or marker.key != url.key
        or marker.meta.identity != identity
        or marker.meta.view != view
        or marker.meta.total_size != tape.view_size(view)
    ):
        return None
    listed = await list_parts(
        client, url, marker.upload_id, page_size=page_size, checksum=marker.meta.checksum
    )
    if listed is None:
        return None
    others = await _other_uploads(client, url, marker.upload_id)
    return Upload(
        url.bucket, url.key, marker.upload_id, marker.meta, endpoint_url, listed, True, others
    )


async def create_upload(
    client: Any,
    tape: Tape,
    url: str | S3Url,
    *,
    part_size: int | str | None = None,
    checksum: str = "md5",
    endpoint_url: str | None = None,
    view: str | None = None,
) -> Upload:
    """Start a multipart upload of the tape's ``view`` (by default the one it was recorded
    with), with its identity, size, part size and checksum algorithm in the object's metadata,
    and write its marker.

    Raises :class:`S3PlanError` for a plan S3 would refuse (before any request).
    """
    from .plan import Marker

    url = S3Url.parse(url) if isinstance(url, str) else url
    await anyio.to_thread.run_sync(check_checksum, checksum)  # may import crc32c
    view = view or tape.view
    total = tape.view_size(view)
    size = auto_part_size(total) if part_size is None else parse_size(part_size)
    plan_parts(total, size)
    meta = tape_metadata(tape, size, checksum, view)
    params: dict[str, Any] = {
        "Bucket": url.bucket,
        "Key": url.key,
        "ContentType": views.content_type(view),
        "Metadata": meta.to_metadata(),
    }
    if checksum != "md5":
        params["ChecksumAlgorithm"] = checksum.upper()
    created = await call(client, "create_multipart_upload", f"{url}: creating the upload", **params)
    upload_id = str(created["UploadId"])
    body = Marker(url.key, upload_id, meta).encode()
    key = url.marker_key(meta.identity)
    try:
        await call(
            client,
            "put_object",
            f"s3://{url.bucket}/{key}: writing the upload marker",
            Bucket=url.bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            ContentMD5=base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
        )
    except BaseException:
        await _abort_quietly(client, url, upload_id)
        raise
    others = await _other_uploads(client, url, upload_id)
    return Upload(url.bucket, url.key, upload_id, meta, endpoint_url, {}, False, others)


async def _abort_quietly(client: Any, url: S3Url, upload_id: str) -> None:
    # On failure: an upload with no parts and no marker, which the bucket's lifecycle rule
    # (AbortIncompleteMultipartUpload) ends.
    with anyio.CancelScope(shield=True), contextlib.suppress(S3Error):
        await call(
            client,
            "abort_multipart_upload",
            f"{url}: aborting",
            Bucket=url.bucket,
            Key=url.key,
            UploadId=upload_id,
        )


async def abort_upload(client: Any, upload: Upload) -> None:
    """Abort the pending upload and delete its marker."""
    await call(
        client,
        "abort_multipart_upload",
        f"{upload.url}: aborting the pending upload",
        Bucket=upload.bucket,
        Key=upload.key,
        UploadId=upload.upload_id,
    )
    await _delete_marker(client, upload.url, upload.meta.identity)


async def _delete_marker(client: Any, url: S3Url, identity: str) -> None:
    key = url.marker_key(identity)
    await call(
        client,
        "delete_object",
        f"s3://{url.bucket}/{key}: deleting the upload marker",
        Bucket=url.bucket,
        Key=key,
    )


def check_object(
    head: Mapping[str, Any],
    url: S3Url,
    meta: TapeMetadata,
    md5s: list[str],
    checksums: list[str | None],
) -> tuple[str, str | None]:
    """Check a ``head_object`` answer against the tape: size, identity and part size in the
    metadata, and the ETag (MD5 of the parts' MD5s) or the composite checksum computed from
    the tape's parts. Returns the ETag and the checksum; raises :class:`S3IntegrityError`."""
    size = head.get("ContentLength")
    if size != meta.total_size:
        raise S3IntegrityError(f"{url}: the object has {size} bytes, the tape {meta.total_size}")
    found = TapeMetadata.from_metadata(head.get("Metadata") or {})
    if found is None:
        raise S3IntegrityError(f"{url}: the object's metadata names no tape")
    if found.identity != meta.identity:
        raise S3IntegrityError(
            f"{url}: the object holds the recording {found.identity[:16]}, "
            f"not this tape's {meta.identity[:16]}"
        )
    if found.part_size != meta.part_size or found.checksum != meta.checksum:
        raise S3IntegrityError(
            f"{url}: the object's metadata says parts of {found.part_size} bytes "
            f"({found.checksum}), the upload used {meta.part_size} ({meta.checksum})"
        )
    etag = str(head.get("ETag", "")).strip('"').lower()
    by_md5 = multipart_etag(md5s)
    if meta.checksum == "md5":
        if etag != by_md5:
            raise S3IntegrityError(
                f"{url}: the object's ETag {etag} is not the one of the tape's parts ({by_md5})"
            )
        return etag, None
    values = [value or "" for value in checksums]
    expected = composite_checksum(meta.checksum, values)
    stored = head.get(f"Checksum{meta.checksum.upper()}")
    if stored is None:
        if etag == by_md5:  # a store that keeps no checksum but whose ETags are MD5s
            return etag, None
        raise S3IntegrityError(
            f"{url}: the store reports no {meta.checksum} and its ETag is not MD5-based: "
            "the object cannot be verified"
        )
    if stored != expected:
        raise S3IntegrityError(
            f"{url}: the object's {meta.checksum} {stored} is not the one of the tape's "
            f"parts ({expected})"
        )
    return etag, str(stored)


async def head(client: Any, url: S3Url, checksum: str = "md5") -> dict[str, Any] | None:
    """``head_object`` of the URL (with its checksum, for crc32c/sha256), ``None`` if absent."""
    params: dict[str, Any] = {"Bucket": url.bucket, "Key": url.key}
    if checksum != "md5":
        params["ChecksumMode"] = "ENABLED"
    try:
        return await call(client, "head_object", f"{url}: reading the object", **params)
    except S3Error as exc:
        if exc.code in _NO_KEY:
            return None
        raise


async def complete(client: Any, upload: Upload, results: Iterable[PartResult]) -> UploadResult:
    """Complete the upload with the ETags (and checksums) computed from the tape, check the
    object (:func:`check_object`), then delete the marker.

    Raises :class:`S3PlanError` when ``results`` miss a part or have one of the wrong size,
    :class:`S3IntegrityError` when the object is not the tape, :class:`S3Error` for a failed
    request.
    """
    by_number = {result.number: result for result in results}
    parts = upload.parts
    missing = [p.number for p in parts if p.number not in by_number]
    wrong = [
        p.number for p in parts if p.number in by_number and by_number[p.number].size != p.size
    ]
    if missing or wrong:
        raise S3PlanError(
            f"{upload.url}: cannot complete: parts {missing or ''} missing"
            f"{f', parts {wrong} of the wrong size' if wrong else ''}"
        )
    ordered = [by_number[p.number] for p in parts]
    listing = []
    name = f"Checksum{upload.meta.checksum.upper()}"
    for result in ordered:
        item: dict[str, Any] = {"PartNumber": result.number, "ETag": f'"{result.etag}"'}
        if upload.meta.checksum != "md5":
            item[name] = result.checksum
        listing.append(item)
    try:
        await call(
            client,
            "complete_multipart_upload",
            f"{upload.url}: completing the upload",
            Bucket=upload.bucket,
            Key=upload.key,
            UploadId=upload.upload_id,
            MultipartUpload={"Parts": listing},
        )
    except S3Error as exc:
        if exc.code not in _GONE:  # gone: completed by an earlier try whose answer was lost?
            raise
    answer = await head(client, upload.url, upload.meta.checksum)
    if answer is None:
        raise S3IntegrityError(f"{upload.url}: no object after completing the upload")
    etag, checksum = check_object(
        answer,
        upload.url,
        upload.meta,
        [r.md5 for r in ordered],
        [r.checksum for r in ordered],
    )
    # A marker left behind is harmless: a later run finds its upload gone, the object verified.
    with contextlib.suppress(S3Error):
        await _delete_marker(client, upload.url, upload.meta.identity)
    return UploadResult(
        url=str(upload.url),
        upload_id=upload.upload_id,
        etag=etag,
        checksum=checksum,
        size=upload.meta.total_size,
        part_size=upload.meta.part_size,
        part_count=len(parts),
        sent=tuple(r.number for r in ordered if r.sent),
        kept=tuple(r.number for r in ordered if not r.sent),
        resumed=upload.resumed,
        others=upload.others,
    )
