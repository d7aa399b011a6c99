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

from . import views
from ._serving import (
    ClientGone,
    Failure,
    Playable,
    Progress,
    body_chunks,
    http_player,
    log_failure,
    logger,
    plan,
    refusal,
    send_body,
    served,
)
from .errors import InvalidArgumentError, TapeChangedError, TarTapeError
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
    player: Playable, plan: http.Plan, receive: Receive, send: Send, *, label: str = "tape"
) -> Failure | None:
    """Send the response ``plan`` describes, its body played from ``player`` (a
    :class:`~atartape.TapePlayer`, of any view, or what :func:`~atartape._serving.served`
    makes of one or of a one-shot tape).

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
        log_failure(label, failure, player.size)
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
    ``<source>/.tartape/index.db``). ``view`` is which bytes are served: by default the view
    the tape was recorded with (a sealed tape is never served unsealed unless asked), else
    ``"plain"`` (the tar), ``"zstd"``, ``"age"`` or ``"zstd+age"`` (see
    :mod:`atartape.views`); ``age_identity`` opens a sealed view without the key file beside
    the index (an ``AGE-SECRET-KEY-1…`` identity or the passphrase). ``filename`` is what the
    download is called (by default the view's name: ``<tape name>.tar``, ``.tar.zst``,
    ``.tar.age``, ``.tar.zst.age``). Construction does no I/O: the tape is opened on the first
    request, and again whenever its index file is replaced by a new recording. Everything the
    responses say describes the bytes sent: ``Content-Length`` and ranges count the view's
    bytes, its identity is the ETag, its media type the ``Content-Type``.

    Each recording has a URL of its own, ``<root>/r/<identity>/<filename>`` (the view's
    identity): its bytes never change (``Cache-Control: max-age=31536000, immutable``), and
    once the tape is re-recorded it answers 410 Gone, so that a client resuming a download
    there with a bare ``Range`` (``curl -C -``, ``wget -c``) fails instead of splicing two
    recordings. The root URL redirects (307, ``Cache-Control: no-store``) to the recording of
    the moment. Answers the preconditions (304, 412), ``Range`` and ``If-Range`` (206, one part
    or several, 416), 405 for other methods, 404 elsewhere, 500 when the tape cannot be opened
    or played, or lacks the view asked for (the error is logged on ``atartape.http``). A
    re-recording between planning and playing a response is caught before its first byte: the
    tape is opened again and the request answered anew. Speaks the lifespan protocol, so
    servers that require it (hypercorn on trio) start it.

    Raises ``ValueError`` for a view name that is none of the above.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        index_path: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        view: str | None = None,
        age_identity: str | bytes | None = None,
    ) -> None:
        if view is not None and view not in views.VIEWS:
            raise InvalidArgumentError(
                f"view must be one of {', '.join(views.VIEWS)}, not {view!r}"
            )
        self.source = os.fspath(source)
        self.index_path = (
            os.fspath(index_path) if index_path is not None else default_index_path(self.source)
        )
        self.filename = filename
        self.view = view
        self.age_identity = age_identity
        self._lock = anyio.Lock()
        self._opened: _Opened | None = None
        # The recordings this app has had open (their served views' identities), newest last:
        # a request for one of them that is not the current one is answered 410 at once; for
        # another, the index is looked at again.
        self._seen: dict[str, None] = {}
        # With age_identity, the player of the recording open (it keeps the file key it
        # unwrapped, which scrypt makes slow to get): the key comes from the recording's own
        # header. From the key file it is read for each response instead, since a new
        # recording replaces that file just after its index.
        self._player: TapePlayer | None = None

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
                    served_identity = self.identity_of(tape)
                    self._seen.pop(served_identity, None)
                    self._seen[served_identity] = None
                    while len(self._seen) > SEEN:
                        del self._seen[next(iter(self._seen))]
        return opened.tape

    def view_of(self, tape: Tape) -> str:
        """Which view of ``tape`` is served: ``view``, else the one it was recorded with."""
        return self.view or tape.view

    def identity_of(self, tape: Tape) -> str:
        """The identity of the bytes served for ``tape`` (its view's): the ETag."""
        return views.identity_of(tape.identity, self.view_of(tape))

    def filename_of(self, tape: Tape) -> str:
        """What the download of ``tape`` is called."""
        return self.filename or tape.name + views.suffix(self.view_of(tape))

    def recording_path(self, tape: Tape) -> str:
        """The path, below the app's root, of the URL that names ``tape``'s recording (of the
        view served)."""
        return http.recording_path(self.identity_of(tape), self.filename_of(tape))

    def player(self, tape: Tape) -> TapePlayer:
        """The player of the view served for ``tape``. Raises ``ValueError`` when ``tape``
        lacks that view."""
        kept = self._player
        if kept is not None and kept.tape is tape:
            return kept
        player = http_player(tape, view=self.view, age_identity=self.age_identity)
        if self.age_identity is not None:
            self._player = player
        return player

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
            raise InvalidArgumentError(f"TapeApp cannot handle a {scope['type']!r} scope")

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
                if (
                    where.kind == "recording"
                    and asked != self.identity_of(tape)
                    and asked not in self._seen
                ):
                    # A recording this app has not seen yet (the stat missed it?): look again.
                    tape = await self.tape(stale=tape)
                player = self.player(tape)
            except (TarTapeError, ValueError) as error:
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
            if where.identity != player.identity:
                gone = http.plain_response(
                    410,
                    "this recording of the tape was replaced by a new one: "
                    f"download it again from {root or ''}/",
                    cache_control=http.NO_STORE,
                )
                await send_plan(send, gone)
                return
            offered = served(player, self.filename_of(tape))
            planned = plan(offered, request, cache_control=http.IMMUTABLE)
            failure = await send_tape(offered, planned, receive, send, label=label)
            if failure is None:
                return
            if not isinstance(failure.error, TapeChangedError):
                await send_plan(send, refusal(label, failure, offered.size))
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
