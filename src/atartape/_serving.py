"""Sending a tape as an HTTP response: the one send loop the ASGI and aiohttp front ends share.

A front end decides the response with :func:`atartape.format.http.plan_response` and hands
:func:`send_body` the plan's body (:func:`body_chunks`) and a :class:`BodyWriter` that speaks its
server's language. The loop starts the response only once the first bytes of the tape are read,
so a tape that cannot play at all gets a plain answer instead (:func:`refusal`: 500, or 503 when
the index holds another recording than the one the response was planned from); it stops at once
when the client goes away; and it reports an error once the response has started, so that the
front end drops the connection short of ``Content-Length`` and the client cannot mistake the
body for a complete one. The end of a complete body is the front end's to send.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from .errors import TapeChangedError
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


class Progress:
    """Where a body is in the tape: the offset of the next byte to send."""

    __slots__ = ("position",)

    def __init__(self, position: int = 0) -> None:
        self.position = position


def http_player(tape: Tape, source_root: str | os.PathLike[str] | None = None) -> TapePlayer:
    """The player the HTTP front ends use: bytes only, so no hashing. It plays the recording
    ``tape`` was opened from, or refuses with :class:`~atartape.TapeChangedError`."""
    return TapePlayer(tape, source_root=source_root, md5=False)


def representation(
    tape: Tape, filename: str | None = None, *, cache_control: str = http.REVALIDATE
) -> http.Representation:
    """How ``tape`` is described to HTTP clients, offered as ``filename`` (``<name>.tar``):
    its recording identity is the strong ETag."""
    return http.Representation.describe(
        total_size=tape.total_size,
        identity=tape.identity,
        recorded_at=tape.recorded_at,
        filename=filename or f"{tape.name}.tar",
        cache_control=cache_control,
    )


def new_boundary() -> str:
    """A fresh multipart boundary: random, so no tape can contain it by design."""
    return f"atartape-{secrets.token_hex(16)}"


def plan(
    tape: Tape,
    request: http.Request,
    filename: str | None = None,
    *,
    cache_control: str = http.REVALIDATE,
) -> http.Plan:
    """The response to ``request`` for ``tape`` (see :func:`atartape.format.http.plan_response`)."""
    rep = representation(tape, filename, cache_control=cache_control)
    return http.plan_response(rep, request, boundary=new_boundary())


async def body_chunks(
    player: TapePlayer, plan: http.Plan, progress: Progress
) -> AsyncGenerator[bytes, None]:
    """The body of ``plan``: each part's head with its window of the tape, then the tail.

    Nothing is yielded before the tape has given its first bytes; a multipart body (small by
    design) is read whole first, so that no part can fail once the response has started.
    ``progress`` follows the tape offset. Raises what the player raises
    (:class:`~atartape.TapeChangedError`, :class:`~atartape.TarIntegrityError`...).
    """
    if plan.multipart:
        pieces: list[bytes] = []
        for part in plan.parts:
            pieces.append(part.head)
            progress.position = part.start
            async with aclosing(player.chunks(part.start, part.end)) as chunks:
                async for chunk in chunks:
                    pieces.append(chunk)
                    progress.position += len(chunk)
        pieces.append(plan.tail)
        yield b"".join(pieces)
        return
    for part in plan.parts:  # one window: streamed
        head = part.head
        progress.position = part.start
        async with aclosing(player.chunks(part.start, part.end)) as chunks:
            async for chunk in chunks:
                progress.position += len(chunk)
                if head:
                    chunk, head = head + chunk, b""
                yield chunk
    if plan.tail:
        yield plan.tail


async def send_body(
    chunks: AsyncGenerator[bytes, None], plan: http.Plan, writer: BodyWriter, progress: Progress
) -> Failure | None:
    """Start the response ``plan`` describes and write its body from ``chunks``, all but its
    end (the caller sends that: :meth:`BodyWriter.finish`). Returns why it failed, if it did.

    Raises :class:`ClientGone` when the client leaves, and cancellation.
    """
    try:
        chunk = await anext(chunks, None)
    except Exception as error:
        return Failure(progress.position, error, started=False)
    await writer.start(plan)
    while chunk is not None:
        await writer.write(chunk)
        try:
            chunk = await anext(chunks, None)
        except Exception as error:
            return Failure(progress.position, error, started=True)
    return None


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


def refusal(label: str, failure: Failure, total_size: int) -> http.Plan:
    """The answer to a response that failed before it started, logged as one line: 503 when
    the index was re-recorded since the tape was opened (the front end holds another recording
    than the one there now), else 500."""
    if isinstance(failure.error, TapeChangedError):
        logger.error(
            "%s: answered 503: the tape was re-recorded since it was opened (%s); "
            "open it again to serve the new recording",
            label,
            failure.error,
        )
        return http.plain_response(
            503, "the tape was re-recorded: try again", cache_control=http.NO_STORE
        )
    log_failure(label, failure, total_size)
    return http.plain_response(
        500, "the tape cannot be played: see the server log", cache_control=http.NO_STORE
    )
