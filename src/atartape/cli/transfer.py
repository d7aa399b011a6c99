"""``atartape send`` and ``atartape receive``: a tape over TCP, resuming at the exact byte."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

from .common import EXIT_OK, PROG, open_tape, write_stdout
from .progress import Progress, progress_bar


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


async def send(args: argparse.Namespace) -> int:
    from .. import transfer

    tape = await open_tape(args)
    host, port = args.address
    bar = _TransferBar(f"send {tape.name}", args.quiet)

    async def work() -> transfer.SendResult:
        return await transfer.send(
            tape,
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
        write_stdout,
        f"sent {tape.name!r}: {result.total_size} bytes ({result.bytes_sent} over the network"
        f"{resumed}, {result.connections} connection{'s' if result.connections != 1 else ''})\n"
        f"digest {result.digest}\n",
    )
    return EXIT_OK


async def receive(args: argparse.Namespace) -> int:
    from .. import transfer

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
        write_stdout,
        f"received {result.path}: {result.total_size} bytes ({result.bytes_received} over "
        f"the network{resumed}, {result.connections} "
        f"connection{'s' if result.connections != 1 else ''})\n"
        f"fingerprint {result.fingerprint}\ndigest {result.digest}\n",
    )
    return EXIT_OK
