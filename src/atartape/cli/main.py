"""``atartape``: run one command, and turn what it raises into one line and an exit status.

Exit status: 0 on success; 1 on an integrity or verification failure (a source file changed, a
transfer digest differs, the peer of a transfer stopped or stayed unreachable); 2 on bad usage or
bad input (a missing folder, no tape, a bad offset or size, an unknown path, a refused transfer,
a damaged index); 130 when interrupted; 141 when ``play -o -`` lost its reader (a listing whose
reader left early, ``ls | head``, still exits 0).
Errors are one line on stderr, never a traceback (set ``ATARTAPE_DEBUG=1`` to see one for an
unexpected error).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import (
    EntryNotFoundError,
    InvalidArgumentError,
    InvalidOffsetError,
    MissingDependencyError,
    PathConstraintError,
    SourceNotFoundError,
    TapeExistsError,
    TapeFormatError,
    TapeNotFoundError,
    TarIntegrityError,
    TarTapeError,
    TransferRefusedError,
)
from . import commands, s3, serve, transfer
from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, PROG, UsageError, VerificationFailed
from .parser import build_parser

__all__ = ["main"]

EXIT_BROKEN_PIPE = 141

_USAGE_ERRORS = (
    InvalidArgumentError,
    InvalidOffsetError,
    MissingDependencyError,
    PathConstraintError,
    SourceNotFoundError,
    TapeExistsError,
    TapeFormatError,
    TapeNotFoundError,
    EntryNotFoundError,
    TransferRefusedError,
)
# OSErrors caused by what the user asked for (a path or an address), not by the system failing.
_USAGE_ERRNOS = {
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.EACCES,
    errno.EPERM,
    errno.EADDRINUSE,
    errno.EADDRNOTAVAIL,
    errno.EROFS,
}


def _run(args: argparse.Namespace) -> int:
    if args.backend == "trio":
        from .._extras import require

        require("trio", "trio", "--backend trio")
    if args.blocking:
        return int(args.handler(args))
    import signal
    import threading

    import anyio

    # Whether SIGINT is ours to handle: asked before the loop starts (trio then puts its own
    # handler in place of Python's). Signals reach only the main thread; a SIGINT ignored by
    # whoever started us (`atartape ... &` in a script) stays ignored.
    listen = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    return int(anyio.run(_until_interrupted, args, listen, backend=args.backend))


async def _until_interrupted(args: argparse.Namespace, listen: bool) -> int:
    """Run the command. When ``listen``, a first SIGINT cancels it (every task unwinds at its
    next checkpoint, on either backend), then comes out as ``KeyboardInterrupt``, whatever the
    unwinding raised; a second SIGINT meanwhile is the backend's again (it interrupts where the
    backend lets it)."""
    import signal

    import anyio

    if not listen:
        return int(await args.handler(args))
    interrupted = False
    result = EXIT_FAILURE

    async def run(cancel: anyio.CancelScope) -> None:
        nonlocal result
        result = int(await args.handler(args))
        cancel.cancel()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(run, group.cancel_scope)
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    interrupted = True
                    group.cancel_scope.cancel()
                    break
    except BaseException:
        if not interrupted:
            raise
    if interrupted:
        raise KeyboardInterrupt
    return result


def _leaf(exc: BaseException) -> BaseException:
    """The error inside exception groups of one (task groups wrap what they raise)."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not isinstance(inner, tuple) or not inner:
            return exc
        if len(inner) > 1:
            chosen = [e for e in inner if isinstance(e, (TarTapeError, UsageError))]
            exc = chosen[0] if chosen else inner[0]
        else:
            exc = inner[0]


def _exit_status(exc: BaseException) -> int:
    if isinstance(exc, (UsageError, *_USAGE_ERRORS)):
        return EXIT_USAGE
    if isinstance(exc, OSError) and not isinstance(exc, TarTapeError):
        return EXIT_USAGE if exc.errno in _USAGE_ERRNOS else EXIT_FAILURE
    return EXIT_FAILURE


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TarIntegrityError):
        return f"integrity error: {exc}"
    if isinstance(exc, OSError) and not isinstance(exc, TarTapeError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc)
    if isinstance(exc, (TarTapeError, UsageError, VerificationFailed)):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 failure, 2 bad usage or input)."""
    parser = build_parser(
        __version__, [commands.register, serve.register, transfer.register, s3.register]
    )
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a command is required (see '{PROG} --help')", file=sys.stderr)
        return EXIT_USAGE
    command = args.command
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"{PROG} {command}: interrupted", file=sys.stderr)
        return 130
    except BaseException as raised:
        error = _leaf(raised)
        # Before Python 3.11 asyncio has no Runner: a SIGINT inside anyio.run comes out as the
        # main task's CancelledError instead of KeyboardInterrupt.
        if isinstance(error, KeyboardInterrupt) or _is_asyncio_cancellation(error):
            print(f"{PROG} {command}: interrupted", file=sys.stderr)
            return 130
        if isinstance(error, SystemExit):
            raise
        if isinstance(error, BrokenPipeError):
            # The reader of stdout left (`atartape ls SRC | head`): stop quietly. A listing
            # read as far as its reader wanted is a success; a tar cut short is not (141, as
            # a process killed by SIGPIPE).
            _silence_stdout()
            return EXIT_BROKEN_PIPE if command == "play" else EXIT_OK
        if not isinstance(error, Exception):
            raise
        known = isinstance(error, (TarTapeError, UsageError, VerificationFailed, OSError))
        if not known or os.environ.get("ATARTAPE_DEBUG"):
            if os.environ.get("ATARTAPE_DEBUG"):
                import traceback

                traceback.print_exception(error, file=sys.stderr)
            elif not known:
                print(
                    f"{PROG} {command}: internal error (set ATARTAPE_DEBUG=1 for details):",
                    file=sys.stderr,
                    end=" ",
                )
        print(f"{PROG} {command}: {_describe(error)}", file=sys.stderr)
        return _exit_status(error)


def _is_asyncio_cancellation(error: BaseException) -> bool:
    asyncio = sys.modules.get("asyncio")  # only a run on asyncio can raise its CancelledError
    return asyncio is not None and isinstance(error, asyncio.CancelledError)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover
        pass
