"""One part of a multipart upload: produced from the tape, checked, sent.

A :class:`PartSpec` is plain, picklable data (the index path, the source root, the tape's
identity, the part's window and number, the upload it belongs to, the copies the store already
lists for it), so an existing distributed engine (Dask, Ray, a job queue) can hand parts to
machines that share the source and have the index: :func:`send_part` (async) or
:func:`send_part_sync` (blocking) produces the part and sends it, unless the store already holds
exactly these bytes, and returns a :class:`PartResult` for :func:`~atartape.s3.complete`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from .. import views
from ..errors import TapeChangedError, TarIntegrityError
from ..player import TapePlayer
from ..tape import Tape
from .client import call, close_client, make_client
from .digests import PartDigest
from .errors import S3IntegrityError

__all__ = ["ListedPart", "PartResult", "PartSpec", "produce_part", "send_part", "send_part_sync"]

HASH_BATCH = 8 * 1024 * 1024  # bytes hashed per worker-thread hop
SEND_ATTEMPTS = 2  # a part refused with BadDigest (damaged on the way) is sent once more


@dataclass(frozen=True, slots=True)
class ListedPart:
    """One copy of a part as ``list_parts`` showed it: size, ETag (unquoted) and the flexible
    checksum when the store lists one."""

    size: int
    etag: str
    checksum: str | None = None


@dataclass(frozen=True, slots=True)
class PartSpec:
    """Everything needed to produce and send part ``number`` (the tape's bytes ``[start,
    end)``) of the upload ``upload_id`` of ``s3://bucket/key``, on any machine that has the index
    at ``index_path`` and the source at ``source_root``. Picklable.

    ``listed`` holds the copies of this part number the store listed when the upload was
    resumed; the part is sent again unless there is exactly one, of the right size, whose ETag
    (or checksum) is the one computed from the tape.
    """

    bucket: str
    key: str
    upload_id: str
    number: int
    start: int
    end: int
    identity: str
    index_path: str
    source_root: str
    checksum: str = "md5"
    endpoint_url: str | None = None
    listed: tuple[ListedPart, ...] = field(default=())
    view: str = "plain"

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key} part {self.number}"


@dataclass(frozen=True, slots=True)
class PartResult:
    """A part the store holds: its number and size, the digests computed from the tape (hex
    MD5; the flexible checksum in base64, or ``None``), the store's ETag for that copy, and
    whether this call sent it (``False``: a listed copy was checked and kept)."""

    number: int
    size: int
    md5: str
    checksum: str | None
    etag: str
    sent: bool


def _absorb(digest: PartDigest, chunks: Sequence[bytes], body: bytearray | None, at: int) -> int:
    """Hash ``chunks`` and copy them into ``body`` at ``at``; returns the next position."""
    for chunk in chunks:
        digest.update(chunk)
        if body is not None:
            body[at : at + len(chunk)] = chunk
        at += len(chunk)
    return at


async def produce_part(
    tape: Tape,
    start: int,
    end: int,
    checksum: str = "md5",
    *,
    source_root: str | None = None,
    keep: bool = True,
    view: str = "plain",
) -> tuple[bytearray, PartDigest]:
    """The bytes ``[start, end)`` of the tape's ``view`` and their digests; without ``keep``,
    only the digests (and an empty body).

    The bytes are hashed and copied into one buffer of the part's size in worker threads, a
    few MiB per hop, so a part costs its size in memory and no more. Raises what
    :meth:`TapePlayer.chunks` raises (:class:`TarIntegrityError` for a source file that
    changed, :class:`TapeChangedError` for a re-recorded index, ...).
    """
    player = TapePlayer(tape, source_root=source_root, md5=False, view=view)
    digest = PartDigest(checksum)
    body = bytearray(end - start) if keep else None
    at = 0
    batch: list[bytes] = []
    batched = 0
    async with aclosing(player.chunks(start, end)) as stream:
        async for chunk in stream:
            batch.append(chunk)
            batched += len(chunk)
            if batched >= HASH_BATCH:
                at = await anyio.to_thread.run_sync(_absorb, digest, batch, body, at)
                batch, batched = [], 0
    if batch:
        at = await anyio.to_thread.run_sync(_absorb, digest, batch, body, at)
    if at != end - start:  # pragma: no cover - chunks() yields exactly the window
        raise TarIntegrityError(f"bytes {start}-{end} of the tape came out {at} long")
    return body if body is not None else bytearray(), digest


def kept_copy(spec: PartSpec, digest: PartDigest) -> ListedPart | None:
    """The listed copy of this part that holds exactly the tape's bytes, or ``None``.

    A part number listed more than once is not trusted (which copy would a completion use?),
    nor a copy of another size, nor one whose checksum (when listed) or ETag differs from the
    digest computed from the tape.
    """
    if len(spec.listed) != 1:
        return None
    copy = spec.listed[0]
    if copy.size != spec.size:
        return None
    if spec.checksum != "md5" and copy.checksum is not None:
        return copy if copy.checksum == digest.checksum else None
    return copy if copy.etag == digest.md5 else None


async def open_part_tape(spec: PartSpec) -> Tape:
    """The tape of ``spec.index_path``, playing from ``spec.source_root``; raises
    :class:`TapeChangedError` when the index holds another recording than the upload's."""
    tape = await Tape.open(spec.index_path, source_root=spec.source_root)
    found = views.identity_of(tape.identity, spec.view)
    if found != spec.identity:
        raise TapeChangedError(
            f"{spec.where}: the index {spec.index_path!r} holds the recording "
            f"{found[:16]}, the upload is of {spec.identity[:16]}: "
            "refusing to send another tape's bytes"
        )
    return tape


async def send_part(spec: PartSpec, *, client: Any = None, tape: Tape | None = None) -> PartResult:
    """Produce part ``spec.number`` from the tape and make sure the store holds it.

    Keeps a listed copy that holds exactly these bytes (see :func:`kept_copy`), else sends
    the part with its ``Content-MD5`` (``md5``) or its flexible checksum, which the store
    checks; the store's answer must carry the same digest. ``client`` is a boto3 S3 client
    (one is made from the environment and ``spec.endpoint_url``, and closed, when not given);
    ``tape`` spares re-opening the index.

    Raises :class:`TapeChangedError` when the index is not the upload's recording,
    :class:`TarIntegrityError` when the source changed, :class:`S3IntegrityError` when the
    store refused the bytes twice (``BadDigest``) or answered another digest, and
    :class:`~atartape.s3.S3Error` for a failed request.
    """
    if tape is None:
        tape = await open_part_tape(spec)
    elif views.identity_of(tape.identity, spec.view) != spec.identity:
        raise TapeChangedError(f"{spec.where}: the tape given is not the upload's recording")
    body, digest = await produce_part(tape, spec.start, spec.end, spec.checksum, view=spec.view)
    kept = kept_copy(spec, digest)
    if kept is not None:
        return PartResult(spec.number, spec.size, digest.md5, digest.checksum, kept.etag, False)
    own = client is None
    if own:
        client = await make_client(spec.endpoint_url, max_pool_connections=1)
    try:
        etag = await _upload(client, spec, body, digest)
    finally:
        if own:
            await close_client(client)
    return PartResult(spec.number, spec.size, digest.md5, digest.checksum, etag, True)


async def _upload(client: Any, spec: PartSpec, body: bytearray, digest: PartDigest) -> str:
    params: dict[str, Any] = {
        "Bucket": spec.bucket,
        "Key": spec.key,
        "UploadId": spec.upload_id,
        "PartNumber": spec.number,
        "Body": body,
    }
    if spec.checksum == "md5":
        params["ContentMD5"] = digest.content_md5
    else:
        name = spec.checksum.upper()
        params["ChecksumAlgorithm"] = name
        params[f"Checksum{name}"] = digest.checksum
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            answer = await call(client, "upload_part", spec.where, **params)
            break
        except S3IntegrityError:
            if attempt == SEND_ATTEMPTS:
                raise
    etag = str(answer.get("ETag", "")).strip('"').lower()
    if spec.checksum == "md5":
        if etag != digest.md5:
            raise S3IntegrityError(
                f"{spec.where}: the store's ETag {etag!r} is not the MD5 of the bytes sent "
                f"({digest.md5})"
            )
    else:
        stored = answer.get(f"Checksum{spec.checksum.upper()}")
        if stored is not None and stored != digest.checksum:
            raise S3IntegrityError(
                f"{spec.where}: the store's {spec.checksum} {stored} is not the one of the "
                f"bytes sent ({digest.checksum})"
            )
    return etag


def send_part_sync(spec: PartSpec, *, client: Any = None, backend: str = "asyncio") -> PartResult:
    """:func:`send_part` for plain threads and processes (a Dask task, a job queue worker):
    runs its own event loop. Raises as :func:`send_part` does."""
    return anyio.run(functools.partial(send_part, spec, client=client), backend=backend)
