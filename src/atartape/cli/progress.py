"""A progress bar for the command line: bytes, rate, ETA and the current file, on stderr.

Shown only when stderr is a terminal, ``--quiet`` was not given and tqdm is installed (the
``atartape[cli]`` extra); otherwise every method does nothing, so callers never check. Nothing
is ever written to stdout, which may carry tar bytes.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, TextIO


class Progress:
    """A progress bar that shows nothing; :func:`progress_bar` may return a real one."""

    enabled = False

    def update_to(self, position: int) -> None:
        """The work has reached ``position`` (bytes from the start of the bar's range)."""

    def set_file(self, name: str) -> None:
        """Name the file being worked on."""

    def write(self, message: str) -> None:
        """Print a line on stderr without breaking the bar."""
        print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Finish the bar (it stays on screen)."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _TqdmProgress(Progress):
    enabled = True

    def __init__(self, tqdm: Any, stream: TextIO, total: int, initial: int, label: str) -> None:
        # A terminal that reports no size (a fresh pty) would get no bar at all: assume 80x24.
        known_size = _known_size(stream)
        self._bar = tqdm.tqdm(
            total=total,
            initial=initial,
            desc=label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=stream,
            dynamic_ncols=known_size,
            ncols=None if known_size else 80,
            nrows=None if known_size else 24,
            mininterval=0.2,
            smoothing=0.1,
        )
        self._tqdm = tqdm

    def update_to(self, position: int) -> None:
        delta = position - self._bar.n
        if delta:
            self._bar.update(delta)

    def set_file(self, name: str) -> None:
        if len(name) > 40:
            name = "..." + name[-37:]
        self._bar.set_postfix_str(name, refresh=False)

    def write(self, message: str) -> None:
        self._tqdm.tqdm.write(message, file=self._bar.fp)

    def close(self) -> None:
        self._bar.close()


def _known_size(stream: TextIO) -> bool:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0


def wants_bar(quiet: bool, stream: TextIO | None = None) -> bool:
    """Whether a bar would be shown: not quiet, and the stream (stderr) is a terminal."""
    stream = stream if stream is not None else sys.stderr
    if quiet or stream is None:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(
    total: int,
    *,
    initial: int = 0,
    label: str = "",
    quiet: bool = False,
    stream: TextIO | None = None,
) -> Progress:
    """A bar for ``total`` bytes starting at ``initial``, or a silent stand-in.

    Silent when ``quiet``, when ``stream`` (default: stderr) is not a terminal, or when tqdm is
    not installed. Never raises.
    """
    stream = stream if stream is not None else sys.stderr
    if not wants_bar(quiet, stream):
        return Progress()
    try:
        tqdm = importlib.import_module("tqdm")
    except ImportError:
        return Progress()
    return _TqdmProgress(tqdm, stream, total, initial, label)
