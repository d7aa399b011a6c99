"""Serve a tape over ASGI: :class:`TapeApp`, a plain ASGI application, on asyncio or trio.

No framework is needed: any ASGI server (uvicorn, hypercorn, granian...) runs it, and Starlette or
FastAPI mount it under a path. :func:`send_tape` is the sending half, shared with
:class:`atartape.starlette.TapeResponse`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import aclosing
from typing import Any

import anyio
import anyio.to_thread

from ._serving import (
    ClientGone,
    http_player,
    log_failure,
    logger,
    representation,
    send_body,
)
from .errors import TapeNotFoundError, TarTapeError
from .format import http
from .player import TapePlayer
from .tape import Tape, default_index_path

__all__ = ["TapeApp", "send_tape"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def request_header(scope: Scope, name: str) -> str | None:
    """The value of request header ``name`` (lower-case) in an HTTP scope; repeats are joined."""
    key = name.encode("latin-1")
    values = [value.decode("latin-1") for field, value in scope["headers"] if field.lower() == key]
    return ", ".join(values) if values else None


def route_path(scope: Scope) -> str:
    """The request path below where the app is mounted (``scope["root_path"]``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


class _AsgiWriter:
    """A response through an ASGI ``send`` (servers raise ``OSError`` for a client gone)."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def _message(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError as exc:
            raise ClientGone from exc

    async def start(self, plan: http.Plan) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in plan.headers]
        await self._message(
            {"type": "http.response.start", "status": plan.status, "headers": headers}
        )

    async def write(self, data: bytes) -> None:
        await self._message({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self) -> None:
        await self._message({"type": "http.response.body", "body": b"", "more_body": False})


async def send_plain(send: Send, status: int, message: str, **extra: str) -> None:
    """Send a complete short ``text/plain`` response (``extra``: more headers)."""
    plan, body = http.plain_response(status, message, **extra)
    writer = _AsgiWriter(send)
    await writer.start(plan)
    await writer.write(body)
    await writer.finish()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        try:
            message = await receive()
        except Exception:  # a server that fails receive() after the request: nothing to watch
            return
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def send_tape(
    player: TapePlayer, plan: http.Plan, receive: Receive, send: Send, *, label: str = "tape"
) -> None:
    """Send the response ``plan`` describes, its body played from ``player``.

    A tape that cannot play at all (its source gone, the first entry changed) gets a plain 500
    and the error is logged. A client that disconnects (``http.disconnect``, or ``send()``
    raising ``OSError``) stops the playing at once and closes the source files; nothing is
    raised. An error once the response has started is logged on ``atartape.http`` and raised
    again (typically :class:`~atartape.TarIntegrityError`), so that the server drops the
    connection short of ``Content-Length``.
    """
    writer = _AsgiWriter(send)
    try:
        if not plan.send_body:
            await writer.start(plan)
            await writer.finish()
            return
        chunks = player.chunks(plan.start, plan.end)
        failure = None
        async with aclosing(chunks), anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            failure = await send_body(chunks, plan, writer)
            group.cancel_scope.cancel()
        if failure is None:
            return
        log_failure(label, failure, player.tape.total_size)
        if failure.started:
            raise failure.error
        await send_plain(send, 500, "the tape cannot be played: see the server log")
    except ClientGone:
        logger.debug("%s: client gone", label)


class TapeApp:
    """An ASGI application serving the tape of ``source`` at its root path (GET and HEAD).

    ``source`` is the recorded folder; its index is ``index_path`` (by default
    ``<source>/.tartape/index.db``). ``filename`` is what the download is called (by default
    ``<tape name>.tar``). Construction does no I/O: the tape is opened on the first request,
    and again whenever its index file is replaced by a new recording. Answers ``Range`` and
    ``If-Range`` (206, 416), 405 for other methods, 404 below its root path, and 500 when the
    tape cannot be opened or played (the error is logged on ``atartape.http``). Speaks the
    lifespan protocol, so servers that require it (hypercorn on trio) start it.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        index_path: str | os.PathLike[str] | None = None,
        filename: str | None = None,
    ) -> None:
        self.source = os.fspath(source)
        self.index_path = (
            os.fspath(index_path) if index_path is not None else default_index_path(self.source)
        )
        self.filename = filename
        self._lock = anyio.Lock()
        self._opened: tuple[Tape, http.Representation, tuple[int, int, int]] | None = None

    async def tape(self) -> tuple[Tape, http.Representation]:
        """The tape served and its HTTP representation, opened if its index file is new.

        Raises :class:`~atartape.TapeNotFoundError` when there is no index and
        :class:`~atartape.TapeFormatError` when the file is not one.
        """
        stamp = await anyio.to_thread.run_sync(_stamp, self.index_path)
        if stamp is None:
            raise TapeNotFoundError(f"no tape index at {self.index_path!r}")
        opened = self._opened
        if opened is None or opened[2] != stamp:
            async with self._lock:
                opened = self._opened
                if opened is None or opened[2] != stamp:
                    tape = await Tape.open(self.index_path, source_root=self.source)
                    opened = (tape, representation(tape, self.filename), stamp)
                    self._opened = opened
        return opened[0], opened[1]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Handle one ASGI connection: ``http``, ``lifespan`` (and refuse ``websocket``).

        (Typed loosely so that every server's and framework's own ASGI types accept it.)

        Raises ``ValueError`` for an unknown scope type, as ASGI asks, and re-raises an error
        that broke a response already started (see :func:`send_tape`).
        """
        if scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except ClientGone:  # while sending a short error response
                logger.debug("%s %s: client gone", scope["method"], scope["path"])
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})
        else:
            raise ValueError(f"TapeApp cannot handle a {scope['type']!r} scope")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        label = f"{method} {scope['path']}"
        if route_path(scope) not in ("", "/"):
            await send_plain(send, 404, "Not Found")
            return
        if not http.method_allowed(method):
            await send_plain(send, 405, "Method Not Allowed", allow=http.ALLOW_HEADER)
            return
        try:
            tape, rep = await self.tape()
        except TarTapeError as error:
            logger.error("%s: cannot open the tape: %s: %s", label, type(error).__name__, error)
            await send_plain(send, 500, "the tape cannot be opened: see the server log")
            return
        plan = http.plan_response(
            rep,
            method=method,
            range_header=request_header(scope, "range"),
            if_range=request_header(scope, "if-range"),
        )
        await send_tape(http_player(tape), plan, receive, send, label=label)


def _stamp(path: str) -> tuple[int, int, int] | None:
    """Identity of the index file as it is now (a new recording replaces the file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
