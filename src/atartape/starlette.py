"""Serve a tape from a Starlette or FastAPI route: :class:`TapeResponse` (extra ``starlette``)."""

from __future__ import annotations

import os

import starlette.requests
import starlette.responses
from starlette.types import Receive, Scope, Send

from ._serving import http_player, representation
from .asgi import send_tape
from .format import http
from .tape import Tape

__all__ = ["TapeResponse"]


class TapeResponse(starlette.responses.Response):
    """A response that streams ``tape`` (played from ``source_root``, by default where it was
    recorded) as ``request`` asks.

    Honours ``Range`` and ``If-Range`` (206, 416) and HEAD exactly as
    :class:`atartape.asgi.TapeApp` does; the route decides which methods reach it. ``filename``
    is what the download is called (by default ``<tape name>.tar``). Building it does no I/O.
    When sent, a client that disconnects stops the playing at once; an error once the response
    has started (typically :class:`~atartape.TarIntegrityError`) is logged on ``atartape.http``
    and raised, so the server drops the connection; a tape that cannot play at all gets a 500.
    """

    media_type = http.CONTENT_TYPE

    def __init__(
        self,
        tape: Tape,
        request: starlette.requests.Request,
        *,
        source_root: str | os.PathLike[str] | None = None,
        filename: str | None = None,
    ) -> None:
        self.tape = tape
        self.player = http_player(tape, source_root)
        self.plan = http.plan_response(
            representation(tape, filename),
            method=request.method,
            range_header=_joined(request, "range"),
            if_range=_joined(request, "if-range"),
        )
        self.status_code = self.plan.status
        self.background = None
        self.body = b""
        self.raw_headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in self.plan.headers
        ]
        self._label = f"{request.method} {request.url.path}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_tape(self.player, self.plan, receive, send, label=self._label)


def _joined(request: starlette.requests.Request, name: str) -> str | None:
    values = request.headers.getlist(name)
    return ", ".join(values) if values else None
