"""What every command shares: its errors, its messages, opening the tape it names, its stdout."""

from __future__ import annotations

import argparse
import os
import sys

import anyio
import anyio.to_thread

from ..errors import SourceNotFoundError, TapeNotFoundError
from ..tape import Tape

PROG = "atartape"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad usage or bad input found by the command line itself; exits with status 2."""


class VerificationFailed(Exception):
    """A check found problems (already printed); exits with status 1."""


def message(args: argparse.Namespace, text: str) -> None:
    """A message for the user on stderr, unless ``--quiet``."""
    if not args.quiet:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)


async def open_tape(args: argparse.Namespace) -> Tape:
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


class Stdout:
    """Lines for stdout, written in batches from a worker thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def line(self, text: str) -> None:
        self.lines.append(text)
        if len(self.lines) >= 2000:
            await self.flush()

    async def flush(self) -> None:
        if self.lines:
            text, self.lines = "\n".join(self.lines) + "\n", []
            await anyio.to_thread.run_sync(write_stdout, text)


def write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
