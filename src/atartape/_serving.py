"""Sending a tape as an HTTP response: the one send loop the ASGI and aiohttp front ends share.

A front end decides the response with :func:`atartape.format.http.plan_response` and hands
:func:`send_body` the tape's chunks and a :class:`BodyWriter` that speaks its server's language.
The loop starts the response only once the first chunk is read, so a tape that cannot play at
all gets a plain 500; it stops at once when the client goes away; and it reports an error once
the response has started, so the front end can drop the connection short of ``Content-Length``
and the client cannot mistake the body for a complete one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from .format import http
from .player import TapePlayer
from .tape import Tape

logger = logging.getLogger("atartape.http")


class ClientGone(Exception):
    """Writing failed because the client disconnected."""


class BodyWriter(Protocol):
    """One response, as a server takes it. Each method raises :class:`ClientGone` when the
    client has disconnected."""

    async def start(self, plan: http.Plan) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...


@dataclass(frozen=True)
class Failure:
    """Why a response failed: at ``position`` of the tape, before or after it had started."""

    position: int
    error: Exception
    started: bool


def http_player(tape: Tape, source_root: str | os.PathLike[str] | None = None) -> TapePlayer:
    """The player the HTTP front ends use: bytes only, so no hashing."""
    return TapePlayer(tape, source_root=source_root, md5=False)


def representation(tape: Tape, filename: str | None = None) -> http.Representation:
    """How ``tape`` is described to HTTP clients, offered as ``filename`` (``<name>.tar``)."""
    return http.Representation.describe(
        total_size=tape.total_size,
        identity=tape.fingerprint,
        recorded_at=tape.recorded_at,
        filename=filename or f"{tape.name}.tar",
    )


def log_failure(label: str, failure: Failure, total_size: int) -> None:
    """Log, on ``atartape.http``, one line for a response that failed."""
    logger.error(
        "%s: response aborted at byte %d of %d: %s: %s",
        label,
        failure.position,
        total_size,
        type(failure.error).__name__,
        failure.error,
    )


async def send_body(
    chunks: AsyncGenerator[bytes, None], plan: http.Plan, writer: BodyWriter
) -> Failure | None:
    """Send the response ``plan`` describes, its body from ``chunks``; return why it failed.

    A client that disconnects ends it quietly (``None``). Raises only cancellation.
    """
    position = plan.start
    try:
        chunk = await anext(chunks, None)
    except Exception as error:
        return Failure(position, error, started=False)
    try:
        await writer.start(plan)
        while chunk is not None:
            await writer.write(chunk)
            position += len(chunk)
            try:
                chunk = await anext(chunks, None)
            except Exception as error:
                return Failure(position, error, started=True)
        await writer.finish()
    except ClientGone:
        logger.debug("client gone at byte %d", position)
    return None
