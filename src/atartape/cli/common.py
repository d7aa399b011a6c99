"""What every command shares: its errors, its messages, opening the tape it names, its stdout."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.to_thread

from ..errors import SourceNotFoundError, TapeNotFoundError
from .progress import Bar

if TYPE_CHECKING:
    from ..format.events import Progress
    from ..tape import Tape

T = TypeVar("T")

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "Stdout",
    "UsageError",
    "VerificationFailed",
    "add_view_argument",
    "chosen_view",
    "folder_problem",
    "message",
    "open_tape",
    "printable",
    "read_age_identity",
    "warning",
    "with_progress",
    "write_stdout",
]

PROG = "atartape"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad usage or bad input found by the command line itself; exits with status 2."""


class VerificationFailed(Exception):
    """A check found problems (already printed); exits with status 1."""


def printable(text: str) -> str:
    """``text`` as any terminal can show it: bytes that are not UTF-8 (kept in names through
    ``surrogateescape``) become ``\\xNN`` escapes instead of failing to print."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def message(args: argparse.Namespace, text: str) -> None:
    """A message for the user on stderr, unless ``--quiet``."""
    if not args.quiet:
        print(f"{PROG}: {printable(text)}", file=sys.stderr, flush=True)


def warning(text: str) -> None:
    """A one-line warning on stderr (also with ``--quiet``: it is not progress)."""
    print(f"{PROG}: warning: {printable(text)}", file=sys.stderr, flush=True)


def folder_problem(path: str) -> SourceNotFoundError | None:
    """Why ``path`` cannot be a recorded folder (synchronous), or ``None``."""
    if os.path.isdir(path):
        return None
    if os.path.exists(path):
        return SourceNotFoundError(f"{path!r} is not a folder")
    return SourceNotFoundError(f"folder {path!r} does not exist")


def add_view_argument(parser: argparse.ArgumentParser) -> None:
    """``--view``: which bytes a command moves (the tar, or a compressed or sealed view)."""
    parser.add_argument(
        "--view",
        choices=("plain", "zstd", "age", "zstd+age"),
        help="which bytes: the tar (plain) or a view (default: the one recorded)",
    )


def chosen_view(tape: Tape, view: str | None) -> str:
    """The view ``--view`` names (the recorded one without it); :class:`UsageError` for one the
    tape was not recorded with."""
    chosen = view or tape.view
    try:
        tape.view_size(chosen)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return chosen


async def read_age_identity(path: str | None) -> str | None:
    """The identity in an age identity file (its first ``AGE-SECRET-KEY-1`` line), else the
    file's first line as a passphrase; ``None`` without a file."""
    if path is None:
        return None
    text = (await anyio.Path(path).read_text(encoding="utf-8")).strip()
    lines = text.splitlines()
    return next(
        (line.strip() for line in lines if line.strip().startswith("AGE-SECRET-KEY-1")),
        lines[0] if lines else "",
    )


async def open_tape(args: argparse.Namespace) -> Tape:
    """The tape of ``args.src`` (or ``args.index``). Raises the library's errors (status 2)."""
    from ..tape import Tape

    src = args.src
    if args.index:
        if not await anyio.to_thread.run_sync(os.path.exists, args.index):
            raise TapeNotFoundError(f"no tape index at {args.index!r}")
        root = await anyio.to_thread.run_sync(os.path.abspath, src)
        return await Tape.open(args.index, source_root=root)
    problem = await anyio.to_thread.run_sync(folder_problem, src)
    if problem is not None:
        raise problem
    return await Tape.discover(src)


async def with_progress(
    work: Callable[[], Awaitable[T]],
    progress: Progress,
    bar: Bar,
    describe: Callable[[Progress], str] | None = None,
    position: Callable[[Progress], int] = lambda progress: progress.entries,
) -> T:
    """Run ``work`` while a task moves ``bar`` to ``position(progress)`` a few times a second."""

    async def tick() -> None:
        while True:
            bar.update_to(position(progress))
            if describe is not None:
                bar.set_file(describe(progress))
            await anyio.sleep(0.2)

    with bar:
        if not bar.enabled:
            return await work()
        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            result = await work()
            group.cancel_scope.cancel()
        bar.update_to(position(progress))
    return result


class Stdout:
    """Lines for stdout, written in batches from a worker thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def line(self, text: str) -> None:
        self.lines.append(printable(text))
        if len(self.lines) >= 2000:
            await self.flush()

    async def flush(self) -> None:
        if self.lines:
            text, self.lines = "\n".join(self.lines) + "\n", []
            await anyio.to_thread.run_sync(write_stdout, text)


def write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
