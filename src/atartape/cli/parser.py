"""The ``atartape`` command's arguments: one parser, its sub-commands and the value checks."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any, NoReturn

from ..format.units import parse_size
from .common import PROG, UsageError

BACKENDS = ("asyncio", "trio")
Handler = Callable[[argparse.Namespace], Any]
"""Runs a command: an async function (run on the chosen backend) or a blocking one."""


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


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: expected seconds above 0")
    return value


def size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad size: {exc}") from None


offset = _whole("offset")
count = _whole("count")
port = _whole("port", maximum=65535)


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"bad address {text!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number: int = _whole("port", minimum=1, maximum=65535)(port)
    return host, number


class Commands:
    """Where each command module adds its sub-commands (see their ``register``)."""

    def __init__(
        self, subparsers: Any, common: argparse.ArgumentParser, tape_args: argparse.ArgumentParser
    ) -> None:
        self._subparsers = subparsers
        self._common = common
        self._tape_args = tape_args

    def add(
        self, name: str, text: str, handler: Handler, *, tape: bool = True
    ) -> argparse.ArgumentParser:
        """A sub-command ``name`` run by ``handler``; ``tape``: it takes SRC and --index."""
        parents = [self._common, self._tape_args] if tape else [self._common]
        sub: argparse.ArgumentParser = self._subparsers.add_parser(
            name, help=text, description=text, parents=parents
        )
        sub.set_defaults(handler=handler, blocking=not inspect.iscoroutinefunction(handler))
        return sub


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

    commands = Commands(
        parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser),
        common,
        tape_args,
    )
    from . import commands as tape_commands
    from . import s3, serve, transfer

    for module in (tape_commands, serve, transfer, s3):
        module.register(commands)
    return parser
