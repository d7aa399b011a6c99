"""boto3 from anyio worker threads: the same code on asyncio and trio.

One client, made from a ``boto3.session.Session`` of its own (sessions are not thread-safe;
calls on a created client are), is shared by every worker thread of an upload. Its connection
pool holds as many connections as calls run at once, it has connect and read timeouts (a call
in a thread cannot be cancelled: a stuck one would hold up a cancellation for as long as it
lasts) and botocore's standard retries. Response bodies are read in the thread that made the
call. botocore computes no checksum of its own (``request_checksum_calculation=
"when_required"``): each part carries the one atartape computed from the tape.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from .._extras import require
from .._version import __version__
from .errors import S3Error, S3IntegrityError, S3PlanError

__all__ = ["call", "close_client", "make_client", "new_client"]

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
MAX_ATTEMPTS = 5
# Answers that say the request itself was wrong (the bucket, the credentials...): exit 2.
USAGE_CODES = frozenset(
    {
        "NoSuchBucket",
        "InvalidBucketName",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "NoSuchKey",
        "404",
        "403",
        "InvalidRange",
    }
)


T = TypeVar("T")
_CREATING = threading.Lock()
_LOADER: Any = None


def _require_boto3() -> Any:
    return require("boto3", "s3", "atartape.s3")


def new_client(endpoint_url: str | None = None, *, max_pool_connections: int = 10) -> Any:
    """A boto3 S3 client from a session of its own (blocking: reads the AWS config files).

    Credentials, region and addressing style come from the usual AWS environment variables
    and files; ``endpoint_url`` overrides the endpoint (another S3 API).
    """
    boto3 = _require_boto3()
    from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]

    config = Config(
        max_pool_connections=max(1, max_pool_connections),
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_supported",
        user_agent_extra=f"atartape/{__version__}",
    )
    import botocore.session  # type: ignore[import-untyped, unused-ignore]

    global _LOADER
    # A session of its own each time (fresh credentials and configuration), sharing only the
    # loader of botocore's service models, which it would otherwise parse again (0.15 s).
    # Sessions and loaders are not thread-safe: clients are made one at a time.
    with _CREATING:
        core = botocore.session.Session()
        if _LOADER is None:
            _LOADER = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _LOADER)
        session = boto3.session.Session(botocore_session=core)
        try:
            return session.client("s3", endpoint_url=endpoint_url, config=config)
        except Exception as exc:  # botocore's errors for a bad endpoint or region
            raise S3PlanError(f"cannot make an S3 client: {exc}") from None


async def make_client(endpoint_url: str | None = None, *, max_pool_connections: int = 10) -> Any:
    """:func:`new_client` in a worker thread."""
    return await anyio.to_thread.run_sync(
        functools.partial(new_client, endpoint_url, max_pool_connections=max_pool_connections)
    )


async def close_client(client: Any) -> None:
    """Close the client's connections (in a worker thread; shielded from cancellation)."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(client.close)


def translate(exc: BaseException, what: str) -> S3Error:
    """The :class:`S3Error` for a botocore exception raised while doing ``what``."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = str(error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
        text = str(error.get("Message") or "").strip().splitlines()
        detail = f"{code}: {text[0]}" if text else code
        if code == "BadDigest":
            return S3IntegrityError(
                f"{what}: the store refused the bytes sent ({detail}); they differ from the "
                "digest computed from the tape (damaged on the way?): nothing was kept",
                code=code,
            )
        return S3Error(f"{what}: {detail}", code=code)
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return S3PlanError(
            f"{what}: no AWS credentials found (environment, ~/.aws, or an instance role)",
            code=name,
        )
    return S3Error(f"{what}: {name}: {text[0] if text else ''}".rstrip(": "), code=None)


async def call(client: Any, operation: str, what: str, /, **params: Any) -> dict[str, Any]:
    """``client.<operation>(**params)`` in a worker thread; botocore's errors become
    :class:`S3Error` (``BadDigest``: :class:`S3IntegrityError`) whose message starts with
    ``what``."""
    method: Callable[..., dict[str, Any]] = getattr(client, operation)
    return await run(functools.partial(method, **params), what)


async def run(function: Callable[[], T], what: str) -> T:
    """``function()`` (blocking botocore calls) in a worker thread, errors translated."""
    from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
        BotoCoreError,
        ClientError,
    )

    try:
        return await anyio.to_thread.run_sync(function)
    except (BotoCoreError, ClientError) as exc:
        raise translate(exc, what) from None


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of an :class:`S3Error` (``None`` for anything else)."""
    return exc.code if isinstance(exc, S3Error) else None
