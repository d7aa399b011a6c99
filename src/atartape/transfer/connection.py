"""One connection of a transfer: frames read and sent, the control messages both sides expect.

Also what both sides share: the results they return and how a failure is told apart from a
dropped connection (which the sender retries and the receiver waits out).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import ByteSendStream, ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

from ..errors import (
    TransferError,
    TransferIntegrityError,
    TransferProtocolError,
    TransferRefusedError,
)
from ..format.wire import (
    CRC_SIZE,
    HEAD_SIZE,
    Kind,
    check_frame,
    decode_head,
    decode_message,
    encode_data,
    encode_frame,
    encode_message,
)

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
FRAME_DATA = 1024 * 1024  # the most data bytes in one DATA frame

ProgressCallback = Callable[[int, int], object]
"""Called as ``progress(position, total_size)`` after each frame: bytes held by the receiver."""

log = logging.getLogger("atartape.transfer")

# A connection that fails in one of these ways is dropped and (by the sender) re-established.
DROPS = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    TransferProtocolError,
    OSError,  # includes TimeoutError: an idle timeout
)


@dataclass(frozen=True)
class SendResult:
    """What :func:`send` did.

    ``resumed_from`` is the offset the receiver held when first contacted (0 for a fresh
    transfer), ``bytes_sent`` the data bytes this call sent (over every connection),
    ``connections`` how many connections it took and ``digest`` the end-to-end chain digest.
    """

    fingerprint: str
    total_size: int
    bytes_sent: int
    resumed_from: int
    connections: int
    digest: str


@dataclass(frozen=True)
class ReceiveResult:
    """What :func:`receive` did.

    ``path`` is the complete file; ``resumed_from`` the bytes of ``OUT.part`` kept from an
    earlier run; ``bytes_received`` the data bytes this call received; ``connections`` the
    sessions it served; ``digest`` the end-to-end chain digest, agreed with the sender.
    """

    path: str
    fingerprint: str
    total_size: int
    bytes_received: int
    resumed_from: int
    connections: int
    digest: str


async def read_frame(rx: BufferedByteReceiveStream) -> tuple[Kind, bytes]:
    """Read one whole frame and check it.

    Raises :class:`TransferProtocolError` for an unknown kind, an oversized length or a CRC
    mismatch, and :class:`anyio.IncompleteRead` / :class:`anyio.EndOfStream` when the peer goes
    away (a frame cut short is never returned).
    """
    head = await rx.receive_exactly(HEAD_SIZE)
    kind, length = decode_head(head)
    payload = await rx.receive_exactly(length) if length else b""
    check_frame(kind, head, payload, await rx.receive_exactly(CRC_SIZE))
    return kind, payload


async def send_message(tx: ByteSendStream, kind: Kind, **fields: Any) -> None:
    """Send one control frame."""
    await tx.send(encode_message(kind, **fields))


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def expect(
    rx: BufferedByteReceiveStream, kind: Kind, idle_timeout: float, peer: str
) -> dict[str, Any]:
    """Read control frames until one of ``kind`` (skipping ``PING``); an ``ERROR`` raises.

    See :func:`_expect_any`.
    """
    return (await expect_any(rx, (kind,), idle_timeout, peer))[1]


async def expect_any(
    rx: BufferedByteReceiveStream, kinds: tuple[Kind, ...], idle_timeout: float, peer: str
) -> tuple[Kind, dict[str, Any]]:
    """Read control frames until one of ``kinds`` (skipping ``PING``); an ``ERROR`` raises.

    ``ERROR`` with code ``refused`` raises :class:`TransferRefusedError`, ``integrity``
    :class:`TransferIntegrityError`, any other code :class:`TransferError`. Another kind of
    frame is a :class:`TransferProtocolError`; silence longer than ``idle_timeout`` a
    ``TimeoutError``.
    """
    while True:
        with anyio.fail_after(idle_timeout):
            got, payload = await read_frame(rx)
        if got is Kind.PING:
            continue
        if got is Kind.ERROR:
            raise peer_error(decode_message(got, payload), peer)
        if got not in kinds:
            names = " or ".join(kind.name for kind in kinds)
            raise TransferProtocolError(f"expected {names} from the {peer}, got {got.name}")
        return got, decode_message(got, payload)


def peer_error(message: dict[str, Any], peer: str) -> TransferError:
    code = message.get("code")
    text = f"the {peer} stopped the transfer: {message.get('message', 'no reason given')}"
    if code == "refused":
        return TransferRefusedError(text)
    if code == "integrity":
        return TransferIntegrityError(text)
    return TransferError(text)


async def send_error(stream: ByteStream, code: str, message: str) -> None:
    """Tell the peer why the session stops, if the connection still works (best effort)."""
    with anyio.move_on_after(5, shield=True), suppress(*DROPS):
        await send_message(stream, Kind.ERROR, code=code, message=message)


async def wait_pinging(stream: ByteStream, event: anyio.Event, idle_timeout: float) -> None:
    """Wait for ``event``, sending ``PING`` frames so that the peer's idle timeout stays off."""
    interval = max(idle_timeout / 3, 0.05)
    while not event.is_set():
        with anyio.move_on_after(interval):
            await event.wait()
        if not event.is_set():
            await stream.send(encode_frame(Kind.PING, b""))


def hash_and_frame(hasher: Any, piece: memoryview, offset: int, skip: int) -> bytes | None:
    """In a worker thread: hash ``piece``, and frame its bytes from ``skip`` on (if any)."""
    hasher.update(piece)
    if skip >= len(piece):
        return None
    return encode_data(offset + skip, bytes(piece[skip:]))


def hash_file_range(fd: int, start: int, end: int) -> bytes:
    hasher = hashlib.sha256()
    position = start
    while position < end:
        data = os.pread(fd, min(FRAME_DATA * 4, end - position), position)
        if not data:
            raise OSError(f"unexpected end of file at byte {position}")
        hasher.update(data)
        position += len(data)
    return hasher.digest()
