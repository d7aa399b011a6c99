"""One connection of a transfer: frames read and sent, the control messages both sides expect.

Every read and every send is bounded by the idle timeout: a path that goes silent (a proxy or
a NAT that stops forwarding and closes nothing) ends the connection within ``idle_timeout``
seconds whichever way the bytes were going, and the sender reconnects.

Also what both sides share: the results they return and how a failure is told apart from a
dropped connection (which the sender retries and the receiver waits out).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio.abc import ByteStream
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
    PeerRefusal,
    check_frame,
    decode_head,
    decode_message,
    decode_refusal,
    encode_frame,
    encode_message,
    encode_refusal,
)

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "DROPS",
    "ERROR_GRACE",
    "FRAME_DATA",
    "SEND_SLICE",
    "Connection",
    "Inbox",
    "PeerFailedError",
    "PeerIntegrityError",
    "PeerRefusedError",
    "PeerStopped",
    "ProgressCallback",
    "ReceiveResult",
    "SendResult",
    "check_kind",
    "describe",
    "error_code",
    "log",
    "peer_error",
    "with_inbox",
]

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
FRAME_DATA = 1024 * 1024  # the most data bytes in one DATA frame
SEND_SLICE = 256 * 1024  # each slice of a send must leave within the idle timeout
ERROR_GRACE = 5.0  # seconds to let an ERROR frame reach the peer before closing

ProgressCallback = Callable[[int, int], object]
"""Called as ``progress(position, total_size)`` after each frame: bytes held by the receiver."""

log = logging.getLogger("atartape.transfer")

_T = TypeVar("_T")

# A connection that fails in one of these ways is dropped and (by the sender) re-established.
DROPS = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    TransferProtocolError,
    OSError,  # includes TimeoutError (an idle timeout) and ssl.SSLError (a damaged record)
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
    identity: str = ""


@dataclass(frozen=True)
class ReceiveResult:
    """What :func:`receive` did.

    ``path`` is the complete file; ``resumed_from`` the bytes of ``OUT.part`` kept from an
    earlier run; ``bytes_received`` the data bytes this call received; ``connections`` the
    sessions it served; ``digest`` the end-to-end chain digest, agreed with the sender;
    ``identity`` the recording identity of the tape, as the sender stated it.
    """

    path: str
    fingerprint: str
    total_size: int
    bytes_received: int
    resumed_from: int
    connections: int
    digest: str
    identity: str = ""


class PeerStopped(Exception):
    """Mixed into the errors made from the peer's ``ERROR`` frame: nothing is sent back."""


class PeerRefusedError(PeerStopped, TransferRefusedError):
    pass


class PeerIntegrityError(PeerStopped, TransferIntegrityError):
    pass


class PeerFailedError(PeerStopped, TransferError):
    pass


def peer_error(message: dict[str, Any], peer: str) -> TransferError:
    """The error to raise for the peer's ``ERROR`` frame (never one that is retried).

    A refusal becomes a :class:`TransferRefusedError` whose ``reason`` and ``offset`` are the
    peer's, and whose one line is ``the <peer> refused: <its text>``.
    """
    refusal = decode_refusal(message)
    if refusal is not None:
        return PeerRefusedError(
            f"the {peer} refused: {refusal.text}",
            reason=refusal.reason.value,
            offset=refusal.offset,
        )
    code = message.get("code")
    reason = message.get("message", "no reason given")
    text = f"the {peer} stopped the transfer: {reason}"
    if code == "integrity":
        return PeerIntegrityError(text)
    return PeerFailedError(text)


def error_code(exc: BaseException) -> str:
    """The ``code`` of the ``ERROR`` frame that tells the peer about ``exc``."""
    from ..errors import TarIntegrityError

    if isinstance(exc, TransferRefusedError):
        return "refused"
    if isinstance(exc, (TransferIntegrityError, TarIntegrityError)):
        return "integrity"
    return "failed"


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Connection:
    """Frames over one stream (plain or TLS), each read and send bounded by ``idle_timeout``.

    ``peer`` names the other side in messages (``"sender"`` or ``"receiver"``).
    """

    def __init__(self, stream: ByteStream, idle_timeout: float, peer: str) -> None:
        self.stream = stream
        self.rx = BufferedByteReceiveStream(stream)
        self.idle_timeout = idle_timeout
        self.peer = peer

    async def send(self, data: bytes) -> None:
        """Send ``data``; raises :class:`TimeoutError` if a slice of it cannot leave in time."""
        try:
            if len(data) <= SEND_SLICE:
                with anyio.fail_after(self.idle_timeout):
                    await self.stream.send(data)
                return
            view = memoryview(data)
            for start in range(0, len(view), SEND_SLICE):
                with anyio.fail_after(self.idle_timeout):
                    await self.stream.send(bytes(view[start : start + SEND_SLICE]))
        except TimeoutError:
            raise TimeoutError(
                f"the {self.peer} took nothing for {self.idle_timeout:g} s (the path is silent)"
            ) from None

    async def send_message(self, kind: Kind, **fields: Any) -> None:
        """Send one control frame."""
        await self.send(encode_message(kind, **fields))

    async def send_frame(self, kind: Kind) -> None:
        """Send one empty control frame (``END``, ``BYE``, ``PING``)."""
        await self.send(encode_frame(kind, b"{}" if kind is not Kind.PING else b""))

    async def read_frame(self, *, bounded: bool = True) -> tuple[Kind, bytes]:
        """Read one whole frame and check it, within ``idle_timeout`` if ``bounded``.

        Raises :class:`TransferProtocolError` for an unknown kind, an oversized length or a CRC
        mismatch, :class:`anyio.IncompleteRead` / :class:`anyio.EndOfStream` when the peer goes
        away (a frame cut short is never returned), and :class:`TimeoutError` after silence.
        """
        try:
            with anyio.fail_after(self.idle_timeout if bounded else math.inf):
                head = await self.rx.receive_exactly(HEAD_SIZE)
                kind, length = decode_head(head)
                payload = await self.rx.receive_exactly(length) if length else b""
                check_frame(kind, head, payload, await self.rx.receive_exactly(CRC_SIZE))
        except TimeoutError:
            raise TimeoutError(
                f"nothing heard from the {self.peer} for {self.idle_timeout:g} s"
            ) from None
        return kind, payload

    async def expect(self, kind: Kind) -> dict[str, Any]:
        """Read control frames until one of ``kind``; see :meth:`expect_any`."""
        return (await self.expect_any((kind,)))[1]

    async def expect_any(self, kinds: tuple[Kind, ...]) -> tuple[Kind, dict[str, Any]]:
        """Read control frames until one of ``kinds`` (skipping ``PING``); ``ERROR`` raises.

        ``ERROR`` raises :func:`peer_error`'s error; another kind of frame is a
        :class:`TransferProtocolError`; silence longer than ``idle_timeout`` a ``TimeoutError``.
        """
        while True:
            got, payload = await self.read_frame()
            if got is not Kind.PING:
                return check_kind(got, payload, kinds, self.peer)

    async def send_error(self, code: str, message: str) -> None:
        """Tell the peer why the session stops, if the connection still works (best effort).

        Then read (and drop) what the peer still sends until it closes, for a few seconds at
        most, so that the ``ERROR`` frame reaches it before this side's close resets the line.
        """
        await self._say_and_linger(encode_message(Kind.ERROR, code=code, message=message))

    async def send_refusal(self, refusal: PeerRefusal) -> None:
        """Tell the peer that it is refused, and why; as :meth:`send_error` (best effort)."""
        await self._say_and_linger(encode_refusal(refusal))

    async def _say_and_linger(self, frame: bytes) -> None:
        with anyio.move_on_after(ERROR_GRACE, shield=True), suppress(*DROPS):
            await self.stream.send(frame)
        with anyio.move_on_after(min(ERROR_GRACE, self.idle_timeout)), suppress(*DROPS):
            while True:
                await self.stream.receive()

    async def wait_pinging(self, event: anyio.Event) -> None:
        """Wait for ``event``, sending ``PING`` frames so that the peer's idle timeout stays off."""
        interval = max(self.idle_timeout / 3, 0.05)
        while not event.is_set():
            with anyio.move_on_after(interval):
                await event.wait()
            if not event.is_set():
                await self.send_frame(Kind.PING)


def check_kind(
    got: Kind, payload: bytes, kinds: tuple[Kind, ...], peer: str
) -> tuple[Kind, dict[str, Any]]:
    if got is Kind.ERROR:
        raise peer_error(decode_message(got, payload), peer)
    if got not in kinds:
        names = " or ".join(kind.name for kind in kinds)
        raise TransferProtocolError(f"expected {names} from the {peer}, got {got.name}")
    return got, decode_message(got, payload)


class Inbox:
    """What the peer sends while this side streams, read by a task of its own.

    The sender streams for hours without reading; the receiver may stop it at any moment
    (``ERROR``: its disk is full, a digest differed). :meth:`pump` reads every frame: an
    ``ERROR`` raises at once (and stops the stream, see :func:`with_inbox`), ``PING`` only says
    the peer is alive, any other frame waits for :meth:`expect`.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._put, self._get = anyio.create_memory_object_stream[tuple[Kind, bytes]](1)
        self.heard = anyio.current_time()

    async def pump(self) -> None:
        connection = self.connection
        async with self._put:
            while True:
                # Unbounded: while this side streams the peer has nothing to say; the sends
                # are bounded, and so is expect().
                kind, payload = await connection.read_frame(bounded=False)
                self.heard = anyio.current_time()
                if kind is Kind.ERROR:
                    raise peer_error(decode_message(kind, payload), connection.peer)
                if kind is not Kind.PING:
                    await self._put.send((kind, payload))

    async def expect(self, kind: Kind) -> dict[str, Any]:
        """The next frame, which must be of ``kind``; silence (no frame, no ``PING``) longer
        than the idle timeout raises :class:`TimeoutError`."""
        idle = self.connection.idle_timeout
        started = anyio.current_time()
        while True:
            with anyio.CancelScope(deadline=max(self.heard, started) + idle):
                got, payload = await self._get.receive()
                return check_kind(got, payload, (kind,), self.connection.peer)[1]
            if anyio.current_time() >= max(self.heard, started) + idle:
                raise TimeoutError(f"nothing heard from the {self.connection.peer} for {idle:g} s")

    def close(self) -> None:
        self._put.close()  # the pump may have been cancelled before it started
        self._get.close()


async def with_inbox(connection: Connection, work: Callable[[Inbox], Awaitable[_T]]) -> _T:
    """Run ``work(inbox)`` while the inbox reads the peer; the peer's ``ERROR`` stops it.

    Raises what ``work`` raises, except that an ``ERROR`` from the peer wins (it says why).
    """
    inbox = Inbox(connection)
    pumped: Exception | None = None
    failed: Exception | None = None
    done = False
    result: Any = None

    async def pump(scope: anyio.CancelScope) -> None:
        nonlocal pumped
        try:
            await inbox.pump()
        except Exception as exc:
            pumped = exc
            scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump, tg.cancel_scope)
            try:
                result = await work(inbox)
                done = True
            except Exception as exc:
                failed = exc
            tg.cancel_scope.cancel()
    finally:
        inbox.close()
    if done:
        return result  # type: ignore[no-any-return]
    if isinstance(pumped, PeerStopped) or failed is None:
        assert pumped is not None
        raise pumped
    raise failed
