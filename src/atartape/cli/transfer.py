"""``atartape send`` and ``atartape receive``: a tape over the network, resuming at the exact byte.

``receive`` listens on every address (port 8273) by default and prints the command the sender
should run, with the code it must give (TLS; see :mod:`atartape.transfer.security`). Exit
status: 0 done; 1 the transfer failed (a digest differs, the receiver's checked prefix is not
the tape's, the peer stopped or stayed unreachable, a disk is full); 2 refused (a wrong code, a
damaged OUT.part, another recording or tape, an existing OUT, the other side in the other mode)
or bad usage. A refusal is one line on both sides: ``send`` prints the receiver's reason
(``the receiver refused: its partial file OUT.part is damaged at byte N: ...``), ``receive``
the same case in its own words, ending ``the sender at HOST:PORT was told`` (a wrong code is
only logged: the receiver goes on waiting for the right sender).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

from .common import (
    EXIT_OK,
    PROG,
    UsageError,
    add_view_argument,
    chosen_view,
    message,
    open_tape,
    write_stdout,
)
from .parser import Commands, address, count, port, seconds, size
from .progress import Bar, progress_bar

__all__ = ["receive", "register", "send"]

DEFAULT_PORT = 8273  # "TAPE" on a phone keypad
CODE_VARIABLE = "ATARTAPE_CODE"
_WILDCARDS = ("", "0.0.0.0", "::")


def register(commands: Commands) -> None:
    sub = commands.add("send", "send the tape to 'atartape receive', resuming", send)
    sub.add_argument("address", metavar="HOST:PORT", type=address, help="the receiver")
    add_view_argument(sub)
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument(
        "--code",
        help=f"the code 'atartape receive' printed (or set {CODE_VARIABLE}, which 'ps' hides)",
    )
    mode.add_argument(
        "--insecure",
        action="store_true",
        help="plain TCP without a code, to a receiver started with --insecure (trusted networks)",
    )
    sub.add_argument(
        "--retries", type=count, default=10, help="failed attempts in a row before giving up"
    )
    sub.add_argument("--backoff", type=seconds, default=0.5, help="first retry delay (s)")
    sub.add_argument("--max-backoff", type=seconds, default=30.0, help="longest delay (s)")
    sub.add_argument(
        "--idle-timeout",
        type=seconds,
        default=60.0,
        help="silence either way (nothing read, nothing sent) that drops a connection (s)",
    )
    sub.add_argument(
        "--trust-receiver",
        action="store_true",
        help="take the receiver's digest of bytes it already held instead of re-reading them",
    )

    sub = commands.add(
        "receive", "receive a tape from 'atartape send' into OUT", receive, tape=False
    )
    sub.add_argument("out", metavar="OUT", help="the tar file to write (OUT.part meanwhile)")
    sub.add_argument(
        "--port",
        type=port,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port)",
    )
    sub.add_argument(
        "--host",
        default="0.0.0.0",
        help="address to listen on (default 0.0.0.0: every IPv4 address of this machine)",
    )
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument(
        "--code",
        help="the code senders must give (default: the one an interrupted receive into OUT "
        "used, or a new one; printed)",
    )
    mode.add_argument(
        "--insecure",
        action="store_true",
        help="plain TCP without a code: anyone who reaches the port can write (trusted "
        "networks only)",
    )
    sub.add_argument(
        "--force",
        action="store_true",
        help="discard a partial OUT.part that cannot be resumed, replace an existing OUT",
    )
    sub.add_argument(
        "--segment-size", type=size, default="64MiB", help="checkpoint interval (64MiB)"
    )
    sub.add_argument(
        "--idle-timeout",
        type=seconds,
        default=60.0,
        help="silence either way that drops a connection (s)",
    )


def _code(text: str, where: str) -> str:
    from ..format.wire import normalize_code

    try:
        return normalize_code(text)
    except ValueError as exc:
        raise UsageError(f"bad code{where}: {exc}") from None


class _TransferBar:
    """The bar of a transfer, made on the first report so that it starts at the resume point."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label = label
        self.quiet = quiet
        self.bar: Bar | None = None

    def __call__(self, position: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress_bar(total, initial=position, label=self.label, quiet=self.quiet)
        self.bar.update_to(position)

    def write(self, text: str) -> None:
        if self.quiet:
            return
        (self.bar or Bar()).write(text)

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

    code: str | None = None
    if not args.insecure:
        text = args.code if args.code is not None else os.environ.get(CODE_VARIABLE)
        if not text:
            raise UsageError(
                "send needs the code that 'atartape receive' printed: --code CODE (or "
                f"{CODE_VARIABLE}=CODE), or --insecure for a receiver started with --insecure"
            )
        code = _code(text, "" if args.code is not None else f" in {CODE_VARIABLE}")
    tape = await open_tape(args)
    view = chosen_view(tape, args.view)
    host, port = args.address
    bar = _TransferBar(f"send {tape.name}", args.quiet)

    async def work() -> transfer.SendResult:
        return await transfer.send(
            tape,
            host,
            port,
            code=code,
            insecure=args.insecure,
            retries=args.retries,
            backoff=args.backoff,
            max_backoff=args.max_backoff,
            idle_timeout=args.idle_timeout,
            verify_prefix=not args.trust_receiver,
            progress=bar,
            view=view,
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


def _send_command(host: str, port: int, code: str | None) -> str:
    """The command the sender should run; ``HOST`` as this machine knows itself."""
    if host in _WILDCARDS:
        host = socket.gethostname() or "HOST"
    shown = f"[{host}]" if ":" in host else host
    secret = "--insecure" if code is None else f"--code {code}"
    return f"{PROG} send FOLDER {shown}:{port} {secret}"


async def receive(args: argparse.Namespace) -> int:
    from .. import transfer

    code: str | None = None
    told = args.code is not None  # the user knows the code already
    if not args.insecure:
        if args.code is not None:
            code = _code(args.code, "")
        else:
            code = await transfer.saved_code(args.out)
            if code is not None:
                message(
                    args,
                    f"taking the code of the interrupted receive into {args.out} "
                    f"(kept in {args.out}.part.code)",
                )
            else:
                code = transfer.new_code()
    bar = _TransferBar(f"receive {os.path.basename(args.out)}", args.quiet)

    def on_listening(host: str, port: int) -> None:
        if args.quiet and told and args.port != 0 and not args.insecure:
            return
        shown = f"[{host}]" if ":" in host else host
        every = " (every address of this machine)" if host in _WILDCARDS else ""
        lines = []
        if args.insecure:
            lines.append(
                f"{PROG}: warning: --insecure: plain TCP without a code: anyone who can reach "
                f"port {port} can write {args.out}.part, and anyone on the way can read it"
            )
        lines.append(f"{PROG}: receiving into {args.out}; listening on {shown}:{port}{every}")
        where = (
            ", and this machine's name or address as the sender reaches it"
            if host in _WILDCARDS
            else ""
        )
        lines.append(f"{PROG}: on the sending machine, run (with the folder to send{where}):")
        lines.append(f"  {_send_command(host, port, code)}")
        print("\n".join(lines), file=sys.stderr, flush=True)

    async def work() -> transfer.ReceiveResult:
        return await transfer.receive(
            args.out,
            args.host,
            args.port,
            code=code,
            insecure=args.insecure,
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
