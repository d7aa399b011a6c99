"""Serve a tape from an aiohttp handler: :func:`tape_response` (extra ``aiohttp``)."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from contextlib import aclosing

from aiohttp import web

from atartape import _http
from atartape.asgi import _Failure, http_player, log_failure, logger
from atartape.tape import Tape


class _ClientGone(Exception):
    """A write failed: the client disconnected."""


async def _write(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except ConnectionError as exc:
        raise _ClientGone from exc


async def tape_response(
    request: web.Request,
    tape: Tape,
    *,
    source_root: str | os.PathLike[str],
    filename: str | None = None,
) -> web.StreamResponse:
    """Stream ``tape``, played from ``source_root``, as ``request`` asks; return the response.

    Honours ``Range`` and ``If-Range`` (206, 416) and HEAD exactly as
    :class:`atartape.asgi.TapeApp` does; ``filename`` is what the download is called (by
    default ``<tape name>.tar``). Raises nothing for the tape's sake: a client that disconnects
    stops the playing at once; a tape that cannot play at all gets a 500; an error once the
    response has started (typically :class:`~atartape.TarIntegrityError`) is logged on
    ``atartape.http`` and the connection is closed short of ``Content-Length``, so the client
    cannot mistake the body for a complete one.
    """
    plan = _http.plan_response(
        _http.Representation.of(tape, filename),
        method=request.method,
        range_header=_joined(request, "Range"),
        if_range=_joined(request, "If-Range"),
    )
    response = web.StreamResponse(status=plan.status, headers=dict(plan.headers))
    if not plan.send_body:
        return response  # aiohttp prepares it and sends no body (HEAD, 416)
    label = f"{request.method} {request.path}"
    player = http_player(tape, source_root)
    async with aclosing(player.stream(plan.start, plan.end)) as chunks:
        failure = await _write_chunks(request, response, chunks, plan, label)
    if failure is None:
        return response
    log_failure(label, failure.position, tape.total_size, failure.error)
    if not failure.started:
        return web.Response(status=500, text="the tape cannot be played: see the server log")
    if request.transport is not None:
        request.transport.close()  # short of Content-Length: the client sees it broken
    return response


async def _write_chunks(
    request: web.Request,
    response: web.StreamResponse,
    chunks: AsyncGenerator[bytes, None],
    plan: _http.Plan,
    label: str,
) -> _Failure | None:
    """Write the response; return why it failed, if it did. Raises only cancellation."""
    position = plan.start
    try:
        chunk = await anext(chunks, None)
    except Exception as error:
        return _Failure(position, error, started=False)
    try:
        await _prepare(response, request)
        while chunk is not None:
            await _write(response, chunk)
            position += len(chunk)
            chunk = await anext(chunks, None)
        await _write_eof(response)
    except _ClientGone:
        logger.debug("%s: client gone at byte %d", label, position)
    except Exception as error:
        return _Failure(position, error, started=True)
    return None


async def _prepare(response: web.StreamResponse, request: web.Request) -> None:
    try:
        await response.prepare(request)
    except ConnectionError as exc:
        raise _ClientGone from exc


async def _write_eof(response: web.StreamResponse) -> None:
    try:
        await response.write_eof()
    except ConnectionError as exc:
        raise _ClientGone from exc


def _joined(request: web.Request, name: str) -> str | None:
    values = request.headers.getall(name, [])
    return ", ".join(values) if values else None
