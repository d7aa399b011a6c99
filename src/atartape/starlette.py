"""Serve a tape from a Starlette or FastAPI route: :class:`TapeResponse` (extra ``starlette``)."""

from __future__ import annotations

import os

import starlette.requests
import starlette.responses
from starlette.types import Receive, Scope, Send

from ._serving import http_player, plan, refusal
from .asgi import send_plan, send_tape
from .format import http
from .tape import Tape

__all__ = ["TapeResponse"]


class TapeResponse(starlette.responses.Response):
    """A response that streams ``tape`` (played from ``source_root``, by default where it was
    recorded) as ``request`` asks.

    Honours the preconditions (304, 412), ``Range`` and ``If-Range`` (206, 416) and HEAD
    exactly as :class:`atartape.asgi.TapeApp` does; the route decides which methods reach it.
    Its ETag is the identity of the recording ``tape`` was opened from, with
    ``Cache-Control: no-cache``: the route's URL may serve another recording tomorrow.
    ``filename`` is what the download is called (by default ``<tape name>.tar``). Building it
    does no I/O.

    When sent: a client that disconnects stops the playing at once; a tape that cannot play
    at all gets a 500, and a tape whose index was re-recorded since it was opened a 503 (the
    new recording is never sent under the old one's ETag: hand it the tape of the moment,
    :meth:`atartape.asgi.TapeApp.tape`; a HEAD, 304 or 412 plays nothing and describes the
    tape it was given); an error once the response has started
    (typically :class:`~atartape.TarIntegrityError`) leaves the response unfinished, so that
    the server drops the connection short of ``Content-Length``. Each is logged as one line
    on ``atartape.http``; nothing is raised to the server.
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
        fields = {name: _joined(request, name) for name in http.Request.FIELDS}
        asked = http.Request.of(request.method, {k: v for k, v in fields.items() if v is not None})
        self.plan = plan(tape, asked, filename)
        self.status_code = self.plan.status
        self.background = None
        self.body = b""
        self.raw_headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in self.plan.headers
        ]
        self._label = f"{request.method} {request.url.path}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        failure = await send_tape(self.player, self.plan, receive, send, label=self._label)
        if failure is not None:
            await send_plan(send, refusal(self._label, failure, self.tape.total_size))


def _joined(request: starlette.requests.Request, name: str) -> str | None:
    values = request.headers.getlist(name)
    return ", ".join(values) if values else None
