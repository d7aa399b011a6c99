"""Serve a tape from a Starlette or FastAPI route: :class:`TapeResponse` (extra ``starlette``)."""

from __future__ import annotations

import os

from ._extras import require
from ._serving import (
    ClientGone,
    Servable,
    Served,
    check_servable,
    logger,
    plan,
    refusal,
    served,
    unprepared,
)
from .asgi import send_plan, send_tape
from .errors import TarTapeError
from .format import http
from .oneshot import TarTape

require("starlette", "starlette", "atartape.starlette")  # says what to install when it is missing
import starlette.requests  # noqa: E402
import starlette.responses  # noqa: E402
from starlette.types import Receive, Scope, Send  # noqa: E402

__all__ = ["TapeResponse"]


class TapeResponse(starlette.responses.Response):
    """A response that streams ``tape`` as ``request`` asks.

    ``tape`` is a recorded :class:`~atartape.Tape` (played from ``source_root``, by default
    where it was recorded), a :class:`~atartape.TapePlayer` (its view, key and source as it was
    made), or a one-shot :class:`~atartape.TarTape` (prepared when the response is sent, if it
    is not yet, in a worker thread). A recorded tape is served as the view it was recorded with
    unless ``view`` names another (``"plain"`` for the tar, ``"zstd"``, ``"age"``,
    ``"zstd+age"``); ``age_identity`` opens a sealed view without the key file beside the index.
    Everything the response says describes the bytes sent: ``Content-Length`` and ranges count
    the view's bytes, the view's identity is the ETag, its name (``<tape name>.tar``,
    ``.tar.zst``, ``.tar.age``, ``.tar.zst.age``, or ``filename``) is in
    ``Content-Disposition``, its media type in ``Content-Type``.

    Honours the preconditions (304, 412), ``Range`` and ``If-Range`` (206, 416) and HEAD
    exactly as :class:`atartape.asgi.TapeApp` does; the route decides which methods reach it.
    Its ``Cache-Control`` is ``no-cache``: the route's URL may serve another recording
    tomorrow. A one-shot tape holding streams (:attr:`~atartape.TarTape.ranges` false) plays
    whole, once: ``Range`` is ignored (200) and ``Accept-Ranges: none`` said. Building it does
    no I/O. Raises ``ValueError`` for a view the tape lacks and for options the object given
    cannot take (a player has its own view and key; a one-shot tape has neither).

    When sent: a client that disconnects stops the playing at once; a tape that cannot play
    at all (or a one-shot tape that cannot be prepared) gets a 500, and a tape whose index was
    re-recorded since it was opened a 503 (the new recording is never sent under the old
    one's ETag: hand it the tape of the moment, :meth:`atartape.asgi.TapeApp.tape`; a HEAD,
    304 or 412 plays nothing and describes the tape it was given); an error once the response
    has started (typically :class:`~atartape.TarIntegrityError`) leaves the response
    unfinished, so that the server drops the connection short of ``Content-Length``. Each is
    logged as one line on ``atartape.http``; nothing is raised to the server.
    """

    media_type = http.CONTENT_TYPE

    def __init__(
        self,
        tape: Servable,
        request: starlette.requests.Request,
        *,
        source_root: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        view: str | None = None,
        age_identity: str | bytes | None = None,
    ) -> None:
        self.tape = tape
        self.player = check_servable(
            tape, source_root=source_root, view=view, age_identity=age_identity
        )
        self.filename = filename
        fields = {name: _joined(request, name) for name in http.Request.FIELDS}
        self.request = http.Request.of(
            request.method, {k: v for k, v in fields.items() if v is not None}
        )
        self.background = None
        self.body = b""
        self._label = f"{request.method} {request.url.path}"
        self.plan: http.Plan | None = None
        self.served: Served | None = None
        if not isinstance(self.player, TarTape) or self.player.prepared:
            self._plan()
        else:  # planned once prepared, when sent
            self.status_code = 200
            self.raw_headers = []

    def _plan(self) -> http.Plan:
        self.served = served(self.player, self.filename)
        self.plan = plan(self.served, self.request)
        self.status_code = self.plan.status
        self.raw_headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in self.plan.headers
        ]
        return self.plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._send(receive, send)
        except ClientGone:  # while sending a short response
            logger.debug("%s: client gone", self._label)

    async def _send(self, receive: Receive, send: Send) -> None:
        planned = self.plan
        if planned is None:
            assert isinstance(self.player, TarTape)
            try:
                await self.player.prepare()
            except (TarTapeError, OSError) as error:
                await send_plan(send, unprepared(self._label, error))
                return
            planned = self._plan()
        assert self.served is not None
        failure = await send_tape(self.served, planned, receive, send, label=self._label)
        if failure is not None:
            await send_plan(send, refusal(self._label, failure, self.served.size))


def _joined(request: starlette.requests.Request, name: str) -> str | None:
    values = request.headers.getlist(name)
    return ", ".join(values) if values else None
