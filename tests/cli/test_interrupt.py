"""Ctrl-C in the command line: the first SIGINT cancels the command on either backend and
comes out as KeyboardInterrupt (exit 130, one line); an ignored SIGINT stays ignored.

Each test runs the command as ``atartape`` does (``_run`` starts the event loop), so the
backend's own SIGINT handling is in place, as it is for a user."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Awaitable, Callable, Iterator

import anyio
import anyio.lowlevel
import pytest

from atartape.cli.main import _run

BACKENDS = ["asyncio", "trio"]


def run(backend: str, command: Callable[[argparse.Namespace], Awaitable[int]]) -> int:
    return _run(argparse.Namespace(backend=backend, blocking=False, handler=command))


@pytest.fixture
def sigint_as_python_sets_it() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_first_sigint_cancels_the_command(sigint_as_python_sets_it: None, backend: str) -> None:
    seen: list[str] = []

    async def command(args: argparse.Namespace) -> int:
        signal.raise_signal(signal.SIGINT)
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            seen.append("cancelled")  # every task unwinds: nothing is left unawaited
            raise
        return 0

    with pytest.raises(KeyboardInterrupt):
        run(backend, command)
    assert seen == ["cancelled"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_error_while_unwinding_still_reads_as_interrupted(
    sigint_as_python_sets_it: None, backend: str
) -> None:
    async def command(args: argparse.Namespace) -> int:
        signal.raise_signal(signal.SIGINT)
        try:
            await anyio.sleep_forever()
        finally:
            raise BrokenPipeError("the reader left too")  # `play -o - | tar x`, both got SIGINT

    with pytest.raises(KeyboardInterrupt):
        run(backend, command)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_command_that_ends_returns_its_status(
    sigint_as_python_sets_it: None, backend: str
) -> None:
    async def command(args: argparse.Namespace) -> int:
        await anyio.lowlevel.checkpoint()
        return 3

    assert run(backend, command) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_ignored_sigint_stays_ignored(backend: str) -> None:
    """`atartape ... &` in a script: the shell starts it with SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:

        async def command(args: argparse.Namespace) -> int:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # nobody listens for it
            signal.raise_signal(signal.SIGINT)
            await anyio.lowlevel.checkpoint()
            return 0

        assert run(backend, command) == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
