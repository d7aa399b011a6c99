"""Serve a tape from an aiohttp handler: :func:`tape_response` (extra ``aiohttp``)."""

from __future__ import annotations

import os
from contextlib import aclosing

from aiohttp import web

from ._serving import ClientGone, http_player, log_failure, representation, send_body
from .format import http
from .tape import Tape

__all__ = ["tape_response"]


class _AiohttpWriter:
    """A response through aiohttp (a client gone shows as ``ConnectionError``)."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request = request
        self.response = response

    async def start(self, plan: http.Plan) -> None:
        try:
            await self.response.prepare(self.request)
        except ConnectionError as exc:
            raise ClientGone from exc

    async def write(self, data: bytes) -> None:
        try:
            await self.response.write(data)
        except ConnectionError as exc:
            raise ClientGone from exc

    async def finish(self) -> None:
        try:
            await self.response.write_eof()
        except ConnectionError as exc:
            raise ClientGone from exc


async def tape_response(
    tape: Tape,
    request: web.Request,
    *,
    source_root: str | os.PathLike[str] | None = None,
    filename: str | None = None,
) -> web.StreamResponse:
    """Stream ``tape`` (played from ``source_root``, by default where it was recorded) as
    ``request`` asks; return the response.

    Honours ``Range`` and ``If-Range`` (206, 416) and HEAD exactly as
    :class:`atartape.asgi.TapeApp` does; ``filename`` is what the download is called (by
    default ``<tape name>.tar``). Raises nothing for the tape's sake: a client that disconnects
    stops the playing at once; a tape that cannot play at all gets a 500; an error once the
    response has started (typically :class:`~atartape.TarIntegrityError`) is logged on
    ``atartape.http`` and the connection is closed short of ``Content-Length``, so the client
    cannot mistake the body for a complete one.
    """
    plan = http.plan_response(
        representation(tape, filename),
        method=request.method,
        range_header=_joined(request, "Range"),
        if_range=_joined(request, "If-Range"),
    )
    response = web.StreamResponse(status=plan.status, headers=dict(plan.headers))
    if not plan.send_body:
        return response  # aiohttp prepares it and sends no body (HEAD, 416)
    player = http_player(tape, source_root)
    chunks = player.chunks(plan.start, plan.end)
    async with aclosing(chunks):
        failure = await send_body(chunks, plan, _AiohttpWriter(request, response))
    if failure is None:
        return response
    log_failure(f"{request.method} {request.path}", failure, tape.total_size)
    if not failure.started:
        return web.Response(status=500, text="the tape cannot be played: see the server log")
    if request.transport is not None:
        request.transport.close()  # short of Content-Length: the client sees it broken
    return response


def _joined(request: web.Request, name: str) -> str | None:
    values = request.headers.getall(name, [])
    return ", ".join(values) if values else None
