"""``atartape serve``: the tape over HTTP, with uvicorn on asyncio or hypercorn on trio."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from .._extras import require
from .common import (
    EXIT_OK,
    PROG,
    add_view_argument,
    chosen_view,
    open_tape,
    read_age_identity,
)
from .parser import Commands, port

if TYPE_CHECKING:
    from ..tape import Tape

__all__ = ["register", "serve"]

Runner = Callable[[Any, socket.socket, bool], None]

# What uvicorn logs when an app ends a response short of Content-Length on purpose: TapeApp
# has logged why already, in one line of its own.
_UVICORN_UNFINISHED = "ASGI callable returned without completing response."


def register(commands: Commands) -> None:
    sub = commands.add("serve", "serve the tape over HTTP (Range requests resume)", serve)
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_argument("--port", type=port, default=8000, help="port (default 8000; 0: any)")
    sub.add_argument(
        "--filename", help="download name (default: the view's, <tape name>.tar, .tar.zst...)"
    )
    add_view_argument(sub)
    sub.add_argument(
        "--age-identity-file",
        metavar="FILE",
        help="open the seal with this age identity (or passphrase) file, without the key file",
    )


def serve(args: argparse.Namespace) -> int:
    from ..asgi import TapeApp

    run = _hypercorn() if args.backend == "trio" else _uvicorn()  # before anything is announced
    tape, view, identity = anyio.run(_opened, args, backend=args.backend)
    # Without --view, each recording is served as the view it was recorded with.
    app = TapeApp(
        args.src,
        index_path=args.index,
        filename=args.filename,
        view=args.view,
        age_identity=identity,
    )
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.create_server((args.host, args.port), family=family)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    root = f"http://{host}:{port}"
    print(
        f"{PROG}: serving {tape.name!r} as {app.filename_of(tape)} "
        f"({tape.view_size(view)} bytes) on {root}/ "
        f"with {'hypercorn on trio' if args.backend == 'trio' else 'uvicorn on asyncio'}; "
        f"this recording, to resume safely: {root}{app.recording_path(tape)}",
        file=sys.stderr,
        flush=True,
    )
    _log_to_stderr(args.quiet)
    run(app, sock, args.quiet)
    return EXIT_OK


async def _opened(args: argparse.Namespace) -> tuple[Tape, str, str | None]:
    """The tape, the view to serve and the age identity of ``--age-identity-file``; a sealed
    view's key is checked to open its seal (:class:`~atartape.ViewError` if not)."""
    from .. import transforms

    tape = await open_tape(args)
    view = chosen_view(tape, args.view)
    identity = await read_age_identity(args.age_identity_file)
    if view.endswith("age"):
        key = await transforms.unseal_key(tape.meta, tape.index_path, identity)
        transforms.opened_seal(tape.meta, key)
    return tape, view, identity


def _log_to_stderr(quiet: bool) -> None:
    """One line on stderr for each response that failed (``atartape.http``), even with -q."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logger = logging.getLogger("atartape.http")
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _not_unfinished(record: logging.LogRecord) -> bool:
    return record.getMessage() != _UVICORN_UNFINISHED


def _uvicorn() -> Runner:
    require("uvicorn", "serve", "serve")
    import uvicorn

    def run(app: Any, sock: socket.socket, quiet: bool) -> None:
        config = uvicorn.Config(app, log_level="error" if quiet else "warning", access_log=False)
        logging.getLogger("uvicorn.error").addFilter(_not_unfinished)
        server = uvicorn.Server(config)
        # uvicorn stops gracefully on SIGINT and SIGTERM, then raises the signal again: make
        # SIGTERM end as quietly as SIGINT.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            anyio.run(server.serve, [sock], backend="asyncio")
        except (KeyboardInterrupt, asyncio.CancelledError):  # the latter: SIGINT on Python 3.10
            pass
        finally:
            sock.close()

    return run


def _hypercorn() -> Runner:
    require("trio", "serve", "serve --backend trio")
    require("hypercorn.trio", "serve", "serve --backend trio")
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    def run(app: Any, sock: socket.socket, quiet: bool) -> None:
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the listening socket from here
        config.accesslog = None
        config.loglevel = "ERROR" if quiet else "WARNING"

        async def shutdown() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    return

        async def main() -> None:
            await serve(app, config, shutdown_trigger=shutdown)

        with contextlib.suppress(KeyboardInterrupt):  # a signal before the receiver was set up
            trio.run(main)

    return run
