"""Serve a tape from an aiohttp handler: :func:`tape_response` (extra ``aiohttp``)."""

from __future__ import annotations

import os
from contextlib import aclosing

from ._extras import require
from ._serving import (
    ClientGone,
    Progress,
    Servable,
    body_chunks,
    check_servable,
    log_failure,
    logger,
    plan,
    refusal,
    send_body,
    served,
    unprepared,
)
from .errors import TarTapeError
from .format import http
from .oneshot import TarTape

require("aiohttp", "aiohttp", "atartape.aiohttp")  # says what to install when it is missing
from aiohttp import web  # noqa: E402

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
    tape: Servable,
    request: web.Request,
    *,
    source_root: str | os.PathLike[str] | None = None,
    filename: str | None = None,
    view: str | None = None,
    age_identity: str | bytes | None = None,
) -> web.StreamResponse:
    """Stream ``tape`` as ``request`` asks; return the response.

    ``tape`` is a recorded :class:`~atartape.Tape` (played from ``source_root``, by default
    where it was recorded), a :class:`~atartape.TapePlayer` (its view, key and source as it was
    made), or a one-shot :class:`~atartape.TarTape` (prepared first, in a worker thread, if it
    is not yet). A recorded tape is served as the view it was recorded with unless ``view``
    names another (``"plain"`` for the tar, ``"zstd"``, ``"age"``, ``"zstd+age"``);
    ``age_identity`` opens a sealed view without the key file beside the index. What the
    response says describes the bytes sent: the view's size and ranges, its identity as ETag,
    its name (or ``filename``) in ``Content-Disposition``, its media type.

    Honours the preconditions (304, 412), ``Range`` and ``If-Range`` (206, 416) and HEAD
    exactly as :class:`atartape.asgi.TapeApp` does, with ``Cache-Control: no-cache``. A
    one-shot tape holding streams plays whole, once: ``Range`` is ignored (200) and
    ``Accept-Ranges: none`` said. Raises ``ValueError`` (before anything is sent) for a view
    the tape lacks and for options the object given cannot take, and nothing for the tape's
    sake: a client that disconnects stops the playing at once; a tape that cannot play at all
    (or be prepared) gets a 500, and one whose index was re-recorded since it was opened a 503
    (never the new recording under the old ETag: hand it the tape of the moment,
    :meth:`atartape.asgi.TapeApp.tape`); an error once the response has started (typically
    :class:`~atartape.TarIntegrityError`) closes the connection short of ``Content-Length``,
    so the client cannot mistake the body for a complete one. Each is logged as one line on
    ``atartape.http``.
    """
    player = check_servable(tape, source_root=source_root, view=view, age_identity=age_identity)
    label = f"{request.method} {request.path}"
    if isinstance(player, TarTape):
        try:
            await player.prepare()
        except (TarTapeError, OSError) as error:
            return _plain(unprepared(label, error))
    offered = served(player, filename)
    fields = {name: request.headers.getall(name, []) for name in http.Request.FIELDS}
    asked = http.Request.of(request.method, {k: ", ".join(v) for k, v in fields.items() if v})
    planned = plan(offered, asked)
    if not planned.parts:
        return _plain(planned)  # HEAD, 304, 412, 416
    response = web.StreamResponse(status=planned.status, headers=dict(planned.headers))
    writer = _AiohttpWriter(request, response)
    progress = Progress()
    try:
        async with aclosing(body_chunks(offered, planned, progress)) as chunks:
            failure = await send_body(chunks, planned, writer, progress)
        if failure is None:
            await writer.finish()
            return response
    except ClientGone:
        logger.debug("%s: client gone at byte %d", label, progress.position)
        return response
    if not failure.started:
        return _plain(refusal(label, failure, offered.size))
    log_failure(label, failure, offered.size)
    if request.transport is not None:
        request.transport.close()  # short of Content-Length: the client sees it broken
    return response
