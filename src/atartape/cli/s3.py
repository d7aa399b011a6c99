"""``atartape upload``, ``atartape restore`` and ``atartape parts``: a tape as one S3 object.

Credentials, region and endpoint come from the usual AWS environment variables and files
(``--endpoint-url`` overrides the endpoint). ``upload`` run again after any interruption goes
on with this tape's pending upload; it exits 0 only once the completed object is verified.

Test-only hook: with ``ATARTAPE_TEST_KILL_AFTER_PARTS=N`` in the environment, ``upload`` kills
its own process with SIGKILL as soon as N parts have been sent in this run (the tests use it to
interrupt an upload at a known point, as ``kill -9`` would). Nothing else reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from typing import Any

from .common import (
    EXIT_OK,
    Stdout,
    UsageError,
    add_view_argument,
    chosen_view,
    message,
    open_tape,
    read_age_identity,
    warning,
)
from .parser import Commands, count, size
from .progress import Bar, progress_bar

__all__ = ["register"]

KILL_HOOK = "ATARTAPE_TEST_KILL_AFTER_PARTS"


def register(commands: Commands) -> None:
    sub = commands.add(
        "upload", "upload the tape to S3 as one multipart object (run again to resume)", upload
    )
    sub.add_argument("url", metavar="URL", help="s3://BUCKET/KEY")
    add_view_argument(sub)
    sub.add_argument(
        "--part-size",
        type=size,
        help="bytes per part (default: the pending upload's, else 16MiB or what keeps the "
        "tape within 10,000 parts)",
    )
    sub.add_argument(
        "--concurrency", type=_positive, default=4, help="parts sent at once (default 4)"
    )
    sub.add_argument(
        "--checksum",
        choices=("md5", "crc32c", "sha256"),
        default="md5",
        help="how the store checks each part: Content-MD5 (default) or a flexible checksum "
        "(for stores whose ETags are not MD5s, e.g. SSE-KMS)",
    )
    sub.add_argument("--restart", action="store_true", help="abort this tape's pending upload")
    sub.add_argument("--endpoint-url", metavar="URL", help="another S3 API (MinIO, SeaweedFS...)")
    sub.add_argument("--json", action="store_true", help="print the result as JSON")

    sub = commands.add(
        "restore", "bring one file or folder back from a tape stored in S3", restore, tape=False
    )
    sub.add_argument("url", metavar="URL", help="s3://BUCKET/KEY")
    sub.add_argument("arc_path", metavar="ARC_PATH", help="the file or folder in the tape")
    sub.add_argument("dest", metavar="DEST", help="file to write, or folder to write into")
    sub.add_argument(
        "--index", metavar="PATH", help="the tape's index (without: read the object as a tar)"
    )
    sub.add_argument("--overwrite", action="store_true", help="replace an existing file")
    sub.add_argument(
        "--age-identity-file",
        metavar="FILE",
        help="open a sealed object with this age identity (or passphrase) file",
    )
    sub.add_argument("--endpoint-url", metavar="URL", help="another S3 API (MinIO, SeaweedFS...)")

    sub = commands.add("parts", "the tape's parts: number (from 1), start, end, size", parts)
    sub.add_argument("--part-size", type=size, required=True, help="bytes per part (64MiB)")
    sub.add_argument("--json", action="store_true", help="print the plan as JSON")


def _identity_of(identity: str, view: str) -> str:
    from ..views import identity_of

    return identity_of(identity, view)


def _positive(text: str) -> int:
    value: int = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"bad count {text!r}: expected 1 or more")
    return value


def _s3() -> Any:
    from .. import s3  # it imports boto3 when it makes a client

    return s3


def _usage(exc: BaseException) -> BaseException:
    """S3 errors caused by what the user asked for become usage errors (exit status 2)."""
    from ..s3 import S3Error, S3IntegrityError, S3PlanError
    from ..s3.client import USAGE_CODES

    if isinstance(exc, S3PlanError) or (
        isinstance(exc, S3Error)
        and not isinstance(exc, S3IntegrityError)
        and exc.code in USAGE_CODES
    ):
        return UsageError(str(exc))
    return exc


class _UploadProgress:
    """The bar of an upload: bytes of the parts settled (sent or found stored), and parts."""

    def __init__(self, args: argparse.Namespace, total: int) -> None:
        self.args = args
        self.total = total
        self.bar: Bar = Bar()
        self.count = 0
        self.settled = 0
        self.done_bytes = 0
        self.sent = 0
        self.kill_after = int(os.environ.get(KILL_HOOK) or 0)

    def begin(self, upload: Any) -> None:
        self.count = len(upload.parts)
        size = upload.meta.part_size
        if upload.resumed:
            listed = len(upload.listed)
            message(
                self.args,
                f"resuming this tape's pending upload of {upload.url} ({self.count} parts of "
                f"{size} bytes; the store lists {listed})",
            )
        else:
            message(self.args, f"uploading to {upload.url}: {self.count} parts of {size} bytes")
        if upload.others:
            message(
                self.args,
                f"left alone: {len(upload.others)} other pending upload(s) of this key, "
                "not of this tape",
            )
        self.bar = progress_bar(self.total, label="upload", quiet=self.args.quiet)
        self.bar.set_file(f"0/{self.count} parts")

    def part(self, result: Any) -> None:
        self.settled += 1
        self.done_bytes += result.size
        self.bar.set_file(f"{self.settled}/{self.count} parts")  # shown by the update below
        self.bar.update_to(self.done_bytes)
        if result.sent:
            self.sent += 1
            if self.kill_after and self.sent >= self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # the test-only hook (see the module)


async def upload(args: argparse.Namespace) -> int:
    s3 = _s3()
    tape = await open_tape(args)
    view = chosen_view(tape, args.view)
    progress = _UploadProgress(args, tape.view_size(view))
    try:
        result = await s3.upload(
            tape,
            args.url,
            part_size=args.part_size,
            concurrency=args.concurrency,
            checksum=args.checksum,
            endpoint_url=args.endpoint_url,
            restart=args.restart,
            on_begin=progress.begin,
            on_part=progress.part,
            view=view,
        )
    except Exception as exc:
        raise _usage(exc) from None
    finally:
        progress.bar.close()
    if result.already_complete:
        what = "already complete"
    else:
        what = f"{len(result.sent)} parts sent, {len(result.kept)} found stored"
    digest = f"ETag {result.etag}" + (
        f", {args.checksum} {result.checksum}" if result.checksum else ""
    )
    message(
        args,
        f"{result.url}: {result.size} bytes in {result.part_count} parts ({what}); "
        f"verified: identity, size, {digest}",
    )
    if args.json:
        out = Stdout()
        fields = {
            "url": result.url,
            "size": result.size,
            "part_size": result.part_size,
            "part_count": result.part_count,
            "etag": result.etag,
            "checksum": result.checksum,
            "sent": list(result.sent),
            "kept": list(result.kept),
            "resumed": result.resumed,
            "already_complete": result.already_complete,
            "identity": _identity_of(tape.identity, view),
            "view": view,
        }
        await out.line(json.dumps(fields, indent=2))
        await out.flush()
    return EXIT_OK


async def restore(args: argparse.Namespace) -> int:
    s3 = _s3()
    if args.index is not None:
        import anyio.to_thread

        from ..errors import TapeNotFoundError

        if not await anyio.to_thread.run_sync(os.path.exists, args.index):
            raise TapeNotFoundError(f"no tape index at {args.index!r}")
    try:
        path = await s3.restore(
            args.index,
            args.url,
            args.arc_path,
            args.dest,
            overwrite=args.overwrite,
            endpoint_url=args.endpoint_url,
            age_identity=await read_age_identity(args.age_identity_file),
            warn=warning,
        )
    except Exception as exc:
        raise _usage(exc) from None
    message(args, f"restored {args.arc_path} to {path}")
    return EXIT_OK


async def parts(args: argparse.Namespace) -> int:
    from ..s3.plan import plan_parts

    tape = await open_tape(args)
    try:
        plan = plan_parts(tape.total_size, args.part_size)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Stdout()
    if args.json:
        fields = {
            "total_size": tape.total_size,
            "part_size": args.part_size,
            "identity": tape.identity,
            "parts": [
                {"number": p.number, "start": p.start, "end": p.end, "size": p.size} for p in plan
            ],
        }
        await out.line(json.dumps(fields, indent=2))
    else:
        for p in plan:
            await out.line(f"{p.number} {p.start} {p.end} {p.size}")
    await out.flush()
    return EXIT_OK
