"""Serve a tape from an aiohttp handler: :func:`tape_response` (extra ``aiohttp``)."""

from __future__ import annotations

import os
from contextlib import aclosing

from aiohttp import web

from ._serving import (
    ClientGone,
    Progress,
    body_chunks,
    http_player,
    log_failure,
    logger,
    plan,
    refusal,
    send_body,
)
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


def _plain(plan: http.Plan) -> web.StreamResponse:
    """A response without tape content; aiohttp prepares and sends it."""
    if not plan.tail:
        return web.StreamResponse(status=plan.status, headers=dict(plan.headers))
    return web.Response(status=plan.status, headers=dict(plan.headers), body=plan.tail)


async def tape_response(
    tape: Tape,
    request: web.Request,
    *,
    source_root: str | os.PathLike[str] | None = None,
    filename: str | None = None,
) -> web.StreamResponse:
    """Stream ``tape`` (played from ``source_root``, by default where it was recorded) as
    ``request`` asks; return the response.

    Honours the preconditions (304, 412), ``Range`` and ``If-Range`` (206, 416) and HEAD
    exactly as :class:`atartape.asgi.TapeApp` does, with the recording's identity as ETag and
    ``Cache-Control: no-cache``; ``filename`` is what the download is called (by default
    ``<tape name>.tar``). Raises nothing for the tape's sake: a client that disconnects stops
    the playing at once; a tape that cannot play at all gets a 500, and one whose index was
    re-recorded since it was opened a 503 (never the new recording under the old ETag: hand
    it the tape of the moment, :meth:`atartape.asgi.TapeApp.tape`); an error once the
    response has started (typically :class:`~atartape.TarIntegrityError`) closes the
    connection short of ``Content-Length``, so the client cannot mistake the body for a
    complete one. Each is logged as one line on
    ``atartape.http``.
    """
    fields = {name: request.headers.getall(name, []) for name in http.Request.FIELDS}
    asked = http.Request.of(request.method, {k: ", ".join(v) for k, v in fields.items() if v})
    planned = plan(tape, asked, filename)
    if not planned.parts:
        return _plain(planned)  # HEAD, 304, 412, 416
    label = f"{request.method} {request.path}"
    response = web.StreamResponse(status=planned.status, headers=dict(planned.headers))
    writer = _AiohttpWriter(request, response)
    progress = Progress()
    try:
        async with aclosing(
            body_chunks(http_player(tape, source_root), planned, progress)
        ) as chunks:
            failure = await send_body(chunks, planned, writer, progress)
        if failure is None:
            await writer.finish()
            return response
    except ClientGone:
        logger.debug("%s: client gone at byte %d", label, progress.position)
        return response
    if not failure.started:
        return _plain(refusal(label, failure, tape.total_size))
    log_failure(label, failure, tape.total_size)
    if request.transport is not None:
        request.transport.close()  # short of Content-Length: the client sees it broken
    return response
