"""A tape as one S3 multipart object: upload that resumes, verify, restore by ranged GETs.

``pip install 'atartape[s3]'``. boto3 clients driven from anyio worker threads, so the same
code runs on asyncio and trio::

    from atartape import s3

    result = await s3.upload(tape, "s3://bucket/dataset.tar", part_size="64MiB", concurrency=8)
    await s3.verify(tape, "s3://bucket/dataset.tar")
    await s3.restore(tape.index_path, "s3://bucket/dataset.tar", "dataset/sub/big.bin", "out/")

Run :func:`upload` again after any interruption (a crash, ``kill -9``, a lost network): it finds
this tape's pending upload, keeps the parts the store holds of exactly the tape's bytes, sends
the rest and completes. Parts are deterministic (the tape's bytes at fixed offsets), which is
what makes a re-run, or a retried task on another machine, safe.

On a cluster: :func:`begin` (find or create the upload), :meth:`Upload.part_specs` (picklable
:class:`PartSpec` values), :func:`send_part_sync` / :func:`send_part` on the machines, and
:func:`complete` with the :class:`PartResult` values.
"""

from __future__ import annotations

from typing import Any

from ..tape import Tape
from .client import make_client, new_client
from .errors import S3Error, S3IntegrityError, S3PlanError
from .multipart import Upload, UploadResult, abort_upload, complete, create_upload, find_upload
from .parts import ListedPart, PartResult, PartSpec, produce_part, send_part, send_part_sync
from .plan import (
    CHECKSUMS,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    Part,
    S3Url,
    TapeMetadata,
    auto_part_size,
    multipart_etag,
    plan_parts,
)
from .restore import S3Source, restore
from .upload import upload, verify

__all__ = [
    "CHECKSUMS",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "ListedPart",
    "Part",
    "PartResult",
    "PartSpec",
    "S3Error",
    "S3IntegrityError",
    "S3PlanError",
    "S3Source",
    "S3Url",
    "TapeMetadata",
    "Upload",
    "UploadResult",
    "abort_upload",
    "auto_part_size",
    "begin",
    "complete",
    "create_upload",
    "find_upload",
    "make_client",
    "multipart_etag",
    "new_client",
    "plan_parts",
    "produce_part",
    "restore",
    "send_part",
    "send_part_sync",
    "upload",
    "verify",
]


async def begin(
    tape: Tape,
    url: str,
    *,
    part_size: int | str | None = None,
    checksum: str = "md5",
    client: Any,
    endpoint_url: str | None = None,
    page_size: int | None = None,
) -> Upload:
    """This tape's pending upload of ``url`` (with the parts the store lists), or a new one.

    For spreading the parts over machines: hand ``upload.part_specs(index, source)`` to the
    workers, then :func:`complete` with their results. A pending upload made with another part
    size or checksum raises :class:`S3PlanError` (resume it with its own, or abort it with
    :func:`abort_upload`).
    """
    from .upload import _check_resumable

    found = await find_upload(client, tape, url, endpoint_url=endpoint_url, page_size=page_size)
    if found is not None:
        _check_resumable(found, part_size, checksum)
        return found
    return await create_upload(
        client, tape, url, part_size=part_size, checksum=checksum, endpoint_url=endpoint_url
    )
