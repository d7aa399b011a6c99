"""Sending a tape as an HTTP response: the one send loop the ASGI and aiohttp front ends share.

A front end decides the response with :func:`atartape.format.http.plan_response` and hands
:func:`send_body` the plan's body (:func:`body_chunks`) and a :class:`BodyWriter` that speaks its
server's language. The loop starts the response only once the first bytes of the tape are read,
so a tape that cannot play at all gets a plain answer instead (:func:`refusal`: 500, or 503 when
the index holds another recording than the one the response was planned from); it stops at once
when the client goes away; and it reports an error once the response has started, so that the
front end drops the connection short of ``Content-Length`` and the client cannot mistake the
body for a complete one. The end of a complete body is the front end's to send.

What is sent is :class:`Served`: a recorded tape's view (the one it was recorded with unless
another is asked for: the tar, ``.tar.zst``, ``.tar.age``, ``.tar.zst.age``), described by the
view's own size, identity (the ETag), name and media type, or a prepared one-shot tape
(:class:`~atartape.TarTape`), which plays whole, once, when it holds streams.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeAlias

from .errors import InvalidArgumentError, TapeChangedError
from .format import http
from .oneshot import TarTape
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


class Playable(Protocol):
    """Bytes a response plays: ``size`` of them, ``chunks(a, b)`` exactly ``full[a:b]``
    (a :class:`~atartape.TapePlayer`, or :class:`Served`)."""

    @property
    def size(self) -> int: ...

    def chunks(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[bytes, None]: ...


@dataclass(frozen=True)
class Served:
    """What one response serves, and how HTTP describes it: ``size`` bytes whose strong
    validator is ``identity``, offered as ``filename`` of ``content_type``; ``ranges`` false
    when they can only be played whole, once. ``source(a, b)`` plays ``full[a:b]``."""

    size: int
    identity: str
    filename: str
    content_type: str
    recorded_at: datetime
    ranges: bool
    source: Callable[[int, int | None], AsyncGenerator[bytes, None]]

    def chunks(
        self, start_offset: int = 0, end_offset: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        return self.source(start_offset, end_offset)


Servable: TypeAlias = "Tape | TapePlayer | TarTape"
"""What the front ends serve: a recorded tape (its recorded view, or ``view=``), a player (its
view, key and source as made), or a one-shot tape."""


def http_player(
    tape: Tape,
    source_root: str | os.PathLike[str] | None = None,
    *,
    view: str | None = None,
    age_identity: str | bytes | None = None,
) -> TapePlayer:
    """The player the HTTP front ends use: bytes only, so no hashing, of ``view`` (by default
    the one the tape was recorded with). It plays the recording ``tape`` was opened from, or
    refuses with :class:`~atartape.TapeChangedError`. Raises ``ValueError`` for a view the tape
    lacks."""
    return TapePlayer(
        tape, source_root=source_root, md5=False, view=view, age_identity=age_identity
    )


def check_servable(
    tape: Servable,
    *,
    source_root: str | os.PathLike[str] | None = None,
    view: str | None = None,
    age_identity: str | bytes | None = None,
) -> TapePlayer | TarTape:
    """What plays ``tape``'s response: a player of ``view`` for a :class:`~atartape.Tape`, the
    player or the one-shot tape given. Does no I/O.

    Raises ``ValueError`` for a view the tape lacks, and for options that a player (made
    already) or a one-shot tape (which has no views, no key and no source folder) cannot take;
    ``TypeError`` for anything else than a tape, a player or a one-shot tape.
    """
    if isinstance(tape, Tape):
        return http_player(tape, source_root, view=view, age_identity=age_identity)
    given = [
        name
        for name, value in (
            ("source_root", source_root),
            ("view", view),
            ("age_identity", age_identity),
        )
        if value is not None
    ]
    if isinstance(tape, TapePlayer):
        if given:
            raise InvalidArgumentError(
                f"{', '.join(given)}: a TapePlayer was made with its own (pass the Tape instead)"
            )
        return tape
    if isinstance(tape, TarTape):
        if view not in (None, "plain"):
            raise InvalidArgumentError(
                f"a one-shot tape has no {view!r} view: only its tar ('plain')"
            )
        if source_root is not None or age_identity is not None:
            raise InvalidArgumentError(
                "source_root and age_identity are for a recorded Tape, not a TarTape"
            )
        return tape
    raise TypeError(f"cannot serve a {type(tape).__name__}: a Tape, TapePlayer or TarTape")


def served(player: TapePlayer | TarTape, filename: str | None = None) -> Served:
    """What a response of ``player`` serves: its view's bytes, or a prepared one-shot tape's
    (``RuntimeError`` if it is not prepared), offered as ``filename`` (by default the view's
    name, ``<tape name>.tar``, ``.tar.zst``, ``.tar.age`` or ``.tar.zst.age``)."""
    if isinstance(player, TarTape):
        return Served(
            size=player.total_size,
            identity=player.identity,
            filename=filename or f"{player.name}.tar",
            content_type=http.CONTENT_TYPE,
            recorded_at=player.recorded_at,
            ranges=player.ranges,
            source=player.chunks,
        )
    return Served(
        size=player.size,
        identity=player.identity,
        filename=filename or player.filename,
        content_type=player.content_type,
        recorded_at=player.tape.recorded_at,
        ranges=True,
        source=player.chunks,
    )


def representation(offered: Served, *, cache_control: str = http.REVALIDATE) -> http.Representation:
    """How ``offered`` is described to HTTP clients: its identity is the strong ETag."""
    return http.Representation.describe(
        total_size=offered.size,
        identity=offered.identity,
        recorded_at=offered.recorded_at,
        filename=offered.filename,
        cache_control=cache_control,
        content_type=offered.content_type,
        ranges=offered.ranges,
    )


def new_boundary() -> str:
    """A fresh multipart boundary: random, so no tape can contain it by design."""
    return f"atartape-{secrets.token_hex(16)}"


def plan(
    offered: Served, request: http.Request, *, cache_control: str = http.REVALIDATE
) -> http.Plan:
    """The response to ``request`` for ``offered`` (see
    :func:`atartape.format.http.plan_response`)."""
    rep = representation(offered, cache_control=cache_control)
    return http.plan_response(rep, request, boundary=new_boundary())


async def body_chunks(
    player: Playable, plan: http.Plan, progress: Progress
) -> AsyncGenerator[bytes, None]:
    """The body of ``plan``: each part's head with its window of the tape, then the tail.

    Nothing is yielded before the tape has given its first bytes; a multipart body (small by
    design) is read whole first, so that no part can fail once the response has started.
    ``progress`` follows the offset in the bytes played. Raises what the player raises
    (:class:`~atartape.TapeChangedError`, :class:`~atartape.TarIntegrityError`,
    :class:`~atartape.ViewError`...).
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


def unprepared(label: str, error: Exception) -> http.Plan:
    """The answer (500) to a one-shot tape that could not be prepared (a file or folder gone,
    a path a tape cannot hold, a name added twice), logged as one line."""
    logger.error("%s: cannot prepare the tape: %s: %s", label, type(error).__name__, error)
    return http.plain_response(
        500, "the tape cannot be prepared: see the server log", cache_control=http.NO_STORE
    )
