"""The ``atartape`` command's arguments: one parser, its sub-commands and the value checks."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from ..format.units import parse_size
from .common import PROG, UsageError

BACKENDS = ("asyncio", "trio")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _whole(what: str, *, minimum: int = 0, maximum: int | None = None) -> Any:
    """An argparse type: a whole number from ``minimum`` (to ``maximum``), ``_`` allowed."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""), 10)
        except ValueError:
            value = minimum - 1
        if value < minimum or (maximum is not None and value > maximum):
            upto = f" to {maximum}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(
                f"bad {what} {text!r}: expected a whole number from {minimum}{upto}"
            )
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: expected seconds above 0")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad size: {exc}") from None


_offset = _whole("offset")
_count = _whole("count")
_port = _whole("port", maximum=65535)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"bad address {text!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number: int = _whole("port", minimum=1, maximum=65535)(port)
    return host, number


def build_parser(version: str) -> argparse.ArgumentParser:
    """The argument parser of the ``atartape`` command; ``command`` names the one chosen."""
    parser = _Parser(
        prog=PROG,
        description="Deterministic, resumable TAR streams of folders: record a folder once, "
        "then play, serve or send its tape from any byte.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
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

    def command(name: str, text: str, *parents: Any) -> Any:
        return commands.add_parser(name, help=text, description=text, parents=[common, *parents])

    sub = command("record", "record a folder into a tape (scan it, write its index)")
    sub.add_argument("src", metavar="SRC", help="the folder to record")
    sub.add_argument("--index", metavar="PATH", help="where to write the index")
    sub.add_argument(
        "--exclude", metavar="PATTERN", action="append", default=[], help="glob to leave out"
    )
    sub.add_argument("--overwrite", action="store_true", help="replace an existing index")
    sub.add_argument("--checksum", choices=("md5", "sha256"), help="store a digest per file")
    sub.add_argument("--json", action="store_true", help="print the tape as JSON")

    sub = command("info", "describe a recorded tape", tape_args)
    sub.add_argument("--json", action="store_true", help="print the tape as JSON")

    command("ls", "list the entries: start offset, size, type, path", tape_args)

    sub = command("play", "write the tape's TAR stream (or a window of it)", tape_args)
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

    sub = command("verify", "check the source folder against the tape", tape_args)
    sub.add_argument("--deep", action="store_true", help="check every entry, not a sample")
    sub.add_argument("--content", action="store_true", help="re-hash files (recorded digests)")

    sub = command("locate", "where one file lies in the tape", tape_args)
    sub.add_argument("arc_path", metavar="ARC_PATH", help="the file's path in the tape")
    sub.add_argument(
        "--volume-size", metavar="SIZE", type=_size, help="also its pieces per volume (64MiB)"
    )
    sub.add_argument("--json", action="store_true", help="print the location as JSON")

    sub = command("serve", "serve the tape over HTTP (Range requests resume)", tape_args)
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0: any)")
    sub.add_argument("--filename", help="download name (default: <tape name>.tar)")

    sub = command("send", "send the tape to 'atartape receive', resuming", tape_args)
    sub.add_argument("address", metavar="HOST:PORT", type=_address, help="the receiver")
    sub.add_argument(
        "--retries", type=_count, default=10, help="failed attempts in a row before giving up"
    )
    sub.add_argument("--backoff", type=_seconds, default=0.5, help="first retry delay (s)")
    sub.add_argument("--max-backoff", type=_seconds, default=30.0, help="longest delay (s)")
    sub.add_argument(
        "--idle-timeout", type=_seconds, default=60.0, help="silence that drops a connection"
    )
    sub.add_argument(
        "--trust-receiver",
        action="store_true",
        help="take the receiver's digest of bytes it already held instead of re-reading them",
    )

    sub = command("receive", "receive a tape from 'atartape send' into OUT")
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
        "--idle-timeout", type=_seconds, default=60.0, help="silence that drops a connection"
    )
    return parser
