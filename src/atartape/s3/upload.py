"""Upload a tape as one S3 multipart object, resuming after any interruption; verify it.

:func:`upload` finds this tape's pending upload of the key (or the object already complete and
verified), or starts one; then it produces every part from the tape, keeps the copies the store
already holds of exactly those bytes, sends the rest, ``concurrency`` at a time, completes with
the ETags and checksums computed from the tape, and returns once the completed object is
checked. Because the parts are deterministic (the tape's bytes at fixed offsets), a re-run, or a
retried task on another machine, sends the same bytes for the same part number.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import anyio

from .. import views
from ..errors import SourceNotFoundError
from ..tape import Tape
from .client import close_client, make_client
from .errors import S3Error, S3IntegrityError, S3PlanError
from .multipart import (
    Upload,
    UploadResult,
    abort_upload,
    check_checksum,
    check_object,
    complete,
    create_upload,
    find_upload,
    head,
)
from .parts import PartResult, PartSpec, produce_part, send_part
from .plan import S3Url, TapeMetadata, plan_parts

__all__ = ["upload", "verify"]

DEFAULT_CONCURRENCY = 4


def _single_error(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one, else ``exc`` itself."""
    inner = exc
    while isinstance(getattr(inner, "exceptions", None), tuple) and len(inner.exceptions) == 1:  # type: ignore[attr-defined]
        inner = inner.exceptions[0]  # type: ignore[attr-defined]
    return inner if isinstance(inner, Exception) else exc


async def _each(
    specs: list[PartSpec],
    concurrency: int,
    work: Callable[[PartSpec], Any],
) -> None:
    """Run ``await work(spec)`` for every spec, at most ``concurrency`` at a time, in order."""
    queue: Iterator[PartSpec] = iter(specs)

    async def worker() -> None:
        for spec in queue:  # one iterator shared by the workers: each spec is taken once
            await work(spec)

    try:
        async with anyio.create_task_group() as group:
            for _ in range(min(concurrency, len(specs))):
                group.start_soon(worker)
    except BaseException as exc:
        inner = _single_error(exc)
        if inner is exc:
            raise
        raise inner from None


async def upload(
    tape: Tape,
    url: str,
    *,
    part_size: int | str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    checksum: str = "md5",
    endpoint_url: str | None = None,
    client: Any = None,
    source_root: str | os.PathLike[str] | None = None,
    restart: bool = False,
    page_size: int | None = None,
    on_begin: Callable[[Upload], None] | None = None,
    on_part: Callable[[PartResult], None] | None = None,
    view: str | None = None,
) -> UploadResult:
    """Upload ``tape`` to ``url`` (``s3://bucket/key``) as one multipart object; run it again
    after any interruption and it goes on where the store stands.

    The object holds the tape's ``view``: by default the one it was recorded with (a tape
    recorded with ``compress="zstd"`` or ``seal=`` is uploaded compressed or sealed; see
    :mod:`atartape.views`), ``"plain"`` for the tar.

    - ``part_size``: an int or ``"64MiB"``; by default the pending upload's, else 16 MiB or
      the smallest size that keeps the tape within 10,000 parts. Refused before anything is
      sent when S3 would refuse it (:class:`S3PlanError`).
    - ``concurrency``: parts produced and sent at once (memory: about ``part_size`` each).
    - ``checksum``: ``"md5"`` (``Content-MD5``; the ETags are checked), ``"crc32c"`` or
      ``"sha256"`` (S3's flexible checksums, also where ETags are not MD5s, e.g. SSE-KMS).
      Either way the store checks each part as it arrives.
    - ``client``: a boto3 S3 client to use (by default one is made from the environment and
      ``endpoint_url``, with a connection pool of ``concurrency`` and timeouts, and closed).
    - ``restart``: abort this tape's pending upload and start again.
    - ``page_size``: ``MaxParts`` of each ``list_parts`` page.
    - ``on_begin(upload)`` once the upload is found or created, ``on_part(result)`` as each
      part is settled (sent, or found stored and kept): for progress reports.

    Returns the :class:`UploadResult` once the completed object is verified: its size, the
    identity and part size in its metadata, and its ETag (MD5 of the parts' MD5s) or composite
    checksum, each computed from the tape. Raises :class:`~atartape.SourceNotFoundError` when
    the source folder is missing (before any request), :class:`S3PlanError` (a ``ValueError``)
    for a plan or request refused before anything was sent, :class:`S3IntegrityError` when the
    store refused or changed bytes, :class:`~atartape.TarIntegrityError` when the source
    changed since recording, :class:`~atartape.TapeChangedError` when the index was
    re-recorded, and :class:`S3Error` for a failed request.
    """
    where = S3Url.parse(url)
    await anyio.to_thread.run_sync(check_checksum, checksum)  # may import crc32c: off the loop
    if concurrency < 1:
        raise S3PlanError(f"concurrency must be at least 1, not {concurrency}")
    view = view or tape.view
    try:
        size = tape.view_size(view)
    except ValueError as exc:
        raise S3PlanError(str(exc)) from None
    if part_size is not None:
        plan_parts(size, part_size)  # refuse before any request
    if source_root is not None:
        tape = replace(tape, source_root=os.fspath(source_root))
    if not await anyio.to_thread.run_sync(os.path.isdir, tape.source_root):
        raise SourceNotFoundError(
            f"the source of the tape {tape.name!r}, {tape.source_root!r}, is not a folder here"
        )
    own = client is None
    if own:
        client = await make_client(endpoint_url, max_pool_connections=concurrency + 2)
    try:
        return await _upload(
            client, tape, view, where, part_size, concurrency, checksum, endpoint_url, restart,
            page_size, on_begin, on_part,
        )  # fmt: skip
    finally:
        if own:
            await close_client(client)


async def _upload(
    client: Any,
    tape: Tape,
    view: str,
    where: S3Url,
    part_size: int | str | None,
    concurrency: int,
    checksum: str,
    endpoint_url: str | None,
    restart: bool,
    page_size: int | None,
    on_begin: Callable[[Upload], None] | None,
    on_part: Callable[[PartResult], None] | None,
) -> UploadResult:
    pending = await find_upload(
        client, tape, where, endpoint_url=endpoint_url, page_size=page_size, view=view
    )
    if pending is not None and restart:
        await abort_upload(client, pending)
        pending = None
    if pending is not None:
        _check_resumable(pending, part_size, checksum)
    elif not restart:
        done = await _already_there(client, tape, view, where, concurrency)
        if done is not None:
            return done
    if pending is None:
        pending = await create_upload(
            client,
            tape,
            where,
            part_size=part_size,
            checksum=checksum,
            endpoint_url=endpoint_url,
            view=view,
        )
    if on_begin is not None:
        on_begin(pending)
    results: list[PartResult] = []

    async def one(spec: PartSpec) -> None:
        result = await send_part(spec, client=client, tape=tape)
        results.append(result)
        if on_part is not None:
            on_part(result)

    specs = pending.part_specs(tape.index_path, tape.source_root)
    await _each(specs, concurrency, one)
    return await complete(client, pending, results)


def _check_resumable(pending: Upload, part_size: int | str | None, checksum: str) -> None:
    from ..format.units import parse_size

    meta = pending.meta
    if part_size is not None and parse_size(part_size) != meta.part_size:
        raise S3PlanError(
            f"{pending.url}: this tape's pending upload uses parts of {meta.part_size} bytes, "
            f"not {parse_size(part_size)}: resume it with that part size (or none), or "
            "restart it"
        )
    if checksum != meta.checksum:
        raise S3PlanError(
            f"{pending.url}: this tape's pending upload uses the {meta.checksum} checksum, not "
            f"{checksum}: resume it with {meta.checksum}, or restart it"
        )


async def _already_there(
    client: Any, tape: Tape, view: str, where: S3Url, concurrency: int
) -> UploadResult | None:
    """The result for an object that already is this view of the tape, verified; ``None``
    otherwise."""
    answer = await head(client, where)
    meta = TapeMetadata.from_metadata((answer or {}).get("Metadata") or {})
    if (
        answer is None
        or meta is None
        or meta.view != view
        or meta.identity != views.identity_of(tape.identity, view)
    ):
        return None
    try:
        return await _verify(client, tape, where, meta, concurrency)
    except S3IntegrityError:
        return None  # not the tape after all (damaged, or another build of it): upload anew


async def _verify(
    client: Any, tape: Tape, where: S3Url, meta: TapeMetadata, concurrency: int
) -> UploadResult:
    parts = plan_parts(meta.total_size, meta.part_size)
    digests: dict[int, tuple[str, str | None]] = {}
    specs = [
        PartSpec(where.bucket, where.key, "", p.number, p.start, p.end, meta.identity,
                 tape.index_path, tape.source_root, meta.checksum, view=meta.view)
        for p in parts
    ]  # fmt: skip

    async def one(spec: PartSpec) -> None:
        _, digest = await produce_part(
            tape, spec.start, spec.end, meta.checksum, keep=False, view=meta.view
        )
        digests[spec.number] = (digest.md5, digest.checksum)

    await _each(specs, concurrency, one)
    answer = await head(client, where, meta.checksum)
    if answer is None:
        raise S3IntegrityError(f"{where}: the object is gone")
    ordered = [digests[p.number] for p in parts]
    etag, checksum = check_object(
        answer, where, meta, [d[0] for d in ordered], [d[1] for d in ordered]
    )
    return UploadResult(
        url=str(where),
        upload_id=None,
        etag=etag,
        checksum=checksum,
        size=meta.total_size,
        part_size=meta.part_size,
        part_count=len(parts),
        kept=tuple(p.number for p in parts),
        already_complete=True,
    )


async def verify(
    tape: Tape,
    url: str,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    endpoint_url: str | None = None,
    client: Any = None,
) -> UploadResult:
    """Check that the object at ``url`` is this tape: its size, the identity in its
    metadata, and its ETag or composite checksum against the parts computed from the tape
    (read from the source, ``concurrency`` parts at a time; nothing is downloaded). The object
    may hold any view of the tape (its metadata says which); a sealed one needs its key.

    Returns the object's description; raises :class:`S3IntegrityError` when it is not the
    tape (or not a tape), :class:`S3Error` when there is no object or a request fails.
    """
    where = S3Url.parse(url)
    own = client is None
    if own:
        client = await make_client(endpoint_url, max_pool_connections=2)
    try:
        answer = await head(client, where)
        if answer is None:
            raise S3Error(f"{where}: no such object", code="NoSuchKey")
        meta = TapeMetadata.from_metadata(answer.get("Metadata") or {})
        if meta is None:
            raise S3IntegrityError(f"{where}: the object's metadata names no tape")
        expected = views.identity_of(tape.identity, meta.view)
        if meta.identity != expected:
            raise S3IntegrityError(
                f"{where}: the object holds the recording {meta.identity[:16]}, "
                f"not this tape's {expected[:16]} ({meta.view} view)"
            )
        return await _verify(client, tape, where, meta, concurrency)
    finally:
        if own:
            await close_client(client)
