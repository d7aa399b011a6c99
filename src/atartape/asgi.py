"""Serve a tape over ASGI: :class:`TapeApp`, a plain ASGI application, on asyncio or trio.

No framework is needed: any ASGI server (uvicorn, hypercorn, granian...) runs it, and Starlette or
FastAPI mount it under a path. :func:`send_tape` is the sending half, shared with
:class:`atartape.starlette.TapeResponse`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.to_thread

from ._serving import (
    ClientGone,
    Failure,
    Progress,
    body_chunks,
    http_player,
    log_failure,
    logger,
    plan,
    refusal,
    send_body,
)
from .errors import TapeChangedError, TarTapeError
from .format import http
from .player import TapePlayer
from .tape import Tape, default_index_path

__all__ = ["TapeApp", "send_tape"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SEEN: Final = 64
"""How many recordings a :class:`TapeApp` remembers having served (to answer 410 at once)."""
ATTEMPTS: Final = 8
"""How often :class:`TapeApp` re-opens a tape re-recorded under a response before it gives up
with a 503 (each attempt loses only to a new recording made meanwhile)."""


def request_header(scope: Scope, name: str) -> str | None:
    """The value of request header ``name`` (lower-case) in an HTTP scope; repeats are joined."""
    key = name.encode("latin-1")
    values = [value.decode("latin-1") for field, value in scope["headers"] if field.lower() == key]
    return ", ".join(values) if values else None


def http_request(scope: Scope) -> http.Request:
    """The method and the fields of an HTTP scope that a tape's response depends on."""
    wanted = set(http.Request.FIELDS)
    fields: dict[str, list[str]] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if name in wanted:
            fields.setdefault(name, []).append(raw_value.decode("latin-1"))
    return http.Request.of(scope["method"], {k: ", ".join(v) for k, v in fields.items()})


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


async def send_plan(send: Send, plan: http.Plan) -> None:
    """Send a response without tape content (its ``tail`` is the whole body, if any).

    Raises :class:`ClientGone` when the client has gone.
    """
    writer = _AsgiWriter(send)
    await writer.start(plan)
    if plan.tail:
        await writer.write(plan.tail)
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
) -> Failure | None:
    """Send the response ``plan`` describes, its body played from ``player``.

    Returns the :class:`~atartape._serving.Failure` of a tape that could not play at all,
    before anything was sent (its source gone, the first entry changed, the index re-recorded
    since the tape was opened): the caller answers it (see :func:`~atartape._serving.refusal`).
    A client that disconnects (``http.disconnect``, or ``send()`` raising ``OSError``) stops
    the playing at once and closes the source files. An error once the response has started
    (typically :class:`~atartape.TarIntegrityError`) is logged as one line on
    ``atartape.http`` and the response is left without its final message, so that the server
    drops the connection short of ``Content-Length``; nothing is raised to the server (which
    would log a traceback). Raises only cancellation.
    """
    writer = _AsgiWriter(send)
    try:
        if not plan.parts:
            await send_plan(send, plan)
            return None
        progress = Progress()
        failure: Failure | None = None
        written = False
        async with (
            aclosing(body_chunks(player, plan, progress)) as chunks,
            anyio.create_task_group() as group,
        ):
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            try:
                failure = await send_body(chunks, plan, writer, progress)
                written = True
            except ClientGone:  # caught here: a task group would wrap it in a group
                pass
            group.cancel_scope.cancel()
        if not written:  # the client disconnected
            logger.debug("%s: client gone at byte %d", label, progress.position)
            return None
        if failure is None:
            # Sent once the disconnect watcher is gone: hypercorn on trio closes a
            # "Connection: close" or HTTP/1.0 connection inside this call, and a watcher
            # cancelled by the http.disconnect it then delivers would cancel that close.
            await writer.finish()
            return None
        if not failure.started:
            return failure
        log_failure(label, failure, player.tape.total_size)
        return None
    except ClientGone:
        logger.debug("%s: client gone", label)
        return None


@dataclass(frozen=True)
class _Opened:
    tape: Tape
    stamp: tuple[int, int, int]


class TapeApp:
    """An ASGI application serving the tape of ``source`` (GET and HEAD).

    ``source`` is the recorded folder; its index is ``index_path`` (by default
    ``<source>/.tartape/index.db``). ``filename`` is what the download is called (by default
    ``<tape name>.tar``). Construction does no I/O: the tape is opened on the first request,
    and again whenever its index file is replaced by a new recording.

    Each recording has a URL of its own, ``<root>/r/<identity>/<filename>``: its ETag is the
    identity, its bytes never change (``Cache-Control: max-age=31536000, immutable``), and
    once the tape is re-recorded it answers 410 Gone, so that a client resuming a download
    there with a bare ``Range`` (``curl -C -``, ``wget -c``) fails instead of splicing two
    recordings. The root URL redirects (307, ``Cache-Control: no-store``) to the recording of
    the moment. Answers the preconditions (304, 412), ``Range`` and ``If-Range`` (206, one part
    or several, 416), 405 for other methods, 404 elsewhere, 500 when the tape cannot be opened
    or played (the error is logged on ``atartape.http``). A re-recording between planning and
    playing a response is caught before its first byte: the tape is opened again and the
    request answered anew. Speaks the lifespan protocol, so servers that require it (hypercorn
    on trio) start it.
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
        self._opened: _Opened | None = None
        # The recordings this app has had open, newest last: a request for one of them that is
        # not the current one is answered 410 at once; for another, the index is looked at again.
        self._seen: dict[str, None] = {}

    async def tape(self, *, stale: Tape | None = None) -> Tape:
        """The tape served: the one last opened, unless its index file was replaced since, or
        it is ``stale`` (known to have been re-recorded): then the index is opened again.

        The tape of the moment for :class:`~atartape.starlette.TapeResponse` and
        :func:`~atartape.aiohttp.tape_response` too (one stat of the index file per call).

        Raises :class:`~atartape.TapeNotFoundError` when there is no index and
        :class:`~atartape.TapeFormatError` when the file is not one.
        """
        stamp = await anyio.to_thread.run_sync(_stamp, self.index_path)
        opened = self._opened
        if opened is None or opened.stamp != stamp or opened.tape is stale:
            async with self._lock:
                opened = self._opened
                if opened is None or opened.stamp != stamp or opened.tape is stale:
                    # Stamped before it is opened: a recording that lands in between is
                    # seen by the next request.
                    tape = await Tape.open(self.index_path, source_root=self.source)
                    opened = self._opened = _Opened(tape, stamp)
                    self._seen.pop(tape.identity, None)
                    self._seen[tape.identity] = None
                    while len(self._seen) > SEEN:
                        del self._seen[next(iter(self._seen))]
        return opened.tape

    def filename_of(self, tape: Tape) -> str:
        """What the download of ``tape`` is called."""
        return self.filename or f"{tape.name}.tar"

    def recording_path(self, tape: Tape) -> str:
        """The path, below the app's root, of the URL that names ``tape``'s recording."""
        return http.recording_path(tape.identity, self.filename_of(tape))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Handle one ASGI connection: ``http``, ``lifespan`` (and refuse ``websocket``).

        (Typed loosely so that every server's and framework's own ASGI types accept it.)

        Raises ``ValueError`` for an unknown scope type, as ASGI asks. Errors of the tape are
        answered and logged, never raised to the server.
        """
        if scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except ClientGone:  # while sending a short response
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
        where = http.route(route_path(scope))
        if where.kind == "unknown":
            await send_plan(send, http.plain_response(404, "Not Found"))
            return
        if not http.method_allowed(method):
            refused = http.plain_response(405, "Method Not Allowed", allow=http.ALLOW_HEADER)
            await send_plan(send, refused)
            return
        request = http_request(scope)
        stale: Tape | None = None
        for _ in range(ATTEMPTS):
            try:
                tape = await self.tape(stale=stale)
                asked = where.identity
                if where.kind == "recording" and asked != tape.identity and asked not in self._seen:
                    # A recording this app has not seen yet (the stat missed it?): look again.
                    tape = await self.tape(stale=tape)
            except TarTapeError as error:
                logger.error("%s: cannot open the tape: %s: %s", label, type(error).__name__, error)
                failed = http.plain_response(
                    500,
                    "the tape cannot be opened: see the server log",
                    cache_control=http.NO_STORE,
                )
                await send_plan(send, failed)
                return
            root = scope.get("root_path", "")
            if where.kind == "root":
                await send_plan(send, http.redirect(root + self.recording_path(tape)))
                return
            if where.identity != tape.identity:
                gone = http.plain_response(
                    410,
                    "this recording of the tape was replaced by a new one: "
                    f"download it again from {root or ''}/",
                    cache_control=http.NO_STORE,
                )
                await send_plan(send, gone)
                return
            planned = plan(tape, request, self.filename_of(tape), cache_control=http.IMMUTABLE)
            failure = await send_tape(http_player(tape), planned, receive, send, label=label)
            if failure is None:
                return
            if not isinstance(failure.error, TapeChangedError):
                await send_plan(send, refusal(label, failure, tape.total_size))
                return
            logger.debug("%s: re-recorded under the response: opening it again", label)
            stale = tape
        failed = http.plain_response(
            503, "the tape keeps being re-recorded: try again", cache_control=http.NO_STORE
        )
        logger.error(
            "%s: answered 503: the tape was re-recorded %d times meanwhile", label, ATTEMPTS
        )
        await send_plan(send, failed)


def _stamp(path: str) -> tuple[int, int, int]:
    """What the index file is now (a new recording replaces the file)."""
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, -1)
    return st.st_ino, st.st_mtime_ns, st.st_size


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
