"""The ``atartape`` command line (also ``python -m atartape``).

Commands: ``record``, ``info``, ``ls``, ``play``, ``verify``, ``locate``, ``serve``, ``send`` and
``receive``; ``atartape COMMAND --help`` describes each. Data goes to stdout only where a command
produces it (``play -o -``, listings, reports); messages, errors and the progress bar go to
stderr. The bar is shown only when stderr is a terminal, never with ``--quiet``.

Exit status: 0 on success; 1 on an integrity or verification failure (a source file changed, a
transfer digest differs, the peer of a transfer stopped or stayed unreachable); 2 on bad usage or
bad input (a missing folder, no tape, a bad offset or size, an unknown path, a refused transfer).
Errors are one line on stderr, never a traceback (set ``ATARTAPE_DEBUG=1`` to see one for an
unexpected error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import stat
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any, BinaryIO, NoReturn

import anyio
import anyio.to_thread

from . import __version__
from ._errors import (
    EntryNotFoundError,
    InvalidOffsetError,
    PathConstraintError,
    SourceNotFoundError,
    TapeExistsError,
    TapeFormatError,
    TapeNotFoundError,
    TarIntegrityError,
    TarTapeError,
)
from ._progress import Progress, progress_bar
from .events import TarEventType
from .layout import check_window
from .player import TapePlayer
from .tape import Tape

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
BACKENDS = ("asyncio", "trio")
PROG = "atartape"

_USAGE_ERRORS = (
    InvalidOffsetError,
    PathConstraintError,
    SourceNotFoundError,
    TapeExistsError,
    TapeFormatError,
    TapeNotFoundError,
    EntryNotFoundError,
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


class UsageError(Exception):
    """Bad usage or bad input found by the command line itself; exits with status 2."""


class VerificationFailed(Exception):
    """A check found problems (already printed); exits with status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ------------------------------------------------------------------------------ arguments


def _offset(text: str) -> int:
    try:
        value = int(text.replace("_", ""), 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"bad offset {text!r}: expected a whole number of bytes from 0"
        )
    return value


def _size(text: str) -> int:
    from .units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad size: {exc}") from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _count(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {text!r}: expected 0 to 65535")
    return value


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"bad address {text!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = _port(port)
    if number == 0:
        raise argparse.ArgumentTypeError(f"bad address {text!r}: the port must not be 0")
    return host, number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``atartape`` command."""
    parser = _Parser(
        prog=PROG,
        description="Deterministic, resumable TAR streams of folders: record a folder once, "
        "then play, serve or send its tape from any byte.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="asyncio",
        help="event loop for atartape's own async code (default: asyncio)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no messages"
    )
    # The same options after the command name; SUPPRESS keeps the global value otherwise.
    common = _Parser(add_help=False)
    common.add_argument(
        "--backend",
        choices=BACKENDS,
        default=argparse.SUPPRESS,
        help="event loop (serve: uvicorn on asyncio, hypercorn on trio)",
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar"
    )
    tape_args = _Parser(add_help=False)
    tape_args.add_argument("src", metavar="SRC", help="the recorded folder")
    tape_args.add_argument(
        "--index", metavar="PATH", help="the tape's index (default: SRC/.tartape/index.db)"
    )

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Callable[..., Any], text: str, *parents: Any) -> Any:
        sub = commands.add_parser(name, help=text, description=text, parents=[common, *parents])
        sub.set_defaults(handler=handler)
        return sub

    sub = command("record", _record, "record a folder into a tape (scan it, write its index)")
    sub.add_argument("src", metavar="SRC", help="the folder to record")
    sub.add_argument("--index", metavar="PATH", help="where to write the index")
    sub.add_argument(
        "--exclude", metavar="PATTERN", action="append", default=[], help="glob to leave out"
    )
    sub.add_argument("--overwrite", action="store_true", help="replace an existing index")
    sub.add_argument("--checksum", choices=("md5", "sha256"), help="store a digest per file")
    sub.add_argument("--json", action="store_true", help="print the tape as JSON")

    sub = command("info", _info, "describe a recorded tape", tape_args)
    sub.add_argument("--json", action="store_true", help="print the tape as JSON")

    command("ls", _ls, "list the entries: start offset, size, type, path", tape_args)

    sub = command("play", _play, "write the tape's TAR stream (or a window of it)", tape_args)
    sub.add_argument(
        "-o", "--output", metavar="OUT", help="file to write, or - for stdout (the default)"
    )
    sub.add_argument("--offset", type=_offset, default=0, help="first byte to play (default 0)")
    sub.add_argument("--end", type=_offset, help="byte to stop before (default: the end)")
    sub.add_argument(
        "--resume",
        action="store_true",
        help="continue a partial OUT from its current size (needs -o OUT)",
    )

    sub = command("verify", _verify, "check the source folder against the tape", tape_args)
    sub.add_argument("--deep", action="store_true", help="check every entry, not a sample")
    sub.add_argument("--content", action="store_true", help="re-hash files (recorded digests)")

    sub = command("locate", _locate, "where one file lies in the tape", tape_args)
    sub.add_argument("arc_path", metavar="ARC_PATH", help="the file's path in the tape")
    sub.add_argument(
        "--volume-size", metavar="SIZE", type=_size, help="also its pieces per volume (64MiB)"
    )
    sub.add_argument("--json", action="store_true", help="print the location as JSON")

    sub = command("serve", _serve, "serve the tape over HTTP (Range requests resume)", tape_args)
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0: any)")
    sub.add_argument("--filename", help="download name (default: <tape name>.tar)")

    sub = command("send", _send, "send the tape to 'atartape receive', resuming", tape_args)
    sub.add_argument("address", metavar="HOST:PORT", type=_address, help="the receiver")
    sub.add_argument(
        "--retries", type=_count, default=10, help="failed attempts in a row before giving up"
    )
    sub.add_argument("--backoff", type=_positive, default=0.5, help="first retry delay (s)")
    sub.add_argument("--max-backoff", type=_positive, default=30.0, help="longest delay (s)")
    sub.add_argument(
        "--idle-timeout", type=_positive, default=60.0, help="silence that drops a connection"
    )
    sub.add_argument(
        "--trust-receiver",
        action="store_true",
        help="take the receiver's digest of bytes it already held instead of re-reading them",
    )

    sub = command("receive", _receive, "receive a tape from 'atartape send' into OUT")
    sub.add_argument("out", metavar="OUT", help="the tar file to write (OUT.part meanwhile)")
    sub.add_argument("--port", type=_port, required=True, help="port to listen on (0: any)")
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_argument(
        "--force",
        action="store_true",
        help="discard a partial OUT.part that cannot be resumed, replace an existing OUT",
    )
    sub.add_argument(
        "--segment-size", type=_size, default="64MiB", help="checkpoint interval (64MiB)"
    )
    sub.add_argument(
        "--idle-timeout", type=_positive, default=60.0, help="silence that drops a connection"
    )
    return parser


# --------------------------------------------------------------------------------- helpers


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


class _Stdout:
    """Text for stdout, written in batches from a worker thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def line(self, text: str) -> None:
        self.lines.append(text)
        if len(self.lines) >= 2000:
            await self.flush()

    async def flush(self) -> None:
        if self.lines:
            text, self.lines = "\n".join(self.lines) + "\n", []
            await anyio.to_thread.run_sync(_write_stdout, text)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _message(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)


async def _open_tape(args: argparse.Namespace) -> Tape:
    """The tape of ``args.src`` (or ``args.index``). Raises the library's errors (status 2)."""
    src = args.src
    if args.index:
        if not await anyio.to_thread.run_sync(os.path.exists, args.index):
            raise TapeNotFoundError(f"no tape index at {args.index!r}")
        root = await anyio.to_thread.run_sync(os.path.abspath, src)
        return await Tape.open(args.index, source_root=root)
    if not await anyio.to_thread.run_sync(os.path.isdir, src):
        raise SourceNotFoundError(f"folder {src!r} does not exist")
    return await Tape.discover(src)


def _tape_fields(tape: Tape) -> dict[str, Any]:
    return {
        "name": tape.name,
        "fingerprint": tape.fingerprint,
        "total_size": tape.total_size,
        "entry_count": tape.entry_count,
        "file_count": tape.file_count,
        "recorded_at": tape.recorded_at.isoformat(),
        "source_root": tape.source_root,
        "index_path": tape.index_path,
        "checksum": tape.checksum_algorithm,
    }


async def _print_tape(tape: Tape, as_json: bool) -> None:
    out = _Stdout()
    if as_json:
        await out.line(json.dumps(_tape_fields(tape), indent=2))
    else:
        rows = [
            ("tape", tape.name),
            ("fingerprint", tape.fingerprint),
            ("total size", f"{tape.total_size} bytes ({_human(tape.total_size)})"),
            ("entries", f"{tape.entry_count} ({tape.file_count} files)"),
            ("recorded at", tape.recorded_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("source", tape.source_root),
            ("index", tape.index_path),
            ("checksum", tape.checksum_algorithm or "none"),
        ]
        for key, value in rows:
            await out.line(f"{key:<12} {value}")
    await out.flush()


# -------------------------------------------------------------------------------- commands


async def _record(args: argparse.Namespace) -> int:
    from .recorder import record

    if not await anyio.to_thread.run_sync(os.path.isdir, args.src):
        raise SourceNotFoundError(f"folder {args.src!r} does not exist")
    try:
        tape = await record(
            args.src,
            index_path=args.index,
            exclude=args.exclude or None,
            overwrite=args.overwrite,
            checksum=args.checksum,
        )
    except TapeExistsError as exc:
        raise TapeExistsError(str(exc).replace("pass overwrite=True", "use --overwrite")) from None
    await _print_tape(tape, args.json)
    return EXIT_OK


async def _info(args: argparse.Namespace) -> int:
    await _print_tape(await _open_tape(args), args.json)
    return EXIT_OK


async def _ls(args: argparse.Namespace) -> int:
    tape = await _open_tape(args)
    out = _Stdout()
    async for entry in tape.entries():
        target = f" -> {entry.linkname}" if entry.linkname else ""
        line = f"{entry.start_offset:>14} {entry.size:>14} {entry.kind.value:<7}"
        await out.line(f"{line} {entry.arc_path}{target}")
    await out.flush()
    return EXIT_OK


class _Sink:
    """Bytes to a file, buffered up to ``limit`` and written from worker threads."""

    def __init__(self, handle: BinaryIO, limit: int = 1024 * 1024) -> None:
        self.handle = handle
        self.limit = limit
        self.parts: list[bytes] = []
        self.buffered = 0

    async def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.buffered += len(data)
        if self.buffered >= self.limit:
            await self.flush()

    async def flush(self) -> None:
        parts, self.parts, self.buffered = self.parts, [], 0
        if parts:
            await anyio.to_thread.run_sync(self.handle.writelines, parts)

    async def close(self) -> None:
        """Flush, fsync (a regular file) and close; runs shielded, so even when cancelled."""
        with anyio.CancelScope(shield=True):
            try:
                await self.flush()
                await anyio.to_thread.run_sync(self._sync)
            finally:
                if self.handle is not _stdout_buffer():
                    await anyio.to_thread.run_sync(self.handle.close)

    def _sync(self) -> None:
        self.handle.flush()
        fileno = self.handle.fileno()
        if stat.S_ISREG(os.fstat(fileno).st_mode):
            os.fsync(fileno)


def _stdout_buffer() -> BinaryIO:
    return sys.stdout.buffer


def _open_output(path: str, resume: bool) -> tuple[BinaryIO, int]:
    """Open ``path`` to write (append when resuming); return it and the bytes it holds."""
    if resume:
        handle = open(path, "ab")  # noqa: SIM115 - closed by _Sink.close
        return handle, handle.seek(0, os.SEEK_END)
    return open(path, "wb"), 0


async def _play(args: argparse.Namespace) -> int:
    to_stdout = args.output in (None, "-")
    if args.resume and to_stdout:
        raise UsageError("--resume continues a file: give it with -o OUT")
    if to_stdout and sys.stdout.isatty():
        raise UsageError("refusing to write a tar to a terminal: use -o OUT, or redirect stdout")
    tape = await _open_tape(args)
    start, end = check_window(tape.total_size, args.offset, args.end)
    if to_stdout:
        handle, held = _stdout_buffer(), 0
    else:
        handle, held = await anyio.to_thread.run_sync(_open_output, args.output, args.resume)
    sink = _Sink(handle)
    try:
        if held > end - start:
            raise UsageError(
                f"{args.output} holds {held} bytes, more than the {end - start} bytes "
                f"of the window {start}-{end}: it is not a partial play of this tape"
            )
        if held:
            _message(args, f"resuming {args.output} at byte {start + held} of {end}")
        player = TapePlayer(tape, md5=False)
        position = start + held
        with progress_bar(end - start, initial=held, label=tape.name, quiet=args.quiet) as bar:
            if bar.enabled:
                async with aclosing(player.play(position, end)) as events:
                    async for event in events:
                        if event.type is TarEventType.FILE_START and event.entry is not None:
                            bar.set_file(event.entry.arc_path)
                        elif event.data:
                            await sink.write(event.data)
                            bar.update_to(event.metadata.end_offset - start)
            else:
                async with aclosing(player.stream(position, end)) as chunks:
                    async for chunk in chunks:
                        await sink.write(chunk)
    finally:
        await sink.close()
    return EXIT_OK


async def _verify(args: argparse.Namespace) -> int:
    tape = await _open_tape(args)
    report = await TapePlayer(tape).verify(deep=args.deep, content=args.content)
    out = _Stdout()
    for problem in report.errors:
        await out.line(f"{problem.arc_path}: {problem.reason}: {problem.message}")
    await out.flush()
    kind = "deep check" if args.deep else "canary check"
    if not report:
        count = len(report.errors)
        raise VerificationFailed(
            f"{kind} of {tape.name!r}: {count} entr{'ies' if count != 1 else 'y'} "
            "no longer match the tape"
        )
    _message(args, f"{kind} of {tape.name!r}: {report.checked} entries hold")
    return EXIT_OK


async def _locate(args: argparse.Namespace) -> int:
    tape = await _open_tape(args)
    try:
        location = await tape.locate(args.arc_path, volume_size=args.volume_size)
    except EntryNotFoundError:
        # Accept a path relative to the tape's root folder too: "sub/file" for "data/sub/file".
        if args.arc_path.startswith(tape.arc_root + "/"):
            raise
        fuller = f"{tape.arc_root}/{args.arc_path.strip('/')}"
        location = await tape.locate(fuller, volume_size=args.volume_size)
    out = _Stdout()
    header = location.range_header
    if args.json:
        fields = {
            "arc_path": location.arc_path,
            "kind": location.kind.value,
            "start_offset": location.start_offset,
            "data_offset": location.data_offset,
            "size": location.size,
            "end_offset": location.end_offset,
            "range": header["Range"] if header else None,
            "volume_size": location.volume_size,
            "fragments": [
                {
                    "volume_index": f.volume_index,
                    "offset_in_volume": f.offset_in_volume,
                    "length": f.length,
                    "range": f.range_header["Range"],
                }
                for f in location.fragments
            ],
        }
        await out.line(json.dumps(fields, indent=2))
    else:
        rows = [
            ("path", location.arc_path),
            ("type", location.kind.value),
            ("start", str(location.start_offset)),
            ("data", str(location.data_offset)),
            ("size", str(location.size)),
            ("end", str(location.end_offset)),
            ("range", header["Range"] if header else "(empty)"),
        ]
        for key, value in rows:
            await out.line(f"{key:<7} {value}")
        if location.volume_size is not None:
            for f in location.fragments:
                await out.line(
                    f"volume {f.volume_index}: offset {f.offset_in_volume} length {f.length} "
                    f"range {f.range_header['Range']}"
                )
    await out.flush()
    return EXIT_OK


# ---------------------------------------------------------------------- serve (blocking)


def _serve(args: argparse.Namespace) -> int:
    try:
        from .asgi import TapeApp
    except ImportError as exc:  # pragma: no cover - shipped with atartape
        raise UsageError(f"serve is not available: {exc}") from None
    tape = _run_async(args, _open_tape)
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


# ------------------------------------------------------------------------------- transfer


class _TransferBar:
    """The bar of a transfer, made on the first report so that it starts at the resume point."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label = label
        self.quiet = quiet
        self.bar: Progress | None = None

    def __call__(self, position: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress_bar(total, initial=position, label=self.label, quiet=self.quiet)
        self.bar.update_to(position)

    def write(self, text: str) -> None:
        if self.quiet:
            return
        (self.bar or Progress()).write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _BarLog(logging.Handler):
    def __init__(self, bar: _TransferBar) -> None:
        super().__init__(logging.INFO)
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        self.bar.write(f"{PROG}: {record.getMessage()}")


async def _with_transfer_log(bar: _TransferBar, work: Callable[[], Awaitable[Any]]) -> Any:
    logger = logging.getLogger("atartape.transfer")
    handler = _BarLog(bar)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        return await work()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        bar.close()


async def _send(args: argparse.Namespace) -> int:
    from . import transfer

    tape = await _open_tape(args)
    host, port = args.address
    bar = _TransferBar(f"send {tape.name}", args.quiet)

    async def work() -> transfer.SendResult:
        return await transfer.send(
            tape,
            None,
            host,
            port,
            retries=args.retries,
            backoff=args.backoff,
            max_backoff=args.max_backoff,
            idle_timeout=args.idle_timeout,
            verify_prefix=not args.trust_receiver,
            progress=bar,
        )

    result: transfer.SendResult = await _with_transfer_log(bar, work)
    resumed = f", resumed at byte {result.resumed_from}" if result.resumed_from else ""
    await anyio.to_thread.run_sync(
        _write_stdout,
        f"sent {tape.name!r}: {result.total_size} bytes ({result.bytes_sent} over the network"
        f"{resumed}, {result.connections} connection{'s' if result.connections != 1 else ''})\n"
        f"digest {result.digest}\n",
    )
    return EXIT_OK


async def _receive(args: argparse.Namespace) -> int:
    from . import transfer

    bar = _TransferBar(f"receive {os.path.basename(args.out)}", args.quiet)

    def on_listening(host: str, port: int) -> None:
        if not args.quiet or args.port == 0:
            shown = f"[{host}]" if ":" in host else host
            print(f"{PROG}: listening on {shown}:{port}", file=sys.stderr, flush=True)

    async def work() -> transfer.ReceiveResult:
        return await transfer.receive(
            args.out,
            args.host,
            args.port,
            force=args.force,
            segment_size=args.segment_size,
            idle_timeout=args.idle_timeout,
            progress=bar,
            on_listening=on_listening,
        )

    result: transfer.ReceiveResult = await _with_transfer_log(bar, work)
    resumed = f", resumed at byte {result.resumed_from}" if result.resumed_from else ""
    await anyio.to_thread.run_sync(
        _write_stdout,
        f"received {result.path}: {result.total_size} bytes ({result.bytes_received} over "
        f"the network{resumed}, {result.connections} "
        f"connection{'s' if result.connections != 1 else ''})\n"
        f"fingerprint {result.fingerprint}\ndigest {result.digest}\n",
    )
    return EXIT_OK


# ------------------------------------------------------------------------------------ main


def _run_async(
    args: argparse.Namespace, func: Callable[[argparse.Namespace], Awaitable[Any]]
) -> Any:
    return anyio.run(func, args, backend=args.backend)


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
    from ._wire import TransferRefusedError

    if isinstance(exc, (UsageError, TransferRefusedError, *_USAGE_ERRORS)):
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
    parser = build_parser()
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
        if args.handler is _serve:
            return int(_serve(args))
        return int(_run_async(args, args.handler))
    except KeyboardInterrupt:
        print(f"{PROG} {command}: interrupted", file=sys.stderr)
        return 130
    except BaseException as raised:
        error = _leaf(raised)
        # Before Python 3.11 asyncio has no Runner: a SIGINT inside anyio.run comes out as the
        # main task's CancelledError instead of KeyboardInterrupt.
        if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
            print(f"{PROG} {command}: interrupted", file=sys.stderr)
            return 130
        if isinstance(error, SystemExit):
            raise
        if isinstance(error, BrokenPipeError):
            # The reader of stdout left (`atartape play SRC | head -c 100`): stop quietly.
            _silence_stdout()
            return EXIT_FAILURE
        if not isinstance(error, Exception):
            raise
        known = isinstance(error, (TarTapeError, UsageError, VerificationFailed, OSError))
        if not known or os.environ.get("ATARTAPE_DEBUG"):
            if os.environ.get("ATARTAPE_DEBUG"):
                traceback.print_exception(error, file=sys.stderr)
            elif not known:
                print(
                    f"{PROG} {command}: internal error (set ATARTAPE_DEBUG=1 for details):",
                    file=sys.stderr,
                    end=" ",
                )
        print(f"{PROG} {command}: {_describe(error)}", file=sys.stderr)
        return _exit_status(error)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover
        pass
