"""``atartape serve``: the tape over HTTP, with uvicorn on asyncio or hypercorn on trio."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from typing import Any

import anyio

from .common import EXIT_OK, PROG, UsageError, open_tape


def serve(args: argparse.Namespace) -> int:
    from ..asgi import TapeApp

    tape = anyio.run(open_tape, args, backend=args.backend)
    app = TapeApp(args.src, index_path=args.index, filename=args.filename)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.create_server((args.host, args.port), family=family)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    print(
        f"{PROG}: serving {tape.name!r} ({tape.total_size} bytes) on http://{host}:{port}/ "
        f"with {'hypercorn on trio' if args.backend == 'trio' else 'uvicorn on asyncio'}",
        file=sys.stderr,
        flush=True,
    )
    if args.backend == "trio":
        _serve_hypercorn(app, sock, args.quiet)
    else:
        _serve_uvicorn(app, sock, args.quiet)
    return EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve_uvicorn(app: Any, sock: socket.socket, quiet: bool) -> None:
    try:
        import uvicorn
    except ImportError:
        raise UsageError("serve needs uvicorn: pip install 'atartape[serve]'") from None
    config = uvicorn.Config(app, log_level="error" if quiet else "warning", access_log=False)
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


def _serve_hypercorn(app: Any, sock: socket.socket, quiet: bool) -> None:
    try:
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve
    except ImportError:
        raise UsageError(
            "serve --backend trio needs hypercorn and trio: pip install 'atartape[serve]'"
        ) from None
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the listening socket from here
    config.accesslog = None
    config.loglevel = "ERROR" if quiet else "WARNING"

    async def shutdown() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    async def run() -> None:
        await serve(app, config, shutdown_trigger=shutdown)

    with contextlib.suppress(KeyboardInterrupt):  # a signal before the receiver was set up
        trio.run(run)
